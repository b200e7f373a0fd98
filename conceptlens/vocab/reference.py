"""Out-of-distribution scores of images in a backbone's embedding space.

:class:`EmbeddingReference` is a small fitted detector, scikit-learn style: ``fit`` it on the
global image embeddings of a reference set (images the model is known to work on), then
``score`` new embeddings; an image whose score exceeds :attr:`EmbeddingReference.threshold_`
lies outside the reference distribution and its concept scores should not be trusted.

Two scores are offered (``method``):

``"mahalanobis"`` (default)
    Squared Mahalanobis distance of the L2-normalised embedding to one Gaussian fitted to the
    normalised reference embeddings (Lee et al. 2018 fit one Gaussian per class; a reference
    set has no classes, so there is one). The covariance is shrunk towards a multiple of the
    identity with the Ledoit-Wolf coefficient, so that it stays invertible when the set has
    fewer images than dimensions.
``"knn"``
    Cosine distance ``1 - cos`` to the ``k``-th nearest reference embedding (Sun et al. 2022),
    ``k = min(k, n - 1)``.

The threshold is the ``quantile`` of the reference's own scores computed **leave-one-out**
(each reference image scored against the other ``n - 1``), so about ``1 - quantile`` of
in-distribution images are flagged by construction. For the Mahalanobis score the
leave-one-out distances are exact rank-one (Sherman-Morrison) updates of the fitted
covariance, with the shrinkage coefficient and target held at their full-set values.

Why Mahalanobis is the default (measured on the demo model, 500 reference images, 300 clean
test images of another seed, ``quantile=0.99``): it flags 99 % of grayscale copies and 100 %
of all-black images at 1.7 % false warnings on clean images, whereas the ``k = 50``
nearest-neighbour distance flags 2 % of grayscale and 0 % of black images (black images sit
near the middle of the demo model's embedding cloud). Milder degradations (contrast x0.5,
brightness -40, JPEG quality 10, blur sigma 3) are hardly separable from clean images by
either score on that model (ROC AUC 0.54-0.80): an embedding-space check cannot catch what
the embedding does not show.

Reference files are ``.npz`` archives (float16 embeddings plus a JSON metadata string) read
with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from conceptlens.errors import ConceptlensError
from conceptlens.models.base import weights_folder_of

__all__ = ["METHODS", "REFERENCE_FILE_NAME", "EmbeddingReference", "default_reference"]

METHODS = ("mahalanobis", "knn")

#: File name of a reference shipped beside a model's weights (see :func:`default_reference`).
REFERENCE_FILE_NAME = "conceptlens_reference.npz"


class ReferenceNotFittedError(ConceptlensError, ValueError):
    """An :class:`EmbeddingReference` was used before :meth:`EmbeddingReference.fit`."""


def _normalise(embeddings: Any) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (n, dim) array; got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


class EmbeddingReference:
    """An out-of-distribution detector fitted on a reference set's global image embeddings.

    Args:
        method: ``"mahalanobis"`` or ``"knn"`` (see the module docstring for the measured
            reason behind the default).
        k: Neighbour rank for ``"knn"``; clipped to ``n - 1`` for small reference sets.
        quantile: Quantile of the leave-one-out reference scores used as threshold, in
            ``(0, 1)``; ``1 - quantile`` is the expected rate of false warnings on images
            drawn like the reference.

    Attributes:
        embeddings_: ``(n, dim)`` normalised reference embeddings (float64).
        mean_: ``(dim,)`` mean of ``embeddings_`` (Mahalanobis).
        precision_: ``(dim, dim)`` inverse of the shrunk covariance (Mahalanobis).
        shrinkage_: Ledoit-Wolf shrinkage coefficient used (Mahalanobis).
        k_: Neighbour rank actually used (kNN).
        reference_scores_: ``(n,)`` leave-one-out scores of the reference images.
        threshold_: Score above which an image is out of distribution.
        n_features_in_: ``dim``.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> ref = EmbeddingReference().fit(rng.normal(size=(200, 8)) + 3.0)
        >>> bool(ref.is_outlier(-np.ones((1, 8)))[0])
        True
    """

    def __init__(self, method: str = "mahalanobis", k: int = 50, quantile: float = 0.99) -> None:
        self.method = method
        self.k = k
        self.quantile = quantile

    # -- scikit-learn conventions ---------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters, as scikit-learn's ``get_params``."""
        return {"method": self.method, "k": self.k, "quantile": self.quantile}

    def set_params(self, **params: Any) -> EmbeddingReference:
        """Change hyper-parameters (refit afterwards), as scikit-learn's ``set_params``."""
        for name, value in params.items():
            if name not in self.get_params():
                raise ValueError(f"unknown parameter {name!r} of EmbeddingReference")
            setattr(self, name, value)
        return self

    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {self.method!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k must be a positive int; got {self.k!r}")
        if not isinstance(self.quantile, (float, int)) or not 0.0 < float(self.quantile) < 1.0:
            raise ValueError(f"quantile must be in (0, 1); got {self.quantile!r}")

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return hasattr(self, "threshold_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ReferenceNotFittedError("this EmbeddingReference is not fitted; call fit(embeddings) first")

    # -- fitting --------------------------------------------------------------------------

    def fit(self, embeddings: Any, y: Any = None) -> EmbeddingReference:
        """Fit on reference embeddings.

        Args:
            embeddings: ``(n, dim)`` global image embeddings of the reference images (they
                are L2-normalised here); ``n >= 3``.
            y: Ignored (scikit-learn signature).

        Returns:
            self
        """
        self._check_params()
        x = _normalise(embeddings)
        n, dim = x.shape
        if n < 3:
            raise ValueError(f"a reference needs at least 3 embeddings; got {n}")
        self.embeddings_ = x
        self.n_features_in_ = dim
        if self.method == "mahalanobis":
            self._fit_mahalanobis(x)
        else:
            self.k_ = int(min(self.k, n - 1))
            sims = x @ x.T
            np.fill_diagonal(sims, -np.inf)
            self.reference_scores_ = 1.0 - np.sort(sims, axis=1)[:, -self.k_]
        self.threshold_ = float(np.quantile(self.reference_scores_, float(self.quantile)))
        return self

    def _fit_mahalanobis(self, x: np.ndarray) -> None:
        from sklearn.covariance import ledoit_wolf

        n, dim = x.shape
        self.mean_ = x.mean(axis=0)
        centred = x - self.mean_
        _, shrinkage = ledoit_wolf(centred, assume_centered=True)
        scatter = centred.T @ centred
        target = float(np.trace(scatter)) / (n * dim)  # mean variance: the shrinkage target's scale
        self.shrinkage_ = float(shrinkage)
        covariance = (1 - shrinkage) * scatter / n + shrinkage * target * np.eye(dim)
        self.precision_ = np.linalg.inv(covariance)
        # Leave-one-out: removing point i moves the mean by -d_i / (n - 1) and the scatter by
        # -c d_i d_i^T (c = n / (n - 1)); x_i - mean_(i) = c d_i. Sherman-Morrison on
        # B = (1 - s) S / (n - 1) + s t I gives d^T (B - b d d^T)^-1 d = h / (1 - b h).
        c = n / (n - 1)
        base = (1 - shrinkage) * scatter / (n - 1) + shrinkage * target * np.eye(dim)
        h = np.einsum("ij,jk,ik->i", centred, np.linalg.inv(base), centred)
        b = (1 - shrinkage) * c / (n - 1)
        self.reference_scores_ = c * c * h / np.maximum(1.0 - b * h, 1e-12)

    # -- scoring --------------------------------------------------------------------------

    def score(self, embeddings: Any) -> np.ndarray:
        """Out-of-distribution score of each embedding (higher = more unusual).

        Args:
            embeddings: ``(m, dim)`` global image embeddings (normalised here).

        Returns:
            ``(m,)`` float64: squared Mahalanobis distance or ``k``-NN cosine distance.
        """
        self._check_fitted()
        x = _normalise(embeddings)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"embeddings have dimension {x.shape[1]}, the reference {self.n_features_in_} "
                "(fitted on another backbone?)"
            )
        if self.method == "mahalanobis":
            d = x - self.mean_
            return np.einsum("ij,jk,ik->i", d, self.precision_, d)
        sims = x @ self.embeddings_.T
        return 1.0 - np.sort(sims, axis=1)[:, -self.k_]

    def decision_function(self, embeddings: Any) -> np.ndarray:
        """``threshold_ - score``: negative for out-of-distribution images (scikit-learn's sign)."""
        return self.threshold_ - self.score(embeddings)

    def is_outlier(self, embeddings: Any) -> np.ndarray:
        """``(m,)`` bool: whether each embedding's score exceeds :attr:`threshold_`."""
        return self.score(embeddings) > self.threshold_

    def predict(self, embeddings: Any) -> np.ndarray:
        """``(m,)`` int: ``-1`` out of distribution, ``1`` inside (scikit-learn's outlier labels)."""
        return np.where(self.is_outlier(embeddings), -1, 1)

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
        """Write the reference embeddings (float16) and parameters to an ``.npz`` file.

        The fitted statistics are recomputed by :meth:`load` (cheap), so the file holds only
        data, no pickled objects.

        Args:
            path: Target file (``.npz``).
            metadata: JSON-ready extras, e.g. the backbone identity and how the set was drawn.
        """
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"params": self.get_params(), **(metadata or {})}
        np.savez_compressed(path, embeddings=self.embeddings_.astype(np.float16),
                            metadata=np.array(json.dumps(meta, sort_keys=True)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingReference:
        """Read a file written by :meth:`save` and refit on its embeddings.

        The file's metadata are kept in :attr:`metadata_`.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference file not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            embeddings = data["embeddings"].astype(np.float64)
            meta = json.loads(str(data["metadata"]))
        reference = cls(**meta.get("params", {})).fit(embeddings)
        reference.metadata_ = meta
        return reference

    def __repr__(self) -> str:
        fitted = (f", fitted on {len(self.embeddings_)} x {self.n_features_in_}, "
                  f"threshold_={self.threshold_:.4g}") if self.is_fitted else ""
        return f"EmbeddingReference(method={self.method!r}, k={self.k}, quantile={self.quantile}{fitted})"


def default_reference(backbone: Any) -> EmbeddingReference | None:
    """The reference shipped beside a backbone's weights, if any.

    Looks for :data:`REFERENCE_FILE_NAME` in the backbone's
    :attr:`~conceptlens.models.base.Backbone.weights_folder` (the folder a model was loaded
    from; the demo model's shipped weights for ``load_backbone("demo")``) and uses it only
    when the file records the same ``weights_hash`` as the backbone.

    Returns:
        The fitted reference, or ``None`` when there is none for this backbone.
    """
    identity = getattr(backbone, "identity", None)
    if identity is None:
        return None
    folder = weights_folder_of(backbone)
    if folder is None:
        return None
    path = folder / REFERENCE_FILE_NAME
    try:
        if not path.is_file():
            return None
    except OSError:
        return None
    reference = EmbeddingReference.load(path)
    stored = reference.metadata_.get("weights_hash")
    if stored is not None and stored != identity.weights_hash:
        return None
    return reference
