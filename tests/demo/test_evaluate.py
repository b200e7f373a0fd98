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


def test_demo_scoring_is_the_library_scorer_with_the_modality_word_as_reference(demo_model):
    import torch.nn.functional as F

    from conceptlens.demo.evaluate import DEMO_SCORING, PROMPT_TEMPLATE, REFERENCE_PROMPT
    from conceptlens.models import ConceptCLIPBackbone
    from conceptlens.vocab import ConceptVocabulary
    from conceptlens.vocab.scorer import ConceptScorer

    template = DEMO_SCORING.templates[0]
    assert template.text.replace("{concept}", "{}") == PROMPT_TEMPLATE
    assert template.reference == REFERENCE_PROMPT
    assert DEMO_SCORING.reference_word == "dermatoscopy"
    assert DEMO_SCORING.to_dict()["reference_word"] == "dermatoscopy"
    backbone = ConceptCLIPBackbone(*demo_model)
    vocabulary = ConceptVocabulary.builtin("demo")
    scorer = ConceptScorer(backbone, vocabulary, reference=None, progress=False, templates=DEMO_SCORING.templates,
                           synonyms=False, calibration="paired_softmax", reference_word="dermatoscopy")
    bank = scorer.text_bank()
    feats = backbone.encode_texts([REFERENCE_PROMPT, concept_prompt(vocabulary.ids[1])])
    words = [REFERENCE_PROMPT[a:b] for a, b in feats.offsets[0].tolist()]
    word = F.normalize(feats.token_embeds[0, words.index("dermatoscopy")].float(), dim=-1)
    assert bank.reference_local.shape[0] == 1
    assert np.allclose(bank.reference_local[0].numpy(), word.numpy(), atol=1e-5)
    # the whole reference sentence (the scorer's default) is another vector
    sentence = scorer.with_config(reference_word=None).text_bank()
    assert not np.allclose(sentence.reference_local[0].numpy(), word.numpy(), atol=1e-2)
    # concept vectors: the mean over the tokens of the concept's name, both ways alike
    assert np.allclose(sentence.concept_local.numpy(), bank.concept_local.numpy())
    with pytest.raises(ValueError, match="reference_word 'dermoscopy' is not in"):
        scorer.with_config(reference_word="dermoscopy").text_bank()
    with pytest.raises(ValueError, match="reference_word must be"):
        scorer.with_config(reference_word="")


def test_pointing_tolerance_and_model_pair_left_as_it_was(demo_model):
    model = demo_model[0]
    flags = [p.requires_grad for p in model.parameters()]
    exact = evaluate_demo_model(demo_model, n=60, seed=5)
    loose = evaluate_demo_model(demo_model, n=60, seed=5, tolerance=1)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert loose.concept_auc == exact.concept_auc
    assert loose.settings["pointing_tolerance_patches"] == 1
    assert all(loose.pointing_game[c] >= exact.pointing_game[c] for c in exact.pointing_game)
