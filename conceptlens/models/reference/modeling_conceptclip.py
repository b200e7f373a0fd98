"""ConceptCLIP-architecture reference model (transformers-native).

A stand-in with the calling convention of the released ConceptCLIP (``JerrryNie/ConceptCLIP``):
``model(pixel_values=..., input_ids=...)`` returns a plain ``dict`` with the keys
``image_features``, ``text_features``, ``logit_scale``, ``logit_bias``,
``image_token_features``, ``text_token_features``, ``concept_logit_scale`` and
``concept_logit_bias``; the scales come back already exponentiated.

This file is *remote code*: ``save_pretrained`` copies it into the saved folder, so it may
import only ``torch``, ``transformers`` and the sibling files of this folder.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertModel, SiglipVisionModel

from ._conceptclip_shared import ConceptCLIPPreTrainedModel, TokenHead
from .configuration_conceptclip import ConceptCLIPConfig

__all__ = ["ConceptCLIPModel", "TokenHead"]


class ConceptCLIPModel(ConceptCLIPPreTrainedModel):
    """SigLIP vision tower + BERT text tower with global and token-level (local) heads.

    Parts (``D`` = joint dim = vision width, ``W_t`` = text width):

    * ``vision_model``: :class:`~transformers.SiglipVisionModel` (no class token,
      attention-pool head). Global image embedding = the pooled output.
    * ``text_model``: :class:`~transformers.BertModel` (no pooler); global text embedding =
      ``text_projection`` (``W_t -> D``, no bias) of the ``[CLS]`` state.
    * ``image_proj`` / ``text_proj``: :class:`TokenHead` applied to patch / text tokens.
    * ``logit_scale``, ``logit_bias``, ``concept_logit_scale``, ``concept_logit_bias``:
      scalar parameters; the scales are stored as logs.

    Example:
        >>> from conceptlens.models import create_reference_model
        >>> model, processor = create_reference_model("tiny")
        >>> inputs = processor(text=["a mole"], return_tensors="pt")
        >>> sorted(model(input_ids=inputs["input_ids"]))[:2]
        ['concept_logit_bias', 'concept_logit_scale']
    """

    config_class = ConceptCLIPConfig
    config: ConceptCLIPConfig
    _no_split_modules = ["SiglipEncoderLayer", "BertLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True

    def __init__(self, config: ConceptCLIPConfig) -> None:
        super().__init__(config)
        text_width = config.text_config.hidden_size
        self.vision_model = SiglipVisionModel(config.vision_config)
        self.text_model = BertModel(config.text_config, add_pooling_layer=False)
        self.text_projection = nn.Linear(text_width, config.embed_dim, bias=False)
        self._add_heads(config.embed_dim, text_width)
        self.post_init()

    def _image_tower(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.vision_model(pixel_values=pixel_values)
        return out.pooler_output, out.last_hidden_state

    def _text_tower(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.text_projection(tokens[:, 0]), tokens
