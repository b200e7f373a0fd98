import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from conceptlens.concepts import SparseLinearBottleneck
from tests.concepts.conftest import TRUE_WEIGHTS


def test_recovers_support_and_signs(binary_rule):
    X, y = binary_rule
    model = SparseLinearBottleneck(Cs=10, max_concepts=3, cv=3).fit(X, y)
    coef = model.coef_frame().iloc[0]
    support = set(coef.index[coef != 0])
    assert support == set(TRUE_WEIGHTS)
    for concept, weight in TRUE_WEIGHTS.items():
        assert np.sign(coef[concept]) == np.sign(weight)


def test_at_most_k_concepts_per_class(multiclass_rule):
    X, y = multiclass_rule
    model = SparseLinearBottleneck(Cs=10, max_concepts=1, cv=3).fit(X, y)
    nonzero = (model.coef_frame() != 0).sum(axis=1)
    assert (nonzero <= 1).all()
    assert model.path_.loc[model.best_index_, "max_concepts_per_class"] <= 1
    # the selected model is within one standard error of the best admissible one
    path = model.path_
    admissible = path[path["max_concepts_per_class"] <= 1]
    best = admissible["cv_score"].idxmin()
    se = np.nanstd(model.cv_scores_[best], ddof=1) / np.sqrt(model.cv_scores_.shape[1])
    assert path.loc[model.best_index_, "cv_score"] <= admissible["cv_score"].min() + se + 1e-12
    assert model.score(X, y) > 0.6


def test_path_runs_from_empty_to_dense(binary_rule):
    X, y = binary_rule
    model = SparseLinearBottleneck(Cs=8, cv=None).fit(X, y)
    path = model.path_
    assert len(path) == 8 and np.all(np.diff(path["C"]) > 0)
    assert path["n_concepts"].iloc[0] == 0
    assert path["n_concepts"].iloc[-1] > 3
    assert model.coef_path_.shape == (8, 1, X.shape[1])
    assert model.best_index_ == 7  # without cv: least regularised admissible model


def test_contributions_sum_exactly_to_decision(binary_rule, multiclass_rule):
    for X, y in (binary_rule, multiclass_rule):
        model = SparseLinearBottleneck(Cs=6, cv=None).fit(X, y)
        decision = model.decision_function(X)
        for reference in ("mean", "zero"):
            contrib = model.contributions(X, reference=reference)
            rebuilt = contrib.values.sum(axis=-1) + contrib.intercept
            expected = decision[:, None] if decision.ndim == 1 else decision
            np.testing.assert_allclose(rebuilt, expected, rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(model.contributions(X, reference="zero").intercept,
                                      model.intercept_)
        # coef_ / intercept_ in original units are the selected standardised fit, unfolded
        Z = (np.asarray(X, dtype=float) - model.mean_) / model.scale_
        d_std = Z @ model.coef_path_[model.best_index_].T + model.intercept_path_[model.best_index_]
        np.testing.assert_allclose(d_std, expected, rtol=1e-9, atol=1e-9)


def test_coef_units_and_frame(binary_rule):
    X, y = binary_rule
    model = SparseLinearBottleneck(Cs=6, cv=None).fit(X, y)
    np.testing.assert_allclose(model.decision_function(X), X.to_numpy() @ model.coef_[0] + model.intercept_[0])
    frame = model.coef_frame(standardized=True)
    assert list(frame.columns) == list(X.columns) and list(frame.index) == [1]
    np.testing.assert_allclose(frame.to_numpy(), model.coef_path_[model.best_index_])


def test_top_concepts_and_importance(binary_rule):
    X, y = binary_rule
    model = SparseLinearBottleneck(Cs=10, max_concepts=3, cv=3).fit(X, y)
    top = model.top_concepts(1, k=3)
    assert list(top["concept"]) == ["C0", "C3", "C7"]  # ordered by |standardised weight|
    neg = model.top_concepts(0, k=3)
    np.testing.assert_allclose(neg["weight"], -top["weight"])
    imp = model.global_importance(X)
    assert list(imp.index[:3]) == ["C0", "C3", "C7"]
    assert imp["share"].sum() == pytest.approx(1.0)


def test_class_weight_balanced_raises_minority_recall():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 5))
    y = (X[:, 0] + 1.0 * rng.normal(size=600) > 1.6).astype(int)  # about 10 % positives
    plain = SparseLinearBottleneck(Cs=5, cv=None).fit(X, y)
    balanced = SparseLinearBottleneck(Cs=5, cv=None, class_weight="balanced").fit(X, y)
    recall = [np.mean(m.predict(X)[y == 1] == 1) for m in (plain, balanced)]
    assert recall[1] > recall[0] + 0.2


def test_concept_scores_input_keeps_provenance(binary_rule, scores_factory):
    X, y = binary_rule
    scores = scores_factory(X)
    model = SparseLinearBottleneck(Cs=4, cv=None).fit(scores, y)
    assert model.vocabulary_hash_ == "vocab-A"
    assert model.backbone_["key"] == "abc123"
    assert model.concept_ids_ == list(X.columns)
    assert model.concept_names_["C0"] == "finding C0"
    assert list(model.feature_names_in_) == list(X.columns)
    np.testing.assert_array_equal(model.predict(scores), model.predict(X))
    assert model.contributions(scores).sample_ids[0] == "img0.png"


@pytest.mark.parametrize(
    ("params", "message"),
    [({"l1_ratio": 0.0}, "l1_ratio"), ({"scoring": "auc"}, "scoring"), ({"Cs": [1.0, -1.0]}, "Cs"),
     ({"max_concepts": -1}, "max_concepts")],
)
def test_bad_parameters(binary_rule, params, message):
    X, y = binary_rule
    with pytest.raises(ValueError, match=message):
        SparseLinearBottleneck(**params).fit(X, y)


def test_elastic_net_path(binary_rule):
    X, y = binary_rule
    model = SparseLinearBottleneck(Cs=6, cv=None, l1_ratio=0.5).fit(X, y)
    assert model.path_["n_concepts"].iloc[0] == 0
    assert isinstance(model.coef_frame(), pd.DataFrame)


def test_contribution_tables(binary_rule):
    X, y = binary_rule
    model = SparseLinearBottleneck(Cs=6, cv=None).fit(X, y)
    contrib = model.contributions(X.iloc[:5])
    pos, neg = contrib.for_class(1), contrib.for_class(0)
    np.testing.assert_allclose(neg.to_numpy(), -pos.to_numpy())
    assert list(pos.index) == list(X.index[:5]) and list(pos.columns) == list(X.columns)
    long = contrib.to_frame()
    assert len(long) == 5 * X.shape[1]
    np.testing.assert_allclose(long.groupby("sample", sort=False)["contribution"].sum().to_numpy()
                               + contrib.intercept[0], model.decision_function(X.iloc[:5]))


def test_for_class_is_strict_about_labels(binary_rule, multiclass_rule):
    from conceptlens.concepts import UnknownClassError
    from conceptlens.errors import ConceptlensError

    X, y = binary_rule
    model = SparseLinearBottleneck(Cs=4, cv=None).fit(X, y)
    contrib = model.contributions(X.iloc[:3])
    for bad in ("glrop", 42, "1", 2, None):
        with pytest.raises(UnknownClassError, match=r"classes are \[0, 1\]"):
            contrib.for_class(bad)
        with pytest.raises(KeyError):  # the builtin a caller would catch
            model.top_concepts(bad)
    assert issubclass(UnknownClassError, ConceptlensError)
    np.testing.assert_allclose(contrib.for_class(np.int64(0)).to_numpy(),
                               -contrib.for_class(1).to_numpy())
    Xm, ym = multiclass_rule
    contrib = SparseLinearBottleneck(Cs=4, cv=None).fit(Xm, ym).contributions(Xm.iloc[:3])
    assert contrib.for_class("bcc").shape == (3, Xm.shape[1])
    with pytest.raises(UnknownClassError, match="melanoma"):
        contrib.for_class("melanom")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("k", [3, 5, 10])
def test_exactly_k_concepts_on_breast_cancer(k):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    model = SparseLinearBottleneck(max_concepts=k).fit(X, y)
    assert int((model.coef_ != 0).sum()) == k
    assert model.path_["selected"].sum() == 1
    assert model.score(X, y) > 0.9


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_exactly_k_by_bisection_without_cv(binary_rule):
    X, y = binary_rule
    # a coarse grid jumps over most counts; bisection lands on each k the path can give
    for k in (1, 2, 3, 5):
        model = SparseLinearBottleneck(Cs=4, max_concepts=k, cv=None).fit(X, y)
        assert int((model.coef_ != 0).sum()) == k
        assert np.all(np.diff(model.Cs_) > 0)  # refined C inserted in order


def test_tied_path_never_silently_empty():
    """CV scores tied on the whole path (the issue's 0.69309 case): ties used to go to the
    intercept-only model."""
    from conceptlens.concepts import EmptyModelWarning

    n_concepts = np.array([0, 2, 3, 5])
    tied = np.full((4, 5), 0.69309) + np.array([0.0, 1e-5, -1e-5, 2e-5, -2e-5])[None, :]
    # with a budget: the richest admissible model within one SE of the best
    assert SparseLinearBottleneck(max_concepts=3)._select(n_concepts, tied) == 2
    # without a budget: the best model with concepts when it ties with the empty one
    zero_best = tied.copy()
    zero_best[0] -= 1e-9
    assert SparseLinearBottleneck()._select(n_concepts, zero_best) == 1
    # the empty model clearly better: kept, but said out loud
    clear = np.vstack([np.full(5, 0.5), np.full((3, 5), 0.7)]) + 1e-3 * np.arange(5)[None, :]
    with pytest.warns(EmptyModelWarning, match="no concept"):
        assert SparseLinearBottleneck()._select(n_concepts, clear) == 0
    # asked for zero concepts: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyModelWarning)
        assert SparseLinearBottleneck(max_concepts=0)._select(n_concepts, clear) == 0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_weak_signal_budget_gives_concepts_not_an_intercept():
    """Weak signal, many rows: cross-validated log-loss barely moves along the early path."""
    import warnings

    from conceptlens.concepts import EmptyModelWarning

    rng = np.random.default_rng(3)
    X = rng.normal(size=(3800, 12))
    y = (0.35 * X[:, 0] - 0.3 * X[:, 1] + 0.25 * X[:, 2] + rng.logistic(size=3800) > 0).astype(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EmptyModelWarning)
        model = SparseLinearBottleneck(max_concepts=3).fit(X, y)
    n = int((model.coef_ != 0).sum())
    assert n == 3 or any(issubclass(w.category, EmptyModelWarning) for w in caught)
    assert n > 0 and model.score(X, y) > 0.55


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_parallel_folds_give_the_same_model(multiclass_rule):
    X, y = multiclass_rule
    a = SparseLinearBottleneck(Cs=8, cv=3).fit(X, y)
    b = SparseLinearBottleneck(Cs=8, cv=3, n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.cv_scores_, b.cv_scores_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_patience_stops_the_path_after_the_cv_optimum(binary_rule):
    X, y = binary_rule
    full = SparseLinearBottleneck(Cs=30, cv=3, patience=None).fit(X, y)
    early = SparseLinearBottleneck(Cs=30, cv=3, patience=3).fit(X, y)
    assert len(early.Cs_) <= len(full.Cs_)
    np.testing.assert_allclose(early.Cs_, full.Cs_[: len(early.Cs_)])
    mean = np.nanmean(early.cv_scores_, axis=1)
    if len(early.Cs_) < len(full.Cs_):
        # stopped only after `patience` penalties without a real (0.1 %) improvement
        assert mean[-3:].min() >= mean[:-3].min() * (1 - 1e-3) - 1e-12
    assert early.score(X, y) >= full.score(X, y) - 0.02


def _objective(coef, intercept, Z, y, C, l1_ratio):
    """scikit-learn's LogisticRegression objective (binary or multinomial, weights 1)."""
    from scipy.special import logsumexp

    eta = Z @ coef.T + intercept
    if coef.shape[0] == 1:
        loss = np.logaddexp(0, eta[:, 0]) - y * eta[:, 0]
    else:
        loss = logsumexp(eta, axis=1) - eta[np.arange(len(y)), y]
    return C * loss.sum() + l1_ratio * np.abs(coef).sum() + (1 - l1_ratio) / 2 * (coef**2).sum()


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("l1_ratio", [1.0, 0.6])
def test_newton_cd_solves_scikit_learns_problem(n_classes, l1_ratio):
    """The default solver reaches scikit-learn's optimum (same objective, tight tolerances)."""
    from sklearn.linear_model import LogisticRegression

    from conceptlens.concepts._solvers import LogisticState, fit_logistic

    rng = np.random.default_rng(5)
    Z = rng.normal(size=(300, 8))
    y = np.argmax(Z[:, :n_classes] + rng.gumbel(size=(300, n_classes)), axis=1)
    C = 0.05
    ref = LogisticRegression(C=C, l1_ratio=l1_ratio, solver="saga", tol=1e-10,
                             max_iter=100_000).fit(Z, y)
    st = fit_logistic(Z, y, n_classes, C, l1_ratio,
                      LogisticState.zeros(1 if n_classes == 2 else n_classes, 8), tol=1e-10)
    assert st.converged and st.n_iter < 30
    np.testing.assert_allclose(st.coef, ref.coef_, atol=1e-5)
    np.testing.assert_array_equal(st.coef != 0, np.abs(ref.coef_) > 1e-8)
    ours = _objective(st.coef, st.intercept, Z, y, C, l1_ratio)
    theirs = _objective(ref.coef_, ref.intercept_, Z, y, C, l1_ratio)
    assert ours <= theirs + 1e-9


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_saga_solver_gives_the_same_selection(binary_rule, multiclass_rule):
    for X, y in (binary_rule, multiclass_rule):
        fast = SparseLinearBottleneck(Cs=6, cv=3).fit(X, y)
        saga = SparseLinearBottleneck(Cs=6, cv=3, solver="saga", max_iter=2000, tol=1e-6,
                                      patience=None).fit(X, y)
        n = min(len(fast.Cs_), len(saga.Cs_))
        np.testing.assert_allclose(fast.Cs_[:n], saga.Cs_[:n])
        np.testing.assert_allclose(fast.coef_path_[:n], saga.coef_path_[:n], atol=2e-3)
        assert fast.best_index_ == saga.best_index_


def test_separable_multiclass_path_converges():
    """Near-separable multiclass data: the weak-penalty end converges in a few Newton steps."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(210, 6))
    y = np.array(["a", "b", "c"])[np.argmax(X[:, :3], axis=1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = SparseLinearBottleneck(cv=3).fit(X, y)
    assert model.score(X, y) > 0.95


@pytest.mark.parametrize("params", [{"solver": "lbfgs"}, {"max_iter": 0}, {"tol": -1.0}])
def test_solver_parameters_are_checked(binary_rule, params):
    X, y = binary_rule
    with pytest.raises(ValueError, match=next(iter(params))):
        SparseLinearBottleneck(**params).fit(X, y)


def test_subsampled_hessian_reaches_the_same_solution(monkeypatch):
    """Above ``_HESSIAN_ROWS`` samples only the Newton steps change, not the solution."""
    import conceptlens.concepts._solvers as solvers

    rng = np.random.default_rng(4)
    Z = rng.normal(size=(600, 10))
    y = np.argmax(2 * Z[:, :3] + rng.gumbel(size=(600, 3)), axis=1)
    full = solvers.fit_logistic(Z, y, 3, 0.02, 1.0, solvers.LogisticState.zeros(3, 10), tol=1e-9)
    monkeypatch.setattr(solvers, "_HESSIAN_ROWS", 150)
    sub = solvers.fit_logistic(Z, y, 3, 0.02, 1.0, solvers.LogisticState.zeros(3, 10), tol=1e-9)
    assert full.converged and sub.converged
    np.testing.assert_allclose(sub.coef, full.coef, atol=1e-6)
    np.testing.assert_array_equal(sub.coef != 0, full.coef != 0)
