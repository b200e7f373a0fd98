"""Concept vocabularies, prompts and concept scoring."""

from conceptlens.vocab.scores import ConceptScores

__all__ = ["ConceptScores"]
