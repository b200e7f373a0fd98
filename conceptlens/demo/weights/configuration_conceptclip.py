"""Configuration of the ConceptCLIP-architecture reference model.

This file is *remote code*: ``save_pretrained`` copies it into the saved folder, so it may
import only ``transformers`` (and the sibling files of this folder), never ``conceptlens``.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import BertConfig, PretrainedConfig, SiglipVisionConfig

__all__ = ["ConceptCLIPConfig"]


class ConceptCLIPConfig(PretrainedConfig):
    """Configuration of :class:`ConceptCLIPModel`: a SigLIP vision tower and a BERT text tower.

    The joint embedding dimension equals the vision width (ConceptCLIP's image tower has no
    output projection: the attention-pool output *is* the global embedding); the text
    tower's ``[CLS]`` state is projected into it by a bias-free linear layer.

    Args:
        vision_config: :class:`~transformers.SiglipVisionConfig` or its dict; the
            attention-pool head (``vision_use_head``) is always on.
        text_config: :class:`~transformers.BertConfig` or its dict.
        init_logit_scale: Initial *log* of the global logit scale (stored as a log,
            returned exponentiated by the model's forward).
        init_logit_bias: Initial global logit bias.
        init_concept_logit_scale: Initial *log* of the local (concept) logit scale.
        init_concept_logit_bias: Initial local logit bias.
        context_length: Text length the authors pad to (77).
        **kwargs: Passed to :class:`~transformers.PretrainedConfig`.

    Attributes:
        embed_dim: Joint embedding dimension (= ``vision_config.hidden_size``).
    """

    model_type = "conceptclip"
    sub_configs = {"vision_config": SiglipVisionConfig, "text_config": BertConfig}

    def __init__(
        self,
        vision_config: SiglipVisionConfig | dict[str, Any] | None = None,
        text_config: BertConfig | dict[str, Any] | None = None,
        init_logit_scale: float = math.log(10.0),
        init_logit_bias: float = -10.0,
        init_concept_logit_scale: float = math.log(10.0),
        init_concept_logit_bias: float = -10.0,
        context_length: int = 77,
        **kwargs: Any,
    ) -> None:
        if vision_config is None:
            vision_config = SiglipVisionConfig()
        elif isinstance(vision_config, dict):
            vision_config = SiglipVisionConfig(**vision_config)
        if text_config is None:
            text_config = BertConfig()
        elif isinstance(text_config, dict):
            text_config = BertConfig(**text_config)
        if not getattr(vision_config, "vision_use_head", True):
            raise ValueError("ConceptCLIPConfig needs the attention-pool head: vision_use_head=True")
        self.vision_config = vision_config
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
        return int(self.vision_config.hidden_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(rows, cols)``; border pixels not covered by a whole patch are dropped."""
        side = self.vision_config.image_size // self.vision_config.patch_size
        return (side, side)
