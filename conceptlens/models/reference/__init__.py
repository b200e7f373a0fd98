"""ConceptCLIP-architecture reference model: a transformers-native stand-in for the released model.

``configuration_conceptclip``, ``modeling_conceptclip`` and ``processing_conceptclip`` are the
*remote code* that ``save_pretrained`` copies into a saved folder (they import only
``torch`` / ``transformers``); :func:`create_reference_model` builds the model at ``tiny`` or
``full`` size.
"""

from conceptlens.models.reference.configuration_conceptclip import ConceptCLIPConfig
from conceptlens.models.reference.factory import (
    REFERENCE_SIZES,
    build_tokenizer,
    create_reference_model,
    load_reference_folder,
    reference_config,
)
from conceptlens.models.reference.modeling_conceptclip import ConceptCLIPModel
from conceptlens.models.reference.processing_conceptclip import ConceptCLIPProcessor

# save_pretrained writes the `auto_map` entries and copies the three remote-code files.
ConceptCLIPConfig.register_for_auto_class()
ConceptCLIPModel.register_for_auto_class("AutoModel")
ConceptCLIPProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "REFERENCE_SIZES",
    "ConceptCLIPConfig",
    "ConceptCLIPModel",
    "ConceptCLIPProcessor",
    "build_tokenizer",
    "create_reference_model",
    "load_reference_folder",
    "reference_config",
]
