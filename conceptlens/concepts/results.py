"""Result objects of bottleneck explanations: contributions and interventions."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from conceptlens.errors import UnknownClassError

__all__ = ["Contributions", "InterventionResult", "UnknownClassError"]


def _plain(label: Any) -> Any:
    return label.item() if hasattr(label, "item") else label


def lookup_class(class_: Any, known: list[Any]) -> int:
    """Index of ``class_`` in ``known`` (exact label match, numpy scalars unwrapped).

    Raises:
        UnknownClassError: ``class_`` is not one of ``known``.
    """
    plain = [_plain(c) for c in known]
    target = _plain(class_)
    for i, c in enumerate(plain):
        # exact type family: "1" is not 1, and True is not 1
        if isinstance(c, str) != isinstance(target, str) or isinstance(c, bool) != isinstance(
            target, bool
        ):
            continue
        try:
            if c == target:
                return i
        except (TypeError, ValueError):
            continue
    raise UnknownClassError(f"unknown class {class_!r}; the model's classes are {plain}")


@dataclass
class Contributions:
    """Signed per-concept contributions to each output's decision value.

    ``values[i, k, :].sum() + intercept[k] == decision[i, k]`` for every sample ``i`` and
    output ``k`` (up to float rounding).

    Attributes:
        values: ``(n_samples, n_outputs, n_concepts)`` contributions. For a binary model there is
            one output, the positive class ``classes_[1]`` (scikit-learn convention).
        intercept: ``(n_outputs,)`` decision value at the reference point.
        outputs: Class label of each output.
        concept_ids: Concept id of each column.
        sample_ids: Row labels (image ids or ``0..n-1``).
        reference: ``"mean"`` (contribution ``coef * (x - training mean)``) or ``"zero"``
            (``coef * x``; then ``intercept`` equals the model's ``intercept_``).
        concept_names: Concept id -> preferred name.
        classes: Every class label of the model (binary: both, the negative one first);
            ``None`` means ``outputs``.
    """

    values: np.ndarray
    intercept: np.ndarray
    outputs: list[Any]
    concept_ids: list[str]
    sample_ids: list[Any]
    reference: str = "mean"
    concept_names: dict[str, str] | None = None
    classes: list[Any] | None = None

    @property
    def decision(self) -> np.ndarray:
        """``(n_samples, n_outputs)`` decision values rebuilt from the contributions."""
        return self.values.sum(axis=2) + self.intercept[None, :]

    def for_class(self, class_: Any) -> pd.DataFrame:
        """``(n_samples, n_concepts)`` contributions to one output, labelled.

        For a binary model, asking for the negative class returns the negated contributions
        of the positive output (the negative class's decision is minus the positive one).

        Args:
            class_: One of the model's class labels (exact match: ``"1"`` is not ``1``).

        Returns:
            DataFrame ``(n_samples, n_concepts)``, rows = sample ids, columns = concept ids.

        Raises:
            UnknownClassError: ``class_`` is not one of the model's classes (a ``KeyError``).
        """
        classes = list(self.classes) if self.classes is not None else list(self.outputs)
        lookup_class(class_, classes)  # raises with the known labels
        try:
            block = self.values[:, lookup_class(class_, self.outputs), :]
        except UnknownClassError:
            if len(self.outputs) != 1:
                raise
            block = -self.values[:, 0, :]  # the negative class of a binary model
        return pd.DataFrame(block, index=self.sample_ids, columns=self.concept_ids)

    def to_frame(self) -> pd.DataFrame:
        """Long table with columns ``sample, class, concept, name, contribution``."""
        n, k, p = self.values.shape
        names = self.concept_names or {}
        return pd.DataFrame(
            {
                "sample": np.repeat(np.asarray(self.sample_ids, dtype=object), k * p),
                "class": np.tile(np.repeat(np.asarray(self.outputs, dtype=object), p), n),
                "concept": np.tile(np.asarray(self.concept_ids, dtype=object), n * k),
                "name": np.tile(
                    np.asarray([names.get(c, c) for c in self.concept_ids], dtype=object), n * k
                ),
                "contribution": self.values.reshape(-1),
            }
        )

    def __repr__(self) -> str:
        n, k, p = self.values.shape
        return (
            f"Contributions({n} samples x {k} outputs x {p} concepts, reference={self.reference!r})"
        )


@dataclass
class InterventionResult:
    """Predictions before and after setting some concepts to chosen values.

    Attributes:
        predictions_before: ``(n_samples,)`` predicted labels on the original scores.
        predictions_after: ``(n_samples,)`` predicted labels after the intervention.
        decision_before: ``(n_samples, n_outputs)`` decision values before.
        decision_after: ``(n_samples, n_outputs)`` decision values after.
        proba_before: ``(n_samples, n_classes)`` class probabilities before.
        proba_after: ``(n_samples, n_classes)`` class probabilities after.
        values: Concept id -> value(s) that were set.
    """

    predictions_before: pd.Series
    predictions_after: pd.Series
    decision_before: pd.DataFrame
    decision_after: pd.DataFrame
    proba_before: pd.DataFrame
    proba_after: pd.DataFrame
    values: dict[str, Any]

    @property
    def delta(self) -> pd.DataFrame:
        """``(n_samples, n_outputs)`` change of each output's decision value."""
        return self.decision_after - self.decision_before

    @property
    def flipped(self) -> pd.Series:
        """Whether each sample's predicted label changed."""
        return (self.predictions_before != self.predictions_after).rename("flipped")

    def to_frame(self) -> pd.DataFrame:
        """One row per sample: labels before/after, ``flipped`` and the decision deltas."""
        delta = self.delta.add_prefix("delta_")
        frame = pd.DataFrame(
            {
                "prediction_before": self.predictions_before,
                "prediction_after": self.predictions_after,
                "flipped": self.flipped,
            }
        )
        return pd.concat([frame, delta], axis=1)

    def __repr__(self) -> str:
        return (
            f"InterventionResult({len(self.predictions_before)} samples, "
            f"set {sorted(self.values)}, {int(self.flipped.sum())} predictions changed)"
        )

    def _repr_html_(self) -> str:
        head = html.escape(repr(self))
        return f"<div><p><b>{head}</b></p>{self.to_frame().head(20).to_html(escape=True)}</div>"
