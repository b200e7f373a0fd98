"""What both flavours of the ConceptCLIP reference model share.

The configuration base (text tower, initial logit scalars, context length) and the model base
(token heads, logit scalars, pad id, ConceptCLIP's output dict), subclassed by
``configuration_conceptclip`` / ``modeling_conceptclip`` (transformers-native towers) and
``configuration_conceptclip_openclip`` / ``modeling_conceptclip_openclip`` (the released
model's open_clip layout).

This file is *remote code*: every flavour's saved folder carries it next to the files that
import it, so it may import only ``torch`` and ``transformers``, never ``conceptlens``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, PretrainedConfig, PreTrainedModel

__all__ = ["ConceptCLIPConfigBase", "ConceptCLIPPreTrainedModel", "TokenHead"]


class ConceptCLIPConfigBase(PretrainedConfig):
    """The settings of both flavours besides the vision tower.

    Args:
        text_config: :class:`~transformers.BertConfig` or its dict (``None``: BERT-base).
        init_logit_scale: Initial *log* of the global logit scale (stored as a log,
            returned exponentiated by the model's forward).
        init_logit_bias: Initial global logit bias.
        init_concept_logit_scale: Initial *log* of the local (concept) logit scale.
        init_concept_logit_bias: Initial local logit bias.
        context_length: Text length the authors pad to (77).
        **kwargs: Passed to :class:`~transformers.PretrainedConfig`.
    """

    def __init__(
        self,
        text_config: BertConfig | dict[str, Any] | None = None,
        init_logit_scale: float = math.log(10.0),
        init_logit_bias: float = -10.0,
        init_concept_logit_scale: float = math.log(10.0),
        init_concept_logit_bias: float = -10.0,
        context_length: int = 77,
        **kwargs: Any,
    ) -> None:
        if text_config is None:
            text_config = BertConfig()
        elif isinstance(text_config, dict):
            text_config = BertConfig(**text_config)
        self.text_config = text_config
        self.init_logit_scale = float(init_logit_scale)
        self.init_logit_bias = float(init_logit_bias)
        self.init_concept_logit_scale = float(init_concept_logit_scale)
        self.init_concept_logit_bias = float(init_concept_logit_bias)
        self.context_length = int(context_length)
        super().__init__(**kwargs)

    def _vision_sizes(self) -> tuple[int, int, int]:
        """``(width, image_size, patch_size)`` of the flavour's vision tower."""
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:
        """Joint embedding dimension (the vision width)."""
        return int(self._vision_sizes()[0])

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(rows, cols)``; border pixels not covered by a whole patch are dropped."""
        _, image_size, patch_size = self._vision_sizes()
        side = image_size // patch_size
        return (side, side)


class TokenHead(nn.Sequential):
    """Token projection head ``Linear -> GELU -> Linear`` used for the local alignment
    (``image_proj`` / ``text_proj``).

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


class ConceptCLIPPreTrainedModel(PreTrainedModel):
    """Both flavours' common part: the token heads, the four logit scalars and the forward.

    A subclass builds its towers, then calls :meth:`_add_heads`, and runs them in
    :meth:`_image_tower` / :meth:`_text_tower` (``encode_image`` / ``encode_text`` normalise
    their global embeddings on request).
    """

    base_model_prefix = "conceptclip"
    main_input_name = "pixel_values"
    _normal_init_types: tuple[type[nn.Module], ...] = (nn.Linear,)
    """Modules whose weight :meth:`_init_weights` draws from ``N(0, initializer_range)``."""

    def _add_heads(self, image_width: int, text_width: int) -> None:
        """Register ``image_proj``, ``text_proj`` and the four logit scalars, in that order."""
        config = self.config
        self.image_proj = TokenHead(image_width, config.embed_dim)
        self.text_proj = TokenHead(text_width, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.logit_bias = nn.Parameter(torch.tensor(config.init_logit_bias))
        self.concept_logit_scale = nn.Parameter(torch.tensor(config.init_concept_logit_scale))
        self.concept_logit_bias = nn.Parameter(torch.tensor(config.init_concept_logit_bias))

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, self._normal_init_types):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, ConceptCLIPPreTrainedModel):
            nn.init.constant_(module.logit_scale, self.config.init_logit_scale)
            nn.init.constant_(module.logit_bias, self.config.init_logit_bias)
            nn.init.constant_(module.concept_logit_scale, self.config.init_concept_logit_scale)
            nn.init.constant_(module.concept_logit_bias, self.config.init_concept_logit_bias)
        else:
            self._init_other_weights(module, std)

    def _init_other_weights(self, module: nn.Module, std: float) -> None:
        """Initialise a module :meth:`_init_weights` does not handle (nothing by default)."""

    @property
    def pad_token_id(self) -> int:
        """Id whose positions are masked out of the text tower."""
        pad = self.config.text_config.pad_token_id
        return 0 if pad is None else int(pad)

    def _image_tower(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The flavour's vision tower: ``(pooled (B, D), tokens (B, P, D))``."""
        raise NotImplementedError

    def _text_tower(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The flavour's text tower: ``(projected [CLS] (N, D), tokens (N, T, W_t))``."""
        raise NotImplementedError

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
        pooled, tokens = self._image_tower(pixel_values)
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
        pooled, tokens = self._text_tower(input_ids, attention_mask)
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
