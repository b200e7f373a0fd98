"""Tiny real models behind the real adapters, built offline in seconds on the CPU.

* ConceptCLIP: the package's reference model at ``tiny`` size (64 px, patch 8, width 32),
  and a "bag of patches" variant whose patch tokens depend on their own pixels only.
* Hugging Face CLIP and SigLIP from tiny configs, with tokenizers built in memory (a
  byte-level BPE spelling :data:`CLIP_WORDS`; a lower-casing word-level tokenizer over
  :data:`SIGLIP_WORDS` that pads with ``</s>`` like SigLIP's).
"""

from __future__ import annotations

import math

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
)

from conceptlens.models import create_reference_model
from conceptlens.models.clip import CLIPBackbone
from conceptlens.models.conceptclip import ConceptCLIPBackbone
from conceptlens.models.siglip import SiglipBackbone

__all__ = [
    "CLIP_IMAGE",
    "CLIP_PATCH",
    "CLIP_PROJECTION",
    "CLIP_TEXT_LENGTH",
    "CLIP_WORDS",
    "SIGLIP_IMAGE",
    "SIGLIP_PATCH",
    "SIGLIP_TEXT_LENGTH",
    "SIGLIP_WIDTH",
    "SIGLIP_WORDS",
    "RemoteStyleModel",
    "bag_of_patches_backbone",
    "remote_style_backbone",
    "tiny_clip_backbone",
    "tiny_clip_model",
    "tiny_clip_parts",
    "tiny_clip_tokenizer",
    "tiny_conceptclip_backbone",
    "tiny_siglip_backbone",
    "tiny_siglip_model",
    "tiny_siglip_parts",
    "tiny_siglip_tokenizer",
]

# ------------------------------------------------------------------------------ ConceptCLIP


def tiny_conceptclip_backbone(seed: int = 0) -> ConceptCLIPBackbone:
    """The tiny reference ConceptCLIP (random weights drawn after ``torch.manual_seed(seed)``)."""
    torch.manual_seed(seed)
    return ConceptCLIPBackbone(*create_reference_model("tiny"))


def bag_of_patches_backbone(seed: int = 0) -> ConceptCLIPBackbone:
    """The tiny model with attention outputs and position embeddings zeroed.

    Every patch token then depends on its own pixels only, so with local-only, mean-
    aggregated cosine scoring a concept's score is exactly the mean of its patch map:
    hiding the patches the map ranks highest must lower the score at least as much as
    hiding any other set of patches of the same size (the planted ground truth).
    """
    backbone = tiny_conceptclip_backbone(seed)
    vision = backbone.model.vision_model
    with torch.no_grad():
        vision.embeddings.position_embedding.weight.zero_()
        for layer in vision.encoder.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
    return backbone


class RemoteStyleModel(nn.Module):
    """Mimics the released model's outside: a timm trunk at ``model.visual.trunk.blocks``
    around the reference model, called with ConceptCLIP's keyword convention."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.visual = nn.Module()
        self.visual.trunk = nn.Module()
        self.visual.trunk.blocks = inner.vision_model.encoder.layers

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None):  # noqa: ANN001
        return self.inner(pixel_values=pixel_values, input_ids=input_ids)


def remote_style_backbone(seed: int = 0) -> ConceptCLIPBackbone:
    """The tiny reference model behind :class:`RemoteStyleModel` (the released layout)."""
    torch.manual_seed(seed)
    model, processor = create_reference_model("tiny")
    return ConceptCLIPBackbone(RemoteStyleModel(model), processor)


# ------------------------------------------------------------------------------ CLIP

CLIP_WORDS = ["a", "photo", "of", "blue", "white", "veil", "lesion", "skin", "with"]
CLIP_IMAGE = 32
CLIP_PATCH = 8
CLIP_TEXT_LENGTH = 16
CLIP_PROJECTION = 24


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE tokenizer whose merges spell each word of :data:`CLIP_WORDS`."""
    vocab: dict[str, int] = {}
    for char in "abcdefghijklmnopqrstuvwxyz-":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in CLIP_WORDS:
        current = word[0]
        for i, char in enumerate(word[1:]):
            piece = char + ("</w>" if i == len(word) - 2 else "")
            if (current, piece) not in merges:
                merges.append((current, piece))
            current += piece
            vocab.setdefault(current, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def tiny_clip_model(tokenizer: CLIPTokenizer) -> CLIPModel:
    """A 2-layer CLIP (32 px, patch 8, projection 24) seeded with 0, in eval mode."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": CLIP_TEXT_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": CLIP_IMAGE,
            "patch_size": CLIP_PATCH,
        },
        projection_dim=CLIP_PROJECTION,
        logit_scale_init_value=2.0,
    )
    return CLIPModel(config).eval()


def tiny_clip_parts() -> tuple[CLIPModel, CLIPProcessor]:
    """The tiny CLIP and its processor (shortest edge + centre crop, like CLIP's)."""
    tokenizer = tiny_clip_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": CLIP_IMAGE}, crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE}
    )
    return tiny_clip_model(tokenizer), CLIPProcessor(
        image_processor=image_processor, tokenizer=tokenizer
    )


def tiny_clip_backbone() -> CLIPBackbone:
    """:class:`~conceptlens.models.clip.CLIPBackbone` over :func:`tiny_clip_parts`."""
    return CLIPBackbone(*tiny_clip_parts(), model_id="tiny-clip")


# ------------------------------------------------------------------------------ SigLIP

SIGLIP_WORDS = ["<pad>", "</s>", "<unk>", "a", "photo", "of", "blue", "white", "veil", "-",
                "lesion"]
SIGLIP_IMAGE = 32
SIGLIP_PATCH = 8
SIGLIP_TEXT_LENGTH = 12
SIGLIP_WIDTH = 32


def tiny_siglip_tokenizer() -> PreTrainedTokenizerFast:
    """Lower-casing word-level tokenizer appending ``</s>``, padding with ``</s>`` like SigLIP."""
    vocab = {word: i for i, word in enumerate(SIGLIP_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", pad_token="</s>", unk_token="<unk>"
    )


def tiny_siglip_model() -> SiglipModel:
    """A 2-layer SigLIP (32 px, patch 8, width 32; scale 10, bias -3) seeded with 0."""
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config={
            "vocab_size": len(SIGLIP_WORDS),
            "hidden_size": 24,
            "intermediate_size": 40,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": SIGLIP_TEXT_LENGTH,
            "projection_size": SIGLIP_WIDTH,
            "pad_token_id": 1,
            "bos_token_id": None,
            "eos_token_id": 1,
        },
        vision_config={
            "hidden_size": SIGLIP_WIDTH,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": SIGLIP_IMAGE,
            "patch_size": SIGLIP_PATCH,
        },
    )
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-3.0)
    return model


def tiny_siglip_parts() -> tuple[SiglipModel, SiglipProcessor]:
    """The tiny SigLIP and its processor (squash resize to 32 px)."""
    image_processor = SiglipImageProcessor(size={"height": SIGLIP_IMAGE, "width": SIGLIP_IMAGE})
    return tiny_siglip_model(), SiglipProcessor(
        image_processor=image_processor, tokenizer=tiny_siglip_tokenizer()
    )


def tiny_siglip_backbone() -> SiglipBackbone:
    """:class:`~conceptlens.models.siglip.SiglipBackbone` over :func:`tiny_siglip_parts`."""
    return SiglipBackbone(*tiny_siglip_parts(), model_id="tiny-siglip")
