"""open_clip adapter on three architectures with random weights (``pretrained=None``, offline).

Runs only where the ``open_clip`` extra is installed (``.ci/run`` builds a second environment
for it: torchvision does not load against the main environment's torch build).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from conceptlens.explain import attribute  # noqa: E402
from conceptlens.models import OpenCLIPBackbone, list_backbones, load_backbone  # noqa: E402
from conceptlens.models.errors import (  # noqa: E402
    BackboneLoadError,
    UnknownBackboneError,
)
from conceptlens.models.open_clip import timm_map_value_path  # noqa: E402
from conceptlens.models.reference import build_tokenizer  # noqa: E402
from conceptlens.models.testing import BACKBONE_CHECKS, check_backbone  # noqa: E402
from conceptlens.vocab import Concept, ConceptScorer, ConceptVocabulary  # noqa: E402

TEXTS = ["a photo of a mole", "pigment network", "blue whitish veil"]


@pytest.fixture(scope="module")
def local_hf_tokenizer(tmp_path_factory):
    """A local WordPiece tokenizer wrapped like open_clip wraps SigLIP's (the real one is on
    the hub); its vocabulary is far smaller than the text tower's 32000 rows."""
    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer(max_length=64).save_pretrained(folder)
    return open_clip.tokenizer.HFTokenizer(str(folder), context_length=64, clean="canonicalize")


@pytest.fixture(scope="module", params=["ViT-B-32", "ViT-B-16-SigLIP", "vit_medium_patch16_gap_256"])
def backbone(request, local_hf_tokenizer):
    torch.manual_seed(0)
    if request.param == "ViT-B-16-SigLIP":
        return OpenCLIPBackbone.create(
            request.param, pretrained=None, device="cpu", dtype="float32",
            tokenizer=local_hf_tokenizer,
        )
    return load_backbone(f"open_clip:{request.param}", pretrained=None, device="cpu",
                         dtype="float32")


@pytest.fixture(scope="module")
def pixels(backbone):
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, *backbone.image_size, generator=g)


@pytest.fixture(scope="module")
def vocabulary():
    return ConceptVocabulary(
        [Concept("t:network", "pigment network"), Concept("t:veil", "blue whitish veil")],
        name="test", modality="dermoscopy",
    )


def test_layout_is_detected(backbone):
    name = backbone.identity.model_id
    visual = backbone.model.visual
    if name.endswith("ViT-B-32"):
        assert backbone.grid_size == (7, 7) and backbone.num_prefix_tokens == 1
        assert not hasattr(visual, "trunk")
    elif name.endswith("SigLIP"):
        assert type(backbone.model).__name__ == "CustomTextCLIP"
        assert visual.trunk.global_pool == "map" and visual.trunk.attn_pool is not None
        assert backbone.grid_size == (14, 14) and backbone.num_prefix_tokens == 0
        assert backbone.logit_bias == pytest.approx(-10.0)
    else:
        assert visual.trunk.attn_pool is None and backbone.grid_size == (16, 16)
        assert len(list(visual.head.children())) > 0  # the linear projection
    assert backbone.identity.family == "open_clip" and backbone.identity.revision is None
    assert backbone.model is not None and not backbone.model.training


def test_keeps_the_backbone_contract(backbone):
    assert check_backbone(backbone) == list(BACKBONE_CHECKS)


def test_global_embeddings_equal_open_clip(backbone, pixels):
    feats = backbone.encode_images(pixels)
    with torch.no_grad():
        expected = backbone.model.encode_image(pixels, normalize=True)
    torch.testing.assert_close(feats.global_embeds, expected, atol=1e-5, rtol=0)
    texts = backbone.encode_texts(TEXTS)
    with torch.no_grad():
        expected_text = backbone.model.encode_text(backbone.tokenizer(TEXTS), normalize=True)
    torch.testing.assert_close(texts.global_embeds, expected_text, atol=1e-5, rtol=0)


def test_patch_tokens_have_the_joint_width(backbone, pixels):
    feats = backbone.encode_images(pixels)
    rows, cols = backbone.grid_size
    assert feats.patch_embeds.shape == (2, rows * cols, backbone.embed_dim)
    assert feats.global_embeds.shape == (2, backbone.embed_dim)
    texts = backbone.encode_texts(TEXTS)
    assert texts.token_embeds.shape == (3, backbone.context_length, backbone.embed_dim)
    assert torch.isfinite(feats.patch_embeds).all()


def test_patch_tokens_are_the_global_path_applied_per_token(backbone, pixels):
    """One property per head: what maps the pooled token to the global embedding maps each
    patch token to its joint-space embedding."""
    visual = backbone.model.visual
    with torch.no_grad():
        feats = backbone.encode_images(pixels)
        if hasattr(visual, "trunk"):
            tokens = visual.trunk.forward_features(pixels)[:, backbone.num_prefix_tokens :]
            if visual.trunk.attn_pool is not None:
                one = visual.trunk.attn_pool(tokens[:, :1])  # one key: weight 1
                torch.testing.assert_close(
                    timm_map_value_path(visual.trunk.attn_pool, tokens[:, :1])[:, 0], one,
                    atol=1e-5, rtol=1e-5,
                )
            else:  # average pool: the mean of the patch embeddings is the global one
                mean = feats.patch_embeds.mean(1)
                torch.testing.assert_close(
                    torch.nn.functional.normalize(mean, dim=-1), feats.global_embeds,
                    atol=1e-5, rtol=1e-5,
                )
        else:
            x = visual.transformer(visual._embeds(pixels))
            expected = visual.ln_post(x)[:, 1:] @ visual.proj
            torch.testing.assert_close(feats.patch_embeds, expected, atol=1e-5, rtol=1e-5)


def test_offsets_locate_words(backbone):
    texts = backbone.encode_texts(["pigment network"])
    spans = {tuple(s) for s in texts.offsets[0].tolist() if s[1] > s[0]}
    assert (0, 7) in spans and (8, 15) in spans


def test_concept_maps_and_grad_cam_run(backbone, vocabulary):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    scorer = ConceptScorer(backbone, vocabulary, progress=False, reference=None)
    maps = scorer.concept_maps(image, ["t:network"])
    assert maps.upsampled("t:network").shape == (40, 56)
    cam = attribute(scorer, image, "t:veil", method="grad_cam")
    assert cam.raw.shape == backbone.grid_size
    assert cam.map.shape == (40, 56) and np.isfinite(cam.map).all()
    assert len(backbone.token_layers()) == 12  # all three configs are 12 blocks deep


def test_listing_and_errors():
    names = list_backbones()
    assert "open_clip:ViT-B-32" in names and "biomedclip" in names
    assert "open_clip:ViT-B-32" not in list_backbones(open_clip=False)
    with pytest.raises(UnknownBackboneError, match="ViT-B-32"):
        load_backbone("open_clip:ViT-B-33", pretrained=None, device="cpu")


def test_hub_names_fail_offline_with_the_library_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneLoadError, match="could not be reached|could not be loaded"):
        load_backbone("hf-hub:someone/not-a-model-xyz", device="cpu")


def test_pretrained_is_refused_for_other_families():
    with pytest.raises(ValueError, match="open_clip"):
        load_backbone("demo", pretrained="openai")


def test_conceptclip_stand_in_trunk_is_a_timm_siglip_vit():
    """The open_clip-flavoured stand-in's ``visual.trunk`` loads, strictly, into timm's own
    SigLIP ViT (MAP head, no class token) and computes the same thing."""
    import timm

    from conceptlens.models import create_reference_model

    model, _ = create_reference_model("tiny", flavour="open_clip")
    trunk = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
        class_token=False, global_pool="map", num_classes=0, act_layer="gelu_tanh",
    )
    trunk.load_state_dict(model.visual.trunk.state_dict(), strict=True)
    trunk.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(trunk.forward_features(x),
                                   model.visual.trunk.forward_features(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(trunk(x), model.encode_image(x)[0], atol=1e-5, rtol=1e-5)


def test_compare_the_demo_model_with_an_open_clip_model(tmp_path):
    import pandas as pd

    from conceptlens.demo.generator import generate
    from conceptlens.vocab.comparison import compare_backbones

    data = generate(16, seed=2)
    ids = [f"image_{i}" for i in range(16)]
    labels = pd.DataFrame(data.concepts[:, :7], index=ids, columns=list(data.concept_ids[:7]))
    clip = load_backbone("open_clip:ViT-B-32", pretrained=None, device="cpu", dtype="float32")
    result = compare_backbones({"demo": load_backbone("demo"), "ViT-B-32 (random)": clip},
                               ConceptVocabulary.builtin("demo"), list(data.images), labels,
                               n_bootstrap=100, reference=None)
    assert result.best == "demo"
    assert result.identities["ViT-B-32 (random)"]["family"] == "open_clip"
