"""Concept scoring: images x vocabulary -> a labelled table of concept scores.

:class:`ConceptScorer` scores every image against every concept of a vocabulary with the
backbone's **global** image-text alignment, its **local** (patch-level, ConceptCLIP's
RC-Align) alignment, or both. The text side is encoded once per (backbone, vocabulary,
prompt settings) and memoised; the image side is encoded once per image and, with a
:class:`~conceptlens.vocab.cache.FeatureCache`, kept on disk, so that changing the
vocabulary, the prompts, ``alpha``, the aggregation or the calibration never runs the image
tower again.

The numbers
-----------
For an image with global embedding ``g`` (normalised) and patch tokens ``p_i``
(``i = 1..P``, normalised here), and a concept with ensembled text vectors:

* ``t`` (global): the mean over prompts (templates x terms) of the prompts' normalised
  global text embeddings, renormalised;
* ``u`` (local): the mean over prompts of the normalised *concept token vector*,
  renormalised; the concept token vector of a prompt is, with ``text_token="span"``, the mean
  of the prompt's token embeddings over the concept's token span (RC-Align's definition) or,
  with ``text_token="last"``, the token embedding at the last position of the padded prompt
  (what the authors' Derm7pt script reads);
* ``r`` / ``v``: the same for the concept's reference prompts (``"This is dermatoscopy."``);
  for ``text_token="span"`` the reference token vector is the mean over all the reference
  sentence's non-special tokens.

The cosines are ``c_g = g.t`` and ``c_i = p_i.u``, the local cosine is aggregated over the
patches, ``A(c)`` = max (the default), mean, or mean of the ``top_k`` largest, and then
calibrated:

=================  ============================================  ==============================================
calibration        global score                                  local score
=================  ============================================  ==============================================
``cosine``         ``c_g``                                       ``A(c)``
``sigmoid``        ``sigmoid(logit_scale c_g + logit_bias)``     ``sigmoid(cls A(c) + clb)``
``paired_softmax`` softmax of ``logit_scale (c_g, g.r)``, first  softmax of ``cls (A(c), A(p.v))``, first
=================  ============================================  ==============================================

(``cls``, ``clb``: ``concept_logit_scale`` / ``concept_logit_bias``). Mode ``"combined"``
returns ``alpha * global + (1 - alpha) * local``; ``"global"`` / ``"local"`` return one part.
Everything is computed in float32 from the backbone's features.

Why ``max`` is the default aggregation: ConceptCLIP's RC-Align objective aligns the
span-mean concept token with the image's patches through the *maximum* over patches (a
concept is present if some region shows it), so the local score follows the training
objective when it aggregates the same way. On the demo model (400 images of
``generate(seed=2026)``, cosine calibration) the pooled concept-annotation ROC AUC of the
local score is 0.9997 with ``max`` and 0.957 with ``mean`` (worst concept 0.998 vs 0.72);
the combined score moves less (0.9998 vs 0.9995) because the global part carries it.
(Before, the default was ``"mean"``; pass ``aggregation="mean"`` for the old numbers.)

The ``derm7pt`` preset and its limits
-------------------------------------
:meth:`ConceptScorer.from_preset` ``("derm7pt")`` reproduces the authors' Derm7pt
concept-annotation script (to 4.5e-7 on the demo model), including its two departures from
RC-Align: ``mean`` aggregation and ``text_token="last"``. With the ConceptCLIP adapter's
padding to 77 tokens, the "last token" of every prompt is a **padding position**, not the
concept, and the preset reaches only 0.57-0.59 pooled concept AUC on the demo model (worst
concept 0.34, below chance; 0.9998 with the defaults on the same 400 images). Use it to
reproduce published numbers, not to annotate concepts.

Input warnings
--------------
:meth:`ConceptScorer.score` also checks every image it scores (cheap pixel checks, see
:mod:`conceptlens.vocab.input_checks`, and an out-of-distribution score against a reference
set, see :mod:`conceptlens.vocab.reference`) and reports problems in
:attr:`ConceptScores.warnings` plus one :class:`~conceptlens.errors.InputQualityWarning` per
call.
"""

from __future__ import annotations

import json
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from conceptlens.models.base import Backbone, TextFeatures
from conceptlens.models.images import LoadedImage
from conceptlens.vocab.cache import FeatureCache, image_content_hash
from conceptlens.vocab.input_checks import (
    InputChecks,
    InputQualitySummary,
    check_image,
    expects_color,
)
from conceptlens.vocab.maps import ConceptMaps
from conceptlens.vocab.reference import EmbeddingReference, default_reference
from conceptlens.vocab.scores import ConceptScores
from conceptlens.vocab.sources import count_images, iter_image_sources

__all__ = ["PRESETS", "ConceptScorer", "ScoringConfig", "available_presets", "clear_text_memo"]

MODES = ("combined", "global", "local")
AGGREGATIONS = ("mean", "max", "topk")
CALIBRATIONS = ("cosine", "sigmoid", "paired_softmax")
TEXT_TOKENS = ("span", "last")


# ----------------------------------------------------------------------------------------------
# Configuration and presets
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringConfig:
    """How concept scores are computed (see the module docstring for the formulas).

    Args:
        mode: ``"combined"``, ``"global"`` or ``"local"``.
        alpha: Weight of the global score in ``"combined"`` mode, in ``[0, 1]``.
        aggregation: How patch scores become one local score: ``"max"`` (default),
            ``"mean"`` or ``"topk"`` (mean of the ``top_k`` largest). ``"max"`` follows
            ConceptCLIP's RC-Align training objective (span-mean concept token, maximum over
            patches); on the demo model the local score's pooled concept AUC is 0.9997 with
            it against 0.957 with ``"mean"``, the default before (module docstring).
        top_k: Patches averaged by ``"topk"`` (clipped to the number of patches).
        calibration: ``"cosine"``, ``"sigmoid"`` or ``"paired_softmax"``.
        text_token: Concept token vector of a prompt: ``"span"`` (mean over the concept's
            tokens) or ``"last"`` (last position of the padded prompt, as the authors'
            Derm7pt script does; only meaningful for backbones that pad every text to a
            fixed context length, as the ConceptCLIP adapter does with 77 tokens). With that
            padding the last position is a *padding* token, not the concept: the
            ``derm7pt`` preset that uses it reaches only 0.57-0.59 pooled concept AUC on the
            demo model.
        synonyms: Ensemble prompts over the concept's synonyms too (else the name only).
        templates: Prompt templates handed to :func:`conceptlens.vocab.prompts.build_prompts`;
            ``None`` for the modality's defaults.
        preset: Name of the preset the configuration came from, if any.
    """

    mode: str = "combined"
    alpha: float = 0.5
    aggregation: str = "max"
    top_k: int = 128
    calibration: str = "cosine"
    text_token: str = "span"
    synonyms: bool = True
    templates: tuple[Any, ...] | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("aggregation", self.aggregation, AGGREGATIONS),
            ("calibration", self.calibration, CALIBRATIONS),
            ("text_token", self.text_token, TEXT_TOKENS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not (
            0.0 <= float(self.alpha) <= 1.0
        ):
            raise ValueError(f"alpha must be a number in [0, 1]; got {self.alpha!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be a positive int; got {self.top_k!r}")
        if self.templates is not None:
            templates = (self.templates,) if isinstance(self.templates, str) else tuple(self.templates)
            if not templates:
                raise ValueError("templates must not be empty (pass None for the defaults)")
            object.__setattr__(self, "templates", templates)

    @property
    def uses_global(self) -> bool:
        """Whether the global alignment enters the score."""
        return self.mode == "global" or (self.mode == "combined" and self.alpha > 0)

    @property
    def uses_local(self) -> bool:
        """Whether the local alignment enters the score."""
        return self.mode == "local" or (self.mode == "combined" and self.alpha < 1)

    def templates_description(self) -> list[Any] | None:
        """The templates as JSON-ready values (``[text, reference]`` pairs or strings)."""
        if self.templates is None:
            return None
        out: list[Any] = []
        for template in self.templates:
            if isinstance(template, str):
                out.append(template)
            else:
                out.append([getattr(template, "text", str(template)), getattr(template, "reference", None)])
        return out

    def prompt_key(self) -> str:
        """What determines the text side (for memoising text embeddings)."""
        return json.dumps(
            {"templates": self.templates_description(), "synonyms": self.synonyms,
             "text_token": self.text_token},
            sort_keys=True,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, stored in :attr:`ConceptScores.config`."""
        out = asdict(self)
        out["templates"] = self.templates_description()
        return out


def _derm7pt_preset() -> dict[str, Any]:
    from conceptlens.vocab.prompts import DERM7PT_TEMPLATE

    return {
        "mode": "combined",
        "alpha": 0.5,
        "aggregation": "mean",
        "calibration": "paired_softmax",
        "text_token": "last",
        "synonyms": False,
        "templates": (DERM7PT_TEMPLATE,),
    }


#: Named scoring protocols: name -> zero-argument factory of :class:`ConceptScorer` keywords.
PRESETS: dict[str, Any] = {"derm7pt": _derm7pt_preset}


def available_presets() -> list[str]:
    """Names accepted by :meth:`ConceptScorer.from_preset`."""
    return sorted(PRESETS)


# ----------------------------------------------------------------------------------------------
# Text side
# ----------------------------------------------------------------------------------------------


@dataclass
class TextBank:
    """Ensembled text vectors of a vocabulary, float32, one row per concept.

    Attributes:
        concept_global: ``(K, D)`` normalised global text vectors ``t``.
        concept_local: ``(K, D)`` normalised concept token vectors ``u``.
        reference_global: ``(R, D)`` distinct normalised reference global vectors, or ``None``
            when the templates have no reference prompt.
        reference_local: ``(R, D)`` distinct normalised reference token vectors, or ``None``.
        reference_index: ``(K,)`` row of each concept's reference in the two tables above.
    """

    concept_global: torch.Tensor
    concept_local: torch.Tensor
    reference_global: torch.Tensor | None = None
    reference_local: torch.Tensor | None = None
    reference_index: torch.Tensor | None = None

    def to(self, device: torch.device) -> TextBank:
        """A copy on ``device``."""
        return TextBank(*(t.to(device) if t is not None else None for t in (
            self.concept_global, self.concept_local, self.reference_global,
            self.reference_local, self.reference_index)))


def token_vector(features: TextFeatures, row: int, span: tuple[int, int] | None, mode: str) -> torch.Tensor:
    """Token vector of one encoded text (not normalised).

    Args:
        features: Output of :meth:`Backbone.encode_texts`.
        row: Which text of the batch.
        span: Character ``[start, end)`` of the concept in the text; ``None`` for all
            non-special tokens of the text.
        mode: ``"span"`` (mean over the selected tokens) or ``"last"`` (last position).

    Raises:
        ValueError: No token of the text falls inside ``span`` (e.g. truncated away).
    """
    tokens = features.token_embeds[row].float()
    if mode == "last":
        return tokens[-1]
    offsets = features.offsets[row]
    real = features.attention_mask[row].bool() & (offsets[:, 1] > offsets[:, 0])
    if span is not None:
        start, end = int(span[0]), int(span[1])
        real = real & (offsets[:, 0] < end) & (offsets[:, 1] > start)
    if not bool(real.any()):
        text = features.texts[row] if row < len(features.texts) else f"text #{row}"
        where = f"characters {span[0]}-{span[1]}" if span is not None else "any token"
        raise ValueError(f"no token of prompt {text!r} covers {where} (truncated or empty?)")
    return tokens[real].mean(dim=0)


def encode_text_vectors(
    backbone: Backbone,
    texts: Sequence[str],
    spans: Sequence[tuple[int, int] | None],
    *,
    text_token: str = "span",
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode texts and pick each one's token vector.

    Args:
        backbone: The backbone.
        texts: ``N`` texts (duplicates are encoded once).
        spans: Per text, the concept's character span, or ``None`` for the whole sentence.
        text_token: ``"span"`` or ``"last"`` (see :func:`token_vector`).
        batch_size: Texts per call of the text tower.

    Returns:
        ``(global, local)``: ``(N, D)`` normalised global embeddings (float32, CPU) and
        ``(N, D)`` token vectors (float32, CPU, not normalised).
    """
    unique: dict[tuple[str, tuple[int, int] | None], int] = {}
    for text, span in zip(texts, spans, strict=True):
        unique.setdefault((text, None if span is None else (int(span[0]), int(span[1]))), len(unique))
    keys = list(unique)
    distinct_texts = list(dict.fromkeys(text for text, _ in keys))
    by_text: dict[str, list[int]] = {}
    for index, (text, _) in enumerate(keys):
        by_text.setdefault(text, []).append(index)
    globals_: list[torch.Tensor | None] = [None] * len(keys)
    locals_: list[torch.Tensor | None] = [None] * len(keys)
    lengths: set[int] = set()
    for start in range(0, len(distinct_texts), batch_size):
        chunk = distinct_texts[start:start + batch_size]
        features = backbone.encode_texts(chunk)
        lengths.add(int(features.token_embeds.shape[1]))
        if text_token == "last" and len(lengths) > 1:
            raise ValueError(
                f"text_token='last' needs a backbone that pads every text to one fixed length "
                f"(ConceptCLIP pads to 77); {type(backbone).__name__} returned lengths {sorted(lengths)}"
            )
        if not features.texts:
            features.texts = list(chunk)
        for row, text in enumerate(chunk):
            g = features.global_embeds[row].float().cpu()
            for index in by_text[text]:
                globals_[index] = g
                locals_[index] = token_vector(features, row, keys[index][1], text_token).cpu()
    order = [unique[(t, None if s is None else (int(s[0]), int(s[1])))] for t, s in zip(texts, spans, strict=True)]
    return torch.stack([globals_[i] for i in order]), torch.stack([locals_[i] for i in order])


def _ensemble(vectors: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per group: mean of the L2-normalised rows, renormalised."""
    normed = F.normalize(vectors, dim=-1)
    return F.normalize(torch.stack([normed[list(g)].mean(dim=0) for g in groups]), dim=-1)


# Text banks memoised per backbone object (weakly) and per (identity, vocabulary, prompts).
_TEXT_MEMO: weakref.WeakKeyDictionary[Backbone, dict[str, TextBank]] = weakref.WeakKeyDictionary()


def clear_text_memo() -> None:
    """Forget every memoised text bank (e.g. after changing a model's weights in place)."""
    _TEXT_MEMO.clear()


# ----------------------------------------------------------------------------------------------
# Image side
# ----------------------------------------------------------------------------------------------


@dataclass
class FeatureBatch:
    """Image features of one batch of successfully loaded images.

    Attributes:
        image_ids: Ids of the images, in input order (bad images left out).
        loaded: The loaded images.
        global_embeds: ``(b, D)`` in the backbone's dtype.
        patch_embeds: ``(b, P, D)`` in the backbone's dtype.
        grid_size: ``(grid_h, grid_w)``.
    """

    image_ids: list[str]
    loaded: list[LoadedImage]
    global_embeds: torch.Tensor
    patch_embeds: torch.Tensor
    grid_size: tuple[int, int]


def iter_feature_batches(
    backbone: Backbone,
    images: Any,
    *,
    batch_size: int = 32,
    cache: FeatureCache | None = None,
    progress: bool = True,
    errors: list[dict[str, str]] | None = None,
    desc: str = "images",
) -> Iterator[FeatureBatch]:
    """Load, preprocess and encode images batch by batch, through the feature cache.

    Images that cannot be loaded or preprocessed are skipped and appended to ``errors`` as
    ``{"image": id, "reason": message}``. Each batch's new features are written to the cache
    before the batch is yielded, so an interrupted run loses at most the batch in flight.

    Args:
        backbone: The backbone.
        images: Anything :func:`~conceptlens.vocab.sources.iter_image_sources` accepts.
        batch_size: Images per forward pass of the image tower.
        cache: Optional feature cache.
        progress: Show a ``tqdm`` progress bar.
        errors: List to collect bad images into.
        desc: Progress-bar label.

    Yields:
        FeatureBatch: one per batch with at least one good image.
    """
    if errors is None:
        errors = []
    bar = tqdm(total=count_images(images), disable=not progress, unit="img", desc=desc)
    try:
        pending: list[tuple[str, Any]] = []
        for source in iter_image_sources(images):
            pending.append((source.image_id, source.load))
            if len(pending) == batch_size:
                batch = _encode_batch(backbone, pending, cache, errors)
                bar.update(len(pending))
                pending = []
                if batch is not None:
                    yield batch
        if pending:
            batch = _encode_batch(backbone, pending, cache, errors)
            bar.update(len(pending))
            if batch is not None:
                yield batch
    finally:
        bar.close()


def _reason(error: BaseException) -> str:
    message = str(error) or type(error).__name__
    return message if type(error).__name__ in message else f"{type(error).__name__}: {message}"


def _encode_batch(
    backbone: Backbone,
    pending: list[tuple[str, Any]],
    cache: FeatureCache | None,
    errors: list[dict[str, str]],
) -> FeatureBatch | None:
    ids: list[str] = []
    loaded: list[LoadedImage] = []
    for image_id, load in pending:
        try:
            loaded.append(load())
            ids.append(image_id)
        except Exception as error:  # noqa: BLE001 - any bad item is reported, the batch goes on
            errors.append({"image": image_id, "reason": _reason(error)})
    keys: list[str | None] = [None] * len(ids)
    found: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] = {}
    if cache is not None:
        for i, item in enumerate(loaded):
            keys[i] = cache.key(image_content_hash(item.image), backbone.identity)
            hit = cache.get(keys[i], embed_dim=backbone.embed_dim)
            if hit is not None:
                found[i] = (hit.global_embed, hit.patch_embeds, hit.grid_size)
    pixels: list[torch.Tensor] = []
    to_encode: list[int] = []
    bad: set[int] = set()
    for i, item in enumerate(loaded):
        if i in found:
            continue
        try:
            pixels.append(backbone.preprocess([item.image]))
            to_encode.append(i)
        except Exception as error:  # noqa: BLE001
            errors.append({"image": ids[i], "reason": _reason(error)})
            bad.add(i)
    if to_encode:
        features = backbone.encode_images(torch.cat(pixels))
        grid = tuple(int(v) for v in features.grid_size)
        for row, i in enumerate(to_encode):
            g, p = features.global_embeds[row], features.patch_embeds[row]
            found[i] = (g, p, grid)
            if cache is not None and keys[i] is not None:
                cache.put(keys[i], g, p, grid)
    keep = [i for i in range(len(loaded)) if i not in bad]
    if not keep:
        return None
    device, dtype = backbone.device, backbone.dtype
    grids = {found[i][2] for i in keep}
    if len(grids) != 1:
        raise RuntimeError(f"images of one batch produced different patch grids: {sorted(grids)}")
    return FeatureBatch(
        image_ids=[ids[i] for i in keep],
        loaded=[loaded[i] for i in keep],
        global_embeds=torch.stack([found[i][0].to(device=device, dtype=dtype) for i in keep]),
        patch_embeds=torch.stack([found[i][1].to(device=device, dtype=dtype) for i in keep]),
        grid_size=grids.pop(),
    )


# ----------------------------------------------------------------------------------------------
# The scorer
# ----------------------------------------------------------------------------------------------


class ConceptScorer:
    """Score images against a concept vocabulary with global and local alignment.

    Args:
        backbone: Any :class:`~conceptlens.models.Backbone`; device and dtype come from it.
        vocabulary: A :class:`~conceptlens.vocab.ConceptVocabulary`.
        mode, alpha, aggregation, top_k, calibration, text_token, synonyms, templates:
            See :class:`ScoringConfig`.
        batch_size: Images per image-tower pass (and texts per text-tower pass).
        cache_dir: Folder for an on-disk :class:`~conceptlens.vocab.cache.FeatureCache`.
        cache: A ready :class:`~conceptlens.vocab.cache.FeatureCache` (instead of ``cache_dir``).
        progress: Show ``tqdm`` progress bars.
        preset: Name recorded in the configuration (set by :meth:`from_preset`).
        reference: Reference set of the out-of-distribution check: ``"default"`` for the
            reference shipped with the backbone's weights if there is one (the demo model
            has one, see :func:`~conceptlens.vocab.reference.default_reference`), ``None``
            for no check, or a fitted :class:`~conceptlens.vocab.reference.EmbeddingReference`.
            :meth:`set_reference` fits one on your own images.
        input_checks: Thresholds of the cheap pixel checks
            (:class:`~conceptlens.vocab.input_checks.InputChecks`), or ``None`` to skip them.

    The default local aggregation is ``"max"``, RC-Align's (see :class:`ScoringConfig`).

    Input warnings: :meth:`score` flags images the model should not be trusted on in
    :attr:`ConceptScores.warnings` (``image_id``, ``kind``, ``message``;
    :meth:`ConceptScores.warnings_for` gives one image's) and emits one
    :class:`~conceptlens.vocab.input_checks.InputQualitySummary` (an
    :class:`~conceptlens.errors.InputQualityWarning`) per call that flagged any. Measured on
    the demo model with its shipped reference: of 1100 clean demo images (5 generator seeds x
    220) 13 were flagged (1.2 %; 0-2.3 % per seed), all ``out_of_distribution`` as expected
    from a threshold at the reference's leave-one-out 99th percentile, none by a pixel check;
    grayscale, constant, all-black and 8x8 copies were flagged 100 % on every seed. Milder
    degradations are mostly *not* caught (contrast x0.5: 7-10 %, brightness -40: 4-8 %, JPEG
    quality 10: 7-13 %, blur sigma 3: 2-5 %): the demo model's embedding barely moves there.
    The checks add about 0.4 ms per image (pixel statistics); the OOD score itself is one
    ``(n, D) x (D, D)`` product.

    Examples:
        >>> scorer = ConceptScorer(backbone, vocabulary, cache_dir="features")  # doctest: +SKIP
        >>> scores = scorer.score("images/")                                   # doctest: +SKIP
        >>> scores.table.head()                                                # doctest: +SKIP
        >>> maps = scorer.concept_maps("images/lesion.png", ["pigment network"])  # doctest: +SKIP
        >>> maps.upsampled("pigment network").shape                            # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: Backbone,
        vocabulary: Any,
        *,
        mode: str = "combined",
        alpha: float = 0.5,
        aggregation: str = "max",
        top_k: int = 128,
        calibration: str = "cosine",
        text_token: str = "span",
        templates: Any = None,
        synonyms: bool = True,
        batch_size: int = 32,
        cache_dir: Any = None,
        cache: FeatureCache | None = None,
        progress: bool = True,
        preset: str | None = None,
        reference: EmbeddingReference | str | None = "default",
        input_checks: InputChecks | None = InputChecks(),  # noqa: B008 - frozen, immutable
        calibrator: Any = None,
    ) -> None:
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone must be a conceptlens Backbone, got {type(backbone).__name__}")
        if not hasattr(vocabulary, "hash") or not hasattr(vocabulary, "ids"):
            raise TypeError(
                f"vocabulary must be a ConceptVocabulary, got {type(vocabulary).__name__}"
            )
        if len(vocabulary) == 0:
            raise ValueError("vocabulary has no concepts")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        if cache is not None and cache_dir is not None:
            raise ValueError("pass either cache_dir or cache, not both")
        self.backbone = backbone
        self.vocabulary = vocabulary
        self.config = ScoringConfig(
            mode=mode, alpha=alpha, aggregation=aggregation, top_k=top_k, calibration=calibration,
            text_token=text_token, synonyms=synonyms, templates=templates, preset=preset,
        )
        self.batch_size = batch_size
        self.cache = cache if cache is not None else (FeatureCache(cache_dir) if cache_dir is not None else None)
        self.progress = progress
        if isinstance(reference, str):
            if reference != "default":
                raise ValueError(f"reference must be 'default', None or an EmbeddingReference; got {reference!r}")
            reference = default_reference(backbone)
        elif reference is not None:
            _check_reference(reference)
        self.reference = reference
        if input_checks is not None and not isinstance(input_checks, InputChecks):
            raise TypeError(f"input_checks must be an InputChecks or None, got {type(input_checks).__name__}")
        self.input_checks = input_checks
        # A fitted conceptlens.vocab.calibration.ConceptCalibrator (per-concept Platt /
        # isotonic from concept labels), applied to score() and score_tensor(); None: raw.
        self.calibrator = calibrator

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, backbone: Backbone, vocabulary: Any, **overrides: Any) -> ConceptScorer:
        """A scorer configured by a named protocol.

        ``"derm7pt"`` reproduces the authors' Derm7pt concept-annotation script: positive
        prompt ``"This is dermatoscopy of {concept}."`` (preferred name only, no synonyms)
        against the reference ``"This is dermatoscopy."``; global = softmax over the pair of
        ``logit_scale * cos``; local = mean over all patches of
        ``concept_logit_scale * cos(patch, token)`` softmaxed over the pair, where *token* is
        the text token feature at the last position of each prompt padded to the model's
        context length (77), as in the script; final = 0.5 global + 0.5 local. Pass
        ``text_token="span"`` to use RC-Align's concept-span vector instead.

        Faithful is not good: the preset matches the script to 4.5e-7 on the demo model, but
        its "last token" is a padding position of the 77-token prompt, not the concept, and
        it reaches only 0.57-0.59 pooled concept AUC there (0.9998 with the scorer's
        defaults, ``text_token="span"`` and ``aggregation="max"``, which follow RC-Align).

        Args:
            name: One of :func:`available_presets`.
            backbone: The backbone.
            vocabulary: The vocabulary.
            **overrides: Any keyword of :class:`ConceptScorer` (e.g. ``cache_dir``).

        Raises:
            KeyError: Unknown preset name.
        """
        if name not in PRESETS:
            raise KeyError(f"unknown scoring preset {name!r}; available: {', '.join(available_presets())}")
        kwargs = {**PRESETS[name](), "preset": name, **overrides}
        return cls(backbone, vocabulary, **kwargs)

    def set_reference(self, images: Any, *, detector: EmbeddingReference | None = None) -> ConceptScorer:
        """Use a reference set of images for the out-of-distribution check.

        Args:
            images: Images the model is known to work on (anything :meth:`score` accepts;
                a few hundred are plenty), or an already fitted
                :class:`~conceptlens.vocab.reference.EmbeddingReference`, or ``None`` to turn
                the check off.
            detector: An unfitted :class:`~conceptlens.vocab.reference.EmbeddingReference`
                with the wanted parameters (default: Mahalanobis, 99th percentile).

        Returns:
            self (the fitted detector is in :attr:`reference`).

        Raises:
            ValueError: Fewer than 3 reference images could be encoded.
        """
        if images is None or isinstance(images, EmbeddingReference):
            if images is not None:
                _check_reference(images)
            self.reference = images
            return self
        embeddings = self.embed(images)
        if len(embeddings) < 3:
            raise ValueError(f"a reference needs at least 3 images; {len(embeddings)} could be encoded")
        self.reference = (detector if detector is not None else EmbeddingReference()).fit(embeddings.to_numpy())
        return self

    def embed(self, images: Any) -> pd.DataFrame:
        """Global image embeddings (through the feature cache), one row per image.

        Args:
            images: Anything :meth:`score` accepts; images that cannot be read are skipped.

        Returns:
            ``(n_images, dim)`` float32 DataFrame indexed by image id.
        """
        ids: list[str] = []
        rows: list[torch.Tensor] = []
        for batch in iter_feature_batches(self.backbone, images, batch_size=self.batch_size, cache=self.cache,
                                          progress=self.progress, desc="embedding images"):
            rows.append(batch.global_embeds.float().cpu())
            ids.extend(batch.image_ids)
        values = torch.cat(rows).numpy() if rows else torch.empty(0, self.backbone.embed_dim).numpy()
        return pd.DataFrame(values, index=pd.Index(ids, name="image", dtype=object))

    def _input_warnings(self, batch: FeatureBatch) -> list[dict[str, str]]:
        """The warnings of one batch's images (pixel checks, then the OOD check)."""
        found: list[dict[str, str]] = []
        if self.input_checks is not None:
            color = expects_color(self.vocabulary)
            for image_id, item in zip(batch.image_ids, batch.loaded, strict=True):
                for kind, message in check_image(item.image, self.backbone.image_size, self.input_checks,
                                                 expect_color=color, grid_size=batch.grid_size):
                    found.append({"image_id": image_id, "kind": kind, "message": message})
        if self.reference is not None:
            distances = self.reference.score(batch.global_embeds.float().cpu().numpy())
            threshold = self.reference.threshold_
            for image_id, distance in zip(batch.image_ids, distances, strict=True):
                if distance > threshold:
                    found.append({"image_id": image_id, "kind": "out_of_distribution", "message": (
                        f"out of distribution: embedding distance {distance:.3g} > {threshold:.3g} "
                        f"({self.reference.method}, {float(self.reference.quantile):.0%} of the "
                        f"{len(self.reference.embeddings_)} reference images are closer)"
                    )})
        return found

    def with_vocabulary(self, vocabulary: Any) -> ConceptScorer:
        """The same scorer (configuration, cache) on another vocabulary."""
        return self._copy(vocabulary=vocabulary)

    def with_config(self, **changes: Any) -> ConceptScorer:
        """The same scorer (vocabulary, cache) with some :class:`ScoringConfig` fields changed."""
        return self._copy(config=replace(self.config, **changes))

    def _copy(self, **changes: Any) -> ConceptScorer:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    # -- text side ------------------------------------------------------------------------

    @property
    def concept_ids(self) -> list[str]:
        """Concept ids, in column order."""
        return list(self.vocabulary.ids)

    @property
    def concept_names(self) -> dict[str, str]:
        """Concept id -> preferred name."""
        return {c.id: c.name for c in self.vocabulary}

    def text_bank(self) -> TextBank:
        """Ensembled text vectors of the vocabulary (computed once, then memoised)."""
        memo = _TEXT_MEMO.setdefault(self.backbone, {})
        # The vocabulary hash ignores its modality, which picks the default templates.
        modality = getattr(self.vocabulary, "modality", "")
        key = f"{self.backbone.identity.key}|{self.vocabulary.hash}|{modality}|{self.config.prompt_key()}"
        bank = memo.get(key)
        if bank is None or (self.config.calibration == "paired_softmax" and bank.reference_global is None):
            # A bank memoised for another calibration may lack references; rebuilding raises
            # the clear error naming the concept without one.
            bank = self._build_text_bank()
            memo[key] = bank
        return bank

    def _build_text_bank(self) -> TextBank:
        from conceptlens.vocab.prompts import build_prompts

        prompts = build_prompts(
            self.vocabulary,
            list(self.config.templates) if self.config.templates is not None else None,
            synonyms=self.config.synonyms,
        )
        texts: list[str] = []
        spans: list[tuple[int, int] | None] = []
        concept_rows: list[list[int]] = []
        reference_rows: list[list[int]] = []
        missing_reference: str | None = None
        for concept in self.vocabulary:
            own = prompts.get(concept.id) or []
            if not own:
                raise ValueError(f"no prompt was built for concept {concept.id!r} ({concept.name!r})")
            rows, refs = [], []
            for prompt in own:
                rows.append(len(texts))
                texts.append(prompt.text)
                spans.append(tuple(prompt.span))
                if prompt.reference:
                    refs.append(len(texts))
                    texts.append(prompt.reference)
                    spans.append(None)
                elif missing_reference is None:
                    missing_reference = f"concept {concept.id!r}, prompt {prompt.text!r}"
            concept_rows.append(rows)
            reference_rows.append(refs)
        if self.config.calibration == "paired_softmax" and missing_reference is not None:
            raise ValueError(
                f"calibration='paired_softmax' needs a reference prompt for every template; "
                f"none for {missing_reference}"
            )
        global_vecs, local_vecs = encode_text_vectors(
            self.backbone, texts, spans, text_token=self.config.text_token, batch_size=self.batch_size
        )
        bank = TextBank(
            concept_global=_ensemble(global_vecs, concept_rows),
            concept_local=_ensemble(local_vecs, concept_rows),
        )
        if missing_reference is None:
            ref_global = _ensemble(global_vecs, reference_rows)
            ref_local = _ensemble(local_vecs, reference_rows)
            both = torch.cat([ref_global, ref_local], dim=1)
            distinct, inverse = torch.unique(both, dim=0, return_inverse=True)
            dim = ref_global.shape[1]
            bank.reference_global = distinct[:, :dim].contiguous()
            bank.reference_local = distinct[:, dim:].contiguous()
            bank.reference_index = inverse
        from conceptlens.vocab.examples import apply_learned_vectors  # concepts from examples

        return apply_learned_vectors(self.backbone, self.vocabulary, bank)

    # -- scoring core ---------------------------------------------------------------------

    def _aggregate(self, cosines: torch.Tensor) -> torch.Tensor:
        """``(B, K, P)`` -> ``(B, K)`` by the configured aggregation."""
        how = self.config.aggregation
        if how == "mean":
            return cosines.mean(dim=-1)
        if how == "max":
            return cosines.amax(dim=-1)
        k = min(self.config.top_k, cosines.shape[-1])
        return cosines.topk(k, dim=-1).values.mean(dim=-1)

    def _patch_cosines(self, bank: TextBank, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Concept and reference patch cosines, ``(B, K, P)`` each."""
        normed = F.normalize(patches.float(), dim=-1)
        concept = torch.einsum("bpd,kd->bkp", normed, bank.concept_local)
        reference = None
        if self.config.calibration == "paired_softmax":
            distinct = torch.einsum("bpd,rd->brp", normed, bank.reference_local)
            reference = distinct[:, bank.reference_index]
        return concept, reference

    def _global_scores(self, bank: TextBank, global_embeds: torch.Tensor) -> torch.Tensor:
        g = global_embeds.float()
        cos = g @ bank.concept_global.T
        backbone, how = self.backbone, self.config.calibration
        if how == "cosine":
            return cos
        if how == "sigmoid":
            return torch.sigmoid(backbone.logit_scale * cos + backbone.logit_bias)
        ref = (g @ bank.reference_global.T)[:, bank.reference_index]
        pair = torch.stack([cos, ref], dim=-1) * backbone.logit_scale
        return pair.softmax(dim=-1)[..., 0]

    def _local_scores(self, bank: TextBank, patches: torch.Tensor) -> torch.Tensor:
        concept, reference = self._patch_cosines(bank, patches)
        agg = self._aggregate(concept)
        backbone, how = self.backbone, self.config.calibration
        if how == "cosine":
            return agg
        if how == "sigmoid":
            return torch.sigmoid(backbone.concept_logit_scale * agg + backbone.concept_logit_bias)
        pair = torch.stack([agg, self._aggregate(reference)], dim=-1) * backbone.concept_logit_scale
        return pair.softmax(dim=-1)[..., 0]

    def _scores_from_features(self, global_embeds: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        bank = self.text_bank().to(global_embeds.device)
        cfg = self.config
        if cfg.mode == "global":
            return self._global_scores(bank, global_embeds)
        if cfg.mode == "local":
            return self._local_scores(bank, patches)
        return cfg.alpha * self._global_scores(bank, global_embeds) + (1 - cfg.alpha) * self._local_scores(
            bank, patches
        )

    def _patch_scores_from_features(self, patches: torch.Tensor) -> torch.Tensor:
        bank = self.text_bank().to(patches.device)
        concept, reference = self._patch_cosines(bank, patches)
        backbone, how = self.backbone, self.config.calibration
        if how == "cosine":
            return concept
        if how == "sigmoid":
            return backbone.concept_logit_scale * concept + backbone.concept_logit_bias
        return backbone.concept_logit_scale * (concept - reference)

    # -- public scoring -------------------------------------------------------------------

    def score(self, images: Any) -> ConceptScores:
        """Score images against every concept of the vocabulary.

        Args:
            images: Paths, a folder, a CSV manifest, PIL images, arrays, tensors, a mapping
                ``{id: image}``, any iterable or a torch ``Dataset`` (see
                :func:`~conceptlens.vocab.sources.iter_image_sources`).

        Returns:
            ConceptScores: ``(n_images, n_concepts)`` table indexed by image id with the
            vocabulary's ids as columns; bad images are left out and listed in ``errors``;
            images the model should not be trusted on are scored and listed in ``warnings``.

        Warns:
            InputQualitySummary: Once per call when any image got a warning (an
                :class:`~conceptlens.errors.InputQualityWarning` whose ``warnings``
                attribute holds the same frame as the result's).
        """
        self.text_bank()
        errors: list[dict[str, str]] = []
        found: list[dict[str, str]] = []
        ids: list[str] = []
        rows: list[torch.Tensor] = []
        for batch in iter_feature_batches(
            self.backbone, images, batch_size=self.batch_size, cache=self.cache,
            progress=self.progress, errors=errors, desc="scoring images",
        ):
            with torch.no_grad():
                rows.append(self._scores_from_features(batch.global_embeds, batch.patch_embeds).cpu())
            ids.extend(batch.image_ids)
            found.extend(self._input_warnings(batch))
        values = torch.cat(rows).double().numpy() if rows else torch.empty(0, len(self.vocabulary)).numpy()
        extra: dict[str, str] = {}
        if self.calibrator is not None:
            values = self.calibrator.transform_array(values, self.concept_ids)
            extra = {"concept_calibration": self.calibrator.method}
        table = pd.DataFrame(values, index=pd.Index(ids, name="image", dtype=object),
                             columns=pd.Index(self.concept_ids, dtype=object))
        scores = ConceptScores(
            table=table,
            config={**self.config.to_dict(), "batch_size": self.batch_size, **extra},
            backbone=self.backbone.identity.to_dict(),
            vocabulary_hash=self.vocabulary.hash,
            concept_names=self.concept_names,
            errors=pd.DataFrame(errors, columns=["image", "reason"]).astype(str),
            warnings=pd.DataFrame(found, columns=["image_id", "kind", "message"]),
        )
        if len(scores.warnings):
            counts = scores.warnings["kind"].value_counts()
            kinds = ", ".join(f"{kind}: {count}" for kind, count in counts.items())
            flagged = len(set(scores.warnings["image_id"]))
            warnings.warn(InputQualitySummary(
                f"{flagged} of {len(scores)} image(s) flagged as inputs the model should not be "
                f"trusted on ({kinds}); see ConceptScores.warnings", scores.warnings,
            ), stacklevel=2)
        return scores

    def score_tensor(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Concept scores of preprocessed images, differentiable w.r.t. ``pixel_values``.

        Runs :meth:`Backbone.forward_images` (gradients flow) and the memoised text vectors;
        the numbers equal :meth:`score` for the same images and configuration.

        Args:
            pixel_values: ``(B, 3, H, W)`` from ``backbone.preprocess``.

        Returns:
            ``(B, K)`` float32 tensor, columns in vocabulary order.
        """
        features = self._forward(pixel_values)
        out = self._scores_from_features(features.global_embeds, features.patch_embeds)
        if self.calibrator is not None:
            out = self.calibrator.transform_tensor(out, self.concept_ids)
        return out

    def patch_scores_tensor(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Per-patch local scores, differentiable w.r.t. ``pixel_values``.

        The value at patch ``i`` is the local evidence before aggregation, on the
        calibration's logit scale: the cosine ``p_i.u`` (``"cosine"``),
        ``concept_logit_scale * p_i.u + concept_logit_bias`` (``"sigmoid"``) or
        ``concept_logit_scale * (p_i.u - p_i.v)`` (``"paired_softmax"``). With ``"mean"``
        aggregation the local score is the calibration's link applied to the mean of these
        (identity, sigmoid, sigmoid); with ``"max"`` (the default) and the ``"cosine"`` or
        ``"sigmoid"`` calibration it is the link applied to their maximum.

        Args:
            pixel_values: ``(B, 3, H, W)`` from ``backbone.preprocess``.

        Returns:
            ``(B, K, P)`` float32 tensor; patch ``i`` is at grid row ``i // grid_w``.
        """
        return self._patch_scores_from_features(self._forward(pixel_values).patch_embeds)

    def _forward(self, pixel_values: torch.Tensor) -> Any:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = getattr(pixel_values, "shape", None)
            raise ValueError(
                f"pixel_values must be a (B, 3, H, W) tensor from backbone.preprocess; got "
                f"{type(pixel_values).__name__} with shape {shape}"
            )
        return self.backbone.forward_images(pixel_values.to(device=self.backbone.device, dtype=self.backbone.dtype))

    # -- maps -----------------------------------------------------------------------------

    def concept_maps(self, image: Any, concepts: str | Sequence[str] | None = None) -> ConceptMaps:
        """Patch-level maps of one image for several concepts, from one image-tower pass.

        Args:
            image: One image (path, PIL, array, tensor).
            concepts: Concept ids or preferred names (one or a list); ``None`` for all.

        Returns:
            ConceptMaps: ``(K, grid_h, grid_w)`` maps (values as in
            :meth:`patch_scores_tensor`), each drawable onto the original image with
            :meth:`ConceptMaps.upsampled`.

        Raises:
            KeyError: A concept is not in the vocabulary (the message names it).
            ImageLoadError: The image cannot be read.
        """
        indices = self._concept_indices(concepts)
        sources = iter_image_sources(image)
        first = next(sources, None)
        if first is None or next(sources, None) is not None:
            raise ValueError("concept_maps takes exactly one image")
        loaded = first.load()
        errors: list[dict[str, str]] = []
        batches = list(iter_feature_batches(
            self.backbone, {first.image_id: loaded.image}, batch_size=1, cache=self.cache,
            progress=False, errors=errors,
        ))
        if not batches:
            raise ValueError(f"cannot compute features of image {first.image_id!r}: {errors[0]['reason']}")
        batch = batches[0]
        with torch.no_grad():
            patch = self._patch_scores_from_features(batch.patch_embeds)[0, indices]
            scores = self._scores_from_features(batch.global_embeds, batch.patch_embeds)[0, indices]
        grid_h, grid_w = batch.grid_size
        ids = self.concept_ids
        names = self.concept_names
        return ConceptMaps(
            image=loaded.image,
            image_id=first.image_id,
            concept_ids=[ids[i] for i in indices],
            names=[names[ids[i]] for i in indices],
            maps=patch.reshape(len(indices), grid_h, grid_w).float().cpu().numpy(),
            scores=scores.float().cpu().numpy(),
            covered_fraction=covered_fraction(self.backbone, batch.grid_size),
            calibration=self.config.calibration,
            config=self.config.to_dict(),
        )

    def _concept_indices(self, concepts: str | Sequence[str] | None) -> list[int]:
        ids = self.concept_ids
        if concepts is None:
            return list(range(len(ids)))
        if isinstance(concepts, str):
            concepts = [concepts]
        by_id = {cid: i for i, cid in enumerate(ids)}
        by_name = {c.name: i for i, c in enumerate(self.vocabulary)}
        out = []
        for concept in concepts:
            if concept in by_id:
                out.append(by_id[concept])
            elif concept in by_name:
                out.append(by_name[concept])
            else:
                raise KeyError(
                    f"concept {concept!r} is not in vocabulary {getattr(self.vocabulary, 'name', '')!r} "
                    "(give a concept id or preferred name)"
                )
        return out

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"ConceptScorer({type(self.backbone).__name__}, {len(self.vocabulary)} concepts, "
            f"mode={cfg.mode!r}, alpha={cfg.alpha}, aggregation={cfg.aggregation!r}, "
            f"calibration={cfg.calibration!r}, cache={self.cache!r})"
        )


def _check_reference(reference: Any) -> None:
    if not isinstance(reference, EmbeddingReference):
        raise TypeError(f"reference must be an EmbeddingReference, got {type(reference).__name__}")
    if not reference.is_fitted:
        raise ValueError("reference is not fitted; call reference.fit(embeddings) or scorer.set_reference(images)")


def patch_size_of(backbone: Backbone, grid_size: tuple[int, int]) -> tuple[int, int]:
    """``(patch_h, patch_w)`` in input pixels: ``backbone.patch_size`` when the backbone has
    one, else the largest patch that fits, ``image_size // grid`` (ConceptCLIP: ``384 // 27 = 14``).
    """
    height, width = (int(v) for v in backbone.image_size)
    patch = getattr(backbone, "patch_size", None)
    if patch is None:
        return height // grid_size[0], width // grid_size[1]
    if isinstance(patch, (tuple, list)):
        return int(patch[0]), int(patch[1])
    return int(patch), int(patch)


def covered_fraction(backbone: Backbone, grid_size: tuple[int, int]) -> tuple[float, float]:
    """Fraction ``(rows, cols)`` of the model input covered by the patch grid.

    See :func:`patch_size_of` for the patch size (ConceptCLIP: ``27 * 14 / 384``).
    """
    height, width = (int(v) for v in backbone.image_size)
    patch_h, patch_w = patch_size_of(backbone, grid_size)
    return (
        min(1.0, grid_size[0] * patch_h / height),
        min(1.0, grid_size[1] * patch_w / width),
    )

