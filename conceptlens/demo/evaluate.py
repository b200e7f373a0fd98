"""Check a model against the synthetic ground truth: annotation AUC, pointing game, bottleneck.

The three numbers of the demo model's quality bars, computed through the library: concept
scores, concept maps and the two per-concept metrics come from
:func:`conceptlens.train.evaluate_concept_model` (that is, from
:class:`~conceptlens.vocab.ConceptScorer` configured by :data:`DEMO_SCORING`):

* **zero-shot concept annotation**: for each concept the prompt
  ``"This is dermatoscopy of {name}."`` against the reference ``"This is dermatoscopy."``;
  global score ``softmax`` over the pair of ``logit_scale * cos(image, prompt)``; local
  score ``softmax`` over the pair of the patch-pooled ``concept_logit_scale * cos(patch,
  concept)``, where the concept vector is the L2-normalised mean of the prompt's token
  features over the concept name's span (for the reference prompt: over its modality word
  ``dermatoscopy``, which training aligns with every image; ``reference_word`` of the
  scoring configuration); final score ``0.5 * global + 0.5 * local``; ROC-AUC per concept.
* **pointing game**: the concept map ``cos(patch, concept)`` on the patch grid (the
  scorer's ``"cosine"`` maps, whose maximum is that of ``concept_logit_scale * cos``); a hit
  when its maximum lies on a patch that overlaps the concept's mask (optionally within
  ``tolerance`` patches of one).
* **sparse bottleneck**: L1 logistic regression on the standardised log-odds of the concept
  scores of one half of the sample (the scores are probabilities, often tiny: log-odds make
  the evidence additive), diagnosis accuracy on the other half, and which concepts carry the
  largest absolute weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from conceptlens.concepts.score_space import transform_scores
from conceptlens.demo.generator import (
    CONCEPT_IDS,
    CRITERIA_IDS,
    SyntheticDermoscopy,
    concept_synonyms,
    generate,
)
from conceptlens.models.base import Backbone
from conceptlens.models.conceptclip import ConceptCLIPBackbone
from conceptlens.train.evaluation import evaluate_concept_model
from conceptlens.vocab.prompts import PromptTemplate
from conceptlens.vocab.scorer import ScoringConfig
from conceptlens.vocab.vocabulary import ConceptVocabulary

__all__ = [
    "DEMO_SCORING",
    "MAJOR_CRITERIA",
    "DemoEvaluation",
    "QUALITY_BARS",
    "REFERENCE_PROMPT",
    "PROMPT_TEMPLATE",
    "concept_prompt",
    "evaluate_demo_model",
]

PROMPT_TEMPLATE = "This is dermatoscopy of {}."
"""Positive zero-shot prompt; ``{}`` is the concept's preferred name."""

REFERENCE_PROMPT = "This is dermatoscopy."
"""Reference prompt every concept prompt is softmaxed against."""

QUALITY_BARS: dict[str, float] = {"auc": 0.90, "pointing_game": 0.80, "diagnosis_accuracy": 0.90}
"""Minimum per-criterion ROC-AUC, per-criterion pointing-game hit rate and bottleneck accuracy."""

MAJOR_CRITERIA: tuple[str, ...] = CRITERIA_IDS[:3]
"""The three major criteria (2 points each), which should carry the largest bottleneck weights."""

DEMO_SCORING = ScoringConfig(
    mode="combined",
    alpha=0.5,
    aggregation="max",
    calibration="paired_softmax",
    text_token="span",
    synonyms=False,
    templates=(PromptTemplate(PROMPT_TEMPLATE.format("{concept}"), REFERENCE_PROMPT),),
    reference_word="dermatoscopy",
)
"""The demo's zero-shot annotation recipe as a scorer configuration: :data:`PROMPT_TEMPLATE`
with the preferred name against :data:`REFERENCE_PROMPT` (its token vector: the modality
word), paired softmax, local score max-pooled over patches, ``0.5 * global + 0.5 * local``.
Unlike the ``derm7pt`` preset (mean pooling, last-token text vector) it follows the demo
model's training objective."""


def concept_prompt(concept_id: str) -> str:
    """The zero-shot prompt of a demo concept, e.g. ``"This is dermatoscopy of blue-whitish veil."``."""
    return PROMPT_TEMPLATE.format(concept_synonyms(concept_id)[0])


@dataclass
class DemoEvaluation:
    """Measured quality of a model on a synthetic sample.

    Attributes:
        concept_auc: Concept id -> ROC-AUC of the combined zero-shot score (all 8 concepts).
        pointing_game: Concept id -> fraction of positive images whose concept-map maximum
            hits the concept's mask.
        diagnosis_accuracy: Held-out accuracy of the sparse bottleneck.
        bottleneck_weights: Concept id -> weight of the L1 logistic regression
            (standardised score log-odds).
        n: Sample size; seed: its seed.
        settings: How the numbers were computed (pooling, tolerance, C, split).
        scores: ``(n, 8)`` combined zero-shot concept scores of the sample (columns
            :data:`~conceptlens.demo.CONCEPT_IDS`), not part of :meth:`to_dict`.
    """

    concept_auc: dict[str, float]
    pointing_game: dict[str, float]
    diagnosis_accuracy: float
    bottleneck_weights: dict[str, float]
    n: int
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def top_weighted(self) -> list[str]:
        """Concept ids ordered by decreasing absolute bottleneck weight."""
        return sorted(self.bottleneck_weights, key=lambda c: -abs(self.bottleneck_weights[c]))

    def failures(self, bars: dict[str, float] | None = None) -> list[str]:
        """Which quality bars the model misses (empty when it meets them all)."""
        bars = QUALITY_BARS if bars is None else bars
        missed = [
            f"AUC of {c} is {self.concept_auc[c]:.3f} < {bars['auc']}"
            for c in CRITERIA_IDS
            if self.concept_auc[c] < bars["auc"]
        ]
        missed += [
            f"pointing game of {c} is {self.pointing_game[c]:.3f} < {bars['pointing_game']}"
            for c in CRITERIA_IDS
            if self.pointing_game[c] < bars["pointing_game"]
        ]
        if self.diagnosis_accuracy < bars["diagnosis_accuracy"]:
            missed.append(
                f"diagnosis accuracy {self.diagnosis_accuracy:.3f} < {bars['diagnosis_accuracy']}"
            )
        if set(self.top_weighted[:3]) != set(MAJOR_CRITERIA):
            missed.append(f"largest bottleneck weights are {self.top_weighted[:3]}, not the majors")
        return missed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every number (without the per-image scores)."""
        d = asdict(self)
        d.pop("scores")
        return d

    def to_markdown(self) -> str:
        """A Markdown table of the per-concept numbers and the bottleneck summary."""
        lines = ["| concept | ROC-AUC | pointing game | bottleneck weight |", "|---|---|---|---|"]
        for c in CONCEPT_IDS:
            hit = self.pointing_game.get(c, float("nan"))
            lines.append(
                f"| `{c}` | {self.concept_auc[c]:.3f} | {hit:.3f} | "
                f"{self.bottleneck_weights[c]:+.2f} |"
            )
        lines.append("")
        lines.append(f"Diagnosis accuracy of the sparse bottleneck: {self.diagnosis_accuracy:.3f}")
        return "\n".join(lines)


def evaluate_demo_model(
    model: Any,
    n: int = 400,
    seed: int = 12345,
    *,
    data: SyntheticDermoscopy | None = None,
    local_pooling: Literal["max", "mean"] = "max",
    tolerance: int = 0,
    C: float = 0.5,
    batch_size: int = 128,
) -> DemoEvaluation:
    """Measure a model's concept annotation, concept maps and bottleneck on synthetic images.

    Args:
        model: A :class:`conceptlens.models.Backbone` (e.g. ``load_backbone("demo")``) or a
            ``(model, processor)`` pair of the reference architecture.
        n: Sample size when ``data`` is not given.
        seed: Seed of the sample (pick one that training never used; training uses 0).
        data: A ready sample instead of ``generate(n, seed)``; needs masks.
        local_pooling: How patch scores become the local annotation score: ``"max"`` (as the
            local training loss) or ``"mean"`` (the authors' Derm7pt recipe).
        tolerance: Pointing-game tolerance in patches (0: the maximum must lie on a patch
            overlapping the mask).
        C: Inverse L1 strength of the bottleneck's logistic regression.
        batch_size: Images per forward pass.

    Returns:
        :class:`DemoEvaluation`; ``result.failures()`` lists missed quality bars.

    Raises:
        TypeError: If ``model`` is neither a backbone nor a ``(model, processor)`` pair.
        ValueError: If ``data`` has no masks or lacks positives or negatives of a concept.
    """
    if local_pooling not in ("max", "mean"):
        raise ValueError(f"local_pooling must be 'max' or 'mean', got {local_pooling!r}")
    with _backbone_of(model) as backbone:
        if data is None:
            data = generate(n, seed=seed, size=int(backbone.image_size[0]))
        if data.masks is None:
            raise ValueError("evaluate_demo_model needs data generated with masks=True")
        labels = data.concepts
        if np.any(labels.min(0) == labels.max(0)):
            raise ValueError("every concept needs positive and negative images; use a larger n")
        vocabulary = ConceptVocabulary.builtin("demo")
        if list(vocabulary.ids) != list(data.concept_ids):
            raise ValueError(f"the demo vocabulary's concepts {list(vocabulary.ids)} are not the "
                             f"sample's {list(data.concept_ids)}")
        config = replace(DEMO_SCORING, aggregation=local_pooling)
        measured = evaluate_concept_model(
            backbone, vocabulary, data.images, labels, data.masks, tolerance=tolerance,
            map_calibration="cosine", batch_size=batch_size, num_workers=0, input_checks=None,
            **{f.name: getattr(config, f.name) for f in fields(config)},
        )
        grid = tuple(int(g) for g in backbone.grid_size)
    final = measured.scores.table[list(CONCEPT_IDS)].to_numpy(dtype=np.float64)
    concept_auc = {c: float(measured.table.loc[c, "auc"]) for c in CONCEPT_IDS}
    pointing = {c: float(measured.table.loc[c, "pointing_game"]) for c in CONCEPT_IDS}

    half = len(data) // 2
    log_odds = transform_scores(final, "logit")
    scaler = StandardScaler().fit(log_odds[:half])
    bottleneck = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=C, random_state=0)
    bottleneck.fit(scaler.transform(log_odds[:half]), data.diagnoses[:half])
    accuracy = float(bottleneck.score(scaler.transform(log_odds[half:]), data.diagnoses[half:]))
    weights = {c: float(w) for c, w in zip(CONCEPT_IDS, bottleneck.coef_[0], strict=True)}
    return DemoEvaluation(
        concept_auc=concept_auc,
        pointing_game=pointing,
        diagnosis_accuracy=accuracy,
        bottleneck_weights=weights,
        n=len(data),
        seed=int(data.seed) if data.seed is not None else seed,
        scores=final,
        settings={
            "prompt": PROMPT_TEMPLATE,
            "reference_prompt": REFERENCE_PROMPT,
            "local_pooling": local_pooling,
            "combination": "0.5 * global + 0.5 * local",
            "pointing_tolerance_patches": tolerance,
            "grid_size": list(grid),
            "bottleneck": (
                f"L1 logistic regression (C={C}) on standardised score log-odds, 50/50 split"
            ),
        },
    )


@contextmanager
def _backbone_of(model: Any) -> Iterator[Backbone]:
    """The :class:`Backbone` of ``model``; a ``(model, processor)`` pair is wrapped in a
    :class:`~conceptlens.models.ConceptCLIPBackbone` for the duration, and its module's train
    mode and ``requires_grad`` flags (which the wrapper sets off) are restored after."""
    if isinstance(model, Backbone):
        yield model
        return
    if not (isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], torch.nn.Module)):
        raise TypeError(
            "evaluate_demo_model expects a Backbone or a (model, processor) pair, "
            f"got {type(model).__name__}"
        )
    module = model[0]
    training, flags = module.training, [p.requires_grad for p in module.parameters()]
    try:
        yield ConceptCLIPBackbone(*model)
    finally:
        module.train(training)
        for parameter, flag in zip(module.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
