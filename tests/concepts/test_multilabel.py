"""MultiLabelBottleneck: one read-out per label, contributions, interventions, persistence."""

import numpy as np
import pandas as pd
import pytest

from conceptlens.concepts import MultiLabelBottleneck, SparseLinearBottleneck, load_bottleneck
from conceptlens.errors import ConceptlensWarning, UnknownClassError

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RULES = {"pigment": ["C0"], "vessels": ["C1", "C2"], "regression": ["C0", "C3"]}


def _world(seed=0, n=500):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"C{j}" for j in range(8)],
                     index=[f"img{i}" for i in range(n)])
    Y = pd.DataFrame({
        "pigment": 2 * X["C0"], "vessels": 1.5 * X["C1"] - 1.5 * X["C2"],
        "regression": X["C0"] + 1.5 * X["C3"],
    }, index=X.index)
    Y = (Y + 0.3 * rng.normal(size=Y.shape) > 0).astype(int)
    return X, Y


def test_per_label_supports_and_accuracy():
    X, Y = _world()
    model = MultiLabelBottleneck(SparseLinearBottleneck(max_concepts=2)).fit(X, Y)
    assert model.labels_ == list(Y.columns) and list(model.classes_) == [0, 1, 2]
    assert model.coef_.shape == (3, 8)
    frame = model.coef_frame()
    for label, support in RULES.items():
        used = set(frame.columns[frame.loc[label] != 0])
        assert set(support) <= used and len(used) <= 2
    Xt, Yt = _world(seed=1)
    pred = model.predict(Xt)
    assert pred.shape == Yt.shape and set(np.unique(pred)) <= {0, 1}
    assert (pred == Yt.to_numpy()).mean(axis=0).min() > 0.85
    proba = model.predict_proba(Xt)
    assert proba.shape == Yt.shape and np.all((proba >= 0) & (proba <= 1))
    assert list(model.label_frame(Xt.iloc[:3]).columns) == list(Y.columns)


def test_shared_concept_set():
    X, Y = _world()
    model = MultiLabelBottleneck(SparseLinearBottleneck(max_concepts=2), shared_concepts=True,
                                 max_shared=4).fit(X, Y)
    support = set(np.array(model.concept_ids_)[model.support_])
    assert support == {"C0", "C1", "C2", "C3"}
    # every label reads only the shared set
    assert np.all(model.coef_[:, ~model.support_] == 0)


def test_contributions_and_strict_lookup():
    X, Y = _world(n=300)
    model = MultiLabelBottleneck(SparseLinearBottleneck(cv=None, Cs=5)).fit(X, Y)
    contrib = model.contributions(X.iloc[:5])
    np.testing.assert_allclose(contrib.decision, model.decision_function(X.iloc[:5]),
                               rtol=0, atol=1e-10)
    assert contrib.for_class("vessels").shape == (5, 8)
    with pytest.raises(UnknownClassError, match="pigment"):
        contrib.for_class("vesels")
    with pytest.raises(KeyError):
        model.top_concepts(0)


def test_interventions_move_only_the_labels_that_read_the_concept():
    X, Y = _world(n=300)
    model = MultiLabelBottleneck(SparseLinearBottleneck(max_concepts=2)).fit(X, Y)
    result = model.intervene(X.iloc[:20], {"C1": 5.0})
    delta = result.delta
    uses = model.coef_frame()["C1"] != 0
    for label in model.labels_:
        assert (np.abs(delta[label]) > 0).any() == bool(uses[label])
    assert result.predictions_after.map(lambda s: "vessels" in s).all()


def test_round_trip_and_constant_label(tmp_path):
    X, Y = _world(n=300)
    Y["never"] = 0
    with pytest.warns(ConceptlensWarning, match="never"):
        model = MultiLabelBottleneck(SparseLinearBottleneck(max_concepts=2)).fit(X, Y)
    assert model.predict_proba(X)[:, -1].max() < 0.01
    model.save(tmp_path / "m")
    loaded = load_bottleneck(tmp_path / "m")
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.multilabel_ and loaded.bottleneck.get_params()["max_concepts"] == 2


def test_one_dimensional_y_is_one_vs_rest(multiclass_rule):
    X, y = multiclass_rule
    model = MultiLabelBottleneck(SparseLinearBottleneck(cv=None, Cs=5)).fit(X, y)
    assert model.predict(X).shape == (len(X),)
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)
    assert model.score(X, y) > 0.7
