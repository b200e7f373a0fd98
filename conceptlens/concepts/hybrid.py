"""Hybrid concept bottleneck (PCBM-h): a concept bottleneck plus a residual on the embedding.

Post-hoc concept bottleneck models (Yuksekgonul et al., 2023) explain a decision through a
sparse linear model on concept scores; their hybrid form (PCBM-h) adds a linear residual on
the image embedding, fitted afterwards with the bottleneck frozen, to recover what the
concepts miss. The residual's share of each decision says how much of it the concepts do
NOT explain.

Decision of output ``k`` for one image with transformed scores ``x`` and embedding ``e``::

    d_k = x @ coef_[k] + intercept_[k]                      (the bottleneck; intercept_ also
                                                             holds the residual's bias)
        + (e - embedding_mean_) @ residual_coef_[k]         (the residual, 0 at the mean)

so ``contributions + residual + intercept == decision`` exactly (see :meth:`decompose`).
``explain.ClassTarget`` builds the same sum from pixels (scores and embedding from the same
backbone; the embedding costs a second image-tower pass), so pixel attributions of a hybrid
model's class include what its residual reads.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, logsumexp, softmax
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_array, check_is_fitted

from conceptlens.concepts.base import ConceptBottleneckBase
from conceptlens.concepts.results import Contributions, InterventionResult
from conceptlens.concepts.sparse import SparseLinearBottleneck
from conceptlens.errors import ConceptlensError

__all__ = ["HybridBottleneck", "HybridDecomposition", "EmbeddingsError"]

_AUTO_CS = np.geomspace(1e-3, 10.0, 5)


class EmbeddingsError(ConceptlensError, ValueError):
    """The image embeddings given to a hybrid bottleneck are missing, of the wrong width,
    or do not line up with the concept scores."""


@dataclass
class HybridDecomposition:
    """A hybrid bottleneck's decisions split into concepts, residual and intercept.

    ``contributions.values.sum(-1) + residual + intercept == decision`` for every sample
    and output (to float rounding).

    Attributes:
        contributions: Per-concept contributions (reference = training mean).
        residual: ``(n_samples, n_outputs)`` the residual's term on the embedding.
        intercept: ``(n_outputs,)`` decision at the training mean scores and embedding.
        decision: ``(n_samples, n_outputs)`` decision values.
        residual_share: ``(n_samples, n_outputs)`` ``|residual| / (|residual| +
            sum_j |contribution_j|)``: the part of the decision the concepts do not explain
            (0 when both are zero).
    """

    contributions: Contributions
    residual: np.ndarray
    intercept: np.ndarray
    decision: np.ndarray
    residual_share: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """One row per sample and output: ``concepts`` (sum of contributions), ``residual``,
        ``intercept``, ``decision`` and ``residual_share``."""
        n, k = self.residual.shape
        outputs = self.contributions.outputs
        return pd.DataFrame(
            {
                "sample": np.repeat(np.asarray(self.contributions.sample_ids, dtype=object), k),
                "class": np.tile(np.asarray(outputs, dtype=object), n),
                "concepts": self.contributions.values.sum(axis=2).reshape(-1),
                "residual": self.residual.reshape(-1),
                "intercept": np.tile(self.intercept, n),
                "decision": self.decision.reshape(-1),
                "residual_share": self.residual_share.reshape(-1),
            }
        )

    def plot(self, sample: int = 0, output: int = 0, top_k: int = 8, ax: Any = None) -> Any:
        """Horizontal bars: the ``top_k`` largest concept contributions, the residual and the
        intercept of one sample's decision. Returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        values = self.contributions.values[sample, output]
        order = np.argsort(-np.abs(values), kind="stable")[:top_k]
        names = self.contributions.concept_names or {}
        labels = [names.get(self.contributions.concept_ids[j], self.contributions.concept_ids[j])
                  for j in order] + ["residual (embedding)", "intercept"]
        heights = list(values[order]) + [self.residual[sample, output], self.intercept[output]]
        colors = ["tab:red" if h > 0 else "tab:blue" for h in heights[:-2]] + ["tab:gray", "0.75"]
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 0.35 * len(labels) + 1))
        ax.barh(range(len(labels)), heights, color=colors)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.8)
        share = self.residual_share[sample, output]
        ax.set_title(f"decision {self.decision[sample, output]:+.3f} "
                     f"(residual share {share:.0%})")
        ax.set_xlabel("contribution to the decision value")
        return ax

    def __repr__(self) -> str:
        n, k = self.residual.shape
        return (f"HybridDecomposition({n} samples x {k} outputs, mean residual share "
                f"{float(np.mean(self.residual_share)):.1%})")

    def _repr_html_(self) -> str:
        return (f"<div><p><b>{html.escape(repr(self))}</b></p>"
                f"{self.to_frame().head(20).to_html(escape=True)}</div>")


def _offset_logistic(
    E: np.ndarray, y: np.ndarray, offset: np.ndarray, n_outputs: int, C: float,
    init: np.ndarray | None = None, max_iter: int = 500, tol: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """L2 logistic regression with a fixed offset (the frozen bottleneck's decision).

    Minimises ``sum_i loss(offset_i + E_i W^T + b) + ||W||^2 / (2 C)`` (softmax loss for
    ``n_outputs > 1``, sigmoid loss for one output). Returns ``(W, b, converged, n_iter)``.
    """
    n, d = E.shape
    K = n_outputs
    Y = (y == 1).astype(float)[:, None] if K == 1 else np.eye(K)[y]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: K * d].reshape(K, d), theta[K * d:]
        z = offset + E @ W.T + b[None, :]
        if K == 1:
            loss = float(np.sum(np.logaddexp(0.0, z) - Y * z))
            G = expit(z) - Y
        else:
            loss = float(np.sum(logsumexp(z, axis=1) - np.sum(Y * z, axis=1)))
            G = softmax(z, axis=1) - Y
        loss += 0.5 / C * float(np.sum(W * W))
        grad = np.concatenate([(G.T @ E + W / C).ravel(), G.sum(axis=0)])
        return loss / n, grad / n

    theta0 = np.zeros(K * d + K) if init is None else init
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-12})
    theta = res.x
    return theta[: K * d].reshape(K, d), theta[K * d:], bool(res.success), max(int(res.nit), 1)


class HybridBottleneck(ConceptBottleneckBase):
    """PCBM-h: a concept bottleneck, then a linear residual on the image embedding.

    Fitted as in the paper: first the concept bottleneck on the scores alone, then, with it
    frozen, an L2-penalised logistic residual on the standardised embedding whose input is
    the bottleneck's decision as a fixed offset. The residual's share of each decision
    (:meth:`decompose`, :meth:`residual_share`) says how much the concepts leave unexplained.

    Args:
        bottleneck: The concept bottleneck (a :class:`ConceptBottleneckBase`; default
            ``SparseLinearBottleneck()``). Cloned; its ``input_transform`` is replaced by
            this model's.
        residual_C: Inverse L2 strength of the residual (per standardised embedding
            dimension), or ``"auto"``: the best of ``geomspace(1e-3, 10, 5)`` by
            ``residual_cv``-fold cross-validated log-loss (the bottleneck stays frozen).
        residual_cv: Folds for ``residual_C="auto"``.
        max_iter: L-BFGS iterations for the residual.
        random_state: Seed of the fold split.
        input_transform: ``"identity"`` or ``"logit"``, as for every bottleneck.

    Every method that reads scores takes ``embeddings``: ``(n_samples, embed_dim)`` image
    embeddings (e.g. ``ConceptScorer.embed(images)``; a DataFrame indexed by image id is
    aligned to the scores' image ids). Without ``embeddings`` at fit time the residual reads
    the (transformed) scores themselves: a dense correction of the sparse bottleneck.

    Attributes:
        bottleneck_: The fitted concept bottleneck.
        coef_: ``(n_outputs, n_concepts)`` the bottleneck's weights (original units).
        intercept_: ``(n_outputs,)`` the bottleneck's intercept plus the residual's bias.
        residual_coef_: ``(n_outputs, embed_dim)`` residual weights (original units).
        embedding_mean_: ``(embed_dim,)`` training mean embedding (the residual is 0 there).
        embedding_scale_: ``(embed_dim,)`` training standard deviation per dimension.
        residual_C_: The ``C`` used for the residual.
        uses_embeddings_: Whether the residual reads embeddings (else the scores).
        n_embedding_features_: ``embed_dim``.
        concept_accuracy_: Training accuracy of the bottleneck alone.
        n_iter_: L-BFGS iterations of the residual's final fit.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(300, 5)); E = rng.normal(size=(300, 8))
        >>> y = (X[:, 0] + E[:, 0] > 0).astype(int)
        >>> model = HybridBottleneck(residual_C=1.0).fit(X, y, embeddings=E)
        >>> parts = model.decompose(X, embeddings=E)
        >>> bool(np.allclose(parts.contributions.values.sum(-1) + parts.residual
        ...                  + parts.intercept, model.decision_function(X, embeddings=E)[:, None]))
        True
    """

    _array_attributes = ("residual_coef_", "embedding_mean_", "embedding_scale_")
    _json_attributes = ("residual_C_", "uses_embeddings_", "n_embedding_features_",
                        "concept_accuracy_", "n_iter_")

    def __init__(
        self,
        bottleneck: ConceptBottleneckBase | None = None,
        *,
        residual_C: float | str = "auto",
        residual_cv: int = 3,
        max_iter: int = 500,
        random_state: int | None = 0,
        input_transform: str = "identity",
    ) -> None:
        self.bottleneck = bottleneck
        self.residual_C = residual_C
        self.residual_cv = residual_cv
        self.max_iter = max_iter
        self.random_state = random_state
        self.input_transform = input_transform

    # ------------------------------------------------------------------ helpers
    def _check_params(self) -> None:
        if self.residual_C != "auto" and (
            not isinstance(self.residual_C, Real) or not float(self.residual_C) > 0
        ):
            raise ValueError(f"residual_C must be 'auto' or a positive number, got {self.residual_C!r}")
        if not isinstance(self.residual_cv, int) or self.residual_cv < 2:
            raise ValueError(f"residual_cv must be an integer >= 2, got {self.residual_cv!r}")
        if self.bottleneck is not None and not isinstance(self.bottleneck, ConceptBottleneckBase):
            raise TypeError("bottleneck must be a conceptlens concept bottleneck, got "
                            f"{type(self.bottleneck).__name__}")

    def _embeddings(self, embeddings: Any, X: Any, X_t: np.ndarray, fitting: bool) -> np.ndarray:
        """The residual's input ``(n, d)``, aligned to the rows of ``X``."""
        uses = embeddings is not None if fitting else self.uses_embeddings_
        if not uses:
            if embeddings is not None:
                raise EmbeddingsError("this hybrid bottleneck was fitted without embeddings "
                                      "(its residual reads the scores); do not pass embeddings")
            return X_t
        if embeddings is None:
            raise EmbeddingsError(
                "this hybrid bottleneck's residual reads image embeddings: pass embeddings= "
                "(e.g. scorer.embed(images)) with the scores"
            )
        ids = getattr(X, "image_ids", None)
        if ids is None and isinstance(X, pd.DataFrame):
            ids = list(X.index)
        if isinstance(embeddings, pd.DataFrame) and ids is not None:
            missing = [i for i in ids if i not in embeddings.index]
            if missing and len(embeddings) == len(X_t) and not set(ids) & set(embeddings.index):
                pass  # unrelated indexes (e.g. 0..n-1): align by position
            elif missing:
                raise EmbeddingsError(f"embeddings lack {len(missing)} of the scores' images, "
                                      f"e.g. {missing[:3]}")
            else:
                embeddings = embeddings.loc[ids]
        E = check_array(embeddings, dtype=np.float64)
        if len(E) != len(X_t):
            raise EmbeddingsError(f"{len(E)} embeddings for {len(X_t)} rows of scores")
        if not fitting and E.shape[1] != self.n_embedding_features_:
            raise EmbeddingsError(f"embeddings have {E.shape[1]} dimensions; the model was "
                                  f"fitted on {self.n_embedding_features_}")
        return E

    def _residual(self, E: np.ndarray) -> np.ndarray:
        return (E - self.embedding_mean_[None, :]) @ self.residual_coef_.T

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any, embeddings: Any = None) -> HybridBottleneck:
        """Fit the bottleneck, then the residual with the bottleneck frozen.

        Args:
            X: ``(n_samples, n_concepts)`` concept scores.
            y: ``(n_samples,)`` class labels.
            embeddings: ``(n_samples, embed_dim)`` image embeddings, or ``None`` (the
                residual then reads the scores).

        Returns:
            self
        """
        self._check_params()
        X_t, y_enc = self._validate_fit_data(X, y)
        base = self.bottleneck if self.bottleneck is not None else SparseLinearBottleneck()
        # the inner model sees transformed scores; the transform is this model's
        inner = clone(base).set_params(input_transform="identity")
        inner.fit(X_t, y_enc)
        self.bottleneck_ = inner
        self.coef_ = np.asarray(inner.coef_, dtype=np.float64)
        self._set_standardisation(X_t)
        offset = X_t @ self.coef_.T + inner.intercept_[None, :]
        n_out = offset.shape[1]
        pred = (offset[:, 0] > 0).astype(int) if n_out == 1 else np.argmax(offset, axis=1)
        self.concept_accuracy_ = float(np.mean(pred == y_enc))

        E = self._embeddings(embeddings, X, X_t, fitting=True)
        self.uses_embeddings_ = embeddings is not None
        self.n_embedding_features_ = int(E.shape[1])
        self.embedding_mean_ = E.mean(axis=0)
        scale = E.std(axis=0)
        scale[scale < 1e-12 * np.maximum(1.0, np.abs(self.embedding_mean_))] = 1.0
        self.embedding_scale_ = scale
        Es = (E - self.embedding_mean_) / scale
        C = self._choose_C(Es, y_enc, offset) if self.residual_C == "auto" else float(self.residual_C)
        W, b, ok, self.n_iter_ = _offset_logistic(Es, y_enc, offset, n_out, C,
                                                  max_iter=self.max_iter)
        if not ok:
            from sklearn.exceptions import ConvergenceWarning

            warnings.warn(f"the residual's L-BFGS did not converge in max_iter={self.max_iter}",
                          ConvergenceWarning, stacklevel=2)
        self.residual_C_ = C
        self.residual_coef_ = W / scale[None, :]
        self.intercept_ = np.asarray(inner.intercept_, dtype=np.float64) + b
        return self

    def _choose_C(self, Es: np.ndarray, y: np.ndarray, offset: np.ndarray) -> float:
        n_splits = min(self.residual_cv, int(np.bincount(y).min()))
        if n_splits < 2:
            return float(_AUTO_CS[len(_AUTO_CS) // 2])
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        n_out = offset.shape[1]
        losses = np.zeros(len(_AUTO_CS))
        for tr, va in folds.split(Es, y):
            init = None
            for i, C in enumerate(_AUTO_CS):  # warm-started from the stronger penalty
                W, b, _, _ = _offset_logistic(Es[tr], y[tr], offset[tr], n_out, C, init=init,
                                           max_iter=self.max_iter)
                init = np.concatenate([W.ravel(), b])
                z = offset[va] + Es[va] @ W.T + b[None, :]
                if n_out == 1:
                    yy = (y[va] == 1).astype(float)
                    losses[i] += float(np.sum(np.logaddexp(0.0, z[:, 0]) - yy * z[:, 0]))
                else:
                    losses[i] += float(np.sum(logsumexp(z, axis=1) - z[np.arange(len(va)), y[va]]))
        return float(_AUTO_CS[int(np.argmin(losses))])

    # ------------------------------------------------------------------ read-out
    def _decision_both(self, X: Any, embeddings: Any) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        X_t, ids = self._transformed(X)
        E = self._embeddings(embeddings, X, X_t, fitting=False)
        return self._decision(X_t), self._residual(E), ids

    def decision_function(self, X: Any, embeddings: Any = None) -> np.ndarray:
        """Decision values: bottleneck plus residual.

        Returns:
            ``(n_samples,)`` for a binary model, else ``(n_samples, n_classes)``.
        """
        d, r, _ = self._decision_both(X, embeddings)
        d = d + r
        return d[:, 0] if self._binary else d

    def predict_proba(self, X: Any, embeddings: Any = None) -> np.ndarray:
        """``(n_samples, n_classes)`` class probabilities."""
        d, r, _ = self._decision_both(X, embeddings)
        return self._proba_from_decision(d + r)

    def predict_log_proba(self, X: Any, embeddings: Any = None) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X, embeddings))

    def predict(self, X: Any, embeddings: Any = None) -> np.ndarray:
        """``(n_samples,)`` predicted labels."""
        d, r, _ = self._decision_both(X, embeddings)
        return self._labels_from_decision(d + r)

    def score(self, X: Any, y: Any, sample_weight: Any = None, embeddings: Any = None) -> float:
        """Accuracy of :meth:`predict` (with ``embeddings``) on ``y``."""
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.predict(X, embeddings), sample_weight=sample_weight))

    def concept_decision_function(self, X: Any) -> np.ndarray:
        """The bottleneck's part of the decision alone (residual at the mean embedding)."""
        X_t, _ = self._transformed(X)
        d = self._decision(X_t)
        return d[:, 0] if self._binary else d

    # ------------------------------------------------------------------ explanations
    def decompose(self, X: Any, embeddings: Any = None) -> HybridDecomposition:
        """Split each decision into concept contributions, residual and intercept.

        Returns:
            :class:`HybridDecomposition`; ``contributions.values.sum(-1) + residual +
            intercept == decision``.
        """
        contributions = ConceptBottleneckBase.contributions(self, X, reference="mean")
        d, r, _ = self._decision_both(X, embeddings)
        concept_abs = np.abs(contributions.values).sum(axis=2)
        total = concept_abs + np.abs(r)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total > 0, np.abs(r) / total, 0.0)
        return HybridDecomposition(contributions=contributions, residual=r,
                                   intercept=contributions.intercept, decision=d + r,
                                   residual_share=share)

    def residual_share(self, X: Any, embeddings: Any = None) -> pd.DataFrame:
        """``(n_samples, n_outputs)`` share of each decision the concepts do not explain
        (see :class:`HybridDecomposition`), labelled by sample id and output class."""
        parts = self.decompose(X, embeddings)
        return pd.DataFrame(parts.residual_share, index=parts.contributions.sample_ids,
                            columns=[str(c) for c in self.output_classes_])

    def intervene(self, X: Any, values: Mapping[Any, Any], embeddings: Any = None) -> InterventionResult:
        """Set concepts to chosen values (the residual stays as it is) and report the change.

        See :meth:`ConceptBottleneckBase.intervene`; the decisions include the residual.
        """
        base = ConceptBottleneckBase.intervene(self, X, values)
        X_t, _ = self._transformed(X)
        r = self._residual(self._embeddings(embeddings, X, X_t, fitting=False))
        d0 = base.decision_before.to_numpy() + r
        d1 = base.decision_after.to_numpy() + r
        return self._intervention_result(d0, d1, base.decision_before.index, base.values)

    def _restore_after_load(self) -> None:
        check_is_fitted(self, "residual_coef_")
