import json

import numpy as np
import pandas as pd
import pytest

from conceptlens.concepts import AuditResult, UnknownConceptError, audit
from conceptlens.vocab.scores import ConceptScores


@pytest.fixture
def shortcut_model():
    """A black box whose decisions lean on a planted spurious concept C9 (a 'ruler')."""
    rng = np.random.default_rng(7)
    Z = rng.normal(size=(600, 10))
    labels = (2.0 * Z[:, 0] - 1.5 * Z[:, 3] + 0.3 * rng.normal(size=600) > 0).astype(int)
    decisions = (2.0 * Z[:, 0] - 1.5 * Z[:, 3] + 3.0 * Z[:, 9] > 0).astype(int)
    scores = pd.DataFrame(Z, columns=[f"C{j}" for j in range(10)])
    return scores, decisions, labels


def test_planted_spurious_concept_is_ranked_first(shortcut_model):
    scores, decisions, labels = shortcut_model
    result = audit(scores, decisions, labels, expected_concepts=["C0", "C3", "C4"],
                   irrelevant_concepts=["C9", "C6"])
    assert isinstance(result, AuditResult)
    assert result.reliance["concept"].iloc[0] == "C9"
    assert result.spurious["concept"].iloc[0] == "C9"
    flagged = dict(zip(result.spurious["concept"], result.spurious["flagged"], strict=True))
    assert flagged == {"C9": True, "C6": False}
    unused = dict(zip(result.unused_expected["concept"], result.unused_expected["unused"], strict=True))
    assert unused == {"C0": False, "C3": False, "C4": True}
    assert result.summary["n_flagged_spurious"] == 1


def test_surrogate_fidelity_is_reported_on_held_out_data(shortcut_model):
    scores, decisions, labels = shortcut_model
    result = audit(scores, decisions, labels, test_size=0.25)
    held = result.surrogate_fidelity.set_index("split").loc["held_out"]
    assert held["n"] == 150
    agree = np.mean(result.surrogate.predict(scores) == decisions)
    assert 0.85 < result.fidelity <= 1.0 and abs(result.fidelity - agree) < 0.05
    assert held["ci_low"] <= result.fidelity <= held["ci_high"]
    assert held["majority_baseline"] < result.fidelity


def test_association_errors_and_slices(shortcut_model):
    scores, decisions, labels = shortcut_model
    result = audit(scores, decisions, labels)
    assoc = result.association.set_index("concept")
    assert assoc.loc["C9", "q_value"] < 1e-6 and assoc.loc["C9", "effect_size"] > 0.3
    assert assoc.loc["C6", "q_value"] > 0.05
    assert (assoc["q_value"] >= assoc["p_value"] - 1e-12).all()
    # false positives are explained by a high ruler score, false negatives by a low one
    fp = result.errors[result.errors["error_type"] == "false_positive"].iloc[0]
    fn = result.errors[result.errors["error_type"] == "false_negative"].iloc[0]
    assert fp["concept"] == "C9" and fp["effect_size"] > 0
    assert fn["concept"] == "C9" and fn["effect_size"] < 0
    worst = result.slices.iloc[0]
    assert "C9" in worst["slice"]
    assert worst["accuracy"] < result.summary["decision_accuracy"] - 0.1
    assert worst["ci_low"] <= worst["accuracy"] <= worst["ci_high"]
    assert (result.slices["size"] >= 20).all()


def test_multiclass_decisions_without_labels():
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(300, 6))
    decisions = np.array(["a", "b", "c"])[np.argmax(Z[:, :3], axis=1)]
    result = audit(Z, decisions)
    assert set(result.association["class"]) == {"a", "b", "c"}
    top = result.association.groupby("class")["concept"].first().to_dict()
    assert top == {"a": "concept_0", "b": "concept_1", "c": "concept_2"}
    assert result.errors.empty and result.slices.empty
    assert result.summary["decision_accuracy"] is None


def test_result_is_json_ready_and_html_escaped(shortcut_model):
    scores, decisions, labels = shortcut_model
    names = {c: f"<script>{c}</script>" for c in scores.columns}
    result = audit(ConceptScores(scores, concept_names=names, vocabulary_hash="v1"), decisions, labels)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["summary"]["fidelity"] == pytest.approx(result.fidelity)
    assert payload["reliance"][0]["concept"] == "C9"
    html_text = result._repr_html_()
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text


def test_audit_bad_input(shortcut_model):
    scores, decisions, labels = shortcut_model
    with pytest.raises(ValueError, match="decisions has 599 entries but the scores have 600"):
        audit(scores, decisions[:-1])
    with pytest.raises(ValueError, match="only one class"):
        audit(scores, np.zeros(600, dtype=int))
    bad = scores.copy()
    bad.iloc[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite.*row 5, concept 'C2'"):
        audit(bad, decisions)
    with pytest.raises(UnknownConceptError, match="irrelevant concept 'ruler'"):
        audit(scores, decisions, irrelevant_concepts=["ruler"])
    with pytest.raises(ValueError, match="both expected and irrelevant"):
        audit(scores, decisions, expected_concepts=["C0"], irrelevant_concepts=["C0"])


def test_fit_logistic_matches_scikit_learn_with_the_same_ridge():
    from sklearn.linear_model import LogisticRegression

    from conceptlens.concepts.reliance import fit_logistic

    rng = np.random.default_rng(3)
    A = rng.normal(size=(300, 4))
    y = (A @ [1.5, -1.0, 0.0, 0.5] + rng.logistic(size=300) > 0).astype(float)
    w, _ = fit_logistic(A, y, l2=2.0)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(A, y)
    np.testing.assert_allclose(w[1:], ref.coef_[0], atol=1e-5)
    np.testing.assert_allclose(w[0], ref.intercept_[0], atol=1e-5)


@pytest.fixture
def leaky_scores():
    """Concept C2's score leaks C0 (a driver of the decisions) but the decisions ignore C2."""
    rng = np.random.default_rng(11)
    Z = rng.normal(size=(500, 4))
    Z[:, 2] = 0.8 * Z[:, 0] + 0.6 * rng.normal(size=500)
    labels = (1.5 * Z[:, 0] - 1.0 * Z[:, 1] + rng.logistic(size=500) > 0).astype(int)
    return pd.DataFrame(Z, columns=["C0", "C1", "C2", "C3"]), labels


def test_leaked_concept_is_associated_but_not_flagged(leaky_scores):
    scores, labels = leaky_scores
    result = audit(scores, labels, irrelevant_concepts=["C2"])
    row = result.spurious.iloc[0]
    assert row["min_q_value"] < 1e-10  # marginally, the leak is strongly associated
    assert row["test"] == "conditional" and row["q_value"] > 0.05 and not row["flagged"]
    assert "marginally associated" in row["reason"]
    tests = result.reliance_tests.set_index("concept")
    assert tests.loc["C0", "q_value"] < 1e-10 and tests.loc["C1", "q_value"] < 1e-10
    assert tests.loc["C0", "effect"] > 0 > tests.loc["C1", "effect"]
    assert (tests["q_value"] >= tests["p_value"] - 1e-12).all()


def test_reliance_beyond_labels_is_separated_from_confounding(leaky_scores):
    scores, labels = leaky_scores
    rng = np.random.default_rng(5)
    # labels that themselves follow a marker C3 (confounded), copied by the decision-maker
    marked = np.where(scores["C3"] > 1.0, 1, labels)
    result = audit(scores, marked, marked, irrelevant_concepts=["C3"])
    row = result.spurious.iloc[0]
    assert row["test"] == "beyond_labels" and not row["flagged"]
    assert row["confounded_with_labels"] and "confounded with the labels" in row["reason"]
    conditional = result.reliance_tests.query("test == 'conditional'").set_index("concept")
    assert conditional.loc["C3", "q_value"] < 1e-6  # without the labels it would look used
    # a decision-maker that adds the marker to clean labels is flagged, with its evidence
    decisions = np.where((scores["C3"] > 1.0) & (rng.random(500) < 0.8), 1, labels)
    result = audit(scores, decisions, labels, irrelevant_concepts=["C3"])
    row = result.spurious.iloc[0]
    assert row["flagged"] and not row["confounded_with_labels"]
    assert row["q_value"] < 1e-6 and row["statistic"] > 20 and row["effect"] > 0
    assert "beyond_labels likelihood-ratio test" in row["reason"]
    assert result.summary["flagged_spurious"] == ["C3"]
    assert result.summary["spurious_test"] == "beyond_labels"


def test_multiclass_reliance_tests_are_one_vs_rest(multiclass_rule):
    scores, y = multiclass_rule
    result = audit(scores, y, y, irrelevant_concepts=["C5"])
    tests = result.reliance_tests
    assert set(tests["test"]) == {"conditional", "beyond_labels", "label_conditional"}
    assert len(tests) == 3 * 3 * scores.shape[1]
    top = (tests.query("test == 'conditional'").sort_values("p_value")
           .drop_duplicates("class").set_index("class")["concept"].to_dict())
    assert top == {"nevus": "C0", "melanoma": "C1", "bcc": "C2"}
    assert not result.spurious["flagged"].any()
    payload = json.loads(json.dumps(result.to_dict()))
    assert len(payload["reliance_tests"]) == len(tests)


def _one_hot_world(seed=0, n=600):
    """Decisions use a six-level finding (one-hot columns, each a small share) and four others."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 6, n)
    onehot = np.eye(6)[colour] + 0.05 * rng.normal(size=(n, 6))
    other = rng.normal(size=(n, 5))
    X = pd.DataFrame(np.column_stack([onehot, other]),
                     columns=[f"col{k}" for k in range(6)] + [f"o{k}" for k in range(5)])
    logit = (2.0 * other[:, 0] + 1.5 * other[:, 1] - 1.2 * other[:, 2] + other[:, 3]
             + np.array([0.4, -0.4, 0.3, -0.3, 0.35, -0.35])[colour])
    decisions = (logit + rng.logistic(size=n) > 0).astype(int)
    return X, decisions


def test_concept_groups_count_a_one_hot_family_as_one():
    from conceptlens.vocab import Concept, ConceptVocabulary

    X, decisions = _one_hot_world()
    plain = audit(X, decisions, expected_concepts=["col1", "o0"])
    row = plain.unused_expected.set_index("concept").loc["col1"]
    assert row["share"] < 0.05  # split over the family: each member alone looks unused
    vocabulary = ConceptVocabulary(
        [Concept(id=f"col{k}", name=f"colour {k}", group="colour") for k in range(6)]
        + [Concept(id=f"o{k}", name=f"other {k}") for k in range(5)]
    )
    for groups in (vocabulary, {f"col{k}": "colour" for k in range(6)}):
        result = audit(X, decisions, expected_concepts=["col1", "o0"], concept_groups=groups)
        table = result.group_reliance
        assert list(table["group"]) == ["colour"] and table.loc[0, "n_concepts"] == 6
        assert table.loc[0, "df"] == 6 and table.loc[0, "q_value"] < 0.05
        np.testing.assert_allclose(
            table.loc[0, "share"],
            result.reliance.set_index("concept").loc[[f"col{k}" for k in range(6)], "share"].sum())
        unused = result.unused_expected.set_index("concept")
        assert not unused.loc["col1", "unused"] and unused.loc["col1", "group_share"] >= 0.05
        assert set(result.reliance.loc[result.reliance["group"] == "colour", "concept"]) == {
            f"col{k}" for k in range(6)}
        assert "group_reliance" in result.to_dict()


def test_group_test_keeps_its_level_when_the_group_is_unused():
    from conceptlens.concepts.reliance import group_likelihood_ratio_tests, standardize

    rejections = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        Z = standardize(rng.normal(size=(300, 6)))
        y = (Z[:, 0] + rng.logistic(size=300) > 0).astype(float)
        r = group_likelihood_ratio_tests(Z, y, [[3, 4, 5], [0, 1]])
        assert r["p_value"][1] < 1e-3  # the group holding the used concept
        rejections += r["p_value"][0] < 0.05
    assert rejections <= 4  # nominal 5 % of 20 runs, with room for chance


def test_n_jobs_gives_the_serial_result(shortcut_model):
    import dataclasses

    scores, decisions, labels = shortcut_model
    serial = audit(scores, decisions, labels, expected_concepts=["C0", "C4"])
    parallel = audit(scores, decisions, labels, expected_concepts=["C0", "C4"], n_jobs=2)
    for field in dataclasses.fields(serial):
        a, b = getattr(serial, field.name), getattr(parallel, field.name)
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert serial.summary == parallel.summary
    np.testing.assert_array_equal(serial.surrogate.coef_, parallel.surrogate.coef_)


def test_reliance_tests_n_jobs_give_the_serial_numbers():
    from conceptlens.concepts.reliance import (
        group_likelihood_ratio_tests,
        likelihood_ratio_tests,
        standardize,
    )

    rng = np.random.default_rng(3)
    Z = standardize(rng.normal(size=(300, 7)))
    y = (Z[:, 0] - Z[:, 2] + rng.logistic(size=300) > 0).astype(float)
    for fn, extra in ((likelihood_ratio_tests, {}),
                      (group_likelihood_ratio_tests, {"groups": [[0, 1], [2], [3, 4, 5]]})):
        serial = fn(Z, y, **extra)
        parallel = fn(Z, y, n_jobs=2, **extra)
        for key in serial:
            np.testing.assert_array_equal(serial[key], parallel[key])
