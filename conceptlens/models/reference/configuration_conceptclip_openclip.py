"""Configuration of the open_clip-structured ConceptCLIP stand-in.

This file is *remote code*: ``save_pretrained`` copies it into the saved folder, so it may
import only ``transformers`` (and the sibling files of this folder), never ``conceptlens``.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import BertConfig, PretrainedConfig

__all__ = ["ConceptCLIPOpenCLIPConfig"]


class ConceptCLIPOpenCLIPConfig(PretrainedConfig):
    """Configuration of :class:`ConceptCLIPOpenCLIPModel`: the released ConceptCLIP's layout.

    The vision tower is laid out like an open_clip ``TimmModel`` around a timm SigLIP ViT
    (``visual.trunk`` with ``patch_embed``, ``pos_embed``, ``blocks``, ``norm``, a MAP
    ``attn_pool``; ``visual.head`` empty); the text tower like open_clip's HF text encoder
    (``text.transformer`` = BERT, ``text.proj`` = bias-free [CLS] projection).

    Args:
        image_size: Input side in pixels.
        patch_size: Patch side in pixels.
        width: Vision width (= joint embedding dimension, as in ConceptCLIP).
        depth: Number of vision blocks.
        heads: Attention heads of the vision blocks and the pool.
        mlp_dim: Hidden width of the vision MLPs.
        text_config: :class:`~transformers.BertConfig` or its dict.
        init_logit_scale, init_logit_bias, init_concept_logit_scale, init_concept_logit_bias:
            Initial scalars; scales stored as logs.
        context_length: Text length the authors pad to (77).
        **kwargs: Passed to :class:`~transformers.PretrainedConfig`.
    """

    model_type = "conceptclip_open_clip"
    sub_configs = {"text_config": BertConfig}

    def __init__(
        self,
        image_size: int = 384,
        patch_size: int = 14,
        width: int = 1152,
        depth: int = 27,
        heads: int = 16,
        mlp_dim: int = 4304,
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
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.width = int(width)
        self.depth = int(depth)
        self.heads = int(heads)
        self.mlp_dim = int(mlp_dim)
        self.text_config = text_config
        self.init_logit_scale = float(init_logit_scale)
        self.init_logit_bias = float(init_logit_bias)
        self.init_concept_logit_scale = float(init_concept_logit_scale)
        self.init_concept_logit_bias = float(init_concept_logit_bias)
        self.context_length = int(context_length)
        super().__init__(**kwargs)

    @property
    def embed_dim(self) -> int:
        """Joint embedding dimension (the vision width)."""
        return self.width

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(rows, cols)``."""
        side = self.image_size // self.patch_size
        return (side, side)
