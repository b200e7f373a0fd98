"""The shipped demo model meets its quality bars on a fresh sample; evaluation edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from conceptlens.demo import (
    CRITERIA_IDS,
    DEMO_WEIGHTS_DIR,
    QUALITY_BARS,
    concept_prompt,
    evaluate_demo_model,
    generate,
    load_demo_model,
)

# Training draws its images with seed 0 and the model card uses 20240601: this is neither.
FRESH_SEED = 4242


@pytest.fixture(scope="module")
def demo_model():
    if not (DEMO_WEIGHTS_DIR / "model.safetensors").is_file():
        pytest.fail(f"the shipped demo weights are missing from {DEMO_WEIGHTS_DIR}")
    return load_demo_model()


@pytest.fixture(scope="module")
def evaluation(demo_model):
    return evaluate_demo_model(demo_model, n=300, seed=FRESH_SEED)


def test_shipped_folder_has_weights_processor_and_card():
    names = {p.name for p in DEMO_WEIGHTS_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= names
    assert (DEMO_WEIGHTS_DIR / "model.safetensors").stat().st_size < 8 * 2**20
    card = (DEMO_WEIGHTS_DIR / "README.md").read_text()
    assert "not for clinical use" in card and "synthetic" in card


def test_zero_shot_annotation_auc_of_every_criterion(evaluation):
    for concept in CRITERIA_IDS:
        assert evaluation.concept_auc[concept] >= QUALITY_BARS["auc"], concept


def test_concept_maps_point_at_the_concept(evaluation):
    assert evaluation.settings["pointing_tolerance_patches"] == 0
    for concept in CRITERIA_IDS:
        assert evaluation.pointing_game[concept] >= QUALITY_BARS["pointing_game"], concept


def test_sparse_bottleneck_recovers_the_checklist(evaluation):
    assert evaluation.diagnosis_accuracy >= QUALITY_BARS["diagnosis_accuracy"]
    assert set(evaluation.top_weighted[:3]) == set(CRITERIA_IDS[:3])
    assert evaluation.failures() == []


def test_failures_name_what_is_missed(evaluation):
    strict = {"auc": 1.01, "pointing_game": 0.0, "diagnosis_accuracy": 0.0}
    missed = evaluation.failures(strict)
    assert len(missed) == len(CRITERIA_IDS)
    assert all("AUC of derm7pt:" in m for m in missed)


def test_a_random_model_fails_the_bars():
    from conceptlens.demo.train import _tokenizer_words
    from conceptlens.models import create_reference_model

    random_model = create_reference_model("tiny", seed=0, tokenizer_vocab=_tokenizer_words())
    result = evaluate_demo_model(random_model, n=120, seed=FRESH_SEED)
    assert result.failures()


def test_prompts_and_bad_inputs(demo_model):
    assert concept_prompt("derm7pt:blue_whitish_veil") == "This is dermatoscopy of blue-whitish veil."
    with pytest.raises(TypeError, match="Backbone or a \\(model, processor\\) pair"):
        evaluate_demo_model(object())
    with pytest.raises(ValueError, match="masks=True"):
        evaluate_demo_model(demo_model, data=generate(20, seed=1, masks=False))
    with pytest.raises(ValueError, match="positive and negative"):
        evaluate_demo_model(demo_model, data=generate(10, seed=1, concept_prob=0.0))
    with pytest.raises(ValueError, match="local_pooling"):
        evaluate_demo_model(demo_model, n=40, seed=1, local_pooling="median")


def test_evaluation_is_deterministic(demo_model):
    a = evaluate_demo_model(demo_model, n=60, seed=5)
    b = evaluate_demo_model(demo_model, n=60, seed=5)
    assert a.to_dict() == b.to_dict()
    assert np.isfinite(list(a.bottleneck_weights.values())).all()


def test_load_backbone_demo_meets_the_bars():
    from conceptlens.models import load_backbone

    backbone = load_backbone("demo")
    result = evaluate_demo_model(backbone, n=300, seed=FRESH_SEED)
    assert result.failures() == []
