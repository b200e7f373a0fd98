"""Check a model against the synthetic ground truth: annotation AUC, pointing game, bottleneck.

The three numbers of the demo model's quality bars, computed directly from model outputs:

* **zero-shot concept annotation**: for each concept the prompt
  ``"This is dermatoscopy of {name}."`` against the reference ``"This is dermatoscopy."``;
  global score ``softmax`` over the pair of ``logit_scale * cos(image, prompt)``; local
  score ``softmax`` over the pair of the patch-pooled ``concept_logit_scale * cos(patch,
  concept)``, where the concept vector is the L2-normalised mean of the prompt's token
  features over the concept name's span (for the reference prompt: over its modality word
  ``dermatoscopy``, which training aligns with every image);
  final score ``0.5 * global + 0.5 * local``; ROC-AUC per concept.
* **pointing game**: the concept map ``concept_logit_scale * cos(patch, concept)`` on the
  patch grid; a hit when its maximum lies on a patch that overlaps the concept's mask
  (optionally within ``tolerance`` patches of one).
* **sparse bottleneck**: L1 logistic regression on the standardised log-odds of the concept
  scores of one half of the sample (the scores are probabilities, often tiny: log-odds make
  the evidence additive), diagnosis accuracy on the other half, and which concepts carry the
  largest absolute weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from conceptlens.demo.generator import (
    CONCEPT_IDS,
    CRITERIA_IDS,
    SyntheticDermoscopy,
    concept_synonyms,
    generate,
    patch_masks,
)
from conceptlens.train.core import pixels_from_uint8

__all__ = [
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
_EPS = 1e-6  # scores are clipped to [eps, 1 - eps] before taking log-odds


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


class _ModelEncoder:
    """Image / text encoding through a raw reference model and its processor."""

    def __init__(self, model: torch.nn.Module, processor: Any) -> None:
        self.model, self.processor = model, processor
        side = model.config.vision_config.image_size
        self.grid_size = model.config.grid_size
        self.image_size = (side, side)

    @torch.no_grad()
    def images(self, images: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        globals_, patches = [], []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            if chunk.shape[1:3] == self.image_size:
                pixels = pixels_from_uint8(chunk)
            else:
                pixels = self.processor(images=list(chunk))["pixel_values"]
            out = self.model(pixel_values=pixels)
            globals_.append(out["image_features"])
            patches.append(out["image_token_features"])
        return torch.cat(globals_), torch.cat(patches)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        enc = self.processor(text=texts, return_offsets_mapping=True)
        out = self.model(input_ids=enc["input_ids"])
        return (
            out["text_features"],
            out["text_token_features"],
            np.asarray(enc["offset_mapping"]),
            np.asarray(enc["attention_mask"]),
        )

    def scalars(self) -> tuple[float, float]:
        out = self.model(input_ids=None, pixel_values=None)
        return float(out["logit_scale"].detach()), float(out["concept_logit_scale"].detach())


class _BackboneEncoder:
    """Image / text encoding through a :class:`conceptlens.models.Backbone`."""

    def __init__(self, backbone: Any) -> None:
        self.backbone = backbone
        self.grid_size = tuple(backbone.grid_size)

    def images(self, images: np.ndarray, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        globals_, patches = [], []
        for start in range(0, len(images), batch_size):
            pixels = self.backbone.preprocess(list(images[start : start + batch_size]))
            feats = self.backbone.encode_images(pixels)
            globals_.append(feats.global_embeds.float().cpu())
            patches.append(feats.patch_embeds.float().cpu())
        return torch.cat(globals_), torch.cat(patches)

    def texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        feats = self.backbone.encode_texts(texts)
        return (
            feats.global_embeds.float().cpu(),
            feats.token_embeds.float().cpu(),
            feats.offsets.cpu().numpy(),
            feats.attention_mask.cpu().numpy(),
        )

    def scalars(self) -> tuple[float, float]:
        return float(self.backbone.logit_scale), float(self.backbone.concept_logit_scale)


def _encoder(model: Any) -> _ModelEncoder | _BackboneEncoder:
    if isinstance(model, tuple) and len(model) == 2:
        return _ModelEncoder(*model)
    if hasattr(model, "encode_images") and hasattr(model, "encode_texts"):
        return _BackboneEncoder(model)
    raise TypeError(
        "evaluate_demo_model expects a Backbone or a (model, processor) pair, "
        f"got {type(model).__name__}"
    )


def _span_vectors(
    tokens: torch.Tensor, offsets: np.ndarray, attention: np.ndarray, spans: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """L2-normalised mean token feature over each text's character span."""
    vectors = []
    for i, (start, end) in enumerate(spans):
        starts, ends = offsets[i, :, 0], offsets[i, :, 1]
        inside = (starts >= start) & (ends <= end) & (ends > starts) & (attention[i] > 0)
        if not inside.any():
            raise ValueError(f"no tokens found for characters {start}:{end} of prompt {i}")
        vectors.append(tokens[i, torch.from_numpy(np.flatnonzero(inside))].mean(0))
    return F.normalize(torch.stack(vectors), dim=-1)


def _pool(scores: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "max":
        return scores.amax(-1)
    if pooling == "mean":
        return scores.mean(-1)
    raise ValueError(f"local_pooling must be 'max' or 'mean', got {pooling!r}")


def _dilate(grid_masks: np.ndarray, tolerance: int) -> np.ndarray:
    out = grid_masks.copy()
    for _ in range(tolerance):
        grown = out.copy()
        grown[..., 1:, :] |= out[..., :-1, :]
        grown[..., :-1, :] |= out[..., 1:, :]
        grown[..., :, 1:] |= out[..., :, :-1]
        grown[..., :, :-1] |= out[..., :, 1:]
        out = grown
    return out


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
    encoder = _encoder(model)
    if data is None:
        data = generate(n, seed=seed, size=_image_side(encoder))
    if data.masks is None:
        raise ValueError("evaluate_demo_model needs data generated with masks=True")
    labels = data.concepts
    if np.any(labels.min(0) == labels.max(0)):
        raise ValueError("every concept needs positive and negative images; use a larger n")

    names = [concept_synonyms(c)[0] for c in CONCEPT_IDS]
    prompts = [PROMPT_TEMPLATE.format(name) for name in names] + [REFERENCE_PROMPT]
    name_start = PROMPT_TEMPLATE.index("{}")
    spans = [(name_start, name_start + len(name)) for name in names]
    modality = REFERENCE_PROMPT.index("dermatoscopy")
    spans.append((modality, modality + len("dermatoscopy")))

    text_global, text_tokens, offsets, attention = encoder.texts(prompts)
    concept_vectors = _span_vectors(text_tokens, offsets, attention, spans)  # (K+1, D)
    image_global, patch_tokens = encoder.images(data.images, batch_size)
    scale, concept_scale = encoder.scalars()

    with torch.no_grad():
        cos_global = image_global.double() @ text_global.double().T  # (n, K+1)
        global_prob = torch.sigmoid(scale * (cos_global[:, :-1] - cos_global[:, -1:]))
        patch_cos = torch.einsum(
            "npd,kd->nkp", F.normalize(patch_tokens, dim=-1), concept_vectors
        ).double()  # (n, K+1, P)
        pooled = _pool(concept_scale * patch_cos, local_pooling)
        local_prob = torch.sigmoid(pooled[:, :-1] - pooled[:, -1:])
        final = (0.5 * global_prob + 0.5 * local_prob).numpy()
        peak = patch_cos[:, :-1].argmax(-1).numpy()  # (n, K)

    concept_auc = {
        c: float(roc_auc_score(labels[:, k], final[:, k])) for k, c in enumerate(CONCEPT_IDS)
    }
    grid = tuple(encoder.grid_size)
    grid_masks = _dilate(patch_masks(data.masks, grid), tolerance)  # (n, K, gh, gw)
    flat = grid_masks.reshape(len(data), len(CONCEPT_IDS), -1)
    hits = np.take_along_axis(flat, peak[..., None], axis=-1)[..., 0]
    pointing = {c: float(hits[labels[:, k] == 1, k].mean()) for k, c in enumerate(CONCEPT_IDS)}

    half = len(data) // 2
    clipped = np.clip(final, _EPS, 1 - _EPS)
    log_odds = np.log(clipped) - np.log1p(-clipped)
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


def _image_side(encoder: _ModelEncoder | _BackboneEncoder) -> int:
    """Image side to generate samples at: the model's input size."""
    if isinstance(encoder, _ModelEncoder):
        return encoder.image_size[0]
    return int(encoder.backbone.image_size[0])
