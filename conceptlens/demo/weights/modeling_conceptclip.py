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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, PreTrainedModel, SiglipVisionModel

from .configuration_conceptclip import ConceptCLIPConfig

__all__ = ["ConceptCLIPModel", "TokenHead"]


class TokenHead(nn.Sequential):
    """Token projection head ``Linear -> GELU -> Linear`` used for the local alignment.

    Args:
        in_features: Width of the incoming tokens.
        out_features: Joint embedding dimension.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(
            nn.Linear(in_features, out_features),
            nn.GELU(),
            nn.Linear(out_features, out_features),
        )


class ConceptCLIPModel(PreTrainedModel):
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
    base_model_prefix = "conceptclip"
    main_input_name = "pixel_values"
    _no_split_modules = ["SiglipEncoderLayer", "BertLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True

    def __init__(self, config: ConceptCLIPConfig) -> None:
        super().__init__(config)
        embed_dim = config.embed_dim
        text_width = config.text_config.hidden_size
        self.vision_model = SiglipVisionModel(config.vision_config)
        self.text_model = BertModel(config.text_config, add_pooling_layer=False)
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
        self.image_proj = TokenHead(embed_dim, embed_dim)
        self.text_proj = TokenHead(text_width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.logit_bias = nn.Parameter(torch.tensor(config.init_logit_bias))
        self.concept_logit_scale = nn.Parameter(torch.tensor(config.init_concept_logit_scale))
        self.concept_logit_bias = nn.Parameter(torch.tensor(config.init_concept_logit_bias))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, ConceptCLIPModel):
            nn.init.constant_(module.logit_scale, self.config.init_logit_scale)
            nn.init.constant_(module.logit_bias, self.config.init_logit_bias)
            nn.init.constant_(module.concept_logit_scale, self.config.init_concept_logit_scale)
            nn.init.constant_(module.concept_logit_bias, self.config.init_concept_logit_bias)

    @property
    def pad_token_id(self) -> int:
        """Id whose positions are masked out of the text tower."""
        pad = self.config.text_config.pad_token_id
        return 0 if pad is None else int(pad)

    def encode_image(
        self, pixel_values: torch.Tensor, normalize: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images.

        Args:
            pixel_values: ``(B, 3, H, W)`` preprocessed images.
            normalize: L2-normalise the global embedding.

        Returns:
            ``(global, tokens)``: ``(B, D)`` pooled embedding and ``(B, P, D)`` patch tokens
            of the last layer after the final layer norm, *before* ``image_proj``.
        """
        out = self.vision_model(pixel_values=pixel_values)
        pooled, tokens = out.pooler_output, out.last_hidden_state
        if normalize:
            pooled = F.normalize(pooled, dim=-1)
        return pooled, tokens

    def encode_text(
        self, input_ids: torch.Tensor, normalize: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode token ids; the attention mask is rebuilt from the pad id.

        Args:
            input_ids: ``(N, T)`` token ids (``[CLS]`` first).
            normalize: L2-normalise the global embedding.

        Returns:
            ``(global, tokens)``: ``(N, D)`` projected ``[CLS]`` embedding and ``(N, T, W_t)``
            last-layer text tokens *before* ``text_proj``.
        """
        attention_mask = (input_ids != self.pad_token_id).long()
        tokens = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = self.text_projection(tokens[:, 0])
        if normalize:
            pooled = F.normalize(pooled, dim=-1)
        return pooled, tokens

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor | None]:
        """Encode images and/or texts.

        Args:
            pixel_values: ``(B, 3, H, W)`` or ``None`` for a text-only call.
            input_ids: ``(N, T)`` or ``None`` for an image-only call.
            attention_mask: Accepted for compatibility and ignored: the pad mask is rebuilt
                from the pad id, as in the released model.
            **kwargs: Ignored (e.g. ``token_type_ids`` from a tokenizer).

        Returns:
            dict with ``image_features`` ``(B, D)`` and ``text_features`` ``(N, D)``
            (L2-normalised, ``None`` for the missing modality), ``image_token_features``
            ``(B, P, D)`` and ``text_token_features`` ``(N, T, D)`` (after the token heads,
            not normalised), and the scalars ``logit_scale``, ``logit_bias``,
            ``concept_logit_scale``, ``concept_logit_bias`` (scales exponentiated).
        """
        del attention_mask, kwargs
        image_features = image_token_features = None
        text_features = text_token_features = None
        if pixel_values is not None:
            image_features, image_tokens = self.encode_image(pixel_values, normalize=True)
            image_token_features = self.image_proj(image_tokens)
        if input_ids is not None:
            text_features, text_tokens = self.encode_text(input_ids, normalize=True)
            text_token_features = self.text_proj(text_tokens)
        return {
            "image_features": image_features,
            "text_features": text_features,
            "logit_scale": self.logit_scale.exp(),
            "logit_bias": self.logit_bias,
            "image_token_features": image_token_features,
            "text_token_features": text_token_features,
            "concept_logit_scale": self.concept_logit_scale.exp(),
            "concept_logit_bias": self.concept_logit_bias,
        }
