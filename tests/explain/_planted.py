"""Tiny ConceptCLIP-architecture backbones for the explanation tests (CPU, seconds)."""

from __future__ import annotations

import torch

from conceptlens.models import create_reference_model
from conceptlens.models.conceptclip import ConceptCLIPBackbone
from conceptlens.vocab.vocabulary import ConceptVocabulary

CONCEPTS = ["pigment network", "blue whitish veil", "dots", "streaks"]


def tiny_backbone(seed: int = 0) -> ConceptCLIPBackbone:
    torch.manual_seed(seed)
    return ConceptCLIPBackbone(*create_reference_model("tiny"))


def bag_of_patches_backbone(seed: int = 0) -> ConceptCLIPBackbone:
    """The tiny model with attention outputs and position embeddings zeroed.

    Every patch token then depends on its own pixels only, so with local-only, mean-
    aggregated cosine scoring a concept's score is exactly the mean of its patch map:
    hiding the patches the map ranks highest must lower the score at least as much as
    hiding any other set of patches of the same size (the planted ground truth).
    """
    backbone = tiny_backbone(seed)
    vision = backbone.model.vision_model
    with torch.no_grad():
        vision.embeddings.position_embedding.weight.zero_()
        for layer in vision.encoder.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
    return backbone


def vocabulary() -> ConceptVocabulary:
    return ConceptVocabulary.from_names(CONCEPTS, name="t")
