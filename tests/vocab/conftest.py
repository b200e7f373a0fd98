"""Shared fixtures for the scoring tests: the fake backbone of :mod:`tests.helpers.fakes`,
vocabularies and images."""

from __future__ import annotations

import pytest
from PIL import Image

from conceptlens.vocab.concept import Concept
from conceptlens.vocab.vocabulary import ConceptVocabulary
from tests.helpers.fakes import FakeBackbone, make_image


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
