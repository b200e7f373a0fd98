"""Tests for the Hugging Face CLIP backbone adapter (tiny random model, offline)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from conceptlens.models._hf_common import _pooled
from conceptlens.models.clip import CLIPBackbone
from conceptlens.models.errors import BackboneLoadError, BackboneNotFoundError
from tests.helpers.backbones import CLIP_IMAGE as IMAGE
from tests.helpers.backbones import CLIP_PATCH as PATCH
from tests.helpers.backbones import CLIP_PROJECTION as PROJECTION
from tests.helpers.backbones import CLIP_TEXT_LENGTH as TEXT_LENGTH
from tests.helpers.backbones import tiny_clip_parts


@pytest.fixture(scope="module")
def parts() -> tuple[CLIPModel, CLIPProcessor]:
    return tiny_clip_parts()


@pytest.fixture(scope="module")
def backbone(parts) -> CLIPBackbone:
    model, processor = parts
    return CLIPBackbone(model, processor, model_id="tiny-clip")


@pytest.fixture(scope="module")
def pixels(backbone) -> torch.Tensor:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)) for _ in range(2)]
    return backbone.preprocess(images)


def test_attributes(backbone, parts):
    model, _ = parts
    assert backbone.image_size == (IMAGE, IMAGE)
    assert backbone.grid_size == (IMAGE // PATCH, IMAGE // PATCH)
    assert backbone.embed_dim == PROJECTION
    assert backbone.num_prefix_tokens == 1
    assert backbone.logit_scale == pytest.approx(math.exp(2.0), rel=1e-6)
    assert backbone.logit_bias == 0.0
    assert backbone.concept_logit_scale == backbone.logit_scale
    assert backbone.concept_logit_bias == 0.0
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_identity_describes_preprocessing(backbone):
    identity = backbone.identity.to_dict()
    assert identity["family"] == "clip"
    assert identity["model_id"] == "tiny-clip"
    assert identity["dtype"] == "float32"
    assert identity["weights_hash"] and len(identity["weights_hash"]) == 64
    pre = identity["preprocessing"]
    # the whole image is fed, squashed to the model's input (no centre crop), so maps map back
    assert pre["resize_mode"] == "squash"
    assert pre["resize"] == {"height": IMAGE, "width": IMAGE}
    assert pre["resample"] == "bicubic"
    assert pre["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])


def test_global_image_embedding_equals_model(backbone, parts, pixels):
    model, _ = parts
    features = backbone.encode_images(pixels)
    with torch.no_grad():
        own = F.normalize(_pooled(model.get_image_features(pixel_values=pixels)), dim=-1)
        input_ids = torch.full((pixels.shape[0], 4), model.config.text_config.eos_token_id)
        forward = model(input_ids=input_ids, pixel_values=pixels).image_embeds
    assert features.global_embeds.shape == (2, PROJECTION)
    torch.testing.assert_close(features.global_embeds, own, atol=1e-5, rtol=0)
    torch.testing.assert_close(features.global_embeds, forward, atol=1e-5, rtol=0)


def test_patch_tokens_are_projected_last_layer_patches(backbone, parts, pixels):
    model, _ = parts
    features = backbone.encode_images(pixels)
    grid = (IMAGE // PATCH) ** 2
    assert features.patch_embeds.shape == (2, grid, PROJECTION)
    assert features.grid_size == (IMAGE // PATCH, IMAGE // PATCH)
    with torch.no_grad():
        hidden = model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
        expected = model.visual_projection(model.vision_model.post_layernorm(hidden[-1][:, 1:]))
        class_path = model.visual_projection(model.vision_model.post_layernorm(hidden[-1][:, 0]))
    torch.testing.assert_close(features.patch_embeds, expected, atol=1e-5, rtol=0)
    # The class token through the same chain is the global embedding: one joint space.
    torch.testing.assert_close(F.normalize(class_path, dim=-1), features.global_embeds)


def test_text_global_equals_model_and_tokens_share_space(backbone, parts):
    model, processor = parts
    texts = ["a photo of blue veil", "lesion"]
    features = backbone.encode_texts(texts)
    encoded = processor.tokenizer(
        texts, padding="max_length", max_length=TEXT_LENGTH, return_tensors="pt"
    )
    with torch.no_grad():
        own = F.normalize(_pooled(model.get_text_features(**encoded)), dim=-1)
    torch.testing.assert_close(features.global_embeds, own, atol=1e-5, rtol=0)
    assert features.token_embeds.shape == (2, TEXT_LENGTH, PROJECTION)
    torch.testing.assert_close(features.attention_mask, encoded["attention_mask"])
    eos = (encoded["input_ids"] == processor.tokenizer.eos_token_id).int().argmax(dim=1)
    at_eos = F.normalize(features.token_embeds[torch.arange(2), eos], dim=-1)
    torch.testing.assert_close(at_eos, features.global_embeds, atol=1e-5, rtol=0)


def test_offsets_locate_words(backbone):
    text = "A photo of Blue-white veil"
    features = backbone.encode_texts([text])
    offsets = features.offsets[0].tolist()
    assert features.offsets.shape == (1, TEXT_LENGTH, 2)
    pieces = [text[start:end] for start, end in offsets if end > start]
    assert pieces == ["A", "photo", "of", "Blue", "-", "white", "veil"]
    assert offsets[0] == [0, 0]  # start-of-text token
    padding = features.attention_mask[0] == 0
    assert padding.any() and (features.offsets[0][padding] == 0).all()


def test_preprocess_accepts_every_input_kind(backbone, tmp_path):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    inputs = [Image.fromarray(array), array, torch.from_numpy(array), str(path), path]
    pixel_values = backbone.preprocess(inputs)
    assert pixel_values.shape == (5, 3, IMAGE, IMAGE)
    assert pixel_values.dtype == torch.float32
    reference = pixel_values[0]
    for i in range(1, 5):
        torch.testing.assert_close(pixel_values[i], reference)
    batch = backbone.preprocess(np.stack([array, array[::-1]]))
    assert batch.shape == (2, 3, IMAGE, IMAGE)
    torch.testing.assert_close(batch[0], reference)
    assert not torch.equal(batch[1], reference)


def test_gradients_reach_pixels(backbone, pixels):
    pixel_values = pixels.clone().requires_grad_(True)
    features = backbone.forward_images(pixel_values)
    (features.global_embeds[:, 0].sum() + features.patch_embeds[:, 3, 1].sum()).backward()
    assert pixel_values.grad is not None
    assert pixel_values.grad.abs().sum() > 0
    assert not backbone.encode_images(pixels).global_embeds.requires_grad


def test_token_layers_emit_class_plus_patch_tokens(backbone, pixels):
    layers = backbone.token_layers()
    assert len(layers) == 2
    shapes = []
    handle = layers[-1].register_forward_hook(
        lambda _m, _i, out: shapes.append(tuple((out[0] if isinstance(out, tuple) else out).shape))
    )
    try:
        backbone.encode_images(pixels)
    finally:
        handle.remove()
    assert shapes == [(2, 1 + (IMAGE // PATCH) ** 2, 32)]


def test_bad_inputs_raise_clear_errors(backbone, parts):
    _, processor = parts
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(B, 3, 32, 32\)"):
        backbone.encode_images(torch.zeros(1, 3, 16, 16))
    with pytest.raises(TypeError, match="texts\\[1\\] must be a str"):
        backbone.encode_texts(["a photo", 3])
    with pytest.raises(ValueError, match="texts is empty"):
        backbone.encode_texts([])
    with pytest.raises(TypeError, match="needs a transformers CLIPModel"):
        CLIPBackbone(torch.nn.Linear(2, 2), processor, model_id="x")
    with pytest.raises(FileNotFoundError):
        backbone.preprocess(["/nonexistent/image.png"])


def test_from_pretrained_round_trip(backbone, parts, pixels, tmp_path):
    model, processor = parts
    folder = tmp_path / "tiny-clip"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded = CLIPBackbone.from_pretrained(folder, device="cpu")
    assert loaded.identity.model_id == str(folder.resolve())
    assert loaded.identity.weights_hash is not None
    assert loaded.identity.revision is None
    assert loaded.device == torch.device("cpu")
    torch.testing.assert_close(
        loaded.preprocess(Image.new("RGB", (9, 9))), backbone.preprocess(Image.new("RGB", (9, 9)))
    )
    original, reloaded = backbone.encode_images(pixels), loaded.encode_images(pixels)
    torch.testing.assert_close(reloaded.global_embeds, original.global_embeds)
    torch.testing.assert_close(reloaded.patch_embeds, original.patch_embeds)
    text = ["a photo of skin"]
    torch.testing.assert_close(
        loaded.encode_texts(text).global_embeds, backbone.encode_texts(text).global_embeds
    )

    half = CLIPBackbone.from_pretrained(folder, device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    assert half.identity.dtype == "bfloat16"
    assert half.identity.key != loaded.identity.key
    features = half.encode_images(pixels)
    assert features.global_embeds.dtype == torch.bfloat16
    cosine = (features.global_embeds.float() * original.global_embeds).sum(-1)
    assert (cosine > 0.99).all()


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(BackboneNotFoundError, match="no such model folder: .*missing"):
        CLIPBackbone.from_pretrained(tmp_path / "missing", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneLoadError, match="'.*empty' could not be loaded"):
        CLIPBackbone.from_pretrained(tmp_path / "empty", device="cpu")
    with pytest.raises(ValueError, match="dtype='int8' is not supported"):
        CLIPBackbone.from_pretrained(tmp_path, device="cpu", dtype="int8")


def test_a_single_string_is_one_text(backbone):
    one = backbone.encode_texts("a photo of a mole")
    listed = backbone.encode_texts(["a photo of a mole"])
    assert one.global_embeds.shape == (1, backbone.embed_dim)
    assert one.texts == ["a photo of a mole"]
    torch.testing.assert_close(one.global_embeds, listed.global_embeds)
