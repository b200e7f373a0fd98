import numpy as np
import pytest

from conceptlens.concepts import AssociationBottleneck, UnknownConceptError

PRIOR = {"nevus": ["C0"], "melanoma": ["C1"], "bcc": ["C2"]}


def test_learns_the_class_concept_associations(multiclass_rule):
    X, y = multiclass_rule
    model = AssociationBottleneck(n_epochs=150, polarity="positive").fit(X, y)
    assoc = model.association_frame()
    assert assoc.idxmax(axis=1).to_dict() == {"bcc": "C2", "melanoma": "C1", "nevus": "C0"}
    np.testing.assert_allclose(assoc.sum(axis=1), 1.0)  # positive polarity: rows are softmaxes
    assert (assoc.to_numpy() >= 0).all()
    assert model.score(X, y) > 0.75


def test_prior_initialises_the_matrix(multiclass_rule):
    X, y = multiclass_rule
    model = AssociationBottleneck(prior=PRIOR, prior_strength=3.0, n_epochs=1, lr=1e-6).fit(X, y)
    assoc = model.association_frame()
    for cls, concepts in PRIOR.items():
        assert assoc.loc[cls].idxmax() == concepts[0]
    # prior may name concepts by preferred name and give explicit (also negative) weights
    named = AssociationBottleneck(prior={"nevus": {"c0": 2.0, "C5": -2.0}}, n_epochs=1, lr=1e-6)
    named.set_params(prior={"nevus": {"C0": 2.0, "C5": -2.0}}).fit(X, y)
    row = named.association_frame().loc["nevus"]
    assert row["C0"] > 0 > row["C5"]


def test_prior_with_unknown_concept_is_rejected(multiclass_rule):
    X, y = multiclass_rule
    with pytest.raises(UnknownConceptError, match=r"'C99'.*class 'nevus'|class 'nevus'.*'C99'"):
        AssociationBottleneck(prior={"nevus": ["C0", "C99"]}).fit(X, y)
    with pytest.raises(ValueError, match="'psoriasis', which is not in y"):
        AssociationBottleneck(prior={"psoriasis": ["C0"]}).fit(X, y)
    with pytest.raises(ValueError, match="polarity='both'"):
        AssociationBottleneck(prior={"nevus": {"C0": -1.0}}, polarity="positive").fit(X, y)


def test_training_is_deterministic(multiclass_rule):
    X, y = multiclass_rule
    a = AssociationBottleneck(n_epochs=20, batch_size=64, random_state=3).fit(X, y)
    b = AssociationBottleneck(n_epochs=20, batch_size=64, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.assoc_logits_, b.assoc_logits_)
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)


def test_loss_decreases_and_regularisers_act(multiclass_rule):
    X, y = multiclass_rule
    plain = AssociationBottleneck(n_epochs=80, polarity="positive").fit(X, y)
    assert plain.loss_curve_[-1] < plain.loss_curve_[0]

    def entropy(m):
        a = m.association_
        return float(-(a * np.log(a)).sum(axis=1).mean())

    sparse = AssociationBottleneck(n_epochs=80, polarity="positive", sparsity=1.0).fit(X, y)
    assert entropy(sparse) < entropy(plain)


def test_contributions_sum_exactly(binary_rule, multiclass_rule):
    for X, y in (binary_rule, multiclass_rule):
        model = AssociationBottleneck(n_epochs=30).fit(X, y)
        decision = model.decision_function(X)
        expected = decision[:, None] if decision.ndim == 1 else decision
        c = model.contributions(X)
        np.testing.assert_allclose(c.values.sum(-1) + c.intercept, expected, rtol=1e-10, atol=1e-10)
    # binary: decision is the difference of the two class logits
    X, y = binary_rule
    model = AssociationBottleneck(n_epochs=30).fit(X, y)
    logits = X.to_numpy() @ model.class_coef_.T + model.class_intercept_
    np.testing.assert_allclose(model.decision_function(X), logits[:, 1] - logits[:, 0])
    np.testing.assert_allclose(model.predict_proba(X)[:, 1],
                               np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1))


def test_torch_thread_setting_is_restored(multiclass_rule):
    import torch

    X, y = multiclass_rule
    before = torch.get_num_threads()
    AssociationBottleneck(n_epochs=3, n_threads=1).fit(X, y)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n_threads"):
        AssociationBottleneck(n_threads=0).fit(X, y)
