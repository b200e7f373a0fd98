"""Shared fixtures for the scoring tests: a tiny deterministic fake backbone and images."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conceptlens.models.base import Backbone, BackboneIdentity, ImageFeatures, TextFeatures
from conceptlens.vocab.concept import Concept
from conceptlens.vocab.vocabulary import ConceptVocabulary

_WORD = re.compile(r"\w+|[^\w\s]")


class _FakeModel(nn.Module):
    def __init__(self, dim: int, patch: int, vocab: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.patchify = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
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
        out = []
        for image in images:
            if not isinstance(image, Image.Image):
                raise TypeError(f"FakeBackbone.preprocess takes PIL images, got {type(image).__name__}")
            resized = image.convert("RGB").resize(self.image_size, Image.BICUBIC)
            array = np.asarray(resized, dtype=np.float32) / 127.5 - 1.0
            out.append(torch.from_numpy(array).permute(2, 0, 1))
        return torch.stack(out)

    def forward_images(self, pixel_values: torch.Tensor) -> ImageFeatures:
        self.image_forwards += 1
        self.image_calls += pixel_values.shape[0]
        if self.fail_on_image_forward == self.image_forwards:
            raise RuntimeError("simulated crash in the image tower")
        tokens = self.model.patchify(pixel_values).flatten(2).transpose(1, 2)
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


@pytest.fixture
def backbone() -> FakeBackbone:
    return FakeBackbone()


@pytest.fixture
def vocabulary() -> ConceptVocabulary:
    return ConceptVocabulary(
        [
            Concept("t:network", "pigment network", synonyms=("reticular pattern",)),
            Concept("t:streaks", "streaks"),
            Concept("t:veil", "blue whitish veil", synonyms=("blue-white veil",)),
        ],
        name="test", modality="dermoscopy",
    )


@pytest.fixture
def other_vocabulary() -> ConceptVocabulary:
    return ConceptVocabulary(
        [Concept("t:dots", "dots and globules"), Concept("t:regression", "regression structures")],
        name="other", modality="dermoscopy",
    )


def make_image(seed: int, size: tuple[int, int] = (20, 14)) -> Image.Image:
    """A random RGB image (width, height) = ``size``."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def images() -> list[Image.Image]:
    return [make_image(i) for i in range(5)]


@pytest.fixture
def image_folder(tmp_path, images):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(images):
        image.save(folder / f"img{i}.png")
    return folder
