"""The concepts of the explanation tests; their tiny backbones are in :mod:`tests.helpers.backbones`."""

from __future__ import annotations

from conceptlens.vocab.vocabulary import ConceptVocabulary

CONCEPTS = ["pigment network", "blue whitish veil", "dots", "streaks"]


def vocabulary() -> ConceptVocabulary:
    return ConceptVocabulary.from_names(CONCEPTS, name="t")
