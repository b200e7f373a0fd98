"""Synthetic dermoscopy data with ground truth and the demo model trained on it.

* :func:`generate` draws dermoscopy-like images whose 7-point-checklist criteria (and an
  ink-marking artifact) are known, with pixel masks, scores, diagnoses and captions.
* :func:`evaluate_demo_model` measures a model against that ground truth (zero-shot
  annotation AUC, pointing game, sparse bottleneck).
* :func:`train_demo_model` (``python -m conceptlens.demo.train``) trains the reference
  ConceptCLIP architecture on generated image-caption pairs; the result ships in
  :data:`DEMO_WEIGHTS_DIR` and loads with :func:`load_demo_model` or
  ``conceptlens.models.load_backbone("demo")``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conceptlens.demo.evaluate import (
        PROMPT_TEMPLATE,
        QUALITY_BARS,
        REFERENCE_PROMPT,
        DemoEvaluation,
        concept_prompt,
        evaluate_demo_model,
    )
    from conceptlens.demo.generator import (
        ARTIFACT_ID,
        CONCEPT_IDS,
        CRITERIA_IDS,
        CRITERIA_POINTS,
        SyntheticDermoscopy,
        caption_words,
        concept_synonyms,
        generate,
        patch_masks,
        seven_point_score,
    )
    from conceptlens.demo.train import TrainingConfig, train_demo_model
    from conceptlens.demo.weights_io import DEMO_WEIGHTS_DIR, load_demo_model

# Every name is imported on first use: the backbone plugin (conceptlens.demo.backbone), which
# load_backbone("demo") reaches through an entry point, must not pull in scikit-learn and
# pandas with the evaluation and the generator, nor the optimiser code with training.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("PROMPT_TEMPLATE", "QUALITY_BARS", "REFERENCE_PROMPT", "DemoEvaluation",
         "concept_prompt", "evaluate_demo_model"),
        "evaluate",
    ),
    **dict.fromkeys(
        ("ARTIFACT_ID", "CONCEPT_IDS", "CRITERIA_IDS", "CRITERIA_POINTS", "SyntheticDermoscopy",
         "caption_words", "concept_synonyms", "generate", "patch_masks", "seven_point_score"),
        "generator",
    ),
    **dict.fromkeys(("train_demo_model", "TrainingConfig"), "train"),
    **dict.fromkeys(("DEMO_WEIGHTS_DIR", "load_demo_model"), "weights_io"),
}

__all__ = [
    "ARTIFACT_ID",
    "CONCEPT_IDS",
    "CRITERIA_IDS",
    "CRITERIA_POINTS",
    "DEMO_WEIGHTS_DIR",
    "DemoEvaluation",
    "PROMPT_TEMPLATE",
    "QUALITY_BARS",
    "REFERENCE_PROMPT",
    "SyntheticDermoscopy",
    "caption_words",
    "concept_prompt",
    "concept_synonyms",
    "evaluate_demo_model",
    "generate",
    "load_demo_model",
    "patch_masks",
    "seven_point_score",
    "train_demo_model",
    "TrainingConfig",
]


def __getattr__(name: str) -> Any:
    """Import an exported name from its submodule the first time it is asked for."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'conceptlens.demo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"conceptlens.demo.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
