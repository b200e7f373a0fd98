"""ConceptCLIP-architecture reference model: a transformers-native stand-in for the released model.

``configuration_conceptclip``, ``modeling_conceptclip`` and ``processing_conceptclip`` are the
*remote code* that a saved folder carries (they import only ``torch`` / ``transformers``):
:func:`save_reference_model` writes them from this package at save time
(:func:`write_remote_code`), so no copy of them is kept anywhere else;
:func:`create_reference_model` builds the model at ``tiny`` or ``full`` size. The
``*_openclip`` files are the second flavour (``create_reference_model(..., flavour="open_clip")``):
the released model's open_clip/timm module layout and its slow tokenizer. Both flavours import
what they share (configuration and model bases, token heads, the output dict) from
``_conceptclip_shared``, which every flavour's saved folder carries too.
"""

from conceptlens.models.reference.configuration_conceptclip import ConceptCLIPConfig
from conceptlens.models.reference.configuration_conceptclip_openclip import (
    ConceptCLIPOpenCLIPConfig,
)
from conceptlens.models.reference.factory import (
    FLAVOURS,
    REFERENCE_SIZES,
    REMOTE_CODE_FILES,
    build_slow_tokenizer,
    build_tokenizer,
    create_reference_model,
    load_reference_folder,
    reference_config,
    save_reference_model,
    write_remote_code,
)
from conceptlens.models.reference.modeling_conceptclip import ConceptCLIPModel
from conceptlens.models.reference.modeling_conceptclip_openclip import ConceptCLIPOpenCLIPModel
from conceptlens.models.reference.processing_conceptclip import ConceptCLIPProcessor

# save_pretrained writes the `auto_map` entries (and copies the remote-code files, which
# save_reference_model writes again from this package).
ConceptCLIPConfig.register_for_auto_class()
ConceptCLIPModel.register_for_auto_class("AutoModel")
ConceptCLIPProcessor.register_for_auto_class("AutoProcessor")
ConceptCLIPOpenCLIPConfig.register_for_auto_class()
ConceptCLIPOpenCLIPModel.register_for_auto_class("AutoModel")

__all__ = [
    "FLAVOURS",
    "REFERENCE_SIZES",
    "REMOTE_CODE_FILES",
    "ConceptCLIPConfig",
    "ConceptCLIPModel",
    "ConceptCLIPOpenCLIPConfig",
    "ConceptCLIPOpenCLIPModel",
    "ConceptCLIPProcessor",
    "build_slow_tokenizer",
    "build_tokenizer",
    "create_reference_model",
    "load_reference_folder",
    "reference_config",
    "save_reference_model",
    "write_remote_code",
]
