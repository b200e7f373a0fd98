"""Synthetic concept-score data with known rules, shared by the concept tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conceptlens.vocab.scores import ConceptScores

N_CONCEPTS = 12
TRUE_WEIGHTS = {"C0": 3.0, "C3": -2.5, "C7": 2.0}  # the binary rule's support and signs


def concept_ids(p: int = N_CONCEPTS) -> list[str]:
    return [f"C{j}" for j in range(p)]


@pytest.fixture
def binary_rule() -> tuple[pd.DataFrame, np.ndarray]:
    """Scores shifted/scaled like CLIP similarities; label = sign of a sparse linear rule."""
    rng = np.random.default_rng(0)
    ids = concept_ids()
    Z = rng.normal(size=(400, N_CONCEPTS))
    logit = sum(w * Z[:, ids.index(c)] for c, w in TRUE_WEIGHTS.items())
    y = (logit + 1.0 * rng.normal(size=len(Z)) > 0).astype(int)
    X = pd.DataFrame(0.25 + 0.05 * Z, columns=ids, index=[f"img{i}.png" for i in range(len(Z))])
    return X, y


@pytest.fixture
def multiclass_rule() -> tuple[pd.DataFrame, np.ndarray]:
    """Three classes, each marked by one concept's presence."""
    rng = np.random.default_rng(1)
    ids = concept_ids()
    Z = rng.normal(size=(450, N_CONCEPTS))
    logits = np.column_stack([2.5 * Z[:, 0], 2.5 * Z[:, 1], 2.5 * Z[:, 2]])
    y = np.array(["nevus", "melanoma", "bcc"])[np.argmax(logits + 1.0 * rng.normal(size=logits.shape), axis=1)]
    return pd.DataFrame(Z, columns=ids), y


@pytest.fixture
def scores_factory():
    """Wrap a DataFrame as ConceptScores with a vocabulary hash and names."""

    def make(table: pd.DataFrame, vocabulary_hash: str = "vocab-A") -> ConceptScores:
        names = {c: f"finding {c}" for c in table.columns}
        return ConceptScores(
            table=table, vocabulary_hash=vocabulary_hash, concept_names=names,
            backbone={"model_id": "demo", "family": "demo", "key": "abc123"},
        )

    return make
