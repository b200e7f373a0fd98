"""Benchmark: ConceptScorer vs the authors' per-(image, concept) procedure, and cached rescoring.

Runs on the ConceptCLIP-architecture reference model (random weights; ``--size full`` has the
released model's dimensions) in one process, so the numbers are ratios between methods on the
same machine, not absolute claims.

1. **Per-pair baseline** (the authors' Derm7pt script): for every concept, tokenise the
   (reference, positive) prompt pair; for every image, preprocess it and run the whole model,
   image tower and text tower, on that pair; mix global and local paired softmaxes.
2. **ConceptScorer** with the ``"derm7pt"`` preset, cold (no feature cache, text memo
   cleared): one image-tower pass per image, one text-tower pass per distinct prompt.
3. **Rescoring**: score with a feature cache (cold, fills it), then score the same images with
   a *new* vocabulary from the cache (no image-tower pass).

Usage::

    python benchmarks/bench_scorer.py --json                     # full size, bfloat16, CPU
    python benchmarks/bench_scorer.py --size tiny --dtype float32 --json   # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from conceptlens.models import ConceptCLIPBackbone, create_reference_model
from conceptlens.vocab.concept import Concept
from conceptlens.vocab.scorer import ConceptScorer, clear_text_memo
from conceptlens.vocab.vocabulary import ConceptVocabulary

CONCEPT_NAMES = [
    "pigment network", "streaks", "pigmentation", "regression structures",
    "dots and globules", "blue whitish veil", "vascular structures", "atypical pattern",
    "irregular border", "dark area", "brown globules", "white structures",
    "milia like cysts", "comedo like openings", "fissures", "red areas",
]


def _images(n: int, seed: int = 0) -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (300 + 10 * i, 400, 3), dtype=np.uint8)) for i in range(n)]


def _vocabulary(names: list[str], tag: str) -> ConceptVocabulary:
    return ConceptVocabulary([Concept(f"{tag}:{i}", name) for i, name in enumerate(names)],
                             name=tag, modality="dermoscopy")


@torch.no_grad()
def per_pair_baseline(model: Any, processor: Any, images: list[Any], names: list[str]) -> np.ndarray:
    """The authors' Derm7pt procedure: one full forward per (image, concept) pair."""
    dtype = next(model.parameters()).dtype
    out = np.zeros((len(images), len(names)))
    for k, concept in enumerate(names):
        texts = processor(text=["This is dermatoscopy.", f"This is dermatoscopy of {concept}."],
                          return_tensors="pt")["input_ids"]
        for i, image in enumerate(images):
            pixels = processor(images=[image], return_tensors="pt")["pixel_values"].to(dtype)
            res = model(pixel_values=pixels, input_ids=texts)
            img = F.normalize(res["image_features"], dim=-1)
            txt = F.normalize(res["text_features"], dim=-1)
            glob = torch.softmax(res["logit_scale"] * img @ txt.t(), dim=-1)
            tok = F.normalize(torch.stack([res["text_token_features"][0][-1], res["text_token_features"][1][-1]]), dim=-1)
            patches = F.normalize(res["image_token_features"], dim=-1)
            loc = torch.softmax((res["concept_logit_scale"] * patches @ tok.t()).mean(dim=1), dim=-1)
            out[i, k] = float((0.5 * glob + 0.5 * loc)[0, 1])
    return out


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--concepts", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if max(args.concepts) > len(CONCEPT_NAMES) // 2:
        parser.error(f"at most {len(CONCEPT_NAMES) // 2} concepts (half are kept for the rescoring vocabulary)")
    if args.threads:
        torch.set_num_threads(args.threads)

    build_s, (model, processor) = _timed(lambda: create_reference_model(args.size, seed=0))
    model = model.to(getattr(torch, args.dtype)).eval()
    backbone = ConceptCLIPBackbone(model, processor, model_id=f"reference-{args.size}", weights_hash="bench")
    images = _images(args.images)
    per_pair_baseline(model, processor, images[:1], CONCEPT_NAMES[:1])  # warm-up, not timed

    rows = []
    for n in args.concepts:
        names = CONCEPT_NAMES[:n]
        base_s, base = _timed(lambda names=names: per_pair_baseline(model, processor, images, names))
        clear_text_memo()
        scorer = ConceptScorer.from_preset("derm7pt", backbone, _vocabulary(names, "a"), progress=False)
        fast_s, scores = _timed(lambda scorer=scorer: scorer.score(images))
        rows.append({
            "concepts": n,
            "images": len(images),
            "per_pair_s": round(base_s, 3),
            "scorer_s": round(fast_s, 3),
            "speedup": round(base_s / fast_s, 2),
            "max_abs_diff": float(np.abs(scores.to_numpy() - base).max()),
        })
        print(f"done: {rows[-1]}", file=sys.stderr, flush=True)

    n = max(args.concepts)
    with tempfile.TemporaryDirectory() as folder:
        clear_text_memo()
        first = ConceptScorer.from_preset("derm7pt", backbone, _vocabulary(CONCEPT_NAMES[:n], "a"),
                                          cache_dir=folder, progress=False)
        cold_s, _ = _timed(lambda: first.score(images))
        second = first.with_vocabulary(_vocabulary(CONCEPT_NAMES[n:2 * n], "b"))
        warm_s, _ = _timed(lambda: second.score(images))  # includes encoding the new prompts
        again_s, _ = _timed(lambda: second.with_config(alpha=0.8).score(images))  # text memo hit too
    result = {
        "benchmark": "bench_scorer",
        "model": f"reference-{args.size}",
        "dtype": args.dtype,
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "model_build_s": round(build_s, 2),
        "per_pair_vs_scorer": rows,
        "rescoring": {
            "concepts": n,
            "images": len(images),
            "cold_s": round(cold_s, 3),
            "new_vocabulary_from_cache_s": round(warm_s, 3),
            "new_alpha_from_cache_s": round(again_s, 3),
            "speedup_new_vocabulary": round(cold_s / warm_s, 2),
            "speedup_new_alpha": round(cold_s / again_s, 2),
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        for row in rows:
            print(f"{row['concepts']:>3} concepts x {row['images']} images: per-pair {row['per_pair_s']:.2f} s, "
                  f"scorer {row['scorer_s']:.2f} s, speedup x{row['speedup']} (max |diff| {row['max_abs_diff']:.2e})")
        r = result["rescoring"]
        print(f"rescoring {r['concepts']} concepts: cold {r['cold_s']:.2f} s, new vocabulary from cache "
              f"{r['new_vocabulary_from_cache_s']:.2f} s (x{r['speedup_new_vocabulary']}), new alpha "
              f"{r['new_alpha_from_cache_s']:.3f} s (x{r['speedup_new_alpha']})")
    return result


if __name__ == "__main__":
    main()
