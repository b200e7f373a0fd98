"""The demo model's model card (README.md of its weights folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conceptlens.demo.evaluate import DemoEvaluation

__all__ = ["write_model_card"]

_TEMPLATE = """\
# conceptlens demo model

**Trained on synthetic images only. Not a medical device; not for clinical use.**

A small model of the ConceptCLIP architecture (SigLIP vision tower, BERT text tower,
token heads for region-concept alignment) trained from scratch on images drawn by
`conceptlens.demo.generate`: dermoscopy-like pigmented lesions whose 7-point-checklist
criteria and an ink-marking artifact are drawn as localised structures with known masks.
It exists so that `conceptlens` runs its whole pipeline offline (`load_backbone("demo")`,
`conceptlens demo`) and so that the library's claims can be checked against ground truth.
It knows nothing about real skin lesions.

## Vocabulary
`ConceptVocabulary.builtin("demo")` (file `conceptlens/vocab/data/demo.yaml`): the seven
criteria (`derm7pt:*`, 2 points for each major, 1 for each minor criterion; melanoma when the
score is 3 or more) and `artifact:ink_marking`.

## Training
- data: {n_train} generated 64 px images with captions naming their concepts in varied
  wordings (seed {seed}); random horizontal flips
- architecture: vision {vision}; text {text}; {n_params:,} parameters
- losses: global SigLIP sigmoid loss (a pair is positive when the image shows every concept the
  caption names; a caption naming none matches every image) + {local_weight} x local region-concept loss (concept-mention token-span mean
  vs. max over patches, sigmoid loss against every image of the batch, labelled by the images'
  true concepts; the modality word "dermatoscopy" is a mention every image matches){patch_line}
- optimiser: AdamW, lr {lr} (warm-up {warmup_steps}, cosine), {steps} steps of {batch_size},
  {threads} CPU thread(s); {wall_time:.0f} s wall time on the build machine
- reproduce: `python -m conceptlens.demo.train --out DIR --seed {seed}`; the same seed and
  thread count give the same weights on the same CPU and torch build (other CPUs: equal up to
  floating-point summation order)

## Measured quality
On a fresh sample of {n_eval} images drawn with seed {eval_seed} (training never used it).
Annotation: prompt `"{prompt}"` vs. `"{reference}"`, {combination}, local score
{pooling}-pooled over the {grid} patch grid. Pointing game: the maximum of the concept map
`concept_logit_scale * cos(patch, concept)` lies on a patch overlapping the concept's mask
(tolerance {tolerance} patches), over images that show the concept. Bottleneck: {bottleneck}.

{table}

Local score mean-pooled over patches instead (the authors' Derm7pt recipe): per-concept
ROC-AUC {mean_auc}.
"""


def write_model_card(
    folder: str | Path,
    evaluation: DemoEvaluation,
    history: dict[str, Any],
    n_params: int,
    mean_pooled: DemoEvaluation | None = None,
) -> Path:
    """Write ``README.md`` (the model card) into the demo model's folder.

    Args:
        folder: The weights folder.
        evaluation: Quality measured on a held-out sample.
        history: The training history (its ``config`` and ``wall_time_s``).
        n_params: Number of model parameters.
        mean_pooled: The same evaluation with mean-pooled local scores, if measured.

    Returns:
        Path of the card.
    """
    config = history["config"]
    mean_auc = "not measured"
    if mean_pooled is not None:
        mean_auc = ", ".join(
            f"{c.split(':')[1]} {v:.3f}" for c, v in mean_pooled.concept_auc.items()
        )
    settings = evaluation.settings
    patch_line = ""
    if config.get("patch_weight", 0) > 0:
        patch_line = (
            f"\n  + {config['patch_weight']} x a per-patch sigmoid loss of the local score against the"
            "\n  generator's concept masks (an addition to ConceptCLIP's recipe: it makes the concept"
            "\n  maps point reliably, so the demo can check the library's map code against ground truth)"
        )
    text = _TEMPLATE.format(
        patch_line=patch_line,
        n_train=config["n_train"],
        seed=config["seed"],
        vision=config["vision_config"],
        text=config["text_config"],
        n_params=n_params,
        local_weight=config["local_weight"],
        lr=config["lr"],
        warmup_steps=config["warmup_steps"],
        steps=config["steps"],
        batch_size=config["batch_size"],
        threads=config["threads"],
        wall_time=history["wall_time_s"],
        n_eval=evaluation.n,
        eval_seed=evaluation.seed,
        prompt=settings["prompt"],
        reference=settings["reference_prompt"],
        combination=settings["combination"],
        pooling=settings["local_pooling"],
        grid="x".join(str(g) for g in settings["grid_size"]),
        tolerance=settings["pointing_tolerance_patches"],
        bottleneck=settings["bottleneck"],
        table=evaluation.to_markdown(),
        mean_auc=mean_auc,
    )
    path = Path(folder) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
