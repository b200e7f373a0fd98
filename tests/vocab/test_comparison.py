"""compare_backbones: the trained demo model against an untrained one of the same architecture."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conceptlens.demo.generator import generate
from conceptlens.models import ConceptCLIPBackbone, create_reference_model, load_backbone
from conceptlens.vocab import ConceptVocabulary
from conceptlens.vocab.comparison import compare_backbones, paired_auc_test
from conceptlens.vocab.evaluation import POOLED


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = generate(40, seed=5)
    ids = [f"image_{i}" for i in range(len(data.images))]
    labels = pd.DataFrame(data.concepts[:, :7], index=ids, columns=list(data.concept_ids[:7]))
    vocabulary = ConceptVocabulary.builtin("demo")
    untrained = ConceptCLIPBackbone(*create_reference_model("tiny", seed=1),
                                    model_id="untrained")
    cache = tmp_path_factory.mktemp("features")
    comparison = compare_backbones(
        {"demo": load_backbone("demo"), "untrained": untrained}, vocabulary,
        list(data.images), labels, n_bootstrap=300, cache_dir=cache, reference=None,
    )
    return comparison, labels, cache


def test_auc_table_matches_sklearn(setup):
    comparison, labels, _ = setup
    assert comparison.models == ["demo", "untrained"]
    assert list(comparison.auc.index) == [*labels.columns, POOLED]
    for model in comparison.models:
        scores = comparison.scores[model].loc[labels.index, labels.columns]
        concept = labels.columns[0]
        assert comparison.auc.loc[concept, model] == pytest.approx(
            roc_auc_score(labels[concept], scores[concept]))
        pooled = roc_auc_score(labels.to_numpy().ravel(), scores.to_numpy().ravel())
        assert comparison.auc.loc[POOLED, model] == pytest.approx(pooled)


def test_the_trained_model_wins_and_the_paired_test_says_so(setup):
    comparison, _, _ = setup
    assert comparison.best == "demo"
    pooled = comparison.pooled
    assert pooled.loc["demo", "roc_auc"] > 0.9
    assert pooled.loc["demo", "roc_auc_low"] <= pooled.loc["demo", "roc_auc"] <= pooled.loc[
        "demo", "roc_auc_high"]
    test = comparison.tests.set_index("concept").loc[POOLED]
    assert (test["model_a"], test["model_b"]) == ("demo", "untrained")
    assert test["difference"] == pytest.approx(test["auc_b"] - test["auc_a"])
    assert test["difference_high"] < 0 and test["p_value"] < 0.01
    assert json.dumps(comparison.to_dict(), allow_nan=False)


def test_each_model_has_its_own_identity_and_cache_entries(setup):
    comparison, labels, cache = setup
    assert len({identity["key"] for identity in comparison.identities.values()}) == 2
    assert any(cache.iterdir())


def test_paired_test_of_identical_scores_finds_nothing():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(float)
    s = rng.normal(size=200) + y
    counts = rng.multinomial(200, np.full(200, 1 / 200), size=200)
    out = paired_auc_test(y, s, s, np.arange(200), counts)
    assert out["difference"] == 0 and out["p_value"] == 1.0


def test_needs_two_models_and_known_concepts(setup):
    _, labels, _ = setup
    vocabulary = ConceptVocabulary.builtin("demo")
    with pytest.raises(ValueError, match="at least two"):
        compare_backbones([load_backbone("demo")], vocabulary, [], labels)
    bad = labels.rename(columns={labels.columns[0]: "x:unknown"})
    with pytest.raises(ValueError, match="vocabulary lacks"):
        compare_backbones(["demo", "demo"], vocabulary, [], bad)
