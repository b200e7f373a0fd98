"""Benchmark: the sparse bottleneck's regularisation path and the association bottleneck.

All timings run in one process on the same synthetic data (CLIP-like concept scores: a small
common offset and spread, labels from a sparse linear rule over 15 of the concepts), so the
numbers to read are ratios, not absolute claims.

1. **Sparse path**: ``SparseLinearBottleneck(Cs=20, cv=None, max_concepts=15)``: a grid of
   20 penalties from the all-zero model up, each fit warm-started from the previous one (the
   path stops once a model exceeds 15 concepts per class), vs **one** plain scikit-learn L1
   logistic regression (SAGA, same tolerance, cold start) at the ``C`` the path selected and
   at scikit-learn's default ``C=1``. Also reported: the same penalties fitted cold (no warm
   start), unless ``--skip-cold``.
2. **Association bottleneck**: training time (full-batch Adam) to reach the sparse model's
   held-out accuracy, doubling the number of epochs until it does.

Both run single-threaded (``torch.set_num_threads(1)``, SAGA is single-threaded anyway) so the
comparison is like for like and stable on a shared machine; ``--threads`` changes that.

Usage::

    python benchmarks/bench_bottleneck.py --json
    python benchmarks/bench_bottleneck.py --n-samples 2000 --n-concepts 50 --json   # quick
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from conceptlens.concepts import AssociationBottleneck, SparseLinearBottleneck


def make_data(n: int, p: int, n_classes: int = 3, seed: int = 0) -> dict[str, Any]:
    """Scores ``0.25 + 0.03 z`` and labels from a sparse linear rule (5 concepts per class)."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, p))
    W = np.zeros((n_classes, p))
    for k in range(n_classes):
        support = rng.choice(p, size=5, replace=False)
        W[k, support] = rng.choice([-1.0, 1.0], size=5) * rng.uniform(1.0, 2.0, size=5)
    logits = Z @ W.T + rng.gumbel(size=(n, n_classes)) * 0.5
    y = np.argmax(logits, axis=1)
    X = 0.25 + 0.03 * Z
    cut = int(0.8 * n)
    return {"X_train": X[:cut], "y_train": y[:cut], "X_test": X[cut:], "y_test": y[cut:]}


def _timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_sparse(data: dict[str, Any], n_cs: int, cold: bool) -> dict[str, Any]:
    Xtr, ytr = data["X_train"], data["y_train"]
    model = SparseLinearBottleneck(Cs=n_cs, cv=None, max_concepts=15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t_path, _ = _timed(lambda: model.fit(Xtr, ytr))
        Z = (Xtr - model.mean_) / model.scale_

        def plain(c: float) -> LogisticRegression:
            return LogisticRegression(C=c, l1_ratio=1.0, solver="saga", tol=model.tol,
                                      max_iter=model.max_iter, random_state=0).fit(Z, ytr)

        t_single, single = _timed(lambda: plain(model.C_))
        t_default, _ = _timed(lambda: plain(1.0))
        t_cold = None
        if cold:
            t_cold, _ = _timed(lambda: [plain(float(c)) for c in model.Cs_])  # same penalties
    Zte = (data["X_test"] - model.mean_) / model.scale_
    return {
        "n_penalties": n_cs,
        "path_seconds": t_path,
        "single_fit_seconds": t_single,
        "path_over_single_fit": t_path / t_single,
        "single_fit_default_C_seconds": t_default,
        "path_over_single_fit_default_C": t_path / t_default,
        "n_fitted_penalties": len(model.Cs_),
        "cold_path_seconds": t_cold,
        "cold_over_warm_path": (t_cold / t_path) if t_cold else None,
        "selected_C": model.C_,
        "concepts_per_class": int(model.path_.loc[model.best_index_, "max_concepts_per_class"]),
        "path_test_accuracy": float(model.score(data["X_test"], data["y_test"])),
        "single_fit_test_accuracy": float(single.score(Zte, data["y_test"])),
    }


def bench_association(data: dict[str, Any], target: float, max_epochs: int) -> dict[str, Any]:
    epochs, tried = 25, []
    while True:
        model = AssociationBottleneck(n_epochs=epochs, lr=0.05)
        seconds, _ = _timed(lambda m=model: m.fit(data["X_train"], data["y_train"]))
        acc = float(model.score(data["X_test"], data["y_test"]))
        tried.append({"epochs": epochs, "seconds": seconds, "test_accuracy": acc})
        if acc >= target or epochs >= max_epochs:
            break
        epochs *= 2
    return {
        "target_accuracy": target,
        "reached": acc >= target,
        "epochs": epochs,
        "seconds": seconds,
        "test_accuracy": acc,
        "seconds_per_epoch": seconds / epochs,
        "tries": tried,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--n-concepts", type=int, default=200)
    parser.add_argument("--n-penalties", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="association target = sparse accuracy - tolerance")
    parser.add_argument("--max-epochs", type=int, default=1600)
    parser.add_argument("--skip-cold", action="store_true", help="skip the 20 cold-start fits")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = make_data(args.n_samples, args.n_concepts)
    sparse = bench_sparse(data, args.n_penalties, cold=not args.skip_cold)
    assoc = bench_association(data, sparse["path_test_accuracy"] - args.tolerance, args.max_epochs)
    result = {
        "shape": [args.n_samples, args.n_concepts],
        "torch_threads": args.threads,
        "sparse": sparse,
        "association": assoc,
        "association_over_path": assoc["seconds"] / sparse["path_seconds"],
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        s, a = sparse, assoc
        print(f"sparse path ({s['n_penalties']} penalties): {s['path_seconds']:.2f} s = "
              f"{s['path_over_single_fit']:.2f} x one plain L1 fit at the selected C "
              f"({s['single_fit_seconds']:.2f} s), {s['path_over_single_fit_default_C']:.2f} x one at "
              f"C=1 ({s['single_fit_default_C_seconds']:.2f} s); "
              f"test accuracy {s['path_test_accuracy']:.3f}")
        if s["cold_path_seconds"]:
            print(f"same path cold: {s['cold_path_seconds']:.2f} s ({s['cold_over_warm_path']:.2f} x warm)")
        print(f"association: {a['seconds']:.2f} s, {a['epochs']} epochs to accuracy "
              f"{a['test_accuracy']:.3f} (target {a['target_accuracy']:.3f}, reached={a['reached']})")
    return result


if __name__ == "__main__":
    main()
