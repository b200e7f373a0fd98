"""Tests of the demo-model training code (a few steps on a handful of images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conceptlens.demo import CONCEPT_IDS, generate, load_demo_model, patch_masks
from conceptlens.demo.train import (
    TrainingConfig,
    batch_losses,
    encode_captions,
    main,
    pixels_from_uint8,
    train_demo_model,
)

SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def _config(seed: int = 0, steps: int = 3) -> TrainingConfig:
    return TrainingConfig(
        seed=seed,
        n_train=32,
        steps=steps,
        batch_size=16,
        warmup_steps=1,
        vision_config=dict(SMALL),
        text_config=dict(SMALL),
        patch_weight=0.0,
    )


@pytest.fixture(scope="module")
def data():
    return generate(32, seed=0, masks=False)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_few_steps_train_and_lower_the_loss(data):
    model, processor, history = train_demo_model(_config(steps=8), data=data, progress=False)
    assert len(history["loss"]) == 8
    assert all(np.isfinite(history["loss"]))
    assert np.mean(history["loss"][-3:]) < np.mean(history["loss"][:3])
    assert history["config"]["steps"] == 8
    out = model(pixel_values=pixels_from_uint8(data.images[:2]))
    assert out["image_token_features"].shape == (2, 64, 16)


def test_same_seed_same_weights_other_seed_other_weights(data):
    first, _, _ = train_demo_model(_config(seed=0), data=data, progress=False)
    second, _, _ = train_demo_model(_config(seed=0), data=data, progress=False)
    third, _, _ = train_demo_model(_config(seed=1), data=data, progress=False)
    a, b, c = _state(first), _state(second), _state(third)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_training_restores_the_thread_count(data):
    before = torch.get_num_threads()
    train_demo_model(_config(steps=1), data=data, progress=False)
    assert torch.get_num_threads() == before


def test_mention_spans_cover_the_mentioned_words(data):
    from conceptlens.demo.train import _tokenizer_words
    from conceptlens.models.reference.factory import build_tokenizer

    tokenizer = build_tokenizer(_tokenizer_words())
    ids, spans = encode_captions(tokenizer, data.captions, data.mentions)
    assert spans.shape == (32, len(CONCEPT_IDS) + 1, ids.shape[1])
    for i, mentions in enumerate(data.mentions):
        named = spans[i, :-1].any(-1).nonzero().flatten().tolist()
        assert sorted(named) == sorted(k for k, _, _ in mentions)
        modality_words = tokenizer.decode(ids[i][spans[i, -1]]).split()
        assert set(modality_words) <= {"dermatoscopy", "dermoscopy", "dermoscopic"}
        assert bool(modality_words) == any(w in data.captions[i].lower() for w in ("dermatoscopy", "dermoscopy", "dermoscopic"))
        for k, start, end in mentions:
            words = tokenizer.decode(ids[i][spans[i, k]])
            assert words.replace(" ", "") == data.captions[i][start:end].lower().replace(" ", "")
    # caption words are whole tokens: no word pieces
    tokens = tokenizer.convert_ids_to_tokens(ids[ids != 0].tolist())
    assert not any(t.startswith("##") for t in tokens)


def test_local_loss_prefers_true_concept_labels(data):
    model, processor, _ = train_demo_model(_config(steps=8), data=data, progress=False)
    ids, spans = encode_captions(processor.tokenizer, data.captions, data.mentions)
    pixels = pixels_from_uint8(data.images)
    concepts = torch.from_numpy(data.concepts)
    with torch.no_grad():
        true = batch_losses(model, pixels, ids, spans, concepts)
        wrong = batch_losses(model, pixels, ids, spans, 1 - concepts)
    assert true["local"] < wrong["local"]
    assert set(true) == {"global", "local"}


def test_patch_loss_uses_the_masks():
    data = generate(32, seed=0)
    config = _config(steps=4)
    config.patch_weight = 0.5
    model, processor, history = train_demo_model(config, data=data, progress=False)
    assert len(history["patch_loss"]) == 4 and np.isfinite(history["patch_loss"]).all()
    ids, spans = encode_captions(processor.tokenizer, data.captions, data.mentions)
    labels = torch.from_numpy(patch_masks(data.masks, (8, 8))).flatten(2)
    args = (model, pixels_from_uint8(data.images), ids, spans, torch.from_numpy(data.concepts))
    with torch.no_grad():
        right = batch_losses(*args, patch_labels=labels)["patch"]
        shuffled = batch_losses(*args, patch_labels=labels.roll(3, dims=-1))["patch"]
    assert torch.isfinite(right) and right != shuffled
    with pytest.raises(ValueError, match="needs data generated with masks"):
        train_demo_model(config, data=generate(32, seed=0, masks=False), progress=False)


def test_bad_settings_and_data_raise(data):
    with pytest.raises(ValueError, match="steps >= 1"):
        train_demo_model(TrainingConfig(steps=0), data=data, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        train_demo_model(_config(), data=generate(4, seed=0, size=32, masks=False), progress=False)
    with pytest.raises(ValueError, match="uint8"):
        pixels_from_uint8(np.zeros((2, 8, 8, 3), dtype=np.float32))


def test_command_line_writes_a_loadable_folder(tmp_path):
    from dataclasses import asdict

    settings = asdict(_config(steps=5))
    (tmp_path / "config.json").write_text(json.dumps(settings))
    out = tmp_path / "model"
    args = ["--out", str(out), "--config", str(tmp_path / "config.json"), "--seed", "3", "--steps", "2", "--eval-n", "40"]
    assert main([*args, "--no-progress"]) == 0
    summary = json.loads((out / "training.json").read_text())
    assert summary["config"]["seed"] == 3 and summary["config"]["steps"] == 2
    assert set(summary["evaluation"]["concept_auc"]) == set(CONCEPT_IDS)
    card = (out / "README.md").read_text()
    assert "not for clinical use" in card and "synthetic" in card
    model, processor = load_demo_model(out)
    assert {"modeling_conceptclip.py", "configuration_conceptclip.py"} <= {p.name for p in out.glob("*.py")}
    assert model.config.vision_config.hidden_size == 16
    assert processor(text=["irregular streaks"])["input_ids"].shape[1] == 77


def test_load_demo_model_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_demo_model(tmp_path)


def test_command_line_rejects_unknown_config_fields(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"stepz": 3}))
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path / "m"), "--config", str(tmp_path / "config.json")])
    assert info.value.code == 2
    assert "unknown TrainingConfig fields" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_command_line_rejects_a_config_that_is_not_json(tmp_path, capsys):
    (tmp_path / "config.json").write_text("steps: 3")
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path / "m"), "--config", str(tmp_path / "config.json")])
    assert info.value.code == 2
    assert "is not readable JSON" in capsys.readouterr().err


def test_a_caption_matches_images_that_show_all_it_names():
    from conceptlens.demo.train import caption_matches

    concepts = torch.zeros(3, 8, dtype=torch.long)
    concepts[0, 0] = 1  # image 0: network
    concepts[1, :2] = 1  # image 1: network + veil; image 2: nothing
    spans = torch.zeros(3, 9, 5, dtype=torch.bool)
    spans[0, 0, 1] = True  # caption 0 names network
    spans[1, 0, 1] = spans[1, 1, 3] = True  # caption 1 names network and veil
    spans[2, 8, 1] = True  # caption 2 names only the modality ("This is dermatoscopy.")
    expected = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    assert torch.equal(caption_matches(concepts, spans), expected)


def test_a_saved_demo_model_loads_with_the_remote_code_exported_at_save_time(tmp_path):
    """The shipped folder holds no code; saving writes the package's and auto_map names it."""
    from transformers import AutoModel, AutoProcessor

    from conceptlens.demo import DEMO_WEIGHTS_DIR
    from conceptlens.demo.weights_io import save_demo_model
    from conceptlens.models import load_backbone
    from conceptlens.models.reference import REMOTE_CODE_FILES

    assert not list(DEMO_WEIGHTS_DIR.rglob("*.py"))
    model, processor = load_demo_model()
    folder = save_demo_model(model, processor, tmp_path / "saved demo")
    reference = Path(__file__).resolve().parents[2] / "conceptlens" / "models" / "reference"
    for name in REMOTE_CODE_FILES["transformers"]:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    assert json.loads((folder / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_conceptclip.ConceptCLIPConfig",
        "AutoModel": "modeling_conceptclip.ConceptCLIPModel",
    }
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True)
    loaded_processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert not type(loaded).__module__.startswith("conceptlens")  # the folder's code ran
    images = list(generate(2, seed=5, masks=False).images)
    texts = ["irregular streaks", "This is dermatoscopy."]
    inputs = loaded_processor(images=images, text=texts)
    expected_inputs = processor(images=images, text=texts)
    for key in ("pixel_values", "input_ids"):
        assert torch.equal(inputs[key], expected_inputs[key]), key
    with torch.no_grad():
        actual, expected = loaded(**inputs), model(**expected_inputs)
    for key in ("image_features", "text_features", "image_token_features", "logit_scale"):
        assert torch.equal(actual[key], expected[key]), key
    backbone = load_backbone(folder, device="cpu")  # the package's code: no remote code needed
    assert type(backbone.model).__module__.startswith("conceptlens")
