"""Concept-set filtering: a planted duplicate and a never-active concept are dropped, the rest kept."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conceptlens.demo import generate
from conceptlens.models import load_backbone
from conceptlens.vocab import Concept, ConceptScorer, ConceptVocabulary
from conceptlens.vocab.filtering import filter_concepts

ABSENT = "derm7pt:regression_structures"


@pytest.fixture(scope="module")
def scorer():
    vocab = ConceptVocabulary.builtin("demo")
    twin = Concept("dup:veil", "blue-white veil", synonyms=("bluish-white veil",),
                   modalities=("dermoscopy",))
    vocabulary = ConceptVocabulary([*vocab, twin], name="planted", modality="dermoscopy")
    return ConceptScorer(load_backbone("demo"), vocabulary, progress=False)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_drops_planted_duplicate_and_never_active(scorer, seed):
    # reference images never show regression structures (its probability is 0)
    ref = generate(150, seed=seed, concept_prob=[0.3] * 6 + [0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = scorer.score({f"r{i}": im for i, im in enumerate(ref.images)})
    result = filter_concepts(scorer, scores, class_names=["melanoma", "benign nevus"],
                             max_class_similarity=None)
    dropped = dict(zip(result.dropped["concept_id"], result.dropped["filter"], strict=True))
    assert dropped == {ABSENT: "never_active", "dup:veil": "duplicate"}
    assert result.dropped.set_index("concept_id").loc["dup:veil", "other"] == "derm7pt:blue_whitish_veil"
    assert len(result.kept) == len(scorer.vocabulary) - 2
    # the absent concept's activation is far below every other (measured 0.08 vs >= 0.45)
    others = result.activation.drop(ABSENT)
    assert result.activation[ABSENT] < others.min() - 0.2
    assert "never_active" in result._repr_html_()


def test_class_similarity_and_thresholds(scorer):
    result = filter_concepts(scorer, None, class_names=["blue-whitish veil"],
                             max_duplicate_similarity=None)
    assert list(result.dropped["concept_id"]) == ["derm7pt:blue_whitish_veil", "dup:veil"]
    assert set(result.dropped["filter"]) == {"class_similarity"}
    assert np.isnan(result.activation).all()
    # turning every filter off keeps everything
    none = filter_concepts(scorer, None, None, max_duplicate_similarity=None)
    assert none.kept == list(scorer.vocabulary.ids) and len(none.dropped) == 0


def test_absolute_cutoff_and_mismatched_reference(scorer):
    ref = generate(30, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = scorer.score({f"r{i}": im for i, im in enumerate(ref.images)})
    result = filter_concepts(scorer, scores, min_activation=10.0, max_duplicate_similarity=None)
    assert len(result.kept) == 0 and result.settings["min_activation"] == 10.0
    other = ConceptScorer(scorer.backbone, ConceptVocabulary.builtin("demo"), progress=False)
    with pytest.raises(ValueError, match="lack concept"):
        filter_concepts(other.with_vocabulary(scorer.vocabulary), scores.__class__(
            table=scores.table.drop(columns=["dup:veil"])))
