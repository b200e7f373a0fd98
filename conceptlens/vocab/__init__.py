"""Concept vocabularies, prompts and concept scoring.

The vocabulary layer: concepts as data (:class:`Concept`, :class:`ConceptVocabulary`,
built-in vocabularies), prompt building, and the :class:`ConceptScorer` that turns images
into a labelled :class:`ConceptScores` table with global and local (patch-level) alignment,
plus concept maps, annotation evaluation, zero-shot classification and retrieval.
"""

from conceptlens._deprecation import renamed_module_attributes
from conceptlens.vocab.cache import FeatureCache
from conceptlens.vocab.calibration import ConceptCalibrator, calibration_report
from conceptlens.vocab.concept import Concept, VocabularyError
from conceptlens.vocab.evaluation import evaluate_annotation
from conceptlens.vocab.examples import EXAMPLE_VECTORS, concept_from_examples
from conceptlens.vocab.filtering import ConceptFilterResult, filter_concepts
from conceptlens.vocab.input_checks import InputChecks, InputQualitySummary
from conceptlens.vocab.maps import ConceptMaps
from conceptlens.vocab.prompts import (
    DERM7PT_TEMPLATE,
    TEMPLATES,
    ConceptPrompt,
    PromptTemplate,
    build_prompts,
)
from conceptlens.vocab.reference import EmbeddingReference
from conceptlens.vocab.scorer import ConceptScorer, ScoringConfig, list_presets
from conceptlens.vocab.scores import ConceptScores
from conceptlens.vocab.vocabulary import ConceptVocabulary, list_vocabularies
from conceptlens.vocab.zeroshot import retrieve_concepts, retrieve_images, zero_shot_classify

__all__ = [
    "DERM7PT_TEMPLATE",
    "EXAMPLE_VECTORS",
    "TEMPLATES",
    "Concept",
    "ConceptCalibrator",
    "ConceptFilterResult",
    "ConceptMaps",
    "ConceptPrompt",
    "ConceptScorer",
    "ConceptScores",
    "ConceptVocabulary",
    "EmbeddingReference",
    "FeatureCache",
    "InputChecks",
    "InputQualitySummary",
    "PromptTemplate",
    "ScoringConfig",
    "VocabularyError",
    "list_presets",
    "list_vocabularies",
    "build_prompts",
    "calibration_report",
    "concept_from_examples",
    "evaluate_annotation",
    "filter_concepts",
    "retrieve_concepts",
    "retrieve_images",
    "zero_shot_classify",
]

__getattr__ = renamed_module_attributes(__name__, {"available_presets": "list_presets"})
