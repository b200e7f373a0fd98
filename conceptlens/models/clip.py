"""Backbone adapter for Hugging Face ``CLIPModel``.

Global embeddings are exactly the model's own (``get_image_features`` /
``get_text_features``, L2-normalised). Patch tokens are projected into the joint space the
MaskCLIP way: the last encoder layer's patch tokens go through the same
``post_layernorm -> visual_projection`` chain that turns the class token into the global
embedding, so a patch and a text live in the same space and can be compared by cosine.

CLIP was trained for global alignment only. The local calibration
(``concept_logit_scale``, ``concept_logit_bias``) therefore repeats the global one
(``exp(logit_scale)``, 0); patch-level scores are comparable across concepts and patches of
one model but are not calibrated probabilities.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from conceptlens.models._hf_common import HFDualEncoderBackbone

__all__ = ["CLIPBackbone"]


class CLIPBackbone(HFDualEncoderBackbone):
    """A :class:`~conceptlens.models.base.Backbone` over ``transformers.CLIPModel``.

    Args:
        model: A ``CLIPModel``; it is put in eval mode and its parameters are frozen.
        processor: A ``CLIPProcessor`` (or anything with ``.image_processor`` and a
            ``.tokenizer``; a fast tokenizer gives exact character offsets).
        model_id: Hub id or local path, recorded in :attr:`identity`.
        revision: Hub revision, when known.
        weights_hash: Hash of the weight files, when known. When neither ``revision`` nor
            ``weights_hash`` is given, the parameters are hashed.
        whole_image: Replace the processor's centre crop by a squash resize to the crop size
            (default), so the whole image is explained and maps land back on it.

    Texts are padded to ``text_config.max_position_embeddings`` tokens (77 for released
    CLIP models). The class token comes first in each vision block's output
    (:attr:`num_prefix_tokens` = 1).

    Example:
        >>> backbone = CLIPBackbone.from_pretrained("openai/clip-vit-base-patch16")  # doctest: +SKIP
        >>> pixels = backbone.preprocess(["lesion.png"])  # doctest: +SKIP
        >>> feats = backbone.encode_images(pixels)  # doctest: +SKIP
        >>> feats.patch_embeds.shape  # doctest: +SKIP
        torch.Size([1, 196, 512])
    """

    family = "clip"
    model_type = "clip"
    num_prefix_tokens = 1

    @classmethod
    def _model_class(cls) -> type[nn.Module]:
        from transformers import CLIPModel

        return CLIPModel

    def _embed_dim(self) -> int:
        return int(self.model.visual_projection.out_features)

    def _calibration(self) -> tuple[float, float]:
        return math.exp(float(self.model.logit_scale.detach().float())), 0.0

    def _image_outputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vision = self.model.vision_model
        outputs = vision(pixel_values=pixel_values, return_dict=True)
        projection = self.model.visual_projection
        global_raw = projection(outputs.pooler_output)
        patch_tokens = outputs.last_hidden_state[:, self.num_prefix_tokens :, :]
        patches = projection(vision.post_layernorm(patch_tokens))
        return global_raw, patches

    def _text_outputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model.text_model(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True
        )
        projection = self.model.text_projection
        return projection(outputs.pooler_output), projection(outputs.last_hidden_state)
