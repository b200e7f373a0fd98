"""Concept scoring: images x vocabulary -> a labelled table of concept scores.

:class:`ConceptScorer` scores every image against every concept of a vocabulary with the
backbone's **global** image-text alignment, its **local** (patch-level, ConceptCLIP's
RC-Align) alignment, or both. The text side (:mod:`conceptlens.vocab.textbank`) is encoded
once per (backbone, vocabulary, prompt settings), memoised and, with a feature store or
``text_cache_dir``, kept on disk for the next process; the image side
(:mod:`conceptlens.vocab.batching`, :mod:`conceptlens.vocab.stream`: DataLoader workers, each
file opened and decoded once) is encoded once per image and, with a
:class:`~conceptlens.vocab.cache.FeatureCache` (the sharded feature store), kept on disk, so
that changing the vocabulary, the prompts, ``alpha``, the aggregation or the calibration
never runs the image tower again (``"mean"`` aggregation and global scores read no patch
token either). ``score(..., engine="ray")`` runs the same code in Ray Data actors
(:mod:`conceptlens.vocab.ray_engine`).

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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from conceptlens._deprecation import deprecated_alias
from conceptlens.models.base import Backbone
from conceptlens.models.images import LoadedImage
from conceptlens.vocab.batching import FeatureBatch, auto_batch_size, iter_feature_batches
from conceptlens.vocab.cache import FeatureCache, patch_mean_of
from conceptlens.vocab.examples import apply_learned_vectors
from conceptlens.vocab.geometry import covered_fraction, patch_size_of
from conceptlens.vocab.input_checks import (
    InputChecks,
    InputQualitySummary,
    check_statistics,
    expects_color,
)
from conceptlens.vocab.maps import ConceptMaps
from conceptlens.vocab.reference import EmbeddingReference, default_reference
from conceptlens.vocab.scores import ConceptScores
from conceptlens.vocab.sources import ImageSource, iter_image_sources
from conceptlens.vocab.textbank import (
    TextBank,
    TextBankStore,
    bank_key,
    build_text_bank,
    clear_text_memo,
    encode_text_vectors,
    memo_for,
    token_vector,
)

__all__ = ["ENGINES", "PRESETS", "ConceptScorer", "ScoredFile", "ScoringConfig",
           "clear_text_memo", "list_presets"]

# Moved to their own modules (issue 16); importable from here as before.
_REEXPORTED = (FeatureBatch, TextBank, covered_fraction, encode_text_vectors, iter_feature_batches,
               patch_size_of, token_vector)

MODES = ("combined", "global", "local")
AGGREGATIONS = ("mean", "max", "topk")
CALIBRATIONS = ("cosine", "sigmoid", "paired_softmax")
TEXT_TOKENS = ("span", "last")
ENGINES = ("local", "ray")


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
        reference_word: With ``text_token="span"``, the word of each reference prompt whose
            tokens make the reference token vector ``v`` (e.g. the modality word
            ``"dermatoscopy"``, which ConceptCLIP-style training aligns with every image);
            ``None`` (default): all the reference sentence's non-special tokens.
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
    reference_word: str | None = None

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
        if self.reference_word is not None and not (isinstance(self.reference_word, str)
                                                    and self.reference_word.strip()):
            raise ValueError(f"reference_word must be a non-empty str or None; got {self.reference_word!r}")

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
        key = {"templates": self.templates_description(), "synonyms": self.synonyms,
               "text_token": self.text_token}
        if self.reference_word is not None:  # absent when unset: stored banks keep their keys
            key["reference_word"] = self.reference_word
        return json.dumps(key, sort_keys=True)

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


def list_presets() -> list[str]:
    """Names accepted by :meth:`ConceptScorer.from_preset`, sorted.

    Examples:
        >>> list_presets()
        ['derm7pt']
    """
    return sorted(PRESETS)


available_presets = deprecated_alias(list_presets, "available_presets")


# ----------------------------------------------------------------------------------------------
# The scorer
# ----------------------------------------------------------------------------------------------


class ConceptScorer:
    """Score images against a concept vocabulary with global and local alignment.

    Args:
        backbone: Any :class:`~conceptlens.models.Backbone`; device and dtype come from it.
        vocabulary: A :class:`~conceptlens.vocab.ConceptVocabulary`.
        mode, alpha, aggregation, top_k, calibration, text_token, synonyms, templates, reference_word:
            See :class:`ScoringConfig`.
        batch_size: Images per image-tower pass (and texts per text-tower pass); ``"auto"``
            picks one (32 on a CPU, the largest that fits, halved, on CUDA).
        cache_dir: Folder for an on-disk :class:`~conceptlens.vocab.cache.FeatureCache` (the
            sharded feature store; text banks are kept in it too).
        cache: A ready :class:`~conceptlens.vocab.cache.FeatureCache` (instead of ``cache_dir``).
        progress: Show ``tqdm`` progress bars (images/s).
        num_workers: DataLoader worker processes that decode, hash and resize images
            (``"auto"``: none for a few batches, else up to 4).
        text_cache_dir: Folder for text banks (default: ``text/`` inside the feature store,
            none without one); a second process scoring the same vocabulary then runs the
            text tower zero times.
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
        batch_size: int | str = 32,
        cache_dir: Any = None,
        cache: FeatureCache | None = None,
        progress: bool = True,
        preset: str | None = None,
        num_workers: int | str = "auto",
        text_cache_dir: Any = None,
        reference: EmbeddingReference | str | None = "default",
        input_checks: InputChecks | None = InputChecks(),  # noqa: B008 - frozen, immutable
        calibrator: Any = None,
        reference_word: str | None = None,
    ) -> None:
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone must be a conceptlens Backbone, got {type(backbone).__name__}")
        if not hasattr(vocabulary, "hash") or not hasattr(vocabulary, "ids"):
            raise TypeError(
                f"vocabulary must be a ConceptVocabulary, got {type(vocabulary).__name__}"
            )
        if len(vocabulary) == 0:
            raise ValueError("vocabulary has no concepts")
        if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                     or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or 'auto'; got {batch_size!r}")
        if cache is not None and cache_dir is not None:
            raise ValueError("pass either cache_dir or cache, not both")
        self.backbone = backbone
        self.vocabulary = vocabulary
        self.config = ScoringConfig(
            mode=mode, alpha=alpha, aggregation=aggregation, top_k=top_k, calibration=calibration,
            text_token=text_token, synonyms=synonyms, templates=templates, preset=preset,
            reference_word=reference_word,
        )
        self.batch_size = batch_size
        self.cache = cache if cache is not None else (FeatureCache(cache_dir) if cache_dir is not None else None)
        self.progress = progress
        self.num_workers = num_workers
        if text_cache_dir is not None:
            self.text_store: TextBankStore | None = TextBankStore(text_cache_dir)
        elif self.cache is not None:
            self.text_store = TextBankStore(self.cache.text_dir)
        else:
            self.text_store = None
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
            name: One of :func:`list_presets`.
            backbone: The backbone.
            vocabulary: The vocabulary.
            **overrides: Any keyword of :class:`ConceptScorer` (e.g. ``cache_dir``).

        Raises:
            KeyError: Unknown preset name.
        """
        if name not in PRESETS:
            raise KeyError(f"unknown scoring preset {name!r}; available: {', '.join(list_presets())}")
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
        for batch in iter_feature_batches(self.backbone, images, batch_size=self.image_batch_size(),
                                          cache=self.cache, progress=self.progress,
                                          desc="embedding images", need_patches=False,
                                          num_workers=self.num_workers):
            rows.append(batch.global_embeds.float().cpu())
            ids.extend(batch.image_ids)
        values = torch.cat(rows).numpy() if rows else torch.empty(0, self.backbone.embed_dim).numpy()
        return pd.DataFrame(values, index=pd.Index(ids, name="image", dtype=object))

    def _input_warnings(self, batch: FeatureBatch) -> list[dict[str, str]]:
        """The warnings of one batch's images (pixel checks, then the OOD check)."""
        found: list[dict[str, str]] = []
        if self.input_checks is not None:
            color = expects_color(self.vocabulary)
            for image_id, row in zip(batch.image_ids, batch.stats, strict=True):
                if row is None:
                    continue
                stats = {"mean": row[2], "std": row[3], "chroma_mean": row[4], "chroma_p99": row[5]}
                for kind, message in check_statistics(
                        (int(row[0]), int(row[1])), stats, self.backbone.image_size, self.input_checks,
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
        """Ensembled text vectors of the vocabulary: from memory, else from the text-bank store
        on disk, else computed (and kept in both)."""
        memo = memo_for(self.backbone)
        key = bank_key(self.backbone, self.vocabulary, self.config.prompt_key())
        need_reference = self.config.calibration == "paired_softmax"
        bank = memo.get(key)
        if bank is not None and not (need_reference and bank.reference_global is None):
            return bank
        # A bank without references (stored for another calibration) is rebuilt when one is
        # needed: rebuilding raises the clear error naming the concept without one.
        if self.text_store is not None:
            bank = self.text_store.get(key, n_concepts=len(self.vocabulary),
                                       embed_dim=int(self.backbone.embed_dim))
        if bank is None or (need_reference and bank.reference_global is None):
            bank = build_text_bank(
                self.backbone, self.vocabulary, templates=self.config.templates,
                synonyms=self.config.synonyms, text_token=self.config.text_token,
                need_reference=need_reference, batch_size=self.text_batch_size(),
                reference_word=self.config.reference_word,
            )
            # concepts learned from example images (issue 15): learned vectors replace text ones
            bank = apply_learned_vectors(self.backbone, self.vocabulary, bank)
            if self.text_store is not None:
                self.text_store.put(key, bank)
        memo[key] = bank
        return bank

    def image_batch_size(self) -> int:
        """Images per forward pass (``batch_size``, resolved once when ``"auto"``)."""
        if self.batch_size == "auto":
            self.batch_size = auto_batch_size(self.backbone)
        return int(self.batch_size)

    def text_batch_size(self) -> int:
        """Texts per text-tower pass."""
        return 32 if self.batch_size == "auto" else int(self.batch_size)

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

    def _local_scores(self, bank: TextBank, patches: torch.Tensor | None,
                      patch_mean: torch.Tensor | None = None) -> torch.Tensor:
        paired = self.config.calibration == "paired_softmax"
        if self.config.aggregation == "mean":
            # The mean of the patch cosines is the mean normalised patch token dotted with the
            # concept vector: one product, and no patch token needed from the feature store.
            mean = patch_mean.float() if patch_mean is not None else patch_mean_of(patches)
            agg = mean @ bank.concept_local.T
            ref = (mean @ bank.reference_local.T)[:, bank.reference_index] if paired else None
        else:
            concept, reference = self._patch_cosines(bank, patches)
            agg = self._aggregate(concept)
            ref = self._aggregate(reference) if paired else None
        backbone, how = self.backbone, self.config.calibration
        if how == "cosine":
            return agg
        if how == "sigmoid":
            return torch.sigmoid(backbone.concept_logit_scale * agg + backbone.concept_logit_bias)
        pair = torch.stack([agg, ref], dim=-1) * backbone.concept_logit_scale
        return pair.softmax(dim=-1)[..., 0]

    def _scores_from_features(self, global_embeds: torch.Tensor, patches: torch.Tensor | None,
                              patch_mean: torch.Tensor | None = None) -> torch.Tensor:
        bank = self.text_bank().to(global_embeds.device)
        cfg = self.config
        if cfg.mode == "global":
            return self._global_scores(bank, global_embeds)
        if cfg.mode == "local":
            return self._local_scores(bank, patches, patch_mean)
        if not cfg.uses_local:
            return self._global_scores(bank, global_embeds)
        if not cfg.uses_global:
            return self._local_scores(bank, patches, patch_mean)
        return cfg.alpha * self._global_scores(bank, global_embeds) + (1 - cfg.alpha) * self._local_scores(
            bank, patches, patch_mean
        )

    @property
    def needs_patches(self) -> bool:
        """Whether scores need patch tokens (not for global scores or ``"mean"`` aggregation,
        which read the stored patch mean)."""
        return self.config.uses_local and self.config.aggregation != "mean"

    def score_batch(self, batch: FeatureBatch) -> tuple[torch.Tensor, list[dict[str, str]]]:
        """Scores ``(b, K)`` (float32, CPU) and input warnings of one :class:`FeatureBatch`."""
        with torch.no_grad():
            values = self._scores_from_features(batch.global_embeds, batch.patch_embeds,
                                                batch.patch_mean).float().cpu()
        return values, self._input_warnings(batch)

    def iter_batches(self, images: Any, *, errors: list[dict[str, str]] | None = None,
                     desc: str = "scoring images") -> Any:
        """The :class:`FeatureBatch` es :meth:`score` scores (what its feature pipeline reads)."""
        return iter_feature_batches(
            self.backbone, images, batch_size=self.image_batch_size(), cache=self.cache,
            progress=self.progress, errors=errors, desc=desc, need_patches=self.needs_patches,
            need_stats=self.input_checks is not None, num_workers=self.num_workers,
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

    def score(self, images: Any, *, engine: str = "local", address: str | None = None,
              ray_workers: int | None = None) -> ConceptScores:
        """Score images against every concept of the vocabulary.

        Args:
            images: Paths, a folder, a CSV manifest, PIL images, arrays, tensors, a mapping
                ``{id: image}``, any iterable or a torch ``Dataset`` (see
                :func:`~conceptlens.vocab.sources.iter_image_sources`).
            engine: ``"local"`` (this process plus DataLoader workers) or ``"ray"`` (Ray Data
                across a cluster's actors, extra ``ray``; see
                :mod:`conceptlens.vocab.ray_engine`): the same numbers either way.
            address: Ray cluster address for ``engine="ray"`` (default: a local Ray).
            ray_workers: Actors for ``engine="ray"`` (default: one per GPU, else 2).

        Returns:
            ConceptScores: ``(n_images, n_concepts)`` table indexed by image id with the
            vocabulary's ids as columns; bad images are left out and listed in ``errors``;
            images the model should not be trusted on are scored and listed in ``warnings``.

        Warns:
            InputQualitySummary: Once per call when any image got a warning (an
                :class:`~conceptlens.errors.InputQualityWarning` whose ``warnings``
                attribute holds the same frame as the result's).
        """
        errors: list[dict[str, str]] = []
        found: list[dict[str, str]] = []
        ids: list[str] = []
        rows: list[np.ndarray] = []
        for batch_ids, batch_values, warned in self._iter_scored(images, engine, address,
                                                                 ray_workers, errors):
            rows.append(batch_values)
            ids.extend(batch_ids)
            found.extend(warned)
        values = np.concatenate(rows) if rows else np.empty((0, len(self.vocabulary)))
        extra: dict[str, str] = {}
        if self.calibrator is not None:
            values = self.calibrator.transform_array(values, self.concept_ids)
            extra = {"concept_calibration": self.calibrator.method}
        table = pd.DataFrame(values, index=pd.Index(ids, name="image", dtype=object),
                             columns=pd.Index(self.concept_ids, dtype=object))
        scores = ConceptScores(
            table=table,
            config={**self.config.to_dict(), "batch_size": self.text_batch_size(), **extra},
            backbone=self.backbone.identity.to_dict(),
            vocabulary_hash=self.vocabulary.hash,
            concept_names=self.concept_names,
            errors=pd.DataFrame(errors, columns=["image", "reason"]).astype(str),
            warnings=pd.DataFrame(found, columns=["image_id", "kind", "message"]),
        )
        _warn_flagged(scores.warnings, len(scores))
        return scores

    def score_to_file(self, images: Any, path: Any, *, engine: str = "local",
                      address: str | None = None, ray_workers: int | None = None) -> ScoredFile:
        """Score images and write the table to a ``.parquet`` file batch by batch.

        Memory stays flat however many images there are (one row group per batch); the file
        is what :meth:`ConceptScores.save` writes and :meth:`ConceptScores.load` reads, and
        appears under ``path`` only when complete. Arguments as :meth:`score`.

        Returns:
            ScoredFile: the path, the number of rows, and the errors and warnings frames.
        """
        from conceptlens.vocab.score_file import ScoreFileWriter

        writer = ScoreFileWriter(path, self.concept_ids)
        errors: list[dict[str, str]] = []
        found: list[dict[str, str]] = []
        calibrator = getattr(self, "calibrator", None)
        try:
            for batch_ids, values, warned in self._iter_scored(images, engine, address,
                                                               ray_workers, errors):
                if calibrator is not None:
                    values = calibrator.transform_array(values, self.concept_ids)
                writer.write(batch_ids, values)
                found.extend(warned)
        except BaseException:
            writer.abort()
            raise
        config = {**self.config.to_dict(), "batch_size": self.text_batch_size()}
        if calibrator is not None:
            config["concept_calibration"] = calibrator.method
        error_frame = pd.DataFrame(errors, columns=["image", "reason"]).astype(str)
        warning_frame = pd.DataFrame(found, columns=["image_id", "kind", "message"])
        written = writer.close({
            "config": config, "backbone": self.backbone.identity.to_dict(),
            "vocabulary_hash": self.vocabulary.hash, "concept_names": self.concept_names,
            "errors": error_frame.to_dict(orient="records"),
            "warnings": warning_frame.to_dict(orient="records"),
        })
        _warn_flagged(warning_frame, writer.rows)
        return ScoredFile(path=written, n_images=writer.rows, errors=error_frame,
                          warnings=warning_frame)

    def _iter_scored(self, images: Any, engine: str, address: str | None, ray_workers: int | None,
                     errors: list[dict[str, str]]) -> Iterator[tuple[list[str], np.ndarray,
                                                                     list[dict[str, str]]]]:
        """``(ids, (b, K) float64 scores, warnings)`` per batch, in input order."""
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}; got {engine!r}")
        self.text_bank()
        if engine == "ray":
            from conceptlens.vocab.ray_engine import iter_scored_with_ray

            yield from iter_scored_with_ray(self, images, address=address, num_workers=ray_workers,
                                            errors=errors)
            return
        if address is not None:
            raise ValueError("address= is only used with engine='ray'")
        for batch in self.iter_batches(images, errors=errors):
            values, warned = self.score_batch(batch)
            yield batch.image_ids, values.double().numpy(), warned

    def score_tensor(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Concept scores of preprocessed images, differentiable w.r.t. ``pixel_values``.

        Runs :meth:`Backbone.forward_images` (gradients flow) and the memoised text vectors;
        the numbers equal :meth:`score` for the same images and configuration.

        Args:
            pixel_values: ``(B, 3, H, W)`` from ``backbone.preprocess``.

        Returns:
            ``(B, K)`` float32 tensor, columns in vocabulary order.
        """
        return self._score_features(self._forward(pixel_values))

    def _score_features(self, features: Any) -> torch.Tensor:
        """:meth:`score_tensor` from the image tower's output (:class:`ImageFeatures`), for
        callers that also need the features of the same pass."""
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

    def concept_maps(self, image: Any, concepts: str | Sequence[str] | None = None, *,
                     features: Any = None) -> ConceptMaps:
        """Patch-level maps of one image for several concepts, from one image-tower pass.

        Args:
            image: One image: path, PIL, array, tensor, an
                :class:`~conceptlens.vocab.sources.ImageSource` or a
                :class:`~conceptlens.models.images.LoadedImage` (used as is, never reloaded).
            concepts: Concept ids, preferred names or synonyms, case-insensitive (one or a
                list; see :meth:`ConceptVocabulary.resolve`); ``None`` for all.
            features: The image's features when already computed: the
                :class:`~conceptlens.models.ImageFeatures` of
                ``backbone.encode_images(pixels)`` for this one image (or a one-image
                :class:`~conceptlens.vocab.batching.FeatureBatch` with patch tokens). Then
                no forward pass runs and the feature store is not read.

        Returns:
            ConceptMaps: ``(K, grid_h, grid_w)`` maps (values as in
            :meth:`patch_scores_tensor`), each drawable onto the original image with
            :meth:`ConceptMaps.upsampled`.

        Raises:
            UnknownConceptError: A concept is not in the vocabulary (a ``KeyError``; the
                message names it and suggests close matches).
            ImageLoadError: The image cannot be read.
        """
        indices = self._concept_indices(concepts)
        source = _one_source(image)
        loaded = source.load()
        if features is None:
            # the loaded image goes through the feature pipeline as it is; a file the feature
            # store knows by path and modification time is not hashed again
            kept = replace(source, load=lambda: loaded)
            errors: list[dict[str, str]] = []
            batches = list(iter_feature_batches(
                self.backbone, [kept], batch_size=1, cache=self.cache, progress=False,
                errors=errors, num_workers=0,
            ))
            if not batches:
                raise ValueError(f"cannot compute features of image {source.image_id!r}: {errors[0]['reason']}")
            features = batches[0]
        patches = getattr(features, "patch_embeds", None)
        if patches is None or patches.ndim != 3 or patches.shape[0] != 1:
            raise ValueError("features must hold the patch tokens (1, P, D) of this one image "
                             "(backbone.encode_images(pixels) of a (1, 3, H, W) input)")
        grid = (int(features.grid_size[0]), int(features.grid_size[1]))
        with torch.no_grad():
            patch = self._patch_scores_from_features(patches)[0, indices]
            scores = self._scores_from_features(features.global_embeds, patches,
                                                getattr(features, "patch_mean", None))[0, indices]
        ids = self.concept_ids
        names = self.concept_names
        return ConceptMaps(
            image=loaded.image,
            image_id=source.image_id,
            concept_ids=[ids[i] for i in indices],
            concept_names={ids[i]: names[ids[i]] for i in indices},
            maps=patch.reshape(len(indices), *grid).float().cpu().numpy(),
            scores=scores.float().cpu().numpy(),
            covered_fraction=covered_fraction(self.backbone, grid),
            calibration=self.config.calibration,
            config=self.config.to_dict(),
        )

    def _concept_indices(self, concepts: str | Sequence[str] | None) -> list[int]:
        """Columns of concepts given by id, preferred name or synonym
        (:meth:`ConceptVocabulary.resolve`)."""
        if concepts is None:
            return list(range(len(self.vocabulary)))
        if isinstance(concepts, str):
            concepts = [concepts]
        return [self.vocabulary.index(self.vocabulary.resolve(c).id) for c in concepts]

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"ConceptScorer({type(self.backbone).__name__}, {len(self.vocabulary)} concepts, "
            f"mode={cfg.mode!r}, alpha={cfg.alpha}, aggregation={cfg.aggregation!r}, "
            f"calibration={cfg.calibration!r}, cache={self.cache!r})"
        )


@dataclass
class ScoredFile:
    """What :meth:`ConceptScorer.score_to_file` wrote.

    Attributes:
        path: The score file.
        n_images: Rows written.
        errors: Images left out (``image``, ``reason``).
        warnings: Input warnings (``image_id``, ``kind``, ``message``).
    """

    path: Any
    n_images: int
    errors: pd.DataFrame
    warnings: pd.DataFrame


def _one_source(image: Any) -> ImageSource:
    """The :class:`ImageSource` of exactly one image (a ``LoadedImage`` is kept as it is)."""
    if isinstance(image, LoadedImage):
        name = image.source if not image.source.startswith("<") else "image_0"
        return ImageSource(name, lambda: image)
    sources = iter_image_sources(image)
    first = next(sources, None)
    if first is None or next(sources, None) is not None:
        raise ValueError("concept_maps takes exactly one image")
    return first


def _warn_flagged(found: pd.DataFrame, n_scored: int) -> None:
    """The one :class:`InputQualitySummary` per call that flagged images."""
    if not len(found):
        return
    counts = found["kind"].value_counts()
    kinds = ", ".join(f"{kind}: {count}" for kind, count in counts.items())
    flagged = len(set(found["image_id"]))
    warnings.warn(InputQualitySummary(
        f"{flagged} of {n_scored} image(s) flagged as inputs the model should not be "
        f"trusted on ({kinds}); see ConceptScores.warnings", found,
    ), stacklevel=3)


def _check_reference(reference: Any) -> None:
    if not isinstance(reference, EmbeddingReference):
        raise TypeError(f"reference must be an EmbeddingReference, got {type(reference).__name__}")
    if not reference.is_fitted:
        raise ValueError("reference is not fitted; call reference.fit(embeddings) or scorer.set_reference(images)")

