"""Turning user inputs (``ConceptScores``, DataFrames, arrays) into concept matrices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from conceptlens.errors import UnknownConceptError, VocabularyMismatchError
from conceptlens.vocab.scores import ConceptScores
from conceptlens.vocab.vocabulary import match_concept

__all__ = [
    "ConceptProvenance",
    "UnknownConceptError",
    "VocabularyMismatchError",
    "resolve_concept",
    "unwrap_scores",
]


@dataclass
class ConceptProvenance:
    """Where a concept matrix came from.

    Attributes:
        vocabulary_hash: Content hash of the vocabulary, when the input was a ``ConceptScores``.
        backbone: Backbone identity dict, when known.
        concept_names: Concept id -> preferred name.
        sample_ids: Row labels (image ids), or ``None`` for plain arrays.
        config: The scoring configuration of a ``ConceptScores`` (``None`` otherwise).
    """

    vocabulary_hash: str | None = None
    backbone: dict[str, Any] | None = None
    concept_names: dict[str, str] = field(default_factory=dict)
    sample_ids: list[Any] | None = None
    config: dict[str, Any] | None = None


def unwrap_scores(X: Any) -> tuple[Any, ConceptProvenance]:
    """Split an input into the data scikit-learn validates and its provenance.

    Args:
        X: A ``ConceptScores``, a DataFrame (columns = concept ids) or any array-like of
            shape ``(n_samples, n_concepts)``.

    Returns:
        ``(data, provenance)``; ``data`` is a DataFrame with string columns for labelled inputs,
        else ``X`` unchanged.
    """
    if isinstance(X, ConceptScores):
        table = X.table.set_axis([str(c) for c in X.table.columns], axis=1)
        prov = ConceptProvenance(
            vocabulary_hash=X.vocabulary_hash,
            backbone=dict(X.backbone) if X.backbone is not None else None,
            concept_names={str(k): str(v) for k, v in X.concept_names.items()},
            sample_ids=list(table.index),
            config=dict(X.config) if X.config else None,
        )
        return table, prov
    if isinstance(X, pd.DataFrame):
        return X, ConceptProvenance(sample_ids=list(X.index))
    return X, ConceptProvenance()


def default_concept_ids(n_features: int) -> list[str]:
    """Names used when the input carries no column labels: ``concept_0``, ``concept_1``..."""
    return [f"concept_{j}" for j in range(n_features)]


def resolve_concept(
    key: Any,
    concept_ids: list[str],
    concept_names: Mapping[str, str] | None = None,
    *,
    what: str = "concept",
) -> int:
    """Column index of a concept given by id or preferred name (case-insensitive).

    The rule of :meth:`conceptlens.vocab.ConceptVocabulary.resolve`, applied to a model's or
    table's concept columns (see :func:`conceptlens.vocab.vocabulary.match_concept`).

    Raises:
        UnknownConceptError: ``key`` matches no id or name, or a name shared by several
            concepts; the message suggests close matches.
    """
    return match_concept(key, list(concept_ids), concept_names, what=what)


def resolve_concepts(
    keys: Iterable[Any] | None,
    concept_ids: list[str],
    concept_names: Mapping[str, str] | None = None,
    *,
    what: str = "concept",
) -> list[int]:
    """:func:`resolve_concept` for several keys (``None`` -> empty list), order kept."""
    if keys is None:
        return []
    if isinstance(keys, str):
        keys = [keys]
    return [resolve_concept(k, concept_ids, concept_names, what=what) for k in keys]


def check_vocabulary(stored_hash: str | None, given_hash: str | None, *, where: str) -> None:
    """Raise :class:`VocabularyMismatchError` when both hashes are known and differ."""
    if stored_hash is not None and given_hash is not None and stored_hash != given_hash:
        raise VocabularyMismatchError(
            f"{where}: the scores come from vocabulary {given_hash!r} but the model was fitted on "
            f"vocabulary {stored_hash!r}; rescore the images with the model's vocabulary"
        )


def as_finite_matrix(X: Any, *, name: str = "scores") -> tuple[np.ndarray, list[str], ConceptProvenance]:
    """A float64 ``(n, p)`` matrix, its concept ids and provenance; NaN/inf -> ``ValueError``."""
    data, prov = unwrap_scores(X)
    if isinstance(data, pd.DataFrame):
        ids = [str(c) for c in data.columns]
        try:
            arr = data.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be numeric: {exc}") from exc
    else:
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array-like: {exc}") from exc
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D (samples x concepts), got shape {arr.shape}")
        ids = default_concept_ids(arr.shape[1])
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"{name} contain {int(bad.sum())} NaN or infinite values, first in row {int(rows[0])}, "
            f"concept {ids[int(cols[0])]!r}"
        )
    return arr, ids, prov
