"""Backbones: one interface over ConceptCLIP, CLIP, SigLIP and the demo model."""

from conceptlens.models.base import Backbone, BackboneIdentity, ImageFeatures, TextFeatures
from conceptlens.models.clip import CLIPBackbone
from conceptlens.models.conceptclip import ConceptCLIPBackbone
from conceptlens.models.errors import (
    BackboneError,
    BackboneLoadError,
    BackboneNotFoundError,
    RemoteCodeRequiredError,
    UnknownBackboneError,
    UnsupportedBackboneError,
)
from conceptlens.models.factory import list_backbones, load_backbone
from conceptlens.models.images import LoadedImage, load_image
from conceptlens.models.reference import (
    ConceptCLIPConfig,
    ConceptCLIPModel,
    ConceptCLIPProcessor,
    create_reference_model,
)
from conceptlens.models.siglip import SiglipBackbone

__all__ = [
    "Backbone",
    "BackboneError",
    "BackboneIdentity",
    "BackboneLoadError",
    "BackboneNotFoundError",
    "CLIPBackbone",
    "ConceptCLIPBackbone",
    "ConceptCLIPConfig",
    "ConceptCLIPModel",
    "ConceptCLIPProcessor",
    "ImageFeatures",
    "LoadedImage",
    "RemoteCodeRequiredError",
    "SiglipBackbone",
    "TextFeatures",
    "UnknownBackboneError",
    "UnsupportedBackboneError",
    "create_reference_model",
    "list_backbones",
    "load_backbone",
    "load_image",
]
