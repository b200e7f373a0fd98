"""Configuration of the open_clip-structured ConceptCLIP stand-in.

This file is *remote code*: ``save_pretrained`` copies it into the saved folder, so it may
import only ``transformers`` (and the sibling files of this folder), never ``conceptlens``.
"""

from __future__ import annotations

from typing import Any

from transformers import BertConfig

from ._conceptclip_shared import ConceptCLIPConfigBase

__all__ = ["ConceptCLIPOpenCLIPConfig"]


class ConceptCLIPOpenCLIPConfig(ConceptCLIPConfigBase):
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
        **kwargs: ``init_logit_scale``, ``init_logit_bias``, ``init_concept_logit_scale``,
            ``init_concept_logit_bias`` (initial scalars, scales as logs) and
            ``context_length`` (77), see ``ConceptCLIPConfigBase``; the rest is passed to
            :class:`~transformers.PretrainedConfig`.
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
        **kwargs: Any,
    ) -> None:
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.width = int(width)
        self.depth = int(depth)
        self.heads = int(heads)
        self.mlp_dim = int(mlp_dim)
        super().__init__(text_config=text_config, **kwargs)

    def _vision_sizes(self) -> tuple[int, int, int]:
        return self.width, self.image_size, self.patch_size
