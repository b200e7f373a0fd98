"""Backbones: one interface over ConceptCLIP, CLIP, SigLIP and the demo model."""

from conceptlens.models.base import Backbone, BackboneIdentity, ImageFeatures, TextFeatures

__all__ = ["Backbone", "BackboneIdentity", "ImageFeatures", "TextFeatures"]
