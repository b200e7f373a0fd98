"""Speed of the synthetic dermoscopy generator.

Reports images per second of ``conceptlens.demo.generate`` (with and without masks) and the
ratio of its time to a baseline run in the same process: drawing the same number of uniform
random ``uint8`` images with numpy (the cost floor of producing the pixels at all).

    python benchmarks/bench_generator.py [--n 2000] [--size 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from conceptlens.demo import generate


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    baseline = _time(
        lambda: rng.integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8),
        args.repeats,
    )
    with_masks = _time(lambda: generate(args.n, seed=0, size=args.size), args.repeats)
    without_masks = _time(lambda: generate(args.n, seed=0, size=args.size, masks=False), args.repeats)
    result = {
        "n": args.n,
        "size": args.size,
        "images_per_s_with_masks": args.n / with_masks,
        "images_per_s_without_masks": args.n / without_masks,
        "ratio_with_masks_vs_random_uint8": with_masks / baseline,
        "ratio_without_masks_vs_random_uint8": without_masks / baseline,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.3g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
