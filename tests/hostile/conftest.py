"""Helpers for the hostile-input suite: every case asserts one exact, named behaviour."""

from __future__ import annotations

import os

import pytest

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def one_line(text: str) -> str:
    """The text, asserting it is a single line."""
    lines = str(text).strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {lines!r}"
    return lines[0]


needs_non_root = pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")


@pytest.fixture
def backbone():
    """The tiny deterministic fake backbone of the scoring tests."""
    from tests.helpers.fakes import FakeBackbone

    return FakeBackbone()


@pytest.fixture
def vocabulary():
    """A three-concept vocabulary for the fake backbone."""
    from conceptlens.vocab import ConceptVocabulary

    return ConceptVocabulary([{"id": "t:red", "name": "red"}, {"id": "t:blue", "name": "blue"},
                              {"id": "t:dots", "name": "dots"}], name="t", modality="dermoscopy")
