"""Benchmark: concept maps from one forward pass vs captum IG per concept; IG peak memory.

Runs on the ConceptCLIP-architecture reference model (random weights; ``--size full`` has the
released model's dimensions: 384 px, ViT so400m/14, 729 patch tokens) on one image, so the
numbers are ratios between methods on the same machine, not absolute claims.

1. **Maps for K concepts**: :func:`conceptlens.explain.concept_maps` (the scorer's patch maps:
   one image-tower forward for all K concepts) against
   :func:`conceptlens.explain.attribute` with integrated gradients, once per concept
   (``n_steps`` forward + backward passes each). The text tower's work (the scorer's text
   bank) is done once before timing and is excluded from both.
2. **Peak memory of IG with and without internal batching**: each setting runs in a fresh
   subprocess; after loading the model and one warm-up scoring pass the kernel's peak-RSS
   mark is reset (Linux: ``5`` into ``/proc/self/clear_refs``), and the number reported is
   the peak resident set size during the ``attribute`` call (``VmHWM``) minus the resident
   size before it. ``tracemalloc`` does not see torch's CPU allocations; the RSS does (every
   resident page, so an upper bound on the tensors' own footprint). Without the reset
   (non-Linux) the growth of ``ru_maxrss`` is reported, which hides anything below the
   model-loading peak.

Usage::

    python benchmarks/bench_explain.py --json                       # full size, float32, CPU
    python benchmarks/bench_explain.py --size tiny --steps 8 --json # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

CONCEPT_NAMES = [
    "pigment network", "streaks", "blue whitish veil", "dots and globules",
    "regression structures", "vascular structures", "irregular border", "milia like cysts",
]


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: ``5`` into ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    """Peak resident set size: ``VmHWM`` (resettable) on Linux, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _peak_rss_mib()


def _setup(size: str, dtype: str, n_concepts: int) -> tuple[Any, Any, Any]:
    from PIL import Image

    from conceptlens.models import create_reference_model
    from conceptlens.models.conceptclip import ConceptCLIPBackbone
    from conceptlens.vocab.scorer import ConceptScorer
    from conceptlens.vocab.vocabulary import ConceptVocabulary

    torch.manual_seed(0)
    model, processor = create_reference_model(size)
    model = model.to(getattr(torch, dtype))
    backbone = ConceptCLIPBackbone(model, processor, model_id=f"reference-{size}")
    vocabulary = ConceptVocabulary.from_names(CONCEPT_NAMES[:n_concepts], name="bench")
    scorer = ConceptScorer(backbone, vocabulary, progress=False)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    scorer.text_bank()  # text tower work, excluded from the timings
    return backbone, scorer, image


def _time(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    from conceptlens.explain import attribute, concept_maps

    _, scorer, image = _setup(args.size, args.dtype, args.concepts)
    concept_maps(scorer, image)  # warm-up
    maps_s, maps = _time(lambda: concept_maps(scorer, image))
    ig_s, _ = _time(lambda: [
        attribute(scorer, image, cid, method="integrated_gradients",
                  n_steps=args.steps, internal_batch_size=args.batch)
        for cid in scorer.concept_ids
    ])
    return {
        "concepts": len(maps.concept_ids),
        "concept_maps_s": round(maps_s, 3),
        "ig_per_concept_total_s": round(ig_s, 3),
        "ig_n_steps": args.steps,
        "ig_internal_batch_size": args.batch,
        "speedup_maps_vs_ig": round(ig_s / maps_s, 1),
    }


def run_memory_child(args: argparse.Namespace) -> dict[str, Any]:
    from conceptlens.explain import attribute

    backbone, scorer, image = _setup(args.size, args.dtype, 1)
    with torch.no_grad():
        scorer.score_tensor(backbone.preprocess([image]))
    reset = _reset_peak_rss()
    before = _current_rss_mib() if reset else _peak_rss_mib()
    batch = None if args.child_batch == 0 else args.child_batch
    seconds, _ = _time(lambda: attribute(scorer, image, scorer.concept_ids[0],
                                         n_steps=args.steps, internal_batch_size=batch))
    after = _peak_rss_mib()
    return {"internal_batch_size": batch, "rss_before_mib": round(before, 1),
            "peak_rss_during_mib": round(after, 1), "ig_peak_growth_mib": round(after - before, 1),
            "peak_mark_reset": reset, "seconds": round(seconds, 2)}


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    results = {}
    for batch in (0, args.batch):
        cmd = [sys.executable, __file__, "--size", args.size, "--dtype", args.dtype,
               "--steps", str(args.steps), "--child-batch", str(batch)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results["unbatched" if batch == 0 else "batched"] = json.loads(out.stdout.strip().splitlines()[-1])
    unbatched = results["unbatched"]["ig_peak_growth_mib"]
    batched = results["batched"]["ig_peak_growth_mib"]
    results["memory_ratio_unbatched_vs_batched"] = round(unbatched / batched, 2) if batched > 0 else None
    results["method"] = ("growth of peak RSS during attribute() over the RSS before it, fresh "
                         "subprocess per setting (Linux: VmHWM reset via /proc/self/clear_refs)")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--concepts", type=int, default=4, help="K concepts to map / attribute")
    parser.add_argument("--steps", type=int, default=4, help="IG n_steps")
    parser.add_argument("--batch", type=int, default=1, help="internal_batch_size of the batched IG run")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child-batch", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    if args.child_batch is not None:
        print(json.dumps(run_memory_child(args)))
        return
    report: dict[str, Any] = {"size": args.size, "dtype": args.dtype, "device": "cpu",
                              "threads": torch.get_num_threads()}
    if not args.skip_speed:
        report["maps_vs_ig"] = run_speed(args)
    if not args.skip_memory:
        report["ig_memory"] = run_memory(args)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
