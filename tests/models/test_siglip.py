"""Tests for the Hugging Face SigLIP backbone adapter (tiny random model, offline).

The official SigLIP tokenizer needs ``sentencepiece``; these tests use a fast WordLevel
tokenizer built offline, which the adapter accepts like any other tokenizer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    SiglipModel,
    SiglipProcessor,
)

from conceptlens.models._hf_common import _pooled, align_token_offsets
from conceptlens.models.errors import UnsupportedBackboneError
from conceptlens.models.siglip import SiglipBackbone, attention_pool_value_path
from tests.helpers.backbones import SIGLIP_IMAGE as IMAGE
from tests.helpers.backbones import SIGLIP_PATCH as PATCH
from tests.helpers.backbones import SIGLIP_TEXT_LENGTH as TEXT_LENGTH
from tests.helpers.backbones import SIGLIP_WIDTH as WIDTH
from tests.helpers.backbones import tiny_siglip_model, tiny_siglip_parts


@pytest.fixture(scope="module")
def parts() -> tuple[SiglipModel, SiglipProcessor]:
    return tiny_siglip_parts()


@pytest.fixture(scope="module")
def backbone(parts) -> SiglipBackbone:
    model, processor = parts
    return SiglipBackbone(model, processor, model_id="tiny-siglip")


@pytest.fixture(scope="module")
def pixels(backbone) -> torch.Tensor:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (44, 36, 3), dtype=np.uint8)) for _ in range(2)]
    return backbone.preprocess(images)


def test_attributes_and_calibration(backbone, parts):
    model, _ = parts
    assert backbone.image_size == (IMAGE, IMAGE)
    assert backbone.grid_size == (IMAGE // PATCH, IMAGE // PATCH)
    assert backbone.embed_dim == WIDTH
    assert backbone.num_prefix_tokens == 0
    assert backbone.text_length == TEXT_LENGTH
    assert backbone.logit_scale == pytest.approx(10.0, rel=1e-6)
    assert backbone.logit_bias == pytest.approx(-3.0)
    assert (backbone.concept_logit_scale, backbone.concept_logit_bias) == (
        backbone.logit_scale,
        backbone.logit_bias,
    )
    assert not any(p.requires_grad for p in model.parameters())
    pre = backbone.identity.to_dict()["preprocessing"]
    assert backbone.identity.family == "siglip"
    assert pre["resize_mode"] == "squash"
    assert pre["resize"] == {"height": IMAGE, "width": IMAGE}
    assert pre["mean"] == pytest.approx([0.5, 0.5, 0.5])


def test_global_image_embedding_equals_model(backbone, parts, pixels):
    model, _ = parts
    features = backbone.encode_images(pixels)
    with torch.no_grad():
        own = F.normalize(_pooled(model.get_image_features(pixel_values=pixels)), dim=-1)
    assert features.global_embeds.shape == (2, WIDTH)
    torch.testing.assert_close(features.global_embeds, own, atol=1e-5, rtol=0)


def test_patch_tokens_follow_the_value_path(backbone, parts, pixels):
    model, _ = parts
    features = backbone.encode_images(pixels)
    assert features.patch_embeds.shape == (2, (IMAGE // PATCH) ** 2, WIDTH)
    head = model.vision_model.head
    with torch.no_grad():
        tokens = model.vision_model(pixel_values=pixels).last_hidden_state
        # Each patch alone through the head (attention over one key) is its value path.
        one_by_one = torch.stack([head(tokens[:, i : i + 1]) for i in range(tokens.shape[1])], 1)
    torch.testing.assert_close(features.patch_embeds, one_by_one, atol=1e-5, rtol=1e-5)


def test_value_path_of_single_token_equals_head(parts):
    model, _ = parts
    head = model.vision_model.head
    token = torch.randn(3, 1, WIDTH, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = head(token)
        actual = attention_pool_value_path(head, token)
    assert actual.shape == (3, 1, WIDTH)
    torch.testing.assert_close(actual[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_text_global_equals_model_without_pad_mask(backbone, parts):
    model, processor = parts
    texts = ["a photo of blue veil", "lesion"]
    features = backbone.encode_texts(texts)
    encoded = processor.tokenizer(
        texts, padding="max_length", max_length=TEXT_LENGTH, return_tensors="pt"
    )
    with torch.no_grad():
        pooled = _pooled(model.get_text_features(input_ids=encoded["input_ids"]))
    own = F.normalize(pooled, dim=-1)
    torch.testing.assert_close(features.global_embeds, own, atol=1e-5, rtol=0)
    assert features.token_embeds.shape == (2, TEXT_LENGTH, WIDTH)
    # The pooled text embedding is the head applied to the last position.
    last = F.normalize(features.token_embeds[:, -1], dim=-1)
    torch.testing.assert_close(last, features.global_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(features.attention_mask, encoded["attention_mask"])


def test_offsets_locate_words(backbone):
    text = "A photo of Blue-white veil"
    features = backbone.encode_texts([text])
    spans = [(s, e) for s, e in features.offsets[0].tolist() if e > s]
    assert [text[s:e] for s, e in spans] == ["A", "photo", "of", "Blue", "-", "white", "veil"]
    padding = features.attention_mask[0] == 0
    assert padding.any() and (features.offsets[0][padding] == 0).all()


def test_offset_alignment_for_sentencepiece_pieces():
    text = "Blue-white veil, irregular"
    pieces = ["\u2581blue", "-", "white", "\u2581veil", "\u2581irreg", "ular", "</s>", "</s>"]
    special = [False] * 6 + [True, True]
    spans = align_token_offsets(text, pieces, special)
    assert [text[s:e] for s, e in spans[:6]] == ["Blue", "-", "white", "veil", "irreg", "ular"]
    assert spans[6:] == [(0, 0), (0, 0)]


def test_gradients_reach_pixels(backbone, pixels):
    pixel_values = pixels.clone().requires_grad_(True)
    features = backbone.forward_images(pixel_values)
    (features.global_embeds[:, 1].sum() + features.patch_embeds[:, 5, 2].sum()).backward()
    assert pixel_values.grad is not None and pixel_values.grad.abs().sum() > 0


def test_token_layers(backbone, pixels):
    layers = backbone.token_layers()
    shapes = []
    handle = layers[0].register_forward_hook(
        lambda _m, _i, out: shapes.append(tuple((out[0] if isinstance(out, tuple) else out).shape))
    )
    try:
        backbone.encode_images(pixels)
    finally:
        handle.remove()
    assert len(layers) == 2
    assert shapes == [(2, (IMAGE // PATCH) ** 2, WIDTH)]


def test_model_without_pooling_head_is_rejected(parts):
    _, processor = parts
    config = tiny_siglip_model().config
    config.vision_config.vision_use_head = False
    with pytest.raises(ValueError, match="vision_use_head"):
        SiglipBackbone(SiglipModel(config), processor, model_id="headless")


def test_from_pretrained_round_trip(backbone, parts, pixels, tmp_path):
    model, processor = parts
    folder = tmp_path / "tiny-siglip"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded = SiglipBackbone.from_pretrained(folder, device="cpu")
    assert loaded.identity.weights_hash is not None
    torch.testing.assert_close(
        loaded.encode_images(pixels).patch_embeds, backbone.encode_images(pixels).patch_embeds
    )
    torch.testing.assert_close(
        loaded.encode_texts(["blue veil"]).token_embeds,
        backbone.encode_texts(["blue veil"]).token_embeds,
    )
    assert loaded.logit_bias == pytest.approx(backbone.logit_bias)

    half = SiglipBackbone.from_pretrained(folder, device=torch.device("cpu"), dtype=torch.bfloat16)
    features = half.encode_images(pixels)
    assert features.patch_embeds.dtype == torch.bfloat16
    assert half.identity.dtype == "bfloat16"
    cosine = (features.global_embeds.float() * backbone.encode_images(pixels).global_embeds).sum(-1)
    assert (cosine > 0.99).all()


def test_from_pretrained_rejects_other_model_type(parts, tmp_path):
    from conceptlens.models.clip import CLIPBackbone

    model, processor = parts
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedBackboneError, match="holds a 'siglip' model; CLIPBackbone"):
        CLIPBackbone.from_pretrained(tmp_path, device="cpu")
