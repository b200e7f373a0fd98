"""Train the demo model: the reference ConceptCLIP architecture on synthetic dermoscopy.

Both of ConceptCLIP's losses are used:

* **global**: the SigLIP sigmoid loss between image and caption embeddings of a batch,
  ``logit = logit_scale * cos + logit_bias``; a pair is positive when the caption truly
  describes the image: the image shows every concept the caption names (a caption naming
  none matches every image), so true descriptions are never pushed apart;
* **local** (region-concept alignment): every concept mention of a caption is embedded as
  the L2-normalised mean of its ``text_token_features`` over the mention's token span;
  patch tokens are L2-normalised; a concept's score for an image is
  ``concept_logit_scale * cos + concept_logit_bias`` maxed over patches, trained with a
  sigmoid loss against every image of the batch (positive where the image shows the
  concept, which the synthetic ground truth tells exactly), weight ``local_weight`` (0.5).

Run ``python -m conceptlens.demo.train --out DIR --seed 0``; the folder gets the model,
processor and tokenizer files (safetensors) and ``training.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from conceptlens.demo.card import write_model_card
from conceptlens.demo.evaluate import DemoEvaluation, evaluate_demo_model
from conceptlens.demo.generator import (
    CONCEPT_IDS,
    SyntheticDermoscopy,
    caption_words,
    generate,
    patch_masks,
)
from conceptlens.models.reference import create_reference_model
from conceptlens.models.reference.factory import default_words

__all__ = [
    "EVALUATION_SEED",
    "TrainingConfig",
    "batch_losses",
    "encode_captions",
    "finish_model_folder",
    "main",
    "pixels_from_uint8",
    "train_demo_model",
]

_MODALITY_WORD = re.compile(r"\b(dermatoscopy|dermoscopy|dermoscopic)\b", re.IGNORECASE)

EVALUATION_SEED = 20240601
"""Seed of the held-out sample the model card's numbers come from (never used in training)."""


@dataclass
class TrainingConfig:
    """Settings of a demo-model training run (defaults: the shipped model).

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


def encode_captions(
    tokenizer: Any, captions: Sequence[str], mentions: Sequence[Sequence[tuple[int, int, int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise captions and mark each concept mention's token span.

    Args:
        tokenizer: A fast tokenizer (``return_offsets_mapping`` support).
        captions: ``n`` texts.
        mentions: Per caption, ``(concept_index, start, end)`` character spans.

    Returns:
        ``(input_ids, spans)``: ``(n, T)`` token ids padded to the longest caption, and
        ``(n, 9, T)`` bool, True where token ``t`` of caption ``i`` lies in the mention of
        concept ``k``; channel 8 marks the modality word (``dermatoscopy``, ``dermoscopy``,
        ``dermoscopic``), a mention every image matches (it anchors the reference prompt).

    Raises:
        ValueError: If a mention covers no token (the caption was truncated).
    """
    enc = tokenizer(list(captions), padding="longest", return_offsets_mapping=True, return_tensors="np")
    ids = torch.from_numpy(enc["input_ids"].astype(np.int64))
    offsets = enc["offset_mapping"]
    spans = np.zeros((len(captions), len(CONCEPT_IDS) + 1, ids.shape[1]), dtype=bool)
    for i, caption_mentions in enumerate(mentions):
        starts, ends = offsets[i, :, 0], offsets[i, :, 1]
        for match in _MODALITY_WORD.finditer(captions[i]):
            spans[i, -1] |= (starts >= match.start()) & (ends <= match.end()) & (ends > starts)
        for k, start, end in caption_mentions:
            inside = (starts >= start) & (ends <= end) & (ends > starts)
            if not inside.any():
                raise ValueError(f"concept mention {captions[i][start:end]!r} has no tokens")
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
        concepts: ``(B, 8)`` 0/1 concepts of the images.
        spans: ``(B, 9, T)`` mention spans of the captions (see :func:`encode_captions`).
    """
    named = spans[:, : concepts.shape[1]].any(-1)  # (B_captions, 8)
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
        spans: ``(B, 9, T)`` concept-mention token spans of the captions (see
            :func:`encode_captions`; the last channel is the modality word, true of every image).
        concepts: ``(B, 8)`` 0/1 ground-truth concepts of the images.
        patch_labels: Optional ``(B, 8, P)`` bool, which patches show each concept; adds the
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
    has_mention = spans.any(-1)  # (B, 9)
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


def _tokenizer_words() -> list[str]:
    return sorted(set(default_words()) | set(caption_words()))


def _learning_rate(step: int, config: TrainingConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))


def train_demo_model(
    config: TrainingConfig | None = None,
    *,
    data: SyntheticDermoscopy | None = None,
    progress: bool = True,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Train the reference ConceptCLIP architecture on synthetic dermoscopy captions.

    Args:
        config: Training settings; :class:`TrainingConfig` defaults when ``None``.
        data: Training set; drawn with ``generate(config.n_train, seed=config.seed)`` when
            ``None``.
        progress: Show a tqdm progress bar.

    Returns:
        ``(model, processor, history)``: the trained model (eval mode), its processor and
        a dict with the config, the per-step losses and the wall time.

    Example:
        >>> cfg = TrainingConfig(n_train=64, steps=2, batch_size=16, warmup_steps=1)
        >>> model, processor, history = train_demo_model(cfg, progress=False)
        >>> len(history["loss"])
        2
    """
    config = TrainingConfig() if config is None else config
    if config.steps < 1 or config.batch_size < 2:
        raise ValueError("TrainingConfig needs steps >= 1 and batch_size >= 2")
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng(devices=[]):  # dropout-free, but seed torch anyway
            torch.manual_seed(config.seed)
            model, processor, history = _run_training(config, data, progress)
    finally:
        torch.set_num_threads(previous_threads)
    history["config"] = asdict(config)
    history["wall_time_s"] = time.perf_counter() - started
    return model, processor, history


def _run_training(
    config: TrainingConfig, data: SyntheticDermoscopy | None, progress: bool
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    if data is None:
        data = generate(
            config.n_train, seed=config.seed, size=config.image_size, masks=config.patch_weight > 0
        )
    if data.images.shape[1] != config.image_size:
        raise ValueError(
            f"data images are {data.images.shape[1]} px but config.image_size is "
            f"{config.image_size}"
        )
    vision = {"image_size": config.image_size, **config.vision_config}
    model, processor = create_reference_model(
        "tiny",
        seed=config.seed,
        tokenizer_vocab=_tokenizer_words(),
        vision_config=vision,
        text_config=dict(config.text_config),
        init_logit_bias=config.init_logit_bias,
        init_concept_logit_bias=config.init_concept_logit_bias,
    )
    input_ids, spans = encode_captions(processor.tokenizer, data.captions, data.mentions)
    pixels = pixels_from_uint8(data.images)
    concepts = torch.from_numpy(data.concepts.astype(np.int64))
    lengths = (input_ids != 0).sum(1)
    patch_labels = None
    if config.patch_weight > 0:
        if data.masks is None:
            raise ValueError("TrainingConfig.patch_weight > 0 needs data generated with masks")
        grid = model.config.grid_size
        patch_labels = torch.from_numpy(patch_masks(data.masks, grid))  # (n, 8, gh, gw)

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
    for step in tqdm(range(config.steps), disable=not progress, desc="training demo model"):
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


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m conceptlens.demo.train --out DIR [--seed 0] [--config FILE]``.

    ``--config`` names a JSON file of :class:`TrainingConfig` fields; ``--seed``,
    ``--steps`` and ``--n-train`` override it.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to save the model into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, help="JSON file of TrainingConfig fields")
    parser.add_argument("--steps", type=int, help="optimiser steps (default: the config's)")
    parser.add_argument("--n-train", type=int, help="training images (default: the config's)")
    parser.add_argument("--eval-n", type=int, default=1000, help="held-out evaluation images")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    fields: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            parser.error(f"config file {args.config} not found")
        try:
            fields = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            parser.error(f"config file {args.config} is not readable JSON ({exc})")
        if not isinstance(fields, dict):
            parser.error(f"config file {args.config} must hold a JSON object of fields")
        unknown = set(fields) - set(TrainingConfig.__dataclass_fields__)
        if unknown:
            parser.error(f"unknown TrainingConfig fields in {args.config}: {sorted(unknown)}")
    fields["seed"] = args.seed
    if args.steps is not None:
        fields["steps"] = args.steps
    if args.n_train is not None:
        fields["n_train"] = args.n_train
    config = TrainingConfig(**fields)
    model, processor, history = train_demo_model(config, progress=not args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    summary = {k: history[k] for k in ("config", "wall_time_s")}
    summary["final_loss"] = float(np.mean(history["loss"][-50:]))
    evaluation = finish_model_folder(args.out, model, processor, summary, eval_n=args.eval_n)
    print(f"saved the demo model to {args.out} ({history['wall_time_s']:.0f} s of training)")
    failures = evaluation.failures()
    print("quality bars: " + ("all met" if not failures else "; ".join(failures)))
    return 0


def finish_model_folder(
    folder: Path,
    model: torch.nn.Module,
    processor: Any,
    summary: dict[str, Any],
    *,
    eval_n: int = 1000,
    eval_seed: int = EVALUATION_SEED,
) -> DemoEvaluation:
    """Evaluate a trained model on a held-out sample; write ``training.json`` and the card.

    Args:
        folder: The saved model's folder.
        model: The trained model; processor: its processor.
        summary: ``config`` and ``wall_time_s`` of the training (extended and saved).
        eval_n: Size of the evaluation sample.
        eval_seed: Its seed (training draws its data with the training seed).

    Returns:
        The evaluation (max-pooled local scores).
    """
    if eval_seed == summary["config"]["seed"]:
        raise ValueError(f"eval_seed {eval_seed} equals the training seed")
    evaluation = evaluate_demo_model((model, processor), n=eval_n, seed=eval_seed)
    mean_pooled = evaluate_demo_model(
        (model, processor), n=eval_n, seed=eval_seed, local_pooling="mean"
    )
    summary["evaluation"] = evaluation.to_dict()
    summary["evaluation_mean_pooled"] = mean_pooled.to_dict()
    (folder / "training.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    n_params = sum(p.numel() for p in model.parameters())
    write_model_card(folder, evaluation, summary, n_params, mean_pooled=mean_pooled)
    return evaluation


if __name__ == "__main__":
    raise SystemExit(main())
