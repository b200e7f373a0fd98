"""ConceptCLIPBackbone: the adapter over ConceptCLIP's calling convention."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conceptlens.models import (
    ConceptCLIPBackbone,
    RemoteCodeRequiredError,
    UnsupportedBackboneError,
    create_reference_model,
    load_backbone,
)
from conceptlens.models.factory import hash_weight_files
from tests.helpers.backbones import RemoteStyleModel


@pytest.fixture(scope="module")
def tiny():
    model, processor = create_reference_model("tiny")
    with torch.no_grad():  # distinct values so a double exp() or a swapped scalar shows
        model.logit_scale.fill_(math.log(50.0))
        model.logit_bias.fill_(-3.0)
        model.concept_logit_scale.fill_(math.log(7.0))
        model.concept_logit_bias.fill_(-1.5)
    return model, processor


@pytest.fixture(scope="module")
def backbone(tiny):
    return ConceptCLIPBackbone(*tiny)


@pytest.fixture(scope="module")
def pixels(backbone):
    rng = np.random.default_rng(0)
    return backbone.preprocess([rng.integers(0, 256, (30, 45, 3), dtype=np.uint8) for _ in range(3)])


def test_global_embedding_and_patch_tokens_equal_the_models_outputs(tiny, backbone, pixels):
    model, _ = tiny
    feats = backbone.encode_images(pixels)
    with torch.no_grad():
        out = model(pixel_values=pixels)
    torch.testing.assert_close(feats.global_embeds, out["image_features"])
    assert torch.equal(feats.patch_embeds, out["image_token_features"])
    assert feats.grid_size == (8, 8) and feats.patch_embeds.shape == (3, 64, backbone.embed_dim)
    assert backbone.embed_dim == model.config.embed_dim


def test_grid_drops_the_uncovered_border_like_384_over_14():
    backbone = ConceptCLIPBackbone(*create_reference_model("tiny", vision_config={"image_size": 36}))
    feats = backbone.encode_images(torch.zeros(1, 3, 36, 36))
    assert backbone.grid_size == feats.grid_size == (4, 4)
    assert feats.patch_embeds.shape[1] == 16


def test_calibration_scalars_are_read_already_exponentiated(backbone):
    assert backbone.logit_scale == pytest.approx(50.0)
    assert backbone.logit_bias == pytest.approx(-3.0)
    assert backbone.concept_logit_scale == pytest.approx(7.0)
    assert backbone.concept_logit_bias == pytest.approx(-1.5)


def test_texts_pad_to_77_with_offsets_that_locate_each_word(tiny, backbone):
    model, processor = tiny
    texts = ["a mole with irregular border", "blue-white veil"]
    feats = backbone.encode_texts(texts)
    with torch.no_grad():
        out = model(input_ids=processor(text=texts)["input_ids"])
    assert feats.token_embeds.shape == (2, 77, backbone.embed_dim)
    torch.testing.assert_close(feats.global_embeds, out["text_features"])
    assert torch.equal(feats.token_embeds, out["text_token_features"])
    assert feats.attention_mask.sum(1).tolist() == [7, 6]  # [CLS] + words + [SEP]
    spans = [texts[0][s:e] for s, e in feats.offsets[0].tolist() if e > s]
    assert spans == ["a", "mole", "with", "irregular", "border"]
    assert feats.offsets[0, 0].tolist() == [0, 0] and feats.offsets[0, -1].tolist() == [0, 0]
    assert feats.texts == texts


def test_long_text_is_truncated_with_a_warning(backbone):
    with pytest.warns(UserWarning, match="truncated"):
        feats = backbone.encode_texts(["mole " * 100])
    assert feats.token_embeds.shape[1] == 77


def test_forward_images_is_differentiable_and_encode_images_is_not(backbone, pixels):
    x = pixels[:1].clone().requires_grad_(True)
    feats = backbone.forward_images(x)
    feats.global_embeds[0, 0].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not backbone.encode_images(pixels[:1]).global_embeds.requires_grad
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert not backbone.model.training


def test_preprocess_accepts_paths_pil_and_arrays(backbone, tmp_path):
    path = tmp_path / "white.png"
    Image.new("RGB", (20, 10), "white").save(path)
    out = backbone.preprocess([str(path), Image.new("L", (5, 5)), np.zeros((7, 3), np.uint8)])
    assert out.shape == (3, 3, 64, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], torch.ones(3, 64, 64))
    assert backbone.preprocess(path).shape == (1, 3, 64, 64)


def test_bad_inputs_raise_clear_errors(backbone):
    with pytest.raises(ValueError, match=r"shape \(B, 3, 64, 64\)"):
        backbone.encode_images(torch.zeros(1, 3, 32, 32))
    with pytest.raises(TypeError, match="preprocess"):
        backbone.forward_images(np.zeros((1, 3, 64, 64)))
    with pytest.raises(ValueError, match="empty"):
        backbone.encode_texts([])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        backbone.encode_texts(["ok", 3])


def test_identity_is_a_stable_key_that_tracks_weights_and_dtype(tiny, backbone):
    model, processor = tiny
    same = ConceptCLIPBackbone(model, processor)
    assert same.identity.key == backbone.identity.key
    ident = backbone.identity.to_dict()
    assert ident["family"] == "conceptclip" and ident["dtype"] == "float32"
    assert ident["preprocessing"]["size"] == [64, 64]
    assert ident["preprocessing"]["resample"] == "bicubic"
    assert ident["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    other, _ = create_reference_model("tiny", seed=5)
    assert ConceptCLIPBackbone(other, processor).identity.key != backbone.identity.key


def test_token_layers_on_both_layouts(tiny, backbone):
    model, processor = tiny
    assert backbone.token_layers() == list(model.vision_model.encoder.layers)
    remote = ConceptCLIPBackbone(RemoteStyleModel(model), processor)
    assert remote.token_layers() == list(model.vision_model.encoder.layers)
    assert remote.num_prefix_tokens == 0
    # the adapter used only the calling convention: same numbers through the wrapper
    x = torch.zeros(1, 3, 64, 64)
    torch.testing.assert_close(
        remote.encode_images(x).global_embeds, backbone.encode_images(x).global_embeds
    )


def test_model_without_the_output_dict_is_rejected(tiny):
    model, processor = tiny

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, pixel_values=None, input_ids=None):
            out = self.inner(pixel_values=pixel_values, input_ids=input_ids)
            return {k: v for k, v in out.items() if k != "logit_bias"}

    with pytest.raises(UnsupportedBackboneError, match="'logit_bias'"):
        ConceptCLIPBackbone(Plain(), processor)


def test_foreign_code_folder_needs_trust_remote_code_then_loads(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    with (tmp_path / "modeling_conceptclip.py").open("a") as handle:
        handle.write("\n# edited: no longer the package's own code\n")
    with pytest.raises(RemoteCodeRequiredError, match="trust_remote_code=True"):
        load_backbone(tmp_path)
    loaded = load_backbone(tmp_path, trust_remote_code=True, dtype="float32")
    assert not type(loaded.model).__module__.startswith("conceptlens")
    assert loaded.identity.weights_hash == hash_weight_files(tmp_path)
    assert loaded.identity.model_id == str(tmp_path.resolve())
    x = torch.zeros(2, 3, 64, 64)
    assert torch.equal(
        loaded.encode_images(x).patch_embeds, ConceptCLIPBackbone(model, processor)
        .encode_images(x).patch_embeds
    )


def test_a_single_string_is_one_text_and_a_4d_array_is_a_batch(backbone):
    one = backbone.encode_texts("a mole")
    listed = backbone.encode_texts(["a mole"])
    assert one.global_embeds.shape == (1, backbone.embed_dim) and one.texts == ["a mole"]
    torch.testing.assert_close(one.global_embeds, listed.global_embeds)
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (2, 30, 45, 3), dtype=np.uint8)
    stacked = backbone.preprocess(batch)
    assert stacked.shape == (2, 3, *backbone.image_size)
    torch.testing.assert_close(stacked, backbone.preprocess([batch[0], batch[1]]))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        backbone.encode_images(np.zeros((1, 3, 64, 64), dtype=np.float32))
