"""check_backbone: every adapter that builds offline and every test double keeps the contract;
a backbone that breaks it fails with the check named."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from conceptlens.errors import ConceptlensError
from conceptlens.models import ConceptCLIPBackbone, create_reference_model, load_backbone
from conceptlens.models.base import BackboneIdentity, ImageFeatures
from conceptlens.models.testing import BACKBONE_CHECKS, BackboneCheckError, check_backbone
from tests.helpers.backbones import (
    bag_of_patches_backbone,
    remote_style_backbone,
    tiny_clip_backbone,
    tiny_conceptclip_backbone,
    tiny_siglip_backbone,
)
from tests.helpers.fakes import DynamicPaddingFakeBackbone, FakeBackbone


def _reference_open_clip_flavour() -> ConceptCLIPBackbone:
    """The released model's module layout (timm trunk, slow tokenizer) in memory."""
    return ConceptCLIPBackbone(*create_reference_model("tiny", flavour="open_clip"))


BUILDERS = {
    "demo": lambda: load_backbone("demo", device="cpu"),
    "demo-bfloat16": lambda: load_backbone("demo", device="cpu", dtype="bfloat16"),
    "conceptclip-tiny": tiny_conceptclip_backbone,
    "conceptclip-open-clip-layout": _reference_open_clip_flavour,
    "conceptclip-bag-of-patches": bag_of_patches_backbone,
    "conceptclip-released-layout": remote_style_backbone,
    "conceptclip-36px-uncovered-border": lambda: ConceptCLIPBackbone(
        *create_reference_model("tiny", vision_config={"image_size": 36})),
    "clip-tiny": tiny_clip_backbone,
    "siglip-tiny": tiny_siglip_backbone,
    "fake": FakeBackbone,
    "fake-wide": lambda: FakeBackbone(image_size=384, patch=14, dim=16),
    "fake-dynamic-padding": DynamicPaddingFakeBackbone,
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_offline_backbone_keeps_the_contract(name):
    assert check_backbone(BUILDERS[name]()) == list(BACKBONE_CHECKS)


# ------------------------------------------------------------------ broken backbones


class _Unnormalised(FakeBackbone):
    def forward_images(self, pixel_values):
        feats = super().forward_images(pixel_values)
        feats.global_embeds = 2 * feats.global_embeds
        return feats


class _BatchNormalised(FakeBackbone):
    """Each image's tokens depend on the batch (subtracting the batch mean)."""

    def forward_images(self, pixel_values):
        feats = super().forward_images(pixel_values)
        tokens = feats.patch_embeds - feats.patch_embeds.mean(dim=0, keepdim=True)
        return ImageFeatures(F.normalize(tokens.mean(1) + 1e-3, dim=-1), tokens, feats.grid_size)


class _WrongGrid(FakeBackbone):
    def forward_images(self, pixel_values):
        feats = super().forward_images(pixel_values)
        feats.grid_size = (feats.grid_size[1] + 1, feats.grid_size[0])
        return feats


class _NarrowText(FakeBackbone):
    def forward_texts(self, texts):
        feats = super().forward_texts(texts)
        feats.global_embeds = F.normalize(feats.global_embeds[:, :-1], dim=-1)
        return feats


class _RandomText(FakeBackbone):
    def forward_texts(self, texts):
        feats = super().forward_texts(texts)
        feats.global_embeds = F.normalize(feats.global_embeds + torch.rand_like(feats.global_embeds),
                                          dim=-1)
        return feats


class _DriftingIdentity(FakeBackbone):
    @property
    def identity(self):
        self._reads = getattr(self, "_reads", 0) + 1
        return BackboneIdentity(model_id=f"fake-{self._reads}", family="fake")

    @identity.setter
    def identity(self, value):
        pass


class _NoLayers(FakeBackbone):
    def token_layers(self):
        raise NotImplementedError("no transformer blocks")


class _ForeignLayers(FakeBackbone):
    def token_layers(self):
        return [torch.nn.Identity()]


class _CrashesOnBadShape(FakeBackbone):
    def forward_images(self, pixel_values):
        if pixel_values.ndim == 4 and pixel_values.shape[-1] != self.image_size[1]:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        return super().forward_images(pixel_values)


class _Detached(FakeBackbone):
    def forward_images(self, pixel_values):
        return super().forward_images(pixel_values.detach())


class _WrongPatchSize(FakeBackbone):
    def __init__(self):
        super().__init__()
        self.patch_size = 5


class _MissingFolder(FakeBackbone):
    @property
    def weights_folder(self):
        return "/no/such/folder"


class _NotEval(FakeBackbone):
    def __init__(self):
        super().__init__()
        self.model.train()


@pytest.mark.parametrize(
    ("backbone", "check", "message"),
    [
        (_NotEval, "attributes", "eval mode"),
        (_MissingFolder, "attributes", "weights_folder"),
        (_DriftingIdentity, "identity", "changes between two reads"),
        (_Unnormalised, "image_features", "L2-normalised"),
        (_WrongGrid, "image_features", "grid_size"),
        (_BatchNormalised, "image_batch_invariance", "batch-mates"),
        (_NarrowText, "text_features", "joint space"),
        (_RandomText, "text_determinism", "twice"),
        (_WrongPatchSize, "geometry", "image_size // patch_size"),
        (_NoLayers, "token_layers", "not implemented"),
        (_ForeignLayers, "token_layers", "not a sub-module"),
        (_Detached, "gradients", "no gradient reaches the pixels"),
        (_CrashesOnBadShape, "bad_input", "raised RuntimeError"),
    ],
)
def test_a_broken_backbone_fails_naming_the_check(backbone, check, message):
    with pytest.raises(BackboneCheckError, match=message) as info:
        check_backbone(backbone())
    assert info.value.check == check
    assert repr(check) in str(info.value) and type(backbone()).__name__ in str(info.value)
    assert isinstance(info.value, AssertionError) and isinstance(info.value, ConceptlensError)


def test_skipped_checks_do_not_run_nor_those_that_need_them():
    assert "token_layers" not in check_backbone(_NoLayers(), skip=["token_layers"])
    passed = check_backbone(FakeBackbone(), skip={"preprocess"})
    assert not {"preprocess", "image_features", "image_batch_invariance", "token_layers",
                "gradients", "bad_input"} & set(passed)
    assert "text_features" in passed


def test_tolerance_is_the_callers_and_arguments_are_checked():
    class Jittery(FakeBackbone):
        def forward_images(self, pixel_values):
            feats = super().forward_images(pixel_values)
            feats.patch_embeds = feats.patch_embeds + 1e-3 * pixel_values.shape[0]
            return feats

    with pytest.raises(BackboneCheckError, match="batch-mates"):
        check_backbone(Jittery())
    assert check_backbone(Jittery(), atol=1e-2)[-1] == "identity_after_use"
    with pytest.raises(ValueError, match="unknown checks"):
        check_backbone(FakeBackbone(), skip=["nope"])
    with pytest.raises(TypeError, match="Backbone"):
        check_backbone(object())


def test_an_unexpected_exception_is_reported_as_a_failed_check():
    class Exploding(FakeBackbone):
        def forward_texts(self, texts):
            raise KeyError("vocab")

    with pytest.raises(BackboneCheckError, match="'text_features' failed.*KeyError") as info:
        check_backbone(Exploding())
    assert isinstance(info.value.__cause__, KeyError)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.check, str(again)) == ("text_features", str(info.value))
