"""Association bottleneck (LaBo style): classes as softmax-weighted mixtures of concepts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from conceptlens.concepts._inputs import resolve_concept
from conceptlens.concepts.base import ConceptBottleneckBase

__all__ = ["AssociationBottleneck"]

_SMALL_PROBLEM = 1 << 20  # below this many multiply-adds per epoch threads only add overhead


@contextmanager
def _training_threads(work: int, n_threads: int | None) -> Iterator[None]:
    """Use ``n_threads`` torch threads (tiny problems: one) while training, then restore."""
    previous = torch.get_num_threads()
    wanted = 1 if work < _SMALL_PROBLEM else (n_threads or previous)
    if wanted != previous:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


class AssociationBottleneck(ConceptBottleneckBase):
    """Class x concept association matrix, row-softmaxed, trained with cross-entropy.

    Each class's logit is a convex combination of the (standardised) concept scores:
    ``logits = Zp @ softmax(W, axis=1).T * logit_scale + bias`` with ``W`` initialised from a
    class -> concepts prior (Yang et al., LaBo, CVPR 2023; used by the ConceptCLIP authors).
    With ``polarity="positive"`` (original LaBo) ``Zp = Z``, the standardised scores, and
    ``W`` is ``(n_classes, n_concepts)``: a class can only be supported by the *presence* of
    its concepts, and with few concepts all decision boundaries are parallel. The default
    ``polarity="both"`` also offers each concept's *absence*: ``Zp = [Z, -Z]`` and ``W`` is
    ``(n_classes, 2 n_concepts)``, so a class may rely on a finding being absent ("no blue-white
    veil"); the net association of a concept is ``present - absent`` weight, in ``[-1, 1]``.
    Training is full-batch (or seeded mini-batch) Adam in float64 on CPU, hence deterministic.

    Args:
        prior: Mapping class label -> concepts associated with it, either a list of concept ids /
            preferred names (each starts at weight ``prior_strength``) or a mapping concept ->
            initial weight (a negative weight initialises the concept's *absence*, which needs
            ``polarity="both"``). Concepts not listed start at 0. ``None``: uniform start.
        prior_strength: Initial association logit of a listed concept.
        polarity: ``"both"`` (presence and absence of each concept) or ``"positive"``
            (presence only, as in LaBo).
        logit_scale: Multiplier of the class scores (a softmax temperature).
        fit_intercept: Learn a per-class bias.
        standardize: Standardise each concept score first (recommended for CLIP-like scores,
            which share a large common offset).
        sparsity: Weight of the mean row entropy of ``softmax(W)`` (pushes each class to rely
            on few concepts).
        diversity: Weight of the mean pairwise cosine similarity between class rows (pushes
            classes to rely on different concepts).
        n_epochs: Passes over the data.
        lr: Adam learning rate.
        batch_size: Mini-batch size; ``None`` for full batch.
        class_weight: ``None``, ``"balanced"`` or a mapping class -> weight (cross-entropy weights).
        random_state: Seed of the mini-batch order.
        progress: Show a ``tqdm`` bar over epochs.
        n_threads: Torch threads used for training (restored afterwards); ``None`` keeps
            torch's setting. Tiny problems always train on one thread (less overhead). On a
            machine shared with other jobs, ``1`` is often fastest.
        input_transform: Transform of the scores before the linear read-out: ``"identity"``
            or ``"logit"`` (log-odds; for probabilities, e.g. ``calibration="sigmoid"``
            scores). Applied in ``fit`` and in everything that reads scores afterwards, and
            saved with the model.

    Attributes:
        association_: ``(n_classes, n_concepts)`` net association: softmax weight of the
            concept's presence minus that of its absence (rows' absolute values sum to <= 1).
        assoc_logits_: ``(n_classes, n_concepts)`` or ``(n_classes, 2 n_concepts)`` trained ``W``
            (presence columns first).
        bias_: ``(n_classes,)`` trained per-class bias (zeros without ``fit_intercept``).
        class_coef_: ``(n_classes, n_concepts)`` per-class logit weights in original units.
        class_intercept_: ``(n_classes,)`` per-class logit intercepts in original units.
        coef_, intercept_: decision weights in original units; for two classes the difference
            ``class 1 - class 0`` (``(1, n_concepts)``), else ``class_coef_``.
        loss_curve_: ``(n_epochs,)`` training objective after each epoch.
        n_iter_: Number of epochs run.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(120, 3)); y = np.where(X[:, 0] > X[:, 1], "nevus", "melanoma")
        >>> X = __import__("pandas").DataFrame(X, columns=["dots", "veil", "lines"])
        >>> m = AssociationBottleneck(prior={"nevus": ["dots"], "melanoma": ["veil"]}).fit(X, y)
        >>> m.association_frame().idxmax(axis=1).to_dict()
        {'melanoma': 'veil', 'nevus': 'dots'}
    """

    _array_attributes = ("assoc_logits_", "bias_", "loss_curve_")
    _json_attributes = ("n_iter_",)

    def __init__(
        self,
        prior: Mapping[Any, Any] | None = None,
        *,
        prior_strength: float = 2.0,
        polarity: str = "both",
        logit_scale: float = 5.0,
        fit_intercept: bool = True,
        standardize: bool = True,
        sparsity: float = 0.0,
        diversity: float = 0.0,
        n_epochs: int = 300,
        lr: float = 0.05,
        batch_size: int | None = None,
        class_weight: Any = None,
        random_state: int | None = 0,
        progress: bool = False,
        n_threads: int | None = None,
        input_transform: str = "identity",
    ) -> None:
        self.prior = prior
        self.prior_strength = prior_strength
        self.polarity = polarity
        self.logit_scale = logit_scale
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.sparsity = sparsity
        self.diversity = diversity
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.random_state = random_state
        self.progress = progress
        self.n_threads = n_threads
        self.input_transform = input_transform

    def _check_params(self) -> None:
        for name in ("prior_strength", "logit_scale", "sparsity", "diversity", "lr"):
            v = getattr(self, name)
            if not isinstance(v, Real) or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        for name in ("sparsity", "diversity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.lr <= 0 or self.logit_scale <= 0:
            raise ValueError("lr and logit_scale must be > 0")
        if not isinstance(self.n_epochs, Integral) or self.n_epochs < 1:
            raise ValueError(f"n_epochs must be an integer >= 1, got {self.n_epochs!r}")
        if self.batch_size is not None and (
            not isinstance(self.batch_size, Integral) or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be None or an integer >= 1, got {self.batch_size!r}")
        if self.polarity not in ("both", "positive"):
            raise ValueError(f"polarity must be 'both' or 'positive', got {self.polarity!r}")
        if self.n_threads is not None and (
            not isinstance(self.n_threads, Integral) or self.n_threads < 1
        ):
            raise ValueError(f"n_threads must be None or an integer >= 1, got {self.n_threads!r}")
        if self.prior is not None and not isinstance(self.prior, Mapping):
            raise TypeError(
                f"prior must be a mapping class -> concepts, got {type(self.prior).__name__}"
            )

    def _init_logits(self) -> np.ndarray:
        labels = [c.item() if hasattr(c, "item") else c for c in self.classes_]
        p = len(self.concept_ids_)
        W = np.zeros((len(labels), 2 * p if self.polarity == "both" else p))
        for class_key, concepts in (self.prior or {}).items():
            if class_key in labels:
                row = labels.index(class_key)
            elif str(class_key) in [str(c) for c in labels]:
                row = [str(c) for c in labels].index(str(class_key))
            else:
                raise ValueError(f"prior names class {class_key!r}, which is not in y (classes: {labels})")
            items = concepts.items() if isinstance(concepts, Mapping) else (
                [(concepts, self.prior_strength)] if isinstance(concepts, str)
                else [(c, self.prior_strength) for c in concepts]
            )
            for concept, weight in items:
                j = resolve_concept(
                    concept, self.concept_ids_, self.concept_names_,
                    what=f"concept in the prior of class {class_key!r}",
                )
                weight = float(weight)
                if weight < 0 and self.polarity != "both":
                    raise ValueError(
                        f"prior weight {weight} for concept {concept!r} of class {class_key!r} is "
                        "negative; negative (absence) priors need polarity='both'"
                    )
                W[row, j if weight >= 0 else j + p] = abs(weight)
        return W

    def fit(self, X: Any, y: Any) -> AssociationBottleneck:
        """Train the association matrix.

        Args:
            X: ``(n_samples, n_concepts)`` concept scores (``ConceptScores``, DataFrame, array).
            y: ``(n_samples,)`` class labels (at least two classes).

        Returns:
            self

        Raises:
            UnknownConceptError: The prior names a concept that is not a column of ``X``.
            ValueError: The prior names a class absent from ``y``; bad input data.
        """
        self._check_params()
        X_arr, y_enc = self._validate_fit_data(X, y)
        self._set_standardisation(X_arr)
        if not self.standardize:
            self.mean_, self.scale_ = np.zeros(X_arr.shape[1]), np.ones(X_arr.shape[1])
        W0 = self._init_logits()
        n_classes = len(self.classes_)
        if self.class_weight is None:
            cw = None
        else:
            cw_arr = compute_class_weight(
                self.class_weight, classes=np.arange(n_classes), y=y_enc
            ) if isinstance(self.class_weight, str) else np.array(
                [float(self._class_weight_dict().get(c.item() if hasattr(c, "item") else c, 1.0))
                 for c in self.classes_]
            )
            cw = torch.as_tensor(cw_arr, dtype=torch.float64)

        dtype = torch.float64
        Z_np = (X_arr - self.mean_) / self.scale_
        if self.polarity == "both":
            Z_np = np.hstack([Z_np, -Z_np])
        Z = torch.as_tensor(Z_np, dtype=dtype)
        target = torch.as_tensor(y_enc, dtype=torch.long)
        W = torch.nn.Parameter(torch.as_tensor(W0, dtype=dtype))
        bias = torch.nn.Parameter(torch.zeros(n_classes, dtype=dtype))
        params = [W, bias] if self.fit_intercept else [W]
        opt = torch.optim.Adam(params, lr=float(self.lr))
        gen = torch.Generator().manual_seed(int(self.random_state or 0))
        n = len(target)
        bs = n if self.batch_size is None else min(int(self.batch_size), n)
        losses = np.empty(int(self.n_epochs))
        with _training_threads(Z.numel() * n_classes, self.n_threads):
            for epoch in tqdm(range(int(self.n_epochs)), disable=not self.progress,
                              desc="association"):
                order = torch.randperm(n, generator=gen) if bs < n else torch.arange(n)
                total = 0.0
                for start in range(0, n, bs):
                    idx = order[start:start + bs]
                    opt.zero_grad()
                    loss = self._objective(W, bias, Z[idx], target[idx], cw)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                losses[epoch] = total / n

        self.assoc_logits_ = W.detach().numpy().copy()
        self.bias_ = bias.detach().numpy().copy()
        self.loss_curve_ = losses
        self.n_iter_ = int(self.n_epochs)
        self._restore_after_load()
        return self

    def _class_weight_dict(self) -> dict[Any, float]:
        labels = [c.item() if hasattr(c, "item") else c for c in self.classes_]
        unknown = [k for k in self.class_weight if k not in labels]
        if unknown:
            raise ValueError(f"class_weight names unknown classes {unknown}; classes are {labels}")
        return dict(self.class_weight)

    def _objective(self, W, bias, Z, target, class_weight) -> torch.Tensor:
        A = torch.softmax(W, dim=1)
        logits = Z @ A.T * float(self.logit_scale) + bias
        loss = torch.nn.functional.cross_entropy(logits, target, weight=class_weight)
        if self.sparsity > 0:
            entropy = -(A * torch.log_softmax(W, dim=1)).sum(dim=1).mean()
            loss = loss + float(self.sparsity) * entropy
        if self.diversity > 0 and A.shape[0] > 1:
            An = torch.nn.functional.normalize(A, dim=1)
            sim = An @ An.T
            k = A.shape[0]
            loss = loss + float(self.diversity) * (sim.sum() - sim.diagonal().sum()) / (k * (k - 1))
        return loss

    def _restore_after_load(self) -> None:
        W = self.assoc_logits_
        A = np.exp(W - W.max(axis=1, keepdims=True))
        A /= A.sum(axis=1, keepdims=True)
        p = self.mean_.shape[0]
        if A.shape[1] == 2 * p:
            A = A[:, :p] - A[:, p:]
        self.association_ = A
        scaled = A * float(self.logit_scale)
        self.class_coef_ = scaled / self.scale_[None, :]
        bias = self.bias_ if self.fit_intercept else np.zeros_like(self.bias_)
        self.class_intercept_ = bias - self.class_coef_ @ self.mean_
        if len(self.classes_) == 2:
            self.coef_ = self.class_coef_[1:2] - self.class_coef_[0:1]
            self.intercept_ = self.class_intercept_[1:2] - self.class_intercept_[0:1]
        else:
            self.coef_ = self.class_coef_
            self.intercept_ = self.class_intercept_

    def association_frame(self) -> pd.DataFrame:
        """``association_`` labelled: classes x concept ids (net presence - absence weight)."""
        check_is_fitted(self)
        labels = [c.item() if hasattr(c, "item") else c for c in self.classes_]
        return pd.DataFrame(self.association_, index=pd.Index(labels, name="class"),
                            columns=pd.Index(self.concept_ids_, name="concept"))
