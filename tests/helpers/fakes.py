"""Test doubles: a deterministic fake backbone (no transformers), its variants, fake maps.

:class:`FakeBackbone` keeps the whole :class:`~conceptlens.models.base.Backbone` contract
(checked by :func:`conceptlens.models.testing.check_backbone`) with a conv patchifier and a
hashed bag-of-words text tower, so scoring, caching and streaming tests run in
milliseconds and can count how often each tower ran.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conceptlens.models.base import Backbone, BackboneIdentity, ImageFeatures, TextFeatures
from conceptlens.models.images import load_pil_images

__all__ = [
    "DynamicPaddingFakeBackbone",
    "FakeBackbone",
    "FakeConceptMaps",
    "make_image",
]

_WORD = re.compile(r"\w+|[^\w\s]")


def make_image(seed: int, size: tuple[int, int] = (20, 14)) -> Image.Image:
    """A random RGB image of ``size = (width, height)``, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


class _FakeModel(nn.Module):
    def __init__(self, dim: int, patch: int, vocab: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.patchify = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.block = nn.Identity()  # the one "transformer block" (Grad-CAM's target layer)
        self.pool = nn.Linear(dim, dim)
        self.words = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(32, dim)
        self.mix = nn.Linear(dim, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


class FakeBackbone(Backbone):
    """A tiny backbone: conv patches, a hashed bag-of-words text tower, fixed-length padding.

    Counts calls of the image and text towers in ``image_calls`` / ``text_calls`` (number of
    images / texts encoded) and ``image_forwards`` (number of image-tower passes).
    ``fail_on_image_forward`` makes the n-th image-tower pass (1-based) raise.

    Args:
        dim: Joint embedding width.
        image_size: Side of the square model input.
        patch: Patch side; the grid is ``image_size // patch`` square.
        seed: Seed of the weights.
        context_length: Texts are padded to this many tokens.
        model_id: Recorded in the identity (the cache key).
    """

    def __init__(self, *, dim: int = 8, image_size: int = 18, patch: int = 4, seed: int = 0,
                 context_length: int = 16, model_id: str = "fake") -> None:
        self.model = _FakeModel(dim, patch, 257, seed).eval()
        self.embed_dim = dim
        self.image_size = (image_size, image_size)
        side = image_size // patch
        self.grid_size = (side, side)
        self.patch_size = patch
        self.context_length = context_length
        self.logit_scale = 7.0
        self.logit_bias = -2.0
        self.concept_logit_scale = 5.0
        self.concept_logit_bias = -1.0
        self.identity = BackboneIdentity(
            model_id=model_id, family="fake", dtype="float32",
            preprocessing=json.dumps({"size": image_size, "resize": "squash"}),
        )
        self.image_forwards = 0
        self.image_calls = 0
        self.text_calls = 0
        self.fail_on_image_forward: int | None = None

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """Images (anything :func:`~conceptlens.models.images.load_pil_images` reads) ->
        ``(B, 3, S, S)`` pixels in ``[-1, 1]``, squash-resized (bicubic)."""
        out = []
        for image in load_pil_images(images):
            resized = image.convert("RGB").resize(self.image_size, Image.BICUBIC)
            array = np.asarray(resized, dtype=np.float32) / 127.5 - 1.0
            out.append(torch.from_numpy(array).permute(2, 0, 1))
        return torch.stack(out)

    def forward_images(self, pixel_values: torch.Tensor) -> ImageFeatures:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        expected = (3, *self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"pixel_values must have shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(pixel_values.shape)}")
        self.image_forwards += 1
        self.image_calls += pixel_values.shape[0]
        if self.fail_on_image_forward == self.image_forwards:
            raise RuntimeError("simulated crash in the image tower")
        tokens = self.model.block(self.model.patchify(pixel_values).flatten(2).transpose(1, 2))
        pooled = F.normalize(self.model.pool(tokens.mean(dim=1)), dim=-1)
        return ImageFeatures(global_embeds=pooled, patch_embeds=torch.tanh(tokens),
                             grid_size=self.grid_size)

    def forward_texts(self, texts: Sequence[str]) -> TextFeatures:
        texts = list(texts)
        self.text_calls += len(texts)
        n, length = len(texts), self.context_length
        ids = torch.zeros(n, length, dtype=torch.long)
        mask = torch.zeros(n, length, dtype=torch.long)
        offsets = torch.zeros(n, length, 2, dtype=torch.long)
        for row, text in enumerate(texts):
            ids[row, 0], mask[row, 0] = 1, 1  # [CLS]
            words = list(_WORD.finditer(text.lower()))[: length - 2]
            for j, match in enumerate(words, start=1):
                ids[row, j] = 2 + zlib.crc32(match.group().encode()) % 255
                mask[row, j] = 1
                offsets[row, j] = torch.tensor([match.start(), match.end()])
            ids[row, len(words) + 1], mask[row, len(words) + 1] = 256, 1  # [SEP]
        hidden = self.model.words(ids) + self.model.positions(torch.arange(length))
        context = (hidden * mask[..., None]).sum(1, keepdim=True) / mask.sum(1, keepdim=True)[..., None]
        tokens = self.model.mix(torch.tanh(hidden + 0.5 * context))
        pooled = F.normalize(tokens[:, 0], dim=-1)
        return TextFeatures(global_embeds=pooled, token_embeds=tokens, attention_mask=mask,
                            offsets=offsets, texts=texts)

    def token_layers(self) -> list[nn.Module]:
        """The one block the patch tokens pass through (outputs ``(B, P, dim)``)."""
        return [self.model.block]


class DynamicPaddingFakeBackbone(FakeBackbone):
    """Pads each batch of texts to its longest text only (like ``padding=True``)."""

    def forward_texts(self, texts: Sequence[str]) -> TextFeatures:
        features = super().forward_texts(texts)
        length = int(features.attention_mask.sum(1).max())
        features.token_embeds = features.token_embeds[:, :length]
        features.attention_mask = features.attention_mask[:, :length]
        features.offsets = features.offsets[:, :length]
        return features


class FakeConceptMaps:
    """What the plots read from :class:`~conceptlens.vocab.ConceptMaps`: five concepts on a
    black 32 px image, map ``i`` constant ``i``, one concept with a name."""

    def __init__(self) -> None:
        self.image = Image.new("RGB", (32, 32))
        self.concept_ids = ["C1", "C2", "C3", "C4", "C5"]
        self.names = {"C1": "pigment network"}

    def upsampled(self, concept_id: str) -> np.ndarray:
        return np.full((32, 32), float(self.concept_ids.index(concept_id)))
