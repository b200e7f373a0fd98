"""Configuration of the ConceptCLIP-architecture reference model.

This file is *remote code*: ``save_pretrained`` copies it into the saved folder, so it may
import only ``transformers`` (and the sibling files of this folder), never ``conceptlens``.
"""

from __future__ import annotations

from typing import Any

from transformers import BertConfig, SiglipVisionConfig

from ._conceptclip_shared import ConceptCLIPConfigBase

__all__ = ["ConceptCLIPConfig"]


class ConceptCLIPConfig(ConceptCLIPConfigBase):
    """Configuration of :class:`ConceptCLIPModel`: a SigLIP vision tower and a BERT text tower.

    The joint embedding dimension equals the vision width (ConceptCLIP's image tower has no
    output projection: the attention-pool output *is* the global embedding); the text
    tower's ``[CLS]`` state is projected into it by a bias-free linear layer.

    Args:
        vision_config: :class:`~transformers.SiglipVisionConfig` or its dict; the
            attention-pool head (``vision_use_head``) is always on.
        text_config: :class:`~transformers.BertConfig` or its dict.
        **kwargs: ``init_logit_scale``, ``init_logit_bias``, ``init_concept_logit_scale``,
            ``init_concept_logit_bias`` (initial scalars, scales as logs) and
            ``context_length`` (77), see ``ConceptCLIPConfigBase``; the rest is passed to
            :class:`~transformers.PretrainedConfig`.

    Attributes:
        embed_dim: Joint embedding dimension (= ``vision_config.hidden_size``).
        grid_size: Patch grid ``(rows, cols)``.
    """

    model_type = "conceptclip"
    sub_configs = {"vision_config": SiglipVisionConfig, "text_config": BertConfig}

    def __init__(
        self,
        vision_config: SiglipVisionConfig | dict[str, Any] | None = None,
        text_config: BertConfig | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if vision_config is None:
            vision_config = SiglipVisionConfig()
        elif isinstance(vision_config, dict):
            vision_config = SiglipVisionConfig(**vision_config)
        if not getattr(vision_config, "vision_use_head", True):
            raise ValueError("ConceptCLIPConfig needs the attention-pool head: vision_use_head=True")
        self.vision_config = vision_config
        super().__init__(text_config=text_config, **kwargs)

    def _vision_sizes(self) -> tuple[int, int, int]:
        vision = self.vision_config
        return vision.hidden_size, vision.image_size, vision.patch_size
