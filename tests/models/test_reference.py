"""The ConceptCLIP-architecture reference model: interface of CONCEPTCLIP.md, sizes, auto_map."""

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

import conceptlens.models.reference as reference_package
from conceptlens.models import create_reference_model
from conceptlens.models.reference import (
    REMOTE_CODE_FILES,
    ConceptCLIPModel,
    build_tokenizer,
    load_reference_folder,
    reference_config,
)

OUTPUT_KEYS = {
    "image_features",
    "text_features",
    "logit_scale",
    "logit_bias",
    "image_token_features",
    "text_token_features",
    "concept_logit_scale",
    "concept_logit_bias",
}
TEXTS = ["a mole with an irregular border", "blue-white veil", "this is dermatoscopy."]


@pytest.fixture(scope="module")
def tiny():
    return create_reference_model("tiny")


@pytest.fixture(scope="module")
def inputs(tiny):
    _, processor = tiny
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
    return processor(images=images, text=TEXTS)


@pytest.fixture(scope="module")
def saved_folder(tiny, tmp_path_factory):
    model, processor = tiny
    folder = tmp_path_factory.mktemp("conceptclip_tiny")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_tiny_outputs_have_the_documented_keys_and_shapes(tiny, inputs):
    model, _ = tiny
    d = model.config.embed_dim
    rows, cols = model.config.grid_size
    with torch.no_grad():
        out = model(**inputs)
    assert isinstance(out, dict) and set(out) == OUTPUT_KEYS
    assert out["image_features"].shape == (2, d)
    assert out["text_features"].shape == (3, d)
    assert out["image_token_features"].shape == (2, rows * cols, d)
    assert out["text_token_features"].shape == (3, 77, d)
    for key in ("logit_scale", "logit_bias", "concept_logit_scale", "concept_logit_bias"):
        assert out[key].shape == ()
    norms = torch.cat([out["image_features"], out["text_features"]]).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(5))
    # token features are not normalised
    assert not torch.allclose(out["image_token_features"].norm(dim=-1), torch.ones(2, rows * cols))


def test_scales_are_returned_exponentiated(tiny):
    model, _ = tiny
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[2, 3]]))
    assert out["logit_scale"].item() == pytest.approx(math.exp(model.logit_scale.item()))
    assert out["concept_logit_scale"].item() == pytest.approx(
        math.exp(model.concept_logit_scale.item())
    )
    assert out["logit_bias"].item() == pytest.approx(model.logit_bias.item())


def test_image_only_and_text_only_calls(tiny, inputs):
    model, _ = tiny
    with torch.no_grad():
        both = model(**inputs)
        image_only = model(pixel_values=inputs["pixel_values"])
        text_only = model(input_ids=inputs["input_ids"])
    assert image_only["text_features"] is None and image_only["text_token_features"] is None
    assert text_only["image_features"] is None and text_only["image_token_features"] is None
    torch.testing.assert_close(image_only["image_features"], both["image_features"])
    torch.testing.assert_close(text_only["text_token_features"], both["text_token_features"])


def test_pad_mask_is_rebuilt_from_the_pad_id(tiny, inputs):
    model, processor = tiny
    with torch.no_grad():
        ignored = model(input_ids=inputs["input_ids"], attention_mask=torch.ones_like(
            inputs["input_ids"]))
        padded_77 = model(input_ids=inputs["input_ids"])["text_features"]
        short = processor(text=TEXTS, padding="longest")["input_ids"]
        padded_short = model(input_ids=short)["text_features"]
    torch.testing.assert_close(ignored["text_features"], padded_77)
    assert short.shape[1] < 77
    # masked padding: the global embedding does not depend on how much padding there is
    torch.testing.assert_close(padded_short, padded_77, atol=1e-5, rtol=1e-5)


def test_encode_methods_return_tokens_before_the_token_heads(tiny, inputs):
    model, _ = tiny
    with torch.no_grad():
        out = model(**inputs)
        image_global, image_tokens = model.encode_image(inputs["pixel_values"], normalize=False)
        text_global, text_tokens = model.encode_text(inputs["input_ids"], normalize=True)
        vision = model.vision_model(pixel_values=inputs["pixel_values"])
    # patch tokens: last layer after the final layer norm, then image_proj
    torch.testing.assert_close(image_tokens, vision.last_hidden_state)
    torch.testing.assert_close(model.image_proj(image_tokens), out["image_token_features"])
    torch.testing.assert_close(model.text_proj(text_tokens), out["text_token_features"])
    assert text_tokens.shape[-1] == model.config.text_config.hidden_size
    assert not torch.allclose(image_global.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(
        torch.nn.functional.normalize(image_global, dim=-1), out["image_features"]
    )
    torch.testing.assert_close(text_global, out["text_features"])


def test_processor_squashes_bicubic_and_normalises_to_minus_one_one(tiny):
    _, processor = tiny
    white = Image.new("RGB", (90, 30), "white")
    black = np.zeros((30, 90, 3), dtype=np.uint8)
    pixels = processor(images=[white, black])["pixel_values"]
    assert pixels.shape == (2, 3, 64, 64)
    torch.testing.assert_close(pixels[0], torch.ones(3, 64, 64))
    torch.testing.assert_close(pixels[1], -torch.ones(3, 64, 64))
    assert processor(text="a mole")["input_ids"].shape == (1, 77)


def test_tokenizer_never_emits_unk_and_uses_supplied_words():
    tokenizer = build_tokenizer(["telangiectasia"])
    ids = tokenizer("Telangiectasia, zxq 42% regression!")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.tokenize("telangiectasia") == ["telangiectasia"]
    assert tokenizer.pad_token_id == 0 and tokenizer.is_fast


def test_seed_controls_the_weights():
    a, _ = create_reference_model("tiny", seed=1)
    b, _ = create_reference_model("tiny", seed=1)
    c, _ = create_reference_model("tiny", seed=2)
    wa, wb, wc = (m.image_proj[0].weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_config_overrides_and_custom_vocabulary():
    model, processor = create_reference_model(
        "tiny", tokenizer_vocab=["lesion"], vision_config={"image_size": 36}
    )
    assert model.config.grid_size == (4, 4)  # 36 // 8; the last 4 pixels are not covered
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    with torch.no_grad():
        out = model(pixel_values=processor(images=np.zeros((9, 9, 3), np.uint8))["pixel_values"])
    assert out["image_token_features"].shape[1] == 16
    with pytest.raises(ValueError, match="size must be one of"):
        create_reference_model("medium")


def test_full_config_has_the_released_dimensions_and_parameter_count():
    config = reference_config("full")
    vision, text = config.vision_config, config.text_config
    assert (vision.image_size, vision.patch_size) == (384, 14)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (
        1152, 27, 16)
    assert vision.intermediate_size == 4304
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (768, 12, 30522)
    assert config.embed_dim == 1152 and config.grid_size == (27, 27)
    with torch.device("meta"):
        model = ConceptCLIPModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.53e9 < n_params < 0.55e9  # "about 0.54 B parameters"
    assert model.text_projection.weight.shape == (1152, 768) and model.text_projection.bias is None
    assert [m.weight.shape for m in (model.image_proj[0], model.image_proj[2])] == [
        (1152, 1152), (1152, 1152)]
    assert [m.weight.shape for m in (model.text_proj[0], model.text_proj[2])] == [
        (1152, 768), (1152, 1152)]
    assert model.vision_model.embeddings.position_embedding.weight.shape == (729, 1152)


def test_saved_folder_carries_auto_map_and_self_contained_code(saved_folder):
    config = json.loads((saved_folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_conceptclip.ConceptCLIPConfig",
        "AutoModel": "modeling_conceptclip.ConceptCLIPModel",
    }
    processor_config = json.loads((saved_folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == (
        "processing_conceptclip.ConceptCLIPProcessor")
    assert sorted(p.name for p in saved_folder.glob("*.py")) == sorted(
        REMOTE_CODE_FILES["transformers"])


@pytest.mark.parametrize("flavour", sorted(REMOTE_CODE_FILES))
def test_remote_code_imports_only_torch_transformers_and_its_own_files(flavour):
    # the saved folder runs without conceptlens: absolute imports of torch / transformers
    # (and the standard library's typing / math), relative ones of the flavour's own files
    folder = Path(reference_package.__file__).parent
    files = REMOTE_CODE_FILES[flavour]
    allowed = {"__future__", "typing", "math", "torch", "transformers"}
    for name in files:
        relative, absolute = set(), set()
        for node in ast.walk(ast.parse((folder / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                relative.add(f"{node.module}.py")
            elif isinstance(node, ast.ImportFrom):
                absolute.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                absolute.update(alias.name.split(".")[0] for alias in node.names)
        assert relative <= set(files), (name, relative - set(files))
        assert absolute <= allowed, (name, absolute - allowed)


def test_auto_classes_round_trip_with_identical_outputs(tiny, inputs, saved_folder):
    model, processor = tiny
    loaded = AutoModel.from_pretrained(saved_folder, trust_remote_code=True)
    loaded_processor = AutoProcessor.from_pretrained(saved_folder, trust_remote_code=True)
    assert not type(loaded).__module__.startswith("conceptlens")  # the folder's code ran
    assert type(loaded).__name__ == "ConceptCLIPModel" and not loaded.training
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
    reloaded_inputs = loaded_processor(images=images, text=TEXTS)
    for key in ("pixel_values", "input_ids"):
        assert torch.equal(reloaded_inputs[key], inputs[key])
    with torch.no_grad():
        expected, actual = model(**inputs), loaded(**reloaded_inputs)
    for key in OUTPUT_KEYS:
        assert torch.equal(actual[key], expected[key]), key


def test_package_classes_load_the_folder_without_remote_code(tiny, inputs, saved_folder):
    model, _ = tiny
    loaded, processor = load_reference_folder(saved_folder)
    assert processor.max_length == 77 and processor.image_processor.size["height"] == 64
    with torch.no_grad():
        assert torch.equal(loaded(**inputs)["image_features"], model(**inputs)["image_features"])
