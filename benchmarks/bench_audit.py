"""Time and memory of ``audit`` on a large synthetic score table, serial vs ``n_jobs``.

The baseline is the serial audit (``n_jobs=None``) on the same table in the same process;
each setting's peak memory is measured in a fresh subprocess (peak RSS growth over the
process after the table is built). Scores: ``n`` rows x ``p`` normal concepts (float32, as
the scorer stores them), 5 informative, decisions that follow the labels 90 % of the time.

    python benchmarks/bench_audit.py [--n 100000] [--p 200] [--n-jobs 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd


def _table(n: int, p: int) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, p)).astype(np.float32)
    logit = X[:, :5] @ np.array([1.5, -1.0, 0.8, 0.6, -0.5]) + 0.3 * rng.normal(size=n)
    labels = (logit > 0).astype(int)
    decisions = np.where(rng.uniform(size=n) < 0.9, labels, 1 - labels)
    index = [f"i{i}" for i in range(n)]
    scores = pd.DataFrame(X, columns=[f"c{i}" for i in range(p)], index=index)
    return scores, pd.Series(decisions, index=index), pd.Series(labels, index=index)


def _one(n: int, p: int, n_jobs: int | None) -> dict[str, float]:
    from conceptlens.concepts import audit

    scores, decisions, labels = _table(n, p)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    audit(scores, decisions, labels, n_jobs=n_jobs)
    seconds = time.perf_counter() - start
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"seconds": seconds, "peak_rss_growth_mb": growth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--p", type=int, default=200)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:  # one setting, in its own process
        print(json.dumps(_one(args.n, args.p, args.child or None)))
        return
    runs = {}
    for label, jobs in (("serial", 0), (f"n_jobs={args.n_jobs}", args.n_jobs)):
        out = subprocess.run(
            [sys.executable, __file__, "--n", str(args.n), "--p", str(args.p), "--child", str(jobs)],
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        runs[label] = json.loads(out)
    parallel = runs[f"n_jobs={args.n_jobs}"]
    result = {
        "n": args.n, "p": args.p, "runs": runs,
        "time_ratio_parallel_vs_serial": parallel["seconds"] / runs["serial"]["seconds"],
        "memory_ratio_parallel_vs_serial": (
            parallel["peak_rss_growth_mb"] / max(runs["serial"]["peak_rss_growth_mb"], 1e-9)
        ),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for label, run in runs.items():
            print(f"{label:>10}: {run['seconds']:.1f} s, peak RSS +{run['peak_rss_growth_mb']:.0f} MB")
        print(f"time ratio {result['time_ratio_parallel_vs_serial']:.2f}x")


if __name__ == "__main__":
    main()
