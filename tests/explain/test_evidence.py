"""Explanations that prove themselves, on the shipped demo model and fresh synthetic images.

The seeds here (91xx) are used nowhere else in the suite.
"""

import warnings

import numpy as np
import pytest
import torch

from conceptlens.concepts import SparseLinearBottleneck
from conceptlens.demo import generate
from conceptlens.errors import BaselineWarning, ConvergenceWarning, ScoreSpaceMismatchError
from conceptlens.explain import VERDICTS, ClassTarget, ConceptTarget, attribute, faithfulness_card
from conceptlens.explain.completeness import judge_completeness
from conceptlens.models import load_backbone
from conceptlens.vocab import ConceptScorer, ConceptVocabulary

ARTIFACT = "artifact:ink_marking"


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("demo", device="cpu")


@pytest.fixture(scope="module")
def scorer(backbone):
    vocabulary = ConceptVocabulary.builtin("demo")
    criteria = vocabulary.subset([c for c in vocabulary.ids if c != ARTIFACT])
    return ConceptScorer(backbone, criteria, mode="combined", calibration="sigmoid", progress=False)


@pytest.fixture(scope="module")
def training(scorer):
    data = generate(240, seed=9101, size=64)
    ids = [f"train_{i:03d}.png" for i in range(len(data.images))]
    scores = scorer.score(dict(zip(ids, data.images, strict=True)))
    labels = np.where(data.diagnoses == 1, "melanoma", "benign")
    return scores, labels


@pytest.fixture(scope="module")
def bottleneck(training):
    scores, labels = training
    return SparseLinearBottleneck(cv=3).fit(scores, labels)


@pytest.fixture(scope="module")
def logit_bottleneck(training):
    scores, labels = training
    return SparseLinearBottleneck(cv=3, input_transform="logit").fit(scores, labels)


@pytest.fixture(scope="module")
def fresh_images():
    return list(generate(10, seed=9177, size=64).images)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["bottleneck", "logit_bottleneck"])
def test_defaults_converge_with_the_right_sign_on_fresh_images(backbone, scorer, fresh_images, which, request):
    model = request.getfixturevalue(which)
    converged, signs = 0, 0
    for image in fresh_images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            a = attribute(scorer, image, ClassTarget("melanoma"), bottleneck=model)
        total = float(a.raw.sum())
        difference = a.input_value - a.baseline_value
        assert total == pytest.approx(difference + a.convergence_delta, rel=1e-6, abs=1e-6)
        converged += bool(a.converged and a.completeness_gap is not None and a.completeness_gap <= 0.05)
        signs += bool(np.sign(total) == np.sign(difference))
        assert a.verdict in VERDICTS
        assert a.baseline in a.baseline_candidates and a.n_steps >= 32
    assert converged >= 9
    assert signs == len(fresh_images)


def test_unconverged_call_warns_and_says_so(backbone, scorer, bottleneck, fresh_images):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        a = attribute(scorer, fresh_images[0], ClassTarget("melanoma"),
                      bottleneck=bottleneck, baselines="black", n_steps=2)
    assert a.converged is False and a.verdict == "not converged" and a.n_steps == 2
    assert a.completeness_gap > 0.05


def test_auto_steps_stop_at_the_budget_and_warn(backbone, scorer, bottleneck, fresh_images):
    with pytest.warns(ConvergenceWarning):
        a = attribute(scorer, fresh_images[1], ClassTarget("melanoma"),
                      bottleneck=bottleneck, baselines="black", max_steps=4, tolerance=1e-6)
    assert a.n_steps == 4


def _input_margin(bottleneck, scorer, backbone, image):
    with torch.no_grad():
        fn = ClassTarget("melanoma").build(backbone, scorer, bottleneck)
        return float(fn(backbone.preprocess([image]).float())[0])


def test_auto_baseline_is_not_on_the_inputs_side(backbone, scorer, bottleneck, fresh_images):
    for image in fresh_images[:4]:
        with warnings.catch_warnings():
            warnings.simplefilter("error", BaselineWarning)
            a = attribute(scorer, image, ClassTarget("melanoma"),
                          bottleneck=bottleneck, n_steps=8)
        opposite = [v for v in a.baseline_candidates.values() if np.sign(v) != np.sign(a.input_value)]
        if opposite:  # auto picks the candidate nearest the boundary on the other side
            assert a.baseline_same_side is False
            assert abs(a.baseline_value) == pytest.approx(min(abs(v) for v in opposite))


def test_baseline_on_the_inputs_side_warns(backbone, scorer, bottleneck, fresh_images):
    # the mid-grey "zero" image is scored as a confident melanoma by the demo chain
    zero = attribute(scorer, fresh_images[0], ClassTarget("melanoma"),
                     bottleneck=bottleneck, baselines="zero", n_steps=4, method="occlusion")
    assert zero.baseline_value > 0
    melanoma_like = [im for im in fresh_images if _input_margin(bottleneck, scorer, backbone, im) > 0]
    assert melanoma_like
    with pytest.warns(BaselineWarning, match="same side"):
        a = attribute(scorer, melanoma_like[0], ClassTarget("melanoma"),
                      bottleneck=bottleneck, baselines="zero")
    assert a.baseline_same_side is True
    assert a.verdict in ("baseline on the same side of the decision", "not converged")


def test_baseline_equal_to_the_input_is_ill_conditioned(backbone, scorer, bottleneck, fresh_images):
    pixels = backbone.preprocess([fresh_images[2]]).float()
    with pytest.warns(BaselineWarning, match="nearly equal"):
        a = attribute(scorer, fresh_images[2], ClassTarget("melanoma"),
                      bottleneck=bottleneck, baselines=pixels[0], n_steps=4)
    assert a.baseline == "tensor" and a.completeness_gap is None
    assert a.verdict == "baseline scored like the input"
    assert abs(a.convergence_delta) < 1e-6


def test_expected_baselines_average_and_keep_completeness(backbone, scorer, bottleneck, fresh_images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = attribute(scorer, fresh_images[3], ClassTarget("melanoma"),
                      bottleneck=bottleneck, baselines="expected", max_steps=256)
    assert a.baselines.shape[0] == len(a.baseline_candidates) == 6
    assert a.baseline_value == pytest.approx(np.mean(list(a.baseline_candidates.values())))
    assert float(a.raw.sum()) == pytest.approx(a.input_value - a.baseline_value + a.convergence_delta)


def test_concept_target_with_probabilities_checks_its_side(backbone, scorer, fresh_images):
    a = attribute(scorer, fresh_images[4], ConceptTarget(scorer.vocabulary.ids[0]))
    assert a.baseline_same_side is not None  # sigmoid scores have a threshold at 0.5
    cosine = scorer.with_config(calibration="cosine")
    b = attribute(cosine, fresh_images[4], ConceptTarget(cosine.vocabulary.ids[0]))
    assert b.baseline_same_side is None
    assert b.baseline_value == pytest.approx(min(b.baseline_candidates.values()))


def test_faithfulness_card_holds_every_number(backbone, scorer, bottleneck, fresh_images):
    a = attribute(scorer, fresh_images[5], ClassTarget("melanoma"), bottleneck=bottleneck)
    card = faithfulness_card(a, steps=10, n_random=2)
    for key in ("method", "baseline", "baseline_value", "input_value", "n_steps", "completeness_gap",
                "convergence_delta", "deletion_auc", "random_deletion_auc", "deletion_ratio", "verdict"):
        assert key in card
    assert card["verdict"] == a.verdict and card["n_steps"] == a.n_steps
    assert card["deletion_ratio"] == pytest.approx(card["deletion_auc"] / card["random_deletion_auc"])


def test_saliency_has_no_completeness_check(backbone, scorer, fresh_images):
    a = attribute(scorer, fresh_images[0], scorer.vocabulary.ids[0], method="saliency")
    assert a.converged is None and a.baseline is None and a.verdict == "no completeness check"


@pytest.mark.parametrize("bad", [{"n_steps": 0}, {"n_steps": "many"}, {"tolerance": 0.0},
                                 {"tolerance": 1.5}, {"max_steps": 0}, {"baselines": "grey"},
                                 {"baselines": [1, 2]}])
def test_bad_settings_are_named(backbone, scorer, fresh_images, bad):
    with pytest.raises((ValueError, TypeError), match=next(iter(bad)) if "baselines" not in bad else "baseline"):
        attribute(scorer, fresh_images[0], scorer.vocabulary.ids[0], **bad)


def test_judge_completeness_cases():
    assert judge_completeness(-10.0, 12.7, 22.8).converged
    wrong_sign = judge_completeness(28.9, 12.7, 22.8)
    assert not wrong_sign.converged and wrong_sign.gap > 1
    tiny = judge_completeness(0.3, 5.0, 5.0001)
    assert tiny.ill_conditioned and tiny.gap is None and not tiny.converged


# ---------------------------------------------------------------------------- score spaces
def test_logit_bottleneck_class_target_equals_decision_function(backbone, scorer, logit_bottleneck,
                                                                 fresh_images):
    for image in fresh_images[:3]:
        pixels = backbone.preprocess([image]).float()
        with torch.no_grad():
            value = float(ClassTarget("melanoma").build(backbone, scorer, logit_bottleneck)(pixels)[0])
        scores = scorer.score({"x.png": image})
        assert value == pytest.approx(float(logit_bottleneck.decision_function(scores)[0]), abs=1e-4)


def test_logit_bottleneck_differs_from_identity_on_the_same_scores(training, logit_bottleneck):
    scores, labels = training
    assert logit_bottleneck.input_transform == "logit"
    assert np.mean(logit_bottleneck.predict(scores) == labels) > 0.8
    X = scores.to_numpy()
    expected = np.log(X / (1 - X)) @ logit_bottleneck.coef_[0] + logit_bottleneck.intercept_[0]
    np.testing.assert_allclose(logit_bottleneck.decision_function(scores), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("change", [{"aggregation": "mean"}, {"calibration": "cosine"}, {"alpha": 0.9},
                                    {"mode": "global"}])
def test_mismatched_scorer_raises(backbone, scorer, logit_bottleneck, fresh_images, change):
    other = scorer.with_config(**change)
    key = next(iter(change))
    with pytest.raises(ScoreSpaceMismatchError, match=key):
        attribute(other, fresh_images[0], ClassTarget("melanoma"),
                  bottleneck=logit_bottleneck, method="saliency")
    with pytest.raises(ScoreSpaceMismatchError, match=key):
        logit_bottleneck.predict(other.score({"x.png": fresh_images[0]}))


def test_score_space_survives_save_and_load(tmp_path, training, logit_bottleneck, backbone, scorer, fresh_images):
    scores, _ = training
    loaded = SparseLinearBottleneck.load(logit_bottleneck.save(tmp_path / "model"))
    assert loaded.input_transform == "logit" and loaded.score_space_ == logit_bottleneck.score_space_
    np.testing.assert_allclose(loaded.decision_function(scores), logit_bottleneck.decision_function(scores))
    with pytest.raises(ScoreSpaceMismatchError):
        ClassTarget("melanoma").build(backbone, scorer.with_config(aggregation="mean"), loaded)


def test_logit_of_non_probabilities_is_refused():
    X = np.random.default_rng(0).normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="input_transform='logit' needs scores in"):
        SparseLinearBottleneck(cv=None, input_transform="logit").fit(X, y)
    with pytest.raises(ValueError, match="input_transform must be one of"):
        SparseLinearBottleneck(cv=None, input_transform="log").fit(np.abs(X) / 10, y)
