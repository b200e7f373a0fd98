"""The open_clip-structured ConceptCLIP stand-in: remote code, slow tokenizer, same formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor

from conceptlens.explain import attribute
from conceptlens.models import ConceptCLIPBackbone, create_reference_model, load_backbone
from conceptlens.models.conceptclip import fast_bert_tokenizer
from conceptlens.models.errors import RemoteCodeRequiredError, UnsupportedBackboneError
from conceptlens.vocab import Concept, ConceptScorer, ConceptVocabulary


@pytest.fixture(scope="module")
def tiny():
    return create_reference_model("tiny", flavour="open_clip")


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory):
    model, processor = tiny
    path = tmp_path_factory.mktemp("conceptclip-open-clip")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def backbone(folder):
    return load_backbone(folder, trust_remote_code=True, device="cpu", dtype="float32")


def test_layout_is_the_released_models(tiny):
    model, processor = tiny
    assert len(model.visual.trunk.blocks) == 2 and model.visual.trunk.num_prefix_tokens == 0
    assert model.visual.trunk.global_pool == "map" and len(model.visual.head) == 0
    assert not processor.tokenizer.is_fast  # a plain slow BertTokenizer, as third parties use
    pooled, tokens = model.encode_image(torch.zeros(1, 3, 64, 64))
    assert pooled.shape == (1, 32) and tokens.shape == (1, 64, 32)
    ids = processor(text=["a mole"])["input_ids"]
    text, text_tokens = model.encode_text(ids)
    assert text.shape == (1, 32) and text_tokens.shape == (1, 77, 32)
    # the state dict uses timm / open_clip names
    keys = set(model.state_dict())
    assert {"visual.trunk.blocks.0.attn.qkv.weight", "visual.trunk.attn_pool.kv.weight",
            "visual.trunk.patch_embed.proj.weight", "text.proj.weight"} <= keys


def test_round_trip_through_auto_classes_with_remote_code(tiny, folder):
    model, _ = tiny
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert not type(loaded).__module__.startswith("conceptlens")
    assert not processor.tokenizer.is_fast
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ids = processor(text=["pigment network", "a mole"])["input_ids"]
    a, b = model(pixel_values=x, input_ids=ids), loaded(pixel_values=x, input_ids=ids)
    for key in ("image_features", "image_token_features", "text_features", "text_token_features"):
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
    with pytest.raises(RemoteCodeRequiredError):
        load_backbone(folder)


def test_slow_tokenizer_is_replaced_by_the_fast_one_with_the_same_ids(backbone, tiny):
    _, processor = tiny
    assert backbone.tokenizer.is_fast and backbone._slow_tokenizer is not None
    texts = ["Blue-whitish veil; 3 mm!", "ATYPICAL   dots/globules", "naevus"]
    fast = backbone.tokenizer(texts, padding="max_length", max_length=77)["input_ids"]
    slow = processor.tokenizer(texts, padding="max_length", max_length=77)["input_ids"]
    assert fast == slow
    features = backbone.encode_texts(["pigment network"])
    spans = {tuple(s) for s in features.offsets[0].tolist() if s[1] > s[0]}
    assert (0, 7) in spans and (8, 15) in spans


def test_a_fast_tokenizer_that_disagrees_is_refused(tiny):
    _, processor = tiny

    class Renumbered:  # a slow tokenizer whose ids the fast one cannot reproduce
        def __init__(self, slow):
            self.__dict__["_slow"] = slow

        def __getattr__(self, name):
            return getattr(self._slow, name)

        def __call__(self, *args, **kwargs):
            out = self._slow(*args, **kwargs)
            out["input_ids"] = out["input_ids"] + 1
            return out

    with pytest.raises(UnsupportedBackboneError, match="differently"):
        fast_bert_tokenizer(Renumbered(processor.tokenizer))


def test_grad_cam_finds_the_trunk_blocks(backbone):
    blocks = backbone.token_layers()
    assert blocks == list(backbone.model.visual.trunk.blocks) and backbone.num_prefix_tokens == 0
    vocab = ConceptVocabulary([Concept("t:veil", "blue whitish veil")], name="t",
                              modality="dermoscopy")
    scorer = ConceptScorer(backbone, vocab, progress=False, reference=None)
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    cam = attribute(scorer, image, "t:veil", method="grad_cam")
    assert cam.raw.shape == (8, 8) and np.isfinite(cam.map).all()


def test_scores_follow_the_formulas_applied_to_the_models_own_outputs(backbone, tiny):
    """global: sigmoid(scale * cos + bias); local: sigmoid(concept_scale * max_p cos + bias)
    with the last position of the 77-token prompt; mixed 0.5 / 0.5; ids from the slow
    tokenizer, outputs from the model called directly."""
    model, processor = tiny
    vocab = ConceptVocabulary(
        [Concept("t:network", "pigment network"), Concept("t:veil", "blue whitish veil")],
        name="t", modality="dermoscopy",
    )
    scorer = ConceptScorer(backbone, vocab, calibration="sigmoid", text_token="last",
                           synonyms=False, templates=("a photo of {concept}",),
                           progress=False, reference=None)
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)
              for i in range(2)]
    table = scorer.score(images).table
    pixels = backbone.preprocess(images)
    ids = processor(text=["a photo of pigment network", "a photo of blue whitish veil"])["input_ids"]
    with torch.no_grad():
        out = model(pixel_values=pixels, input_ids=ids)
    cos = out["image_features"] @ out["text_features"].T
    glob = torch.sigmoid(out["logit_scale"] * cos + out["logit_bias"])
    patches = F.normalize(out["image_token_features"], dim=-1)
    concept = F.normalize(out["text_token_features"][:, -1], dim=-1)
    local_cos = torch.einsum("bpd,kd->bkp", patches, concept).amax(-1)
    local = torch.sigmoid(out["concept_logit_scale"] * local_cos + out["concept_logit_bias"])
    expected = (0.5 * glob + 0.5 * local).detach().numpy()
    np.testing.assert_allclose(table[["t:network", "t:veil"]].to_numpy(), expected, atol=1e-5)


def test_in_memory_model_is_accepted_too(tiny):
    backbone = ConceptCLIPBackbone(*tiny)
    assert backbone.grid_size == (8, 8) and backbone.embed_dim == 32
