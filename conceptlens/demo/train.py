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
processor and tokenizer files (safetensors), the model's remote code
(:func:`~conceptlens.demo.weights_io.save_demo_model`) and ``training.json``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conceptlens.demo.card import write_model_card
from conceptlens.demo.evaluate import DemoEvaluation, evaluate_demo_model
from conceptlens.demo.generator import (
    CONCEPT_IDS,
    SyntheticDermoscopy,
    caption_words,
    generate,
)
from conceptlens.demo.weights_io import save_demo_model
from conceptlens.models.reference.factory import default_words
from conceptlens.train.core import (
    ConceptTrainingData,
    TrainingConfig,
    batch_losses,
    caption_matches,
    pixels_from_uint8,
    train_concept_model,
)
from conceptlens.train.core import encode_captions as _encode_captions

__all__ = [
    "EVALUATION_SEED",
    "TrainingConfig",
    "batch_losses",
    "caption_matches",
    "encode_captions",
    "finish_model_folder",
    "main",
    "pixels_from_uint8",
    "train_demo_model",
]

_MODALITY_WORD = re.compile(r"\b(dermatoscopy|dermoscopy|dermoscopic)\b", re.IGNORECASE)

EVALUATION_SEED = 20240601
"""Seed of the held-out sample the model card's numbers come from (never used in training)."""


def encode_captions(
    tokenizer: Any, captions: Sequence[str], mentions: Sequence[Sequence[tuple[int, int, int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise demo captions: :func:`conceptlens.train.encode_captions` with the 8 demo
    concepts and the dermoscopy modality words (channel 8: ``dermatoscopy``, ``dermoscopy``,
    ``dermoscopic``), so the spans are ``(n, 9, T)``."""
    return _encode_captions(tokenizer, captions, mentions, len(CONCEPT_IDS), _MODALITY_WORD)


def _tokenizer_words() -> list[str]:
    return sorted(set(default_words()) | set(caption_words()))


def train_demo_model(
    config: TrainingConfig | None = None,
    *,
    data: SyntheticDermoscopy | None = None,
    progress: bool = True,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Train the reference ConceptCLIP architecture on synthetic dermoscopy captions.

    A thin layer over :func:`conceptlens.train.train_concept_model`: the generator's own
    captions and masks, the dermoscopy modality words and the demo's tokenizer words; the
    same calls in the same order as before the training moved there, so a run is
    bit-identical to the one the shipped weights came from.

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
    if data is None:
        data = generate(
            config.n_train, seed=config.seed, size=config.image_size, masks=config.patch_weight > 0
        )
    if data.images.shape[1] != config.image_size:
        raise ValueError(
            f"data images are {data.images.shape[1]} px but config.image_size is "
            f"{config.image_size}"
        )
    if config.patch_weight > 0 and data.masks is None:
        raise ValueError("TrainingConfig.patch_weight > 0 needs data generated with masks")
    training_data = ConceptTrainingData(
        images=data.images, concepts=data.concepts, concept_ids=list(data.concept_ids),
        captions=list(data.captions), mentions=[list(m) for m in data.mentions], masks=data.masks,
    )
    return train_concept_model(
        training_data, config, modality=_MODALITY_WORD, tokenizer_words=_tokenizer_words(),
        progress=progress,
    )


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
    save_demo_model(model, processor, args.out)
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
