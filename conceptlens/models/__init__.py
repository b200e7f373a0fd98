"""Backbones: one interface over ConceptCLIP, CLIP, SigLIP, open_clip models and the demo model."""

from conceptlens.models.base import Backbone, BackboneIdentity, ImageFeatures, TextFeatures
from conceptlens.models.clip import CLIPBackbone
from conceptlens.models.conceptclip import ConceptCLIPBackbone
from conceptlens.models.errors import (
    BackboneError,
    BackboneLoadError,
    BackboneNotFoundError,
    MissingExtraError,
    RemoteCodeRequiredError,
    UnknownBackboneError,
    UnsupportedBackboneError,
)
from conceptlens.models.factory import list_backbones, load_backbone
from conceptlens.models.images import LoadedImage, load_image
from conceptlens.models.open_clip import OpenCLIPBackbone
from conceptlens.models.reference import (
    ConceptCLIPConfig,
    ConceptCLIPModel,
    ConceptCLIPProcessor,
    create_reference_model,
)
from conceptlens.models.registry import BackboneSpec, register_backbone
from conceptlens.models.siglip import SiglipBackbone

__all__ = [
    "Backbone",
    "BackboneError",
    "BackboneIdentity",
    "BackboneLoadError",
    "BackboneNotFoundError",
    "BackboneSpec",
    "CLIPBackbone",
    "ConceptCLIPBackbone",
    "ConceptCLIPConfig",
    "ConceptCLIPModel",
    "ConceptCLIPProcessor",
    "ImageFeatures",
    "LoadedImage",
    "MissingExtraError",
    "OpenCLIPBackbone",
    "RemoteCodeRequiredError",
    "SiglipBackbone",
    "TextFeatures",
    "UnknownBackboneError",
    "UnsupportedBackboneError",
    "create_reference_model",
    "list_backbones",
    "load_backbone",
    "load_image",
    "register_backbone",
]
