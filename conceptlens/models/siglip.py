"""Backbone adapter for Hugging Face ``SiglipModel``.

SigLIP has no class token: its global image embedding is an attention-pooling head
(``SiglipMultiheadAttentionPoolingHead``) over the post-layernorm patch tokens ``x_j``::

    a   = softmax_j(q(probe) . k(x_j))                     (per head)
    z   = W_o (sum_j a_j (W_v x_j + b_v)) + b_o             (multi-head attention)
    out = z + MLP(LayerNorm(z))                            (the head's residual block)

Patch tokens are projected into the joint space through the head's *value path*: each token
is sent through the head as if it were the only key, where the attention weight is 1::

    z_i   = W_o (W_v x_i + b_v) + b_o
    out_i = z_i + MLP(LayerNorm(z_i))

For a one-token input this is exactly the head's output (a test checks it), and because the
attention output is a convex combination of the per-token ``z_i``, the pooled ``z`` lies in
the hull of the patch ``z_i``: patches land in the space of the global embedding.

SigLIP was trained for global alignment only; the local calibration repeats the global one
(``exp(logit_scale)``, ``logit_bias``), so patch-level probabilities are not calibrated.

Text is padded to ``text_config.max_position_embeddings`` tokens (64 for released SigLIP
models, as they were trained) and, as in training, the pad tokens are *not* masked out in the
text encoder; ``TextFeatures.attention_mask`` still marks them. The official SigLIP tokenizer
is SentencePiece-based (needs the ``sentencepiece`` package) and cannot return offsets, so
offsets are then found by aligning token pieces with the text; any fast tokenizer gives exact
offsets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from conceptlens.models._hf_common import HFDualEncoderBackbone

__all__ = ["SiglipBackbone", "attention_pool_value_path"]


def attention_pool_value_path(head: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Send every token through a SigLIP attention-pooling head as if it were the only key.

    Args:
        head: A ``SiglipMultiheadAttentionPoolingHead`` (``attention``, ``layernorm``, ``mlp``).
        tokens: ``(B, P, W)`` post-layernorm vision tokens.

    Returns:
        ``(B, P, W)``: per-token outputs; for ``P == 1`` equal to ``head(tokens)[:, None]``.

    Raises:
        NotImplementedError: the attention adds learned key/value biases (``add_bias_kv``),
            for which one key is no longer the whole softmax.
    """
    attention: nn.MultiheadAttention = head.attention
    if attention.bias_k is not None or attention.bias_v is not None:
        raise NotImplementedError("value path is undefined with add_bias_kv=True")
    width = attention.embed_dim
    if attention.in_proj_weight is not None:
        value_weight = attention.in_proj_weight[2 * width :]
    else:
        value_weight = attention.v_proj_weight
    value_bias = None if attention.in_proj_bias is None else attention.in_proj_bias[2 * width :]
    values = F.linear(tokens, value_weight, value_bias)
    attended = attention.out_proj(values)
    return attended + head.mlp(head.layernorm(attended))


class SiglipBackbone(HFDualEncoderBackbone):
    """A :class:`~conceptlens.models.base.Backbone` over ``transformers.SiglipModel``.

    Args:
        model: A ``SiglipModel`` with its vision attention-pooling head
            (``vision_use_head=True``); put in eval mode, parameters frozen.
        processor: A ``SiglipProcessor`` or anything with ``.image_processor`` and
            ``.tokenizer`` (any tokenizer works; fast ones give exact character offsets).
        model_id: Hub id or local path, recorded in :attr:`identity`.
        revision: Hub revision, when known.
        weights_hash: Hash of the weight files, when known. When neither ``revision`` nor
            ``weights_hash`` is given, the parameters are hashed.

    Example:
        >>> backbone = SiglipBackbone.from_pretrained("google/siglip-base-patch16-224")  # doctest: +SKIP
        >>> feats = backbone.encode_images(backbone.preprocess(["lesion.png"]))  # doctest: +SKIP
        >>> feats.grid_size  # doctest: +SKIP
        (14, 14)
    """

    family = "siglip"
    model_type = "siglip"
    num_prefix_tokens = 0

    def __init__(self, model: nn.Module, processor: object, **kwargs: object) -> None:
        if getattr(getattr(model, "vision_model", None), "head", None) is None:
            raise ValueError(
                "SiglipBackbone needs the vision attention-pooling head "
                "(vision_config.vision_use_head=True)"
            )
        super().__init__(model, processor, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def _model_class(cls) -> type[nn.Module]:
        from transformers import SiglipModel

        return SiglipModel

    def _embed_dim(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    def _calibration(self) -> tuple[float, float]:
        scale = math.exp(float(self.model.logit_scale.detach().float().reshape(-1)[0]))
        bias = float(self.model.logit_bias.detach().float().reshape(-1)[0])
        return scale, bias

    def _image_outputs(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vision = self.model.vision_model
        outputs = vision(pixel_values=pixel_values, return_dict=True)
        patches = attention_pool_value_path(vision.head, outputs.last_hidden_state)
        return outputs.pooler_output, patches

    def _text_outputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.model.text_model
        outputs = text(input_ids=input_ids, return_dict=True)
        return outputs.pooler_output, text.head(outputs.last_hidden_state)
