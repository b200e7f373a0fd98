"""open_clip-structured ConceptCLIP stand-in: the released model's module layout in plain torch.

The released ConceptCLIP is an open_clip model: its vision tower is a ``TimmModel``
(``model.visual.trunk`` = a timm SigLIP ViT with a MAP attention-pool head, ``model.visual.head``
empty) and its text tower a BERT behind a [CLS] projection. This file rebuilds that layout
with the same module and parameter names as timm / open_clip (``visual.trunk.patch_embed.proj``,
``visual.trunk.blocks.N.attn.qkv``, ``visual.trunk.attn_pool.kv``, ...) but without importing
them, so it runs wherever ``torch`` and ``transformers`` do. Its calling convention is the
released one: ``encode_image`` / ``encode_text`` return ``(global, tokens)`` tuples and the
forward returns ConceptCLIP's output dict.

This file is *remote code*: ``save_pretrained`` copies it into the saved folder, so it may
import only ``torch``, ``transformers`` and the sibling files of this folder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel

from ._conceptclip_shared import ConceptCLIPPreTrainedModel
from .configuration_conceptclip_openclip import ConceptCLIPOpenCLIPConfig

__all__ = ["ConceptCLIPOpenCLIPModel"]

_EPS = 1e-6  # SigLIP's LayerNorm epsilon


class Mlp(nn.Module):
    """timm ``Mlp``: ``fc1 -> GELU (tanh) -> fc2``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """timm ``Attention``: fused ``qkv`` projection, scaled dot product, ``proj``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """timm pre-norm ViT block; its output is the ``(B, N, W)`` token tensor."""

    def __init__(self, width: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=_EPS)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=_EPS)
        self.mlp = Mlp(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """timm ``PatchEmbed``: a strided convolution, flattened row-major to ``(B, P, W)``."""

    def __init__(self, image_size: int, patch_size: int, width: int) -> None:
        super().__init__()
        self.grid_size = (image_size // patch_size, image_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class AttentionPoolLatent(nn.Module):
    """timm ``AttentionPoolLatent`` (MAP head): one learned query attends over the tokens,
    then ``proj`` and a residual MLP."""

    def __init__(self, width: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.latent_len = 1
        self.latent = nn.Parameter(torch.zeros(1, 1, width))
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=_EPS)
        self.mlp = Mlp(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, 1, h, c // h).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, c)
        out = self.proj(out)
        out = out + self.mlp(self.norm(out))
        return out[:, 0]


class VisionTrunk(nn.Module):
    """The timm ViT trunk: ``patch_embed``, ``pos_embed``, ``blocks``, ``norm``, ``attn_pool``
    (``global_pool='map'``), no prefix tokens, ``fc_norm`` and ``head`` empty."""

    def __init__(self, config: ConceptCLIPOpenCLIPConfig) -> None:
        super().__init__()
        width = config.width
        self.patch_embed = PatchEmbed(config.image_size, config.patch_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, width))
        self.blocks = nn.Sequential(
            *(Block(width, config.heads, config.mlp_dim) for _ in range(config.depth))
        )
        self.norm = nn.LayerNorm(width, eps=_EPS)
        self.attn_pool = AttentionPoolLatent(width, config.heads, config.mlp_dim)
        self.fc_norm = nn.Identity()
        self.head = nn.Identity()
        self.global_pool = "map"
        self.num_prefix_tokens = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels -> ``(B, P, W)`` tokens after the final norm."""
        x = self.patch_embed(x) + self.pos_embed.to(x.dtype)
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens -> pooled ``(B, W)``."""
        return self.head(self.fc_norm(self.attn_pool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class VisualTower(nn.Module):
    """open_clip ``TimmModel``: ``trunk`` + ``head`` (empty: the pool output is the embedding)."""

    def __init__(self, config: ConceptCLIPOpenCLIPConfig) -> None:
        super().__init__()
        self.image_size = (config.image_size, config.image_size)
        self.trunk = VisionTrunk(config)
        self.head = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class TextTower(nn.Module):
    """open_clip ``HFTextEncoder`` with [CLS] pooling: ``transformer`` (BERT) + ``proj``."""

    def __init__(self, config: ConceptCLIPOpenCLIPConfig) -> None:
        super().__init__()
        self.transformer = BertModel(config.text_config, add_pooling_layer=False)
        self.proj = nn.Linear(config.text_config.hidden_size, config.embed_dim, bias=False)


class ConceptCLIPOpenCLIPModel(ConceptCLIPPreTrainedModel):
    """ConceptCLIP with the released model's open_clip layout (``visual.trunk.blocks``).

    Example:
        >>> from conceptlens.models import create_reference_model
        >>> model, processor = create_reference_model("tiny", flavour="open_clip")
        >>> len(model.visual.trunk.blocks), processor.tokenizer.is_fast
        (2, False)
    """

    config_class = ConceptCLIPOpenCLIPConfig
    config: ConceptCLIPOpenCLIPConfig
    _no_split_modules = ["Block", "BertLayer"]
    _normal_init_types = (nn.Linear, nn.Conv2d)

    def __init__(self, config: ConceptCLIPOpenCLIPConfig) -> None:
        super().__init__(config)
        self.visual = VisualTower(config)
        self.text = TextTower(config)
        self._add_heads(config.embed_dim, config.text_config.hidden_size)
        self.post_init()

    def _init_other_weights(self, module: nn.Module, std: float) -> None:
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, VisionTrunk):
            nn.init.normal_(module.pos_embed, mean=0.0, std=std)
        elif isinstance(module, AttentionPoolLatent):
            nn.init.normal_(module.latent, mean=0.0, std=module.latent.shape[-1] ** -0.5)

    def _image_tower(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.visual.trunk.forward_features(pixel_values)
        return self.visual.head(self.visual.trunk.forward_head(tokens)), tokens

    def _text_tower(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.text.transformer(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        return self.text.proj(tokens[:, 0]), tokens
