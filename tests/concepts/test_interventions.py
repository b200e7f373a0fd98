import numpy as np
import pytest

from conceptlens.concepts import (
    AssociationBottleneck,
    SparseLinearBottleneck,
    UnknownConceptError,
    intervention_curve,
)


@pytest.fixture
def sparse_model(binary_rule):
    X, y = binary_rule
    return SparseLinearBottleneck(Cs=10, max_concepts=3, cv=3).fit(X, y)


def test_setting_the_decisive_concept_flips_predictions(binary_rule, sparse_model):
    X, y = binary_rule
    high, low = X["C0"].max() + 0.2, X["C0"].min() - 0.2
    up = sparse_model.intervene(X, {"C0": high})
    down = sparse_model.intervene(X, {"C0": low})
    assert (up.predictions_after == 1).all() and (down.predictions_after == 0).all()
    was_negative = up.predictions_before == 0
    assert up.flipped[was_negative].all() and was_negative.sum() > 50
    # the decision moves by exactly coef * change
    change = high - X["C0"].to_numpy()
    np.testing.assert_allclose(up.delta.iloc[:, 0], sparse_model.coef_frame().loc[1, "C0"] * change)
    # an irrelevant concept changes nothing
    assert not sparse_model.intervene(X, {"C5": 10.0}).flipped.any()


def test_intervention_by_name_and_per_sample_values(binary_rule, scores_factory):
    X, y = binary_rule
    scores = scores_factory(X)
    model = AssociationBottleneck(n_epochs=30).fit(scores, y)
    res = model.intervene(scores, {"finding C0": X["C0"].to_numpy() + 1.0})
    assert list(res.values) == ["C0"]
    assert res.to_frame().index[0] == "img0.png"
    multi = model.intervene(scores, {"C0": 0.0})
    assert set(multi.proba_after.columns) == {"0", "1"}


def test_intervention_errors(binary_rule, sparse_model):
    X, _ = binary_rule
    with pytest.raises(UnknownConceptError, match="'blue veil'"):
        sparse_model.intervene(X, {"blue veil": 1.0})
    with pytest.raises(ValueError, match="one entry per sample"):
        sparse_model.intervene(X, {"C0": np.ones(3)})
    with pytest.raises(ValueError, match="NaN or infinite"):
        sparse_model.intervene(X, {"C0": np.inf})
    with pytest.raises(ValueError, match="non-empty mapping"):
        sparse_model.intervene(X, {})


@pytest.mark.parametrize("policy", ["random", "uncertainty", "importance"])
def test_intervention_curve_endpoints(binary_rule, sparse_model, policy):
    X_true, y = binary_rule
    rng = np.random.default_rng(42)  # not the fixture seed
    X_pred = X_true + rng.normal(scale=0.08, size=X_true.shape)
    curve = intervention_curve(sparse_model, X_pred, X_true, y, policy=policy)
    assert list(curve["k"]) == list(range(X_true.shape[1] + 1))
    assert curve["accuracy"].iloc[0] == pytest.approx(sparse_model.score(X_pred, y))
    assert curve["accuracy"].iloc[-1] == pytest.approx(sparse_model.score(X_true, y))
    assert curve["accuracy"].iloc[-1] > curve["accuracy"].iloc[0]


def test_importance_policy_beats_random_early(binary_rule, sparse_model):
    X_true, y = binary_rule
    rng = np.random.default_rng(42)  # not the fixture seed
    X_pred = X_true + rng.normal(scale=0.08, size=X_true.shape)
    imp = intervention_curve(sparse_model, X_pred, X_true, y, policy="importance", k_max=3)
    rnd = intervention_curve(sparse_model, X_pred, X_true, y, policy="random", k_max=3)
    assert imp["accuracy"].iloc[3] > rnd["accuracy"].iloc[3]


def test_intervention_curve_bad_input(binary_rule, sparse_model):
    X, y = binary_rule
    with pytest.raises(ValueError, match="policy"):
        intervention_curve(sparse_model, X, X, y, policy="oracle")
    with pytest.raises(ValueError, match="k_max"):
        intervention_curve(sparse_model, X, X, y, k_max=99)
    with pytest.raises(ValueError, match="y must be 1-D"):
        intervention_curve(sparse_model, X, X, y[:-1])
