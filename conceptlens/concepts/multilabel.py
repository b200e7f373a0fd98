"""Multilabel concept bottleneck: one sparse binary read-out per label over shared scores."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import clone
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from conceptlens.concepts._inputs import default_concept_ids, resolve_concept, unwrap_scores
from conceptlens.concepts.base import ConceptBottleneckBase
from conceptlens.concepts.results import InterventionResult, lookup_class
from conceptlens.concepts.score_space import (
    check_input_transform,
    score_space_of,
    transform_scores,
)
from conceptlens.concepts.sparse import SparseLinearBottleneck
from conceptlens.errors import ConceptlensWarning

__all__ = ["MultiLabelBottleneck"]


class MultiLabelBottleneck(ConceptBottleneckBase):
    """Concept bottleneck for multilabel targets (several findings per image).

    One binary bottleneck per label (a clone of ``bottleneck``, default
    ``SparseLinearBottleneck()``), on the same concept scores. With
    ``shared_concepts=True`` the labels share one concept set: the union of the per-label
    supports, cut to ``max_shared`` concepts by their largest standardised weight over
    labels, then every label refitted on that set (without a concept budget).

    ``y`` is an ``(n_samples, n_labels)`` 0/1 indicator matrix (a DataFrame's columns name
    the labels). A 1-D ``y`` is also accepted: then the model is one-vs-rest over its
    classes and predicts single labels, like any classifier (binary: one output).

    Args:
        bottleneck: The per-label binary bottleneck (cloned; ``input_transform`` is this
            model's).
        shared_concepts: One concept set for all labels (see above) instead of one per label.
        max_shared: Size cap of the shared set (``None``: the union as is).
        input_transform: ``"identity"`` or ``"logit"``, as for every bottleneck.

    Attributes:
        classes_: Multilabel: ``arange(n_labels)`` (scikit-learn's convention); 1-D ``y``:
            the class labels.
        labels_: Label names (a DataFrame ``y``'s columns, else ``label_j``), or the classes.
        coef_: ``(n_outputs, n_concepts)`` one row per label (original score units).
        intercept_: ``(n_outputs,)``.
        estimators_: The fitted per-output bottlenecks (not saved; ``None`` after loading).
        multilabel_: Whether ``y`` was an indicator matrix.
        support_: ``(n_concepts,)`` bool, the concepts any output uses.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(300, 6))
        >>> Y = np.column_stack([X[:, 0] > 0, X[:, 1] - X[:, 2] > 0]).astype(int)
        >>> model = MultiLabelBottleneck().fit(X, Y)
        >>> model.predict(X[:2]).shape
        (2, 2)
    """

    _array_attributes = ("support_",)
    _json_attributes = ("multilabel_", "labels_")

    def __init__(
        self,
        bottleneck: ConceptBottleneckBase | None = None,
        *,
        shared_concepts: bool = False,
        max_shared: int | None = None,
        input_transform: str = "identity",
    ) -> None:
        self.bottleneck = bottleneck
        self.shared_concepts = shared_concepts
        self.max_shared = max_shared
        self.input_transform = input_transform

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.target_tags.multi_output = True
        return tags

    # ------------------------------------------------------------------ fit
    def _validate_multilabel(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        data, prov = unwrap_scores(X)
        names = list(y.columns) if isinstance(y, pd.DataFrame) else None
        X_arr, Y = validate_data(self, data, y, dtype=np.float64, multi_output=True,
                                 y_numeric=False)
        check_input_transform(self._input_transform)
        X_arr = transform_scores(X_arr, self._input_transform)
        Y = np.asarray(Y)
        kind = type_of_target(Y)
        if Y.ndim == 2 and Y.shape[1] == 1:
            Y, kind = Y[:, 0], type_of_target(Y[:, 0])
        if Y.ndim == 2:
            if kind != "multilabel-indicator" and not np.isin(Y, (0, 1)).all():
                raise ValueError(f"multilabel y must be a 0/1 indicator matrix, got {kind}")
            self.multilabel_ = True
            self.labels_ = [str(c) for c in names] if names is not None else [
                f"label_{j}" for j in range(Y.shape[1])]
            # scikit-learn's multilabel convention: classes_[indicator] is the indicator
            self.classes_ = np.arange(Y.shape[1])
            targets = Y.astype(int)
        else:
            check_classification_targets(Y)
            classes, y_enc = np.unique(Y, return_inverse=True)
            if len(classes) < 2:
                raise ValueError(f"{type(self).__name__} needs at least two classes, but y "
                                 f"contains only one class ({classes[0]!r})")
            self.multilabel_ = False
            self.classes_ = classes
            self.labels_ = [c.item() if hasattr(c, "item") else c for c in classes]
            if len(classes) == 2:
                targets = y_enc[:, None]
            else:
                targets = np.eye(len(classes), dtype=int)[y_enc]
        feature_names = getattr(self, "feature_names_in_", None)
        self.concept_ids_ = ([str(c) for c in feature_names] if feature_names is not None
                             else default_concept_ids(X_arr.shape[1]))
        self.concept_names_ = {c: prov.concept_names[c] for c in self.concept_ids_
                               if c in prov.concept_names}
        self.vocabulary_hash_ = prov.vocabulary_hash
        self.backbone_ = prov.backbone
        self.score_space_ = score_space_of(prov.config)
        return X_arr, targets

    def fit(self, X: Any, y: Any) -> MultiLabelBottleneck:
        """Fit one binary bottleneck per label (or class).

        Args:
            X: ``(n_samples, n_concepts)`` concept scores.
            y: ``(n_samples, n_labels)`` 0/1 indicators, or ``(n_samples,)`` class labels.

        Returns:
            self
        """
        if self.max_shared is not None and (not isinstance(self.max_shared, int)
                                            or self.max_shared < 1):
            raise ValueError(f"max_shared must be None or an integer >= 1, got {self.max_shared!r}")
        X_t, targets = self._validate_multilabel(X, y)
        self._set_standardisation(X_t)
        fits = [self._fit_output(X_t, targets[:, k], k) for k in range(targets.shape[1])]
        if self.shared_concepts:
            std = np.vstack([np.abs(c) for c, _, _ in fits]) * self.scale_[None, :]
            strength = std.max(axis=0)
            chosen = np.flatnonzero(strength > 0)
            if self.max_shared is not None and len(chosen) > self.max_shared:
                chosen = chosen[np.argsort(-strength[chosen], kind="stable")[: self.max_shared]]
            chosen = np.sort(chosen)
            if len(chosen):
                fits = [self._fit_output(X_t, targets[:, k], k, columns=chosen, budget=False)
                        for k in range(targets.shape[1])]
        self.coef_ = np.vstack([c for c, _, _ in fits])
        self.intercept_ = np.array([b for _, b, _ in fits], dtype=np.float64)
        self.estimators_ = [m for _, _, m in fits]
        self.support_ = np.any(self.coef_ != 0, axis=0)
        return self

    def _fit_output(self, X_t: np.ndarray, t: np.ndarray, k: int, columns: Any = None,
                    budget: bool = True) -> tuple[np.ndarray, float, Any]:
        """``(coef row over all concepts, intercept, fitted bottleneck or None)``."""
        coef = np.zeros(X_t.shape[1])
        positives = int(t.sum())
        if positives in (0, len(t)):
            p = (positives + 0.5) / (len(t) + 1.0)
            warnings.warn(
                f"output {self._output_names()[k]!r} is {'always' if positives else 'never'} present in "
                "the training labels: it gets a constant prediction (no concepts)",
                ConceptlensWarning, stacklevel=3,
            )
            return coef, float(np.log(p / (1 - p))), None
        base = self.bottleneck if self.bottleneck is not None else SparseLinearBottleneck()
        model = clone(base).set_params(input_transform="identity")
        if not budget and "max_concepts" in model.get_params():
            model.set_params(max_concepts=None)
        cols = np.arange(X_t.shape[1]) if columns is None else np.asarray(columns)
        model.fit(X_t[:, cols], t)
        coef[cols] = np.asarray(model.coef_)[0]
        return coef, float(np.asarray(model.intercept_)[0]), model

    # ------------------------------------------------------------------ read-out
    @property
    def _binary(self) -> bool:
        return not self.multilabel_ and len(self.classes_) == 2

    def _output_names(self) -> list[Any]:
        if self.multilabel_ or len(self.labels_) > 2:
            return list(self.labels_)
        return list(self.labels_[1:])

    @property
    def output_classes_(self) -> list[Any]:
        """Name of each output row of ``coef_`` (multilabel: the label names)."""
        check_is_fitted(self)
        return self._output_names()

    def contributions(self, X: Any, reference: str = "mean") -> Any:
        """See :meth:`ConceptBottleneckBase.contributions`; outputs are named by label."""
        result = super().contributions(X, reference=reference)
        result.classes = list(self.labels_)
        return result

    def _output_weights(self, class_: Any) -> np.ndarray:
        check_is_fitted(self)
        i = lookup_class(class_, list(self.labels_))
        coef = self.coef_ * self.scale_[None, :]
        if self._binary:
            return coef[0] if i == 1 else -coef[0]
        return coef[i]

    def _expected_outputs(self) -> int:
        return len(self.classes_) if self.multilabel_ or len(self.classes_) > 2 else 1

    def _proba_from_decision(self, d: np.ndarray) -> np.ndarray:
        if self.multilabel_:
            return expit(d)
        if self._binary:
            return super()._proba_from_decision(d)
        p = expit(d)  # one-vs-rest, normalised
        return p / p.sum(axis=1, keepdims=True)

    def _labels_from_decision(self, d: np.ndarray) -> np.ndarray:
        if self.multilabel_:
            return (d > 0).astype(int)
        return super()._labels_from_decision(d)

    def predict(self, X: Any) -> np.ndarray:
        """Multilabel: ``(n_samples, n_labels)`` 0/1 indicators; else ``(n_samples,)`` labels."""
        return super().predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Multilabel: ``(n_samples, n_labels)`` probability of each label (independent);
        else ``(n_samples, n_classes)`` (one-vs-rest, normalised)."""
        return super().predict_proba(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """``(n_samples, n_outputs)`` decision values (binary 1-D ``y``: ``(n_samples,)``)."""
        return super().decision_function(X)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Multilabel: subset accuracy (every label right); else accuracy."""
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(np.asarray(y), self.predict(X), sample_weight=sample_weight))

    def label_frame(self, X: Any) -> pd.DataFrame:
        """Predicted indicators (multilabel) as a DataFrame: rows = sample ids, columns = labels."""
        check_is_fitted(self)
        X_t, ids = self._transformed(X)
        labels = self._labels_from_decision(self._decision(X_t))
        if not self.multilabel_:
            return pd.DataFrame({"prediction": labels}, index=ids)
        return pd.DataFrame(labels, index=ids, columns=[str(c) for c in self.labels_])

    def intervene(self, X: Any, values: Mapping[Any, Any]) -> InterventionResult:
        """As :meth:`ConceptBottleneckBase.intervene`; multilabel predictions are tuples of
        the labels predicted present."""
        if not self.multilabel_:
            return super().intervene(X, values)
        X_arr, sample_ids = self._validate_predict_data(X)
        X_new = X_arr.copy()
        applied: dict[str, Any] = {}
        if not isinstance(values, Mapping) or not values:
            raise ValueError("values must be a non-empty mapping {concept: value}")
        for key, value in values.items():
            j = resolve_concept(key, self.concept_ids_, self.concept_names_)
            v = np.asarray(value, dtype=np.float64)
            if v.ndim > 1 or (v.ndim == 1 and len(v) != len(X_new)) or not np.all(np.isfinite(v)):
                raise ValueError(f"value for concept {key!r} must be a finite scalar or one "
                                 f"entry per sample ({len(X_new)})")
            X_new[:, j] = v
            applied[self.concept_ids_[j]] = v.item() if v.ndim == 0 else v
        d0 = self._decision(transform_scores(X_arr, self._input_transform))
        d1 = self._decision(transform_scores(X_new, self._input_transform))
        index = pd.Index(sample_ids, name="sample")
        labels = [str(c) for c in self.labels_]

        def as_sets(d: np.ndarray) -> pd.Series:
            present = [tuple(labels[j] for j in np.flatnonzero(row > 0)) for row in d]
            return pd.Series(present, index=index, name="prediction", dtype=object)

        return InterventionResult(
            predictions_before=as_sets(d0), predictions_after=as_sets(d1),
            decision_before=pd.DataFrame(d0, index=index, columns=labels),
            decision_after=pd.DataFrame(d1, index=index, columns=labels),
            proba_before=pd.DataFrame(expit(d0), index=index, columns=labels),
            proba_after=pd.DataFrame(expit(d1), index=index, columns=labels),
            values=applied,
        )

    def _restore_after_load(self) -> None:
        self.estimators_ = None
        self.support_ = np.asarray(self.support_, dtype=bool)
