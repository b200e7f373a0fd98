"""Benchmark: integrated gradients with ``n_steps="auto"`` against a fixed 50 steps.

On the shipped demo model, a sparse bottleneck fitted on fresh synthetic images, and
``--images`` further fresh images per seed, each image is explained (``ClassTarget`` of
melanoma through scorer and bottleneck) twice in the same process with the same auto-chosen
baseline:

* ``n_steps="auto"`` (the default: 32 steps, doubled until the completeness gap is at most
  5 % or 1024 steps), and
* a fixed ``n_steps=50`` (the library's old default).

Reported: the time ratio auto / fixed (total over all images), the share of images whose
attributions converged (relative completeness gap <= 0.05) under each setting, the share
whose attribution sum has the sign of ``f(x) - f(baseline)``, and the distribution of steps
"auto" used. Repeated over ``--seeds``; the spread across seeds is part of the output.

Usage::

    python benchmarks/bench_convergence.py --json
    python benchmarks/bench_convergence.py --seeds 1 2 --images 5 --json   # quick
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import numpy as np


def run_seed(seed: int, n_images: int, bottleneck_transform: str) -> dict[str, Any]:
    from conceptlens.concepts import SparseLinearBottleneck
    from conceptlens.demo import generate
    from conceptlens.errors import ConceptlensWarning
    from conceptlens.explain import ClassTarget, attribute
    from conceptlens.models import load_backbone
    from conceptlens.vocab import ConceptScorer, ConceptVocabulary

    backbone = load_backbone("demo", device="cpu")
    vocabulary = ConceptVocabulary.builtin("demo")
    vocabulary = vocabulary.subset([c for c in vocabulary.ids if c != "artifact:ink_marking"])
    scorer = ConceptScorer(backbone, vocabulary, calibration="sigmoid", progress=False)
    train = generate(240, seed=seed, size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = scorer.score({f"t{i}.png": im for i, im in enumerate(train.images)})
        model = SparseLinearBottleneck(cv=3, input_transform=bottleneck_transform).fit(
            scores, np.where(train.diagnoses == 1, "melanoma", "benign"))
    images = generate(n_images, seed=seed + 100_000, size=64).images
    rows = []
    for image in images:
        row: dict[str, Any] = {}
        for label, steps in (("auto", "auto"), ("fixed50", 50)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConceptlensWarning)
                started = time.perf_counter()
                a = attribute(scorer, image, ClassTarget("melanoma"), bottleneck=model, n_steps=steps)
                row[f"{label}_seconds"] = time.perf_counter() - started
            total = float(a.raw.sum())
            row[f"{label}_converged"] = bool(a.completeness_gap is not None and a.completeness_gap <= 0.05)
            row[f"{label}_sign_ok"] = bool(np.sign(total) == np.sign(a.input_value - a.baseline_value))
            row[f"{label}_steps"] = a.n_steps
            row["baseline"] = a.baseline
        rows.append(row)
    auto_s = sum(r["auto_seconds"] for r in rows)
    fixed_s = sum(r["fixed50_seconds"] for r in rows)
    steps = [r["auto_steps"] for r in rows]
    return {
        "seed": seed,
        "images": len(rows),
        "time_ratio_auto_over_fixed50": auto_s / fixed_s,
        "converged_share_auto": float(np.mean([r["auto_converged"] for r in rows])),
        "converged_share_fixed50": float(np.mean([r["fixed50_converged"] for r in rows])),
        "sign_ok_share_auto": float(np.mean([r["auto_sign_ok"] for r in rows])),
        "sign_ok_share_fixed50": float(np.mean([r["fixed50_sign_ok"] for r in rows])),
        "auto_steps": {str(k): int(v) for k, v in zip(*np.unique(steps, return_counts=True), strict=True)},
        "baselines": {str(k): int(v) for k, v in
                      zip(*np.unique([r["baseline"] for r in rows], return_counts=True), strict=True)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--transform", default="identity", choices=["identity", "logit"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    per_seed = [run_seed(seed, args.images, args.transform) for seed in args.seeds]
    summary: dict[str, Any] = {"benchmark": "convergence", "transform": args.transform, "per_seed": per_seed}
    for key in ("time_ratio_auto_over_fixed50", "converged_share_auto", "converged_share_fixed50",
                "sign_ok_share_auto", "sign_ok_share_fixed50"):
        values = [s[key] for s in per_seed]
        summary[key] = {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}
    print(json.dumps(summary, indent=1) if args.json else summary)


if __name__ == "__main__":
    main()
