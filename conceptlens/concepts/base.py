"""Shared machinery of the concept bottlenecks: validation, linear read-out, explanations.

Both bottlenecks are linear in the concept scores once fitted, so every explanation
(contributions, interventions, importance) is computed here from two attributes the
subclasses set: ``coef_`` ``(n_outputs, n_concepts)`` and ``intercept_`` ``(n_outputs,)``,
both in the ORIGINAL score units, such that ``decision_function(X) = X @ coef_.T + intercept_``.
A binary model has one output (the positive class ``classes_[1]``), a multiclass model one
output per class.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from conceptlens.concepts._inputs import (
    check_vocabulary,
    default_concept_ids,
    resolve_concept,
    unwrap_scores,
)
from conceptlens.concepts.persistence import (
    load_bottleneck,
    register_bottleneck,
    save_bottleneck,
)
from conceptlens.concepts.results import Contributions, InterventionResult, lookup_class
from conceptlens.concepts.score_space import (
    check_input_transform,
    check_score_space,
    score_space_of,
    transform_scores,
)

__all__ = ["ConceptBottleneckBase"]


class ConceptBottleneckBase(ClassifierMixin, BaseEstimator):
    """Base class of concept-bottleneck classifiers (not used directly).

    Fitted attributes shared by every bottleneck:
        classes_: ``(n_classes,)`` class labels.
        coef_: ``(n_outputs, n_concepts)`` weights in original score units.
        intercept_: ``(n_outputs,)`` intercepts in original score units.
        mean_: ``(n_concepts,)`` training mean of each concept score (the reference point
            of contributions).
        scale_: ``(n_concepts,)`` training standard deviation (1 where constant).
        concept_ids_: Concept id of each input column (``concept_j`` for unlabelled arrays).
        concept_names_: Concept id -> preferred name (from ``ConceptScores``).
        vocabulary_hash_: Vocabulary hash of the training scores, or ``None``.
        backbone_: Backbone identity dict of the training scores, or ``None``.
        score_space_: The scorer settings of the training scores (mode, alpha, aggregation,
            calibration, prompts; see :mod:`conceptlens.concepts.score_space`), or ``None``
            when they were not a ``ConceptScores``. Scores fed later with other settings
            raise :class:`~conceptlens.errors.ScoreSpaceMismatchError`.
        n_features_in_, feature_names_in_: as in scikit-learn.

    Every bottleneck takes ``input_transform`` (``"identity"`` or ``"logit"``): the transform
    applied to the scores inside ``fit``, ``predict``, ``decision_function``,
    ``contributions`` and ``intervene``. ``coef_``, ``mean_`` and contributions are in the
    transformed units; intervention values are given in score units and transformed too.

    Every subclass registers itself (with
    :func:`~conceptlens.concepts.persistence.register_bottleneck`) when it is defined, so
    :func:`~conceptlens.concepts.persistence.load_bottleneck` restores it by class name
    without importing it.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_bottleneck(cls)

    # ------------------------------------------------------------------ validation
    def _validate_fit_data(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        data, prov = unwrap_scores(X)
        X_arr, y_arr = validate_data(self, data, y, dtype=np.float64, ensure_min_samples=1)
        check_input_transform(self._input_transform)
        X_arr = transform_scores(X_arr, self._input_transform)
        check_classification_targets(y_arr)
        classes, y_enc = np.unique(y_arr, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least two classes, but y contains only one "
                f"class ({classes[0]!r})"
            )
        self.classes_ = classes
        names = getattr(self, "feature_names_in_", None)
        self.concept_ids_ = (
            [str(c) for c in names] if names is not None else default_concept_ids(X_arr.shape[1])
        )
        self.concept_names_ = {c: prov.concept_names[c] for c in self.concept_ids_ if c in prov.concept_names}
        self.vocabulary_hash_ = prov.vocabulary_hash
        self.backbone_ = prov.backbone
        self.score_space_ = score_space_of(prov.config)
        return X_arr, y_enc

    @property
    def _input_transform(self) -> str:
        return getattr(self, "input_transform", "identity")

    def _validate_predict_data(self, X: Any) -> tuple[np.ndarray, list[Any]]:
        """Validated RAW scores (not transformed) and their sample ids."""
        check_is_fitted(self)
        data, prov = unwrap_scores(X)
        check_vocabulary(self.vocabulary_hash_, prov.vocabulary_hash, where=type(self).__name__)
        check_score_space(self, config=prov.config, where="these scores")
        X_arr = validate_data(self, data, dtype=np.float64, reset=False)
        sample_ids = prov.sample_ids if prov.sample_ids is not None else list(range(len(X_arr)))
        return X_arr, sample_ids

    def transform_scores(self, X: Any) -> np.ndarray:
        """The scores in the space the linear read-out works in (``input_transform`` applied).

        Args:
            X: ``(n_samples, n_concepts)`` scores (``ConceptScores``, DataFrame or array).

        Returns:
            ``(n_samples, n_concepts)`` array: ``decision_function(X) == transform_scores(X)
            @ coef_.T + intercept_``.
        """
        X_arr, _ = self._validate_predict_data(X)
        return transform_scores(X_arr, self._input_transform)

    def _transformed(self, X: Any) -> tuple[np.ndarray, list[Any]]:
        X_arr, sample_ids = self._validate_predict_data(X)
        return transform_scores(X_arr, self._input_transform), sample_ids

    def _set_standardisation(self, X: np.ndarray) -> None:
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-12 * np.maximum(1.0, np.abs(self.mean_))] = 1.0
        self.scale_ = scale

    # ------------------------------------------------------------------ read-out
    @property
    def _binary(self) -> bool:
        return len(self.classes_) == 2

    def _expected_outputs(self) -> int:
        """Rows of ``coef_`` for the fitted classes (binary: 1)."""
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    @property
    def output_classes_(self) -> list[Any]:
        """Class label of each output row of ``coef_`` (binary: only ``classes_[1]``)."""
        check_is_fitted(self)
        labels = self.classes_[1:] if self._binary else self.classes_
        return [c.item() if hasattr(c, "item") else c for c in labels]

    def _decision(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_.T + self.intercept_[None, :]

    def _proba_from_decision(self, d: np.ndarray) -> np.ndarray:
        if self._binary:
            p1 = expit(d[:, 0])
            return np.column_stack([1.0 - p1, p1])
        return softmax(d, axis=1)

    def _labels_from_decision(self, d: np.ndarray) -> np.ndarray:
        if self._binary:
            return self.classes_[(d[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(d, axis=1)]

    def decision_function(self, X: Any) -> np.ndarray:
        """Decision values ``X @ coef_.T + intercept_``.

        Args:
            X: ``(n_samples, n_concepts)`` scores (``ConceptScores``, DataFrame or array).

        Returns:
            ``(n_samples,)`` for a binary model (positive means ``classes_[1]``), else
            ``(n_samples, n_classes)``.
        """
        X_arr, _ = self._transformed(X)
        d = self._decision(X_arr)
        return d[:, 0] if self._binary else d

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n_samples, n_classes)`` class probabilities (softmax / sigmoid of the decision)."""
        X_arr, _ = self._transformed(X)
        return self._proba_from_decision(self._decision(X_arr))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """``(n_samples,)`` predicted class labels."""
        X_arr, _ = self._transformed(X)
        return self._labels_from_decision(self._decision(X_arr))

    # ------------------------------------------------------------------ explanations
    def coef_frame(self, standardized: bool = False) -> pd.DataFrame:
        """``coef_`` as a labelled DataFrame, outputs (classes) x concept ids.

        Args:
            standardized: If true, weights per training standard deviation of each concept
                (``coef_ * scale_``), comparable across concepts.
        """
        check_is_fitted(self)
        coef = self.coef_ * self.scale_[None, :] if standardized else self.coef_
        frame = pd.DataFrame(coef, index=pd.Index(self.output_classes_, name="class"),
                             columns=pd.Index(self.concept_ids_, name="concept"))
        return frame

    def contributions(self, X: Any, reference: str = "mean") -> Contributions:
        """Each concept's signed contribution to each output's decision value.

        Args:
            X: ``(n_samples, n_concepts)`` scores.
            reference: ``"mean"``: contribution ``coef_ * (x - mean_)`` (zero for a training-
                average score) and ``intercept`` is the decision at the training mean;
                ``"zero"``: contribution ``coef_ * x`` and ``intercept`` is ``intercept_``.

        Returns:
            :class:`Contributions` with ``values`` ``(n_samples, n_outputs, n_concepts)``;
            ``values.sum(-1) + intercept`` equals the decision values (binary: one output,
            ``decision_function(X) == values[:, 0].sum(-1) + intercept[0]``).
        """
        X_arr, sample_ids = self._transformed(X)
        if reference == "mean":
            ref = self.mean_
        elif reference == "zero":
            ref = np.zeros_like(self.mean_)
        else:
            raise ValueError(f"reference must be 'mean' or 'zero', got {reference!r}")
        values = (X_arr - ref[None, :])[:, None, :] * self.coef_[None, :, :]
        intercept = self.intercept_ + self.coef_ @ ref
        return Contributions(
            values=values,
            intercept=intercept,
            outputs=self.output_classes_,
            concept_ids=list(self.concept_ids_),
            sample_ids=sample_ids,
            reference=reference,
            concept_names=dict(self.concept_names_),
            classes=[c.item() if hasattr(c, "item") else c for c in self.classes_],
        )

    def class_weights(self, label: Any) -> tuple[np.ndarray, float]:
        """The linear decision of one class: its concept weights and intercept.

        The one place that holds the sign convention of binary models: they have one output
        row (the positive class ``classes_[1]``, as in scikit-learn), and the negative class
        ``classes_[0]`` gets the negated weights and intercept, so that every class's
        decision value is ``transform_scores(X) @ weights + intercept``.

        Parameters
        ----------
        label : object
            One of :attr:`classes_` (exact match, numpy scalars unwrapped: ``"1"`` is not
            ``1``).

        Returns
        -------
        weights : numpy.ndarray
            ``(n_concepts,)`` float64 weights in the transformed score units of
            ``input_transform``, one per column of :attr:`concept_ids_`.
        intercept : float
            The decision value at transformed scores of zero.

        Raises
        ------
        UnknownClassError
            ``label`` is not one of :attr:`classes_` (a ``KeyError``).
        sklearn.exceptions.NotFittedError
            The model is not fitted.

        Examples
        --------
        >>> weights, intercept = model.class_weights("melanoma")       # doctest: +SKIP
        >>> np.allclose(model.transform_scores(X) @ weights + intercept,
        ...             model.decision_function(X))                     # doctest: +SKIP
        True
        """
        missing = [name for name in ("coef_", "intercept_", "classes_") if not hasattr(self, name)]
        if missing:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"{type(self).__name__} is not fitted (no {missing[0]}); call fit first")
        classes = list(self.classes_)
        row = lookup_class(label, classes)
        coef = np.atleast_2d(np.asarray(self.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(self.intercept_, dtype=np.float64))
        if coef.shape[0] == 1 and len(classes) == 2:
            sign = 1.0 if row == 1 else -1.0
            return sign * coef[0], sign * float(intercept[0])
        return coef[row], float(intercept[row])

    def _output_weights(self, class_: Any) -> np.ndarray:
        """Standardised weights of one class's decision (see :meth:`class_weights`)."""
        check_is_fitted(self)
        weights, _ = self.class_weights(class_)
        return weights * self.scale_

    def top_concepts(self, class_: Any, k: int = 5) -> pd.DataFrame:
        """The ``k`` concepts with the largest standardised weight magnitude for one class.

        Returns:
            DataFrame with columns ``concept, name, weight`` (per training SD of the score,
            signed: positive pushes towards ``class_``) and ``coef`` (original units).
        """
        w = self._output_weights(class_)
        order = np.argsort(-np.abs(w), kind="stable")[: int(k)]
        scale = self.scale_[order]
        return pd.DataFrame(
            {
                "concept": [self.concept_ids_[j] for j in order],
                "name": [self.concept_names_.get(self.concept_ids_[j], self.concept_ids_[j]) for j in order],
                "weight": w[order],
                "coef": w[order] / scale,
            }
        )

    def global_importance(self, X: Any = None) -> pd.DataFrame:
        """Concept importance per output and in total, sorted by ``total`` (descending).

        Args:
            X: If given, importance is the mean absolute contribution over these samples;
                otherwise the absolute standardised weight ``|coef_| * scale_``.

        Returns:
            DataFrame indexed by concept id: one column per output class, ``total`` (sum over
            outputs) and ``share`` (``total`` normalised to sum to 1).
        """
        check_is_fitted(self)
        if X is None:
            imp = np.abs(self.coef_ * self.scale_[None, :])
        else:
            imp = np.abs(self.contributions(X).values).mean(axis=0)
        frame = pd.DataFrame(imp.T, index=pd.Index(self.concept_ids_, name="concept"),
                             columns=[str(c) for c in self.output_classes_])
        frame.insert(0, "name", [self.concept_names_.get(c, c) for c in self.concept_ids_])
        frame["total"] = imp.sum(axis=0)
        total = frame["total"].sum()
        frame["share"] = frame["total"] / total if total > 0 else 0.0
        return frame.sort_values("total", ascending=False, kind="stable")

    def intervene(self, X: Any, values: Mapping[Any, Any]) -> InterventionResult:
        """Set concepts to chosen values and report how predictions and decisions move.

        Args:
            X: ``(n_samples, n_concepts)`` scores.
            values: Concept id or preferred name -> new score, either a scalar or an
                ``(n_samples,)`` array.

        Returns:
            :class:`InterventionResult` (labels, decision values and probabilities before and
            after; ``.delta`` and ``.flipped``).

        Raises:
            UnknownConceptError: A concept in ``values`` is not one of the model's concepts.
            ValueError: A value is not finite or has the wrong length.
        """
        X_arr, sample_ids = self._validate_predict_data(X)
        if not isinstance(values, Mapping) or not values:
            raise ValueError("values must be a non-empty mapping {concept: value}")
        X_new = X_arr.copy()
        applied: dict[str, Any] = {}
        for key, value in values.items():
            j = resolve_concept(key, self.concept_ids_, self.concept_names_)
            v = np.asarray(value, dtype=np.float64)
            if v.ndim > 1 or (v.ndim == 1 and len(v) != len(X_new)):
                raise ValueError(
                    f"value for concept {key!r} must be a scalar or have one entry per sample "
                    f"({len(X_new)}), got shape {v.shape}"
                )
            if not np.all(np.isfinite(v)):
                raise ValueError(f"value for concept {key!r} is NaN or infinite")
            X_new[:, j] = v
            applied[self.concept_ids_[j]] = v.item() if v.ndim == 0 else v
        how = self._input_transform
        d0 = self._decision(transform_scores(X_arr, how))
        d1 = self._decision(transform_scores(X_new, how))
        index = pd.Index(sample_ids, name="sample")
        return self._intervention_result(d0, d1, index, applied)

    def _intervention_result(
        self, d0: np.ndarray, d1: np.ndarray, index: pd.Index, values: dict[str, Any]
    ) -> InterventionResult:
        """Labelled :class:`InterventionResult` from decisions ``(n, n_outputs)`` before/after."""
        outs = [str(c) for c in self.output_classes_]
        classes = [str(c) for c in self.classes_]
        return InterventionResult(
            predictions_before=pd.Series(self._labels_from_decision(d0), index=index, name="prediction"),
            predictions_after=pd.Series(self._labels_from_decision(d1), index=index, name="prediction"),
            decision_before=pd.DataFrame(d0, index=index, columns=outs),
            decision_after=pd.DataFrame(d1, index=index, columns=outs),
            proba_before=pd.DataFrame(self._proba_from_decision(d0), index=index, columns=classes),
            proba_after=pd.DataFrame(self._proba_from_decision(d1), index=index, columns=classes),
            values=values,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to folder ``path`` (``bottleneck.json`` + ``bottleneck.npz``).

        No pickle: parameters and labels go to JSON, arrays to an ``.npz`` read back with
        ``allow_pickle=False``. Returns the folder.
        """
        return save_bottleneck(self, path)

    @classmethod
    def load(cls, path: str | Path, *, vocabulary_hash: str | None = None) -> ConceptBottleneckBase:
        """Read a model written by :meth:`save`.

        Args:
            path: The folder given to :meth:`save`.
            vocabulary_hash: If given (e.g. ``scores.vocabulary_hash``), raise
                :class:`VocabularyMismatchError` when the model was fitted on another vocabulary.
        """
        model = load_bottleneck(path, vocabulary_hash=vocabulary_hash)
        if not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    # Subclasses list what persistence must store beyond the shared attributes.
    _array_attributes: tuple[str, ...] = ()
    _json_attributes: tuple[str, ...] = ()

    def _restore_after_load(self) -> None:
        """Rebuild derived attributes after :func:`load_bottleneck` set the stored ones."""
