import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conceptlens.concepts._stats import benjamini_hochberg, rank_association, wilson_interval
from conceptlens.concepts.audit_result import AuditResult


def test_wilson_interval_matches_the_closed_form():
    # 8 successes of 10 at 95 %: the textbook Wilson interval is (0.4902, 0.9433)
    lo, hi = wilson_interval(np.array([8, 0, 10]), np.array([10, 10, 10]))
    assert lo[0] == pytest.approx(0.4902, abs=1e-4) and hi[0] == pytest.approx(0.9433, abs=1e-4)
    assert lo[1] == pytest.approx(0.0, abs=1e-12) and 0.0 < hi[1] < 0.35  # never degenerate at 0 / n, unlike Wald
    assert hi[2] == pytest.approx(1.0) and 0.65 < lo[2] < 1.0
    lo0, hi0 = wilson_interval(np.array([0]), np.array([0]))
    assert np.isnan(lo0[0]) and np.isnan(hi0[0])


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan])
    # sorted p: .01 .03 .04 .2 (m = 4) -> p * m / rank = .04 .06 .0533 .2, then a running minimum
    # from the largest rank down: .04 .0533 .0533 .2
    expected = np.array([0.04, 0.16 / 3, 0.16 / 3, 0.2, np.nan])
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12)


def test_rank_association_auc_equals_roc_auc():
    rng = np.random.default_rng(0)
    group = rng.random(200) < 0.3
    X = np.column_stack([rng.normal(size=200) + 1.5 * group, np.round(rng.normal(size=200))])
    r = rank_association(X, group)
    for j in range(2):
        assert r["auc"][j] == pytest.approx(roc_auc_score(group, X[:, j]))
    np.testing.assert_allclose(r["effect_size"], 2 * r["auc"] - 1)
    assert r["p_value"][0] < 1e-6
    assert np.isnan(rank_association(X, np.zeros(200, bool))["auc"]).all()


def test_audit_result_fidelity_of_zero_is_zero_not_nan():
    empty = pd.DataFrame()
    result = AuditResult({"fidelity": 0.0}, empty, empty, empty, empty, empty, empty, empty, empty)
    assert result.fidelity == 0.0
    assert np.isnan(AuditResult({}, empty, empty, empty, empty, empty, empty, empty, empty).fidelity)
