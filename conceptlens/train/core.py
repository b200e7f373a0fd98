"""Concept-alignment training of the reference ConceptCLIP architecture on any vocabulary.

The losses are ConceptCLIP's, as the demo model was trained with them:

* **global**: the SigLIP sigmoid loss between image and caption embeddings of a batch,
  ``logit = logit_scale * cos + logit_bias``; a pair is positive when the caption truly
  describes the image: the image shows every concept the caption names (a caption naming
  none matches every image), so true descriptions are never pushed apart;
* **local** (RC-Align, region-concept alignment): every concept mention of a caption is
  embedded as the L2-normalised mean of its ``text_token_features`` over the mention's token
  span; patch tokens are L2-normalised; a concept's score for an image is
  ``concept_logit_scale * cos + concept_logit_bias`` maxed over patches, trained with a
  sigmoid loss against every image of the batch (positive where the image shows the
  concept, from the concept labels), weight ``local_weight``;
* optional **patch** loss (``patch_weight > 0``, needs masks): a per-patch sigmoid loss of
  the local logits against which patches show the concept. Without it the maps of small
  parts do not localise (the issue's robot test: pointing game 0.00 for hands; map AUROC 0.96
  with it).

Nothing here knows about dermoscopy: ``K`` concepts come from the labels' columns (the
caption spans get ``K + 1`` channels, the last for the modality words that every image
matches), captions are given or generated from the labels with the vocabulary's prompt
templates (:func:`captions_from_labels`), and the tokenizer's whole words cover the
vocabulary's names and synonyms and the captions' words (:func:`vocabulary_words`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from conceptlens.errors import ConceptlensError
from conceptlens.train.history import TrainingHistory

__all__ = [
    "ConceptTrainingData",
    "TrainingConfig",
    "TrainingError",
    "batch_losses",
    "caption_matches",
    "captions_from_labels",
    "encode_captions",
    "modality_words",
    "patch_masks",
    "pixels_from_uint8",
    "train_concept_model",
    "vocabulary_words",
]

_STOP = {"a", "an", "the", "this", "is", "of", "with", "and", "showing", "shows", "in", "on"}
_WORD = re.compile(r"[a-z0-9]+")


class TrainingError(ConceptlensError, ValueError):
    """Training data or settings that cannot work (shapes, a mention without tokens, ...)."""


@dataclass
class TrainingConfig:
    """Settings of a concept-alignment training run (defaults: those of the shipped demo model).

    Attributes:
        seed: Seeds the weight initialisation, the data and the batch order.
        n_train: Number of generated training images.
        image_size: Image side in pixels (the model's input size).
        steps: Optimiser steps.
        batch_size: Images (and captions) per step.
        lr: Peak AdamW learning rate (linear warm-up, cosine decay).
        weight_decay: AdamW weight decay (not applied to the four logit scalars).
        warmup_steps: Linear warm-up length.
        local_weight: Weight of the local region-concept loss beside the global loss.
        patch_weight: Weight of an extra, mask-supervised per-patch loss (0: off, pure
            ConceptCLIP losses); needs masks, which the generator provides.
        vision_config: Overrides of the tiny vision tower's config.
        text_config: Overrides of the tiny text tower's config.
        threads: ``torch.set_num_threads`` during training (results depend on it only
            through floating-point summation order).
    """

    seed: int = 0
    n_train: int = 5000
    image_size: int = 64
    steps: int = 1400
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    local_weight: float = 0.5
    patch_weight: float = 1.0
    vision_config: dict[str, Any] = field(
        default_factory=lambda: {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
        }
    )
    text_config: dict[str, Any] = field(
        default_factory=lambda: {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        }
    )
    init_logit_bias: float = -5.0
    init_concept_logit_bias: float = -3.0
    scalar_lr_multiplier: float = 5.0
    threads: int = 1


def pixels_from_uint8(images: np.ndarray) -> torch.Tensor:
    """``(n, H, W, 3)`` uint8 images -> ``(n, 3, H, W)`` float pixels scaled to ``[-1, 1]``.

    This equals the reference processor's output (rescale, mean = std = 0.5) for images
    already at the model's input size.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (n, H, W, 3), got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@dataclass
class ConceptTrainingData:
    """Images with concept labels (and optionally captions and masks) to train on.

    Attributes:
        images: ``(n, H, W, 3)`` uint8 images at the model's input size.
        concepts: ``(n, K)`` 0/1 concept labels; column ``k`` is ``concept_ids[k]``.
        concept_ids: The ``K`` concept ids.
        captions: ``n`` captions, or ``None`` to generate them from the labels.
        mentions: Per caption, ``(concept_index, start, end)`` character spans of the
            concepts it names (required with ``captions``).
        masks: Optional ``(n, K, H, W)`` bool, where each concept is (for the patch loss).
    """

    images: np.ndarray
    concepts: np.ndarray
    concept_ids: list[str]
    captions: list[str] | None = None
    mentions: list[list[tuple[int, int, int]]] | None = None
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.concepts.shape != (n, len(self.concept_ids)):
            raise TrainingError(f"concepts must be ({n}, {len(self.concept_ids)}); got {self.concepts.shape}")
        if self.captions is not None and (self.mentions is None or len(self.captions) != n
                                          or len(self.mentions) != n):
            raise TrainingError("captions need one mention list each (concept_index, start, end)")
        if self.masks is not None and self.masks.shape[:2] != self.concepts.shape:
            raise TrainingError(f"masks must be (n, K, H, W); got {self.masks.shape}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _terms(concept: Any) -> tuple[str, ...]:
    terms = getattr(concept, "terms", None)
    return tuple(terms) if terms else (str(concept),)


def captions_from_labels(
    concepts: np.ndarray,
    vocabulary: Any,
    *,
    templates: Any = None,
    seed: int = 0,
    synonyms: bool = True,
) -> tuple[list[str], list[list[tuple[int, int, int]]]]:
    """Captions naming each image's present concepts, in the scorer's prompt templates.

    Each caption is a random template of the vocabulary's modality (the ones the
    :class:`~conceptlens.vocab.ConceptScorer` prompts with) with ``{concept}`` replaced by
    the present concepts in random order (``"a, b and c"``; a random term of each when
    ``synonyms``); an image without concepts gets the template's reference sentence (or
    the template with nothing named when it has none).

    Args:
        concepts: ``(n, K)`` 0/1 labels, columns in vocabulary order.
        vocabulary: A :class:`~conceptlens.vocab.ConceptVocabulary` with ``K`` concepts.
        templates: Templates (default: the vocabulary modality's).
        seed: Seed of the choices.
        synonyms: Draw among each concept's terms (else the preferred name).

    Returns:
        ``(captions, mentions)`` with character spans ``(concept_index, start, end)``.
    """
    from conceptlens.vocab.prompts import resolve_templates

    chosen = resolve_templates(templates, getattr(vocabulary, "modality", "") or None)
    concept_list = list(vocabulary)
    if concepts.shape[1] != len(concept_list):
        raise TrainingError(f"labels have {concepts.shape[1]} columns, the vocabulary {len(concept_list)} concepts")
    rng = np.random.default_rng(seed)
    captions: list[str] = []
    mentions: list[list[tuple[int, int, int]]] = []
    for row in np.asarray(concepts):
        template = chosen[int(rng.integers(len(chosen)))]
        present = [int(k) for k in rng.permutation(np.flatnonzero(row))]
        if not present:
            captions.append(template.reference or template.text.replace("{concept}", "").strip())
            mentions.append([])
            continue
        names = []
        for k in present:
            terms = _terms(concept_list[k]) if synonyms else (concept_list[k].name,)
            names.append(terms[int(rng.integers(len(terms)))])
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        start = template.text.index("{concept}")
        text = template.text.replace("{concept}", joined)
        spans, cursor = [], start
        for k, name in zip(present, names, strict=True):
            spans.append((k, cursor, cursor + len(name)))
            cursor += len(name) + (2 if len(spans) < len(names) - 1 else 5)
        captions.append(text)
        mentions.append(spans)
    return captions, mentions


def modality_words(vocabulary: Any, templates: Any = None) -> list[str]:
    """Words every reference sentence of the templates shares (minus stop words): the
    modality words that every image matches (the ``K + 1``-th span channel)."""
    from conceptlens.vocab.prompts import resolve_templates

    chosen = resolve_templates(templates, getattr(vocabulary, "modality", "") or None)
    sets = [set(_WORD.findall((t.reference or "").lower())) - _STOP for t in chosen if t.reference]
    if not sets:
        return []
    return sorted(set.intersection(*sets))


def vocabulary_words(vocabulary: Any = None, captions: Iterable[str] = (), extra: Iterable[str] = ()) -> list[str]:
    """Whole words for the tokenizer: the reference tokenizer's defaults, every word of the
    vocabulary's names and synonyms, of the prompt templates and of the captions, so that no
    concept word is split into characters (``"robot"`` -> ``r ##o ##b ##o ##t``)."""
    from conceptlens.models.reference.factory import default_words

    words = set(default_words()) | {w.lower() for w in extra}
    texts = list(captions)
    if vocabulary is not None:
        from conceptlens.vocab.prompts import resolve_templates

        for concept in vocabulary:
            texts.extend(_terms(concept))
        for template in resolve_templates(None, getattr(vocabulary, "modality", "") or None):
            texts.extend([template.text.replace("{concept}", ""), template.reference or ""])
    for text in texts:
        words.update(_WORD.findall(text.lower()))
    return sorted(words)


def encode_captions(
    tokenizer: Any,
    captions: Sequence[str],
    mentions: Sequence[Sequence[tuple[int, int, int]]],
    n_concepts: int,
    modality: re.Pattern[str] | Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise captions and mark each concept mention's token span.

    Args:
        tokenizer: A fast tokenizer (``return_offsets_mapping`` support).
        captions: ``n`` texts.
        mentions: Per caption, ``(concept_index, start, end)`` character spans.
        n_concepts: ``K``, the number of concepts (span channels ``0..K-1``).
        modality: The modality words (a compiled pattern or a list of words) marked in
            channel ``K``, a mention every image matches (it anchors the reference prompt);
            ``None`` for none.

    Returns:
        ``(input_ids, spans)``: ``(n, T)`` token ids padded to the longest caption, and
        ``(n, K + 1, T)`` bool, True where token ``t`` of caption ``i`` lies in the mention of
        concept ``k`` (channel ``K``: the modality words).

    Raises:
        TrainingError: A mention covers no token (the caption was truncated) or names a
            concept index outside ``0..K-1``.
    """
    if modality is not None and not isinstance(modality, re.Pattern):
        words = [re.escape(w) for w in modality if w]
        modality = re.compile(r"\b(" + "|".join(words) + r")\b", re.IGNORECASE) if words else None
    enc = tokenizer(list(captions), padding="longest", return_offsets_mapping=True, return_tensors="np")
    ids = torch.from_numpy(enc["input_ids"].astype(np.int64))
    offsets = enc["offset_mapping"]
    spans = np.zeros((len(captions), n_concepts + 1, ids.shape[1]), dtype=bool)
    for i, caption_mentions in enumerate(mentions):
        starts, ends = offsets[i, :, 0], offsets[i, :, 1]
        if modality is not None:
            for match in modality.finditer(captions[i]):
                spans[i, -1] |= (starts >= match.start()) & (ends <= match.end()) & (ends > starts)
        for k, start, end in caption_mentions:
            if not 0 <= k < n_concepts:
                raise TrainingError(f"mention of concept index {k} in caption {i}; there are {n_concepts} concepts")
            inside = (starts >= start) & (ends <= end) & (ends > starts)
            if not inside.any():
                raise TrainingError(f"concept mention {captions[i][start:end]!r} has no tokens")
            spans[i, k] = inside
    return ids, torch.from_numpy(spans)


def _sigmoid_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SigLIP loss: ``-sum log sigmoid(sign * logit)`` over pairs, divided by the rows."""
    signs = labels.float() * 2 - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def caption_matches(concepts: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """Which captions truly describe which images: ``(B_images, B_captions)`` bool.

    A caption matches an image when the image shows every concept the caption names; a
    caption naming no concept (``"This is dermatoscopy."``) is true of, and matches, every image.

    Args:
        concepts: ``(B, K)`` 0/1 concepts of the images.
        spans: ``(B, K + 1, T)`` mention spans of the captions (see :func:`encode_captions`).
    """
    named = spans[:, : concepts.shape[1]].any(-1)  # (B_captions, K)
    return ~(named[None, :, :] & (concepts[:, None, :] == 0)).any(-1)


def batch_losses(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    input_ids: torch.Tensor,
    spans: torch.Tensor,
    concepts: torch.Tensor,
    patch_labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The losses of one batch.

    Args:
        model: The reference ConceptCLIP model.
        pixels: ``(B, 3, H, W)``.
        input_ids: ``(B, T)`` captions of the images.
        spans: ``(B, K + 1, T)`` concept-mention token spans of the captions (see
            :func:`encode_captions`; the last channel is the modality word, true of every image).
        concepts: ``(B, K)`` 0/1 ground-truth concepts of the images.
        patch_labels: Optional ``(B, K, P)`` bool, which patches show each concept; adds the
            ``"patch"`` loss (per-patch sigmoid loss of the local score).

    Returns:
        ``{"global": ..., "local": ...}`` (plus ``"patch"``) scalar losses.
    """
    out = model(pixel_values=pixels, input_ids=input_ids)
    img, txt = out["image_features"], out["text_features"]
    logits = out["logit_scale"] * img @ txt.T + out["logit_bias"]
    losses = {"global": _sigmoid_loss(logits, caption_matches(concepts, spans))}

    patches = F.normalize(out["image_token_features"], dim=-1)  # (B, P, D)
    weights = spans.float()
    counts = weights.sum(-1, keepdim=True).clamp_min(1.0)
    concept_emb = torch.einsum("bkt,btd->bkd", weights, out["text_token_features"]) / counts
    has_mention = spans.any(-1)  # (B, K + 1)
    concept_emb = F.normalize(concept_emb[has_mention], dim=-1)  # (M, D)
    concept_idx = has_mention.nonzero()[:, 1]
    patch_logits = (
        out["concept_logit_scale"] * torch.einsum("md,bpd->mbp", concept_emb, patches)
        + out["concept_logit_bias"]
    )  # (M, B, P)
    with_modality = torch.cat([concepts, concepts.new_ones(concepts.shape[0], 1)], dim=1)
    labels = with_modality[:, concept_idx].T.bool()  # (M, B): image b shows concept m
    if concept_idx.numel() == 0:
        losses["local"] = logits.new_zeros(())
    else:
        losses["local"] = _sigmoid_loss(patch_logits.amax(-1), labels)
    if patch_labels is not None:
        is_concept = concept_idx < concepts.shape[1]
        if bool(is_concept.any()):
            target = patch_labels[:, concept_idx[is_concept]].permute(1, 0, 2).float()  # (M', B, P)
            losses["patch"] = F.binary_cross_entropy_with_logits(
                patch_logits[is_concept], target, pos_weight=logits.new_tensor(5.0)
            )
        else:
            losses["patch"] = logits.new_zeros(())
    return losses


def _learning_rate(step: int, config: TrainingConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))


def train_concept_model(
    data: ConceptTrainingData,
    config: TrainingConfig | None = None,
    *,
    vocabulary: Any = None,
    modality: re.Pattern[str] | Sequence[str] | None = None,
    tokenizer_words: Sequence[str] | None = None,
    model: Any = None,
    progress: bool = True,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Train (or fine-tune) the reference ConceptCLIP architecture on labelled images.

    Args:
        data: Images, ``(n, K)`` concept labels, and captions (else generated from the
            labels with ``vocabulary``'s templates) and masks (for ``config.patch_weight``).
        config: :class:`TrainingConfig` (default: the demo model's settings).
        vocabulary: The :class:`~conceptlens.vocab.ConceptVocabulary` of the ``K`` concepts,
            in label-column order; needed to generate captions and the tokenizer's words.
        modality: Modality words for the reference channel (default: those shared by the
            vocabulary's reference prompts, see :func:`modality_words`).
        tokenizer_words: Whole words of the tokenizer (default: :func:`vocabulary_words`).
        model: ``(model, processor)`` to fine-tune instead of a fresh model.
        progress: Show a progress bar.

    Returns:
        ``(model, processor, history)``: the trained model (eval mode), its processor and a
        :class:`~conceptlens.train.TrainingHistory` (a dict: the config, the per-step losses
        and the wall time; it plots itself and goes into a report with ``extra=[history]``). Save both with
        ``save_pretrained(folder)``; :func:`conceptlens.models.load_backbone` loads the folder.
    """
    config = TrainingConfig() if config is None else config
    if config.steps < 1 or config.batch_size < 2:
        raise TrainingError("TrainingConfig needs steps >= 1 and batch_size >= 2")
    if data.images.shape[1] != config.image_size:
        raise TrainingError(
            f"data images are {data.images.shape[1]} px but config.image_size is {config.image_size}"
        )
    captions, mentions = data.captions, data.mentions
    if captions is None:
        if vocabulary is None:
            raise TrainingError("give captions in the data or a vocabulary to generate them from")
        captions, mentions = captions_from_labels(data.concepts, vocabulary, seed=config.seed)
    if modality is None and vocabulary is not None:
        modality = modality_words(vocabulary)
    if tokenizer_words is None:
        tokenizer_words = vocabulary_words(vocabulary, captions)
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng(devices=[]):  # dropout-free, but seed torch anyway
            torch.manual_seed(config.seed)
            trained, processor, history = run_training(
                config, data, captions, mentions, modality, tokenizer_words, progress, model)
    finally:
        torch.set_num_threads(previous_threads)
    history["config"] = asdict(config)
    history["wall_time_s"] = time.perf_counter() - started
    return trained, processor, TrainingHistory(history)


def run_training(
    config: TrainingConfig,
    data: ConceptTrainingData,
    captions: Sequence[str],
    mentions: Sequence[Sequence[tuple[int, int, int]]],
    modality: Any,
    tokenizer_words: Sequence[str],
    progress: bool,
    start: Any = None,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The training loop of :func:`train_concept_model` (torch seeded by the caller)."""
    from conceptlens.models.reference import create_reference_model

    if start is not None:
        model, processor = start
    else:
        vision = {"image_size": config.image_size, **config.vision_config}
        model, processor = create_reference_model(
            "tiny",
            seed=config.seed,
            tokenizer_vocab=list(tokenizer_words),
            vision_config=vision,
            text_config=dict(config.text_config),
            init_logit_bias=config.init_logit_bias,
            init_concept_logit_bias=config.init_concept_logit_bias,
        )
    input_ids, spans = encode_captions(processor.tokenizer, captions, mentions, data.concepts.shape[1], modality)
    pixels = pixels_from_uint8(data.images)
    concepts = torch.from_numpy(data.concepts.astype(np.int64))
    lengths = (input_ids != 0).sum(1)
    patch_labels = None
    if config.patch_weight > 0:
        if data.masks is None:
            raise TrainingError("TrainingConfig.patch_weight > 0 needs masks in the data")
        grid = model.config.grid_size
        patch_labels = torch.from_numpy(patch_masks(data.masks, grid))  # (n, K, gh, gw)

    scalars = {"logit_scale", "logit_bias", "concept_logit_scale", "concept_logit_bias"}
    decay = [p for n, p in model.named_parameters() if n not in scalars and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if n not in scalars and p.ndim <= 1]
    optimiser = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": [getattr(model, n) for n in sorted(scalars)], "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    order_rng = np.random.default_rng(config.seed)
    order = order_rng.permutation(len(data))
    cursor = 0
    history: dict[str, Any] = {"loss": []}
    model.train()
    for step in tqdm(range(config.steps), disable=not progress, desc="training concept model"):
        if cursor + config.batch_size > len(order):
            order, cursor = order_rng.permutation(len(data)), 0
        idx = torch.from_numpy(order[cursor : cursor + config.batch_size])
        cursor += config.batch_size
        width = int(lengths[idx].max())
        batch_pixels = pixels[idx]
        flipped = bool(order_rng.random() < 0.5)  # a flip keeps every concept (masks flip too)
        if flipped:
            batch_pixels = batch_pixels.flip(-1)
        lr = _learning_rate(step, config)
        for group, multiplier in zip(optimiser.param_groups, (1.0, 1.0, config.scalar_lr_multiplier), strict=True):
            group["lr"] = lr * multiplier
        batch_patches = None
        if patch_labels is not None:
            batch_patches = patch_labels[idx]
            if flipped:
                batch_patches = batch_patches.flip(-1)
            batch_patches = batch_patches.flatten(2)
        losses = batch_losses(
            model,
            batch_pixels,
            input_ids[idx, :width],
            spans[idx, :, :width],
            concepts[idx],
            patch_labels=batch_patches,
        )
        loss = losses["global"] + config.local_weight * losses["local"]
        if batch_patches is not None:
            loss = loss + config.patch_weight * losses["patch"]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        history["loss"].append(float(loss.detach()))
        for name, value in losses.items():
            history.setdefault(f"{name}_loss", []).append(float(value.detach()))
    model.eval()
    return model, processor, history




def patch_masks(masks: np.ndarray, grid_size: tuple[int, int], min_fraction: float = 0.0) -> np.ndarray:
    """Pixel masks ``(..., H, W)`` -> patch labels ``(..., gh, gw)``: a patch shows a concept
    when more than ``min_fraction`` of its pixels do; border pixels outside whole patches are
    dropped (as a ViT does)."""
    rows, cols = int(grid_size[0]), int(grid_size[1])
    h, w = masks.shape[-2:]
    ph, pw = h // rows, w // cols
    if ph == 0 or pw == 0:
        raise TrainingError(f"grid_size {grid_size} is finer than the masks' {h}x{w} pixels")
    cropped = masks[..., : rows * ph, : cols * pw].astype(np.float32)
    blocks = cropped.reshape(*masks.shape[:-2], rows, ph, cols, pw)
    return blocks.mean(axis=(-3, -1)) > min_fraction
