import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from conceptlens.vocab.evaluation import (
    POOLED,
    evaluate_annotation,
    weighted_auc_ap,
)
from conceptlens.vocab.scores import ConceptScores


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    images = [f"img{i}.png" for i in range(40)]
    labels = pd.DataFrame(rng.integers(0, 2, (40, 3)).astype(float), index=images, columns=["a", "b", "c"])
    scores = labels + rng.normal(0, 0.8, labels.shape)
    scores["extra"] = 0.0
    labels.iloc[:5, 1] = np.nan
    return ConceptScores(scores, concept_names={"a": "alpha"}), labels


def test_matches_sklearn_per_concept_and_pooled(data):
    scores, labels = data
    shuffled = labels.sample(frac=1.0, random_state=1)  # alignment is by id, not position
    result = evaluate_annotation(scores, shuffled, n_bootstrap=50)
    assert list(result.index) == ["a", "b", "c", POOLED]
    assert result.loc["a", "name"] == "alpha"
    for c in "abc":
        known = labels[c].notna()
        y, s = labels.loc[known, c], scores.table.loc[known, c]
        assert result.loc[c, "roc_auc"] == pytest.approx(roc_auc_score(y, s))
        assert result.loc[c, "average_precision"] == pytest.approx(average_precision_score(y, s))
        assert result.loc[c, "n_pos"] == int(y.sum()) and result.loc[c, "n_neg"] == int((1 - y).sum())
    assert result.loc["b", "n_missing"] == 5
    stacked_y = labels.stack().dropna()
    stacked_s = scores.table[labels.columns].stack().loc[stacked_y.index]
    assert result.loc[POOLED, "roc_auc"] == pytest.approx(roc_auc_score(stacked_y, stacked_s))
    assert result.loc[POOLED, "n_pos"] + result.loc[POOLED, "n_neg"] == 115
    for metric in ("roc_auc", "average_precision"):
        low, point, high = result[f"{metric}_low"], result[metric], result[f"{metric}_high"]
        assert ((low <= point + 0.05) & (point - 0.05 <= high) & (low < high)).all()


def test_bootstrap_is_reproducible_and_optional(data):
    scores, labels = data
    a = evaluate_annotation(scores, labels, n_bootstrap=30, random_state=3)
    b = evaluate_annotation(scores, labels, n_bootstrap=30, random_state=3)
    pd.testing.assert_frame_equal(a, b)
    none = evaluate_annotation(scores, labels, n_bootstrap=0)
    assert none["roc_auc_low"].isna().all() and none["roc_auc"].notna().all()


def test_single_class_concept_gives_nan_with_note(data):
    scores, labels = data
    labels = labels.copy()
    labels["c"] = 1.0
    result = evaluate_annotation(scores, labels, n_bootstrap=10)
    assert np.isnan(result.loc["c", "roc_auc"]) and "only class 1" in result.loc["c", "note"]
    assert np.isfinite(result.loc["a", "roc_auc"])


def test_mismatches_are_clear_errors(data):
    scores, labels = data
    extra_row = pd.concat([labels, pd.DataFrame({"a": [1.0]}, index=["ghost.png"])])
    with pytest.raises(ValueError, match="ghost.png"):
        evaluate_annotation(scores, extra_row, n_bootstrap=0)
    with pytest.raises(ValueError, match="'zzz'"):
        evaluate_annotation(scores, labels.assign(zzz=1.0), n_bootstrap=0)
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        evaluate_annotation(scores, labels.assign(a=2.0), n_bootstrap=0)
    with pytest.raises(TypeError):
        evaluate_annotation(scores.table.to_numpy(), labels)


def test_weighted_metrics_match_sklearn_with_ties_and_resampling():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 30)
    s = rng.integers(0, 5, 30).astype(float)  # many ties
    auc, ap = weighted_auc_ap(y, s)
    assert auc[0] == pytest.approx(roc_auc_score(y, s))
    assert ap[0] == pytest.approx(average_precision_score(y, s))
    counts = rng.multinomial(30, np.full(30, 1 / 30), size=5)  # bootstrap resamples as weights
    auc, ap = weighted_auc_ap(y, s, counts)
    for k in range(5):
        take = np.repeat(np.arange(30), counts[k])
        assert auc[k] == pytest.approx(roc_auc_score(y[take], s[take]))
        assert ap[k] == pytest.approx(average_precision_score(y[take], s[take]))
    auc, ap = weighted_auc_ap(y, s, (y == 1)[None].astype(float))  # positives only
    assert np.isnan(auc[0]) and ap[0] == pytest.approx(1.0)
