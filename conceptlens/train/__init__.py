"""Concept-alignment training and fine-tuning of the reference ConceptCLIP architecture.

:func:`train_concept_model` trains on any images with concept labels and any vocabulary
(captions given or generated from the labels with the vocabulary's prompt templates, a
tokenizer whose whole words cover the vocabulary), with ConceptCLIP's global SigLIP loss,
RC-Align's local loss and an optional mask-supervised patch loss. The trained model saves
with ``save_pretrained`` and loads with :func:`conceptlens.models.load_backbone`, or wraps
in memory as :class:`~conceptlens.models.conceptclip.ConceptCLIPBackbone`; evaluate it with
the library's own :class:`~conceptlens.vocab.ConceptScorer` (see :func:`evaluate_concept_model`).
The demo model (:mod:`conceptlens.demo.train`) is trained with it.
"""

from conceptlens.train.core import (
    ConceptTrainingData,
    TrainingConfig,
    TrainingError,
    batch_losses,
    caption_matches,
    captions_from_labels,
    encode_captions,
    modality_words,
    patch_masks,
    pixels_from_uint8,
    train_concept_model,
    vocabulary_words,
)
from conceptlens.train.evaluation import ConceptModelEvaluation, evaluate_concept_model
from conceptlens.train.history import TrainingHistory

__all__ = [
    "ConceptModelEvaluation",
    "ConceptTrainingData",
    "TrainingConfig",
    "TrainingError",
    "TrainingHistory",
    "batch_losses",
    "caption_matches",
    "captions_from_labels",
    "encode_captions",
    "evaluate_concept_model",
    "modality_words",
    "patch_masks",
    "pixels_from_uint8",
    "train_concept_model",
    "vocabulary_words",
]
