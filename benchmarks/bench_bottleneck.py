"""Benchmark: the sparse bottleneck's regularisation path and the association bottleneck.

All timings run in one process on the same synthetic data (CLIP-like concept scores: a small
common offset and spread, labels from a sparse linear rule over 15 of the concepts), so the
numbers to read are ratios, not absolute claims.

1. **Sparse path**: ``SparseLinearBottleneck(Cs=20, cv=None, max_concepts=15)``: a grid of
   20 penalties from the all-zero model up, each fit warm-started from the previous one (the
   path stops once a model exceeds 15 concepts per class), vs **one** plain scikit-learn L1
   logistic regression (SAGA, ``tol=1e-4``, up to 1,000 epochs, cold start) at the ``C`` the
   path selected and
   at scikit-learn's default ``C=1``. Also reported: the same penalties fitted cold (no warm
   start), unless ``--skip-cold``.
2. **Association bottleneck**: training time (full-batch Adam) to reach the sparse model's
   held-out accuracy, doubling the number of epochs until it does.
3. **Cross-validated path vs scikit-learn** (``--vs-sklearn``, issue 13): the full
   ``SparseLinearBottleneck`` fit (path + 5-fold CV + selection) vs
   ``LogisticRegressionCV(l1_ratios=(1,), solver="saga", cv=5)`` on standardised features,
   on scikit-learn's breast-cancer and digits sets and a 200-concept synthetic set (5,000
   rows, 3 classes), 70/30 stratified split; ratio = ours / scikit-learn per repeat (same
   process, alternating order), with held-out accuracies. Two configurations of ours: the
   library's defaults as they are (20 penalties over three decades, the proximal-Newton
   ``"newton-cd"`` solver, ``tol=1e-4``, early stop after 4 penalties without CV gain) and
   scikit-learn's grid size (``Cs=10``). scikit-learn runs with its defaults (10 penalties
   over 1e-4..1e4, 100 SAGA epochs, accuracy scoring).

Both run single-threaded (``torch.set_num_threads(1)``, SAGA is single-threaded anyway) so the
comparison is like for like and stable on a shared machine; ``--threads`` changes that.

Usage::

    python benchmarks/bench_bottleneck.py --json
    python benchmarks/bench_bottleneck.py --n-samples 2000 --n-concepts 50 --json   # quick
    python benchmarks/bench_bottleneck.py --vs-sklearn --repeats 3 --json            # issue 13
"""

from __future__ import annotations

import argparse
import functools
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
                                      max_iter=1000, random_state=0).fit(Z, ytr)

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


def sklearn_sets(seed: int = 0) -> dict[str, tuple]:
    """``name -> (X_train, X_test, y_train, y_test)`` for the comparison with scikit-learn."""
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.model_selection import train_test_split

    out = {}
    for name, loader in (("breast_cancer", load_breast_cancer), ("digits", load_digits)):
        X, y = loader(return_X_y=True)
        out[name] = tuple(train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y))
    d = make_data(5000, 200, seed=seed)
    out["synthetic_200"] = (d["X_train"], d["X_test"], d["y_train"], d["y_test"])
    return out


def bench_vs_sklearn(repeats: int, n_jobs: int | None = None) -> dict[str, Any]:
    """The CV path vs ``LogisticRegressionCV(saga)``: ratios per repeat and their spread."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    configs = {
        "default": {},
        "sklearn_grid_size": {"Cs": 10},
    }
    result: dict[str, Any] = {}
    for name, (Xtr, Xte, ytr, yte) in sklearn_sets().items():
        scaler = StandardScaler().fit(Xtr)
        Ztr, Zte = scaler.transform(Xtr), scaler.transform(Xte)
        rows: dict[str, Any] = {}
        for label, params in configs.items():
            ratios, ours_s, theirs_s = [], [], []
            for r in range(repeats):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ours = SparseLinearBottleneck(n_jobs=n_jobs, **params)
                    theirs = LogisticRegressionCV(l1_ratios=(1,), solver="saga", cv=5,
                                                  random_state=0, n_jobs=n_jobs)
                    first = functools.partial(ours.fit, Xtr, ytr)
                    second = functools.partial(theirs.fit, Ztr, ytr)
                    if r % 2:  # alternate the order against drift on a shared machine
                        t_b, _ = _timed(second)
                        t_a, _ = _timed(first)
                    else:
                        t_a, _ = _timed(first)
                        t_b, _ = _timed(second)
                ours_s.append(t_a)
                theirs_s.append(t_b)
                ratios.append(t_a / t_b)
            rows[label] = {
                "params": params,
                "ratio_median": float(np.median(ratios)),
                "ratio_min": float(np.min(ratios)),
                "ratio_max": float(np.max(ratios)),
                "ratios": ratios,
                "ours_seconds": ours_s,
                "sklearn_seconds": theirs_s,
                "ours_accuracy": float(ours.score(Xte, yte)),
                "sklearn_accuracy": float(theirs.score(Zte, yte)),
                "accuracy_gap": float(ours.score(Xte, yte) - theirs.score(Zte, yte)),
                "ours_n_concepts": int((ours.coef_ != 0).any(axis=0).sum()),
                "sklearn_n_concepts": int((theirs.coef_ != 0).any(axis=0).sum()),
                "ours_n_penalties_fitted": int(len(ours.Cs_)),
            }
        result[name] = {"shape": list(Xtr.shape), **rows}
    return result


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
    parser.add_argument("--vs-sklearn", action="store_true",
                        help="only the CV path vs LogisticRegressionCV(saga) comparison")
    parser.add_argument("--repeats", type=int, default=3, help="repeats for --vs-sklearn")
    parser.add_argument("--n-jobs", type=int, default=None, help="n_jobs of both, --vs-sklearn")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.vs_sklearn:
        result = {"vs_sklearn": bench_vs_sklearn(args.repeats, args.n_jobs),
                  "n_jobs": args.n_jobs, "repeats": args.repeats}
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            for name, rows in result["vs_sklearn"].items():
                for label, row in rows.items():
                    if label == "shape":
                        continue
                    print(f"{name} {label}: ratio {row['ratio_median']:.2f} "
                          f"[{row['ratio_min']:.2f}, {row['ratio_max']:.2f}], accuracy "
                          f"{row['ours_accuracy']:.3f} vs {row['sklearn_accuracy']:.3f}")
        return result

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
