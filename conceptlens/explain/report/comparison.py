"""The model-comparison report: which backbone annotates the concepts better, and how sure.

Built from a :class:`~conceptlens.vocab.comparison.BackboneComparison`: a findings-first
summary (the best model, the pooled AUC difference with its paired interval and p-value), one
table (per concept, each model's AUC with its interval, the best marked) and one plot (the same
numbers as dots with interval bars, pooled on top), then the paired tests and the provenance
of every model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from conceptlens.explain.report.builders import NOT_FOR_CLINICAL_USE
from conceptlens.explain.report.document import (
    Facts,
    Figures,
    Report,
    Summary,
    Table,
    interval,
    rounded,
)

__all__ = ["comparison_report", "plot_comparison"]

_POOLED = "pooled"


def plot_comparison(comparison: Any, ax: Any = None) -> Any:
    """Forest plot: per concept (pooled first) each model's AUC as a dot with its interval.

    Args:
        comparison: A :class:`~conceptlens.vocab.comparison.BackboneComparison`.
        ax: Matplotlib axes to draw on (default: a new figure).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    metrics = comparison.metrics
    concepts = [_POOLED] + [c for c in comparison.auc.index if c != _POOLED]
    names = dict(zip(metrics["concept"], metrics["name"], strict=False))
    models = comparison.models
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(concepts) * max(1, len(models)) ** 0.5 + 1.4))
    else:
        fig = ax.figure
    offsets = np.linspace(-0.25, 0.25, len(models)) if len(models) > 1 else np.zeros(1)
    colours = plt.get_cmap("tab10")
    for k, model in enumerate(models):
        rows = metrics[metrics["model"] == model].set_index("concept").reindex(concepts)
        y = np.arange(len(concepts)) + offsets[k]
        auc = rows["roc_auc"].to_numpy(dtype=float)
        low = rows["roc_auc_low"].to_numpy(dtype=float)
        high = rows["roc_auc_high"].to_numpy(dtype=float)
        errors = np.vstack([np.nan_to_num(auc - low), np.nan_to_num(high - auc)])
        ax.errorbar(auc, y, xerr=errors, fmt="o", color=colours(k % 10), label=model,
                    capsize=2, markersize=5)
    ax.axvline(0.5, color="0.6", linestyle=":", linewidth=1)
    ax.set_yticks(np.arange(len(concepts)))
    ax.set_yticklabels(["all concepts pooled" if c == _POOLED else str(names.get(c, c))
                        for c in concepts])
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("annotation ROC-AUC (dot) with bootstrap interval; 0.5 = chance")
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    ax.set_title("Concept annotation by model")
    fig.tight_layout()
    return fig


def _p_text(p: float, n_bootstrap: Any) -> str:
    """``"= 0.23"``, or ``"≤ 0.005"`` at the resolution limit of the bootstrap."""
    if n_bootstrap and p <= 2.0 / (int(n_bootstrap) + 1) + 1e-12:
        return f"≤ {rounded(p, 1)}"
    return f"= {rounded(p, 2)}"


def _auc_table(comparison: Any) -> pd.DataFrame:
    metrics = comparison.metrics
    concepts = [_POOLED] + [c for c in comparison.auc.index if c != _POOLED]
    rows = []
    for concept in concepts:
        part = metrics[metrics["concept"] == concept].set_index("model")
        first = part.iloc[0]
        row: dict[str, Any] = {
            "concept": "all concepts pooled" if concept == _POOLED else first["name"],
            "positives / negatives": f"{int(first['n_pos'])} / {int(first['n_neg'])}",
        }
        for model in comparison.models:
            r = part.loc[model]
            row[model] = interval(r["roc_auc"], r["roc_auc_low"], r["roc_auc_high"], digits=3)
        aucs = part.loc[comparison.models, "roc_auc"].astype(float)
        row["best"] = str(aucs.idxmax()) if aucs.notna().any() else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_report(
    comparison: Any,
    *,
    title: str = "Model comparison: concept annotation",
    notice: str | None = NOT_FOR_CLINICAL_USE,
    vocabulary: dict[str, Any] | None = None,
    max_rows: int = 60,
) -> Report:
    """Build the comparison report (HTML + JSON twin) of a backbone comparison.

    Args:
        comparison: A :class:`~conceptlens.vocab.comparison.BackboneComparison`.
        title: Page title.
        notice: Warning shown on top.
        vocabulary: Facts about the vocabulary (name, hash, size) for the provenance box.
        max_rows: Rows shown per table (the JSON holds all).

    Returns:
        The :class:`Report`; ``.save(out, "comparison")`` writes ``comparison.html`` and
        ``comparison.json``.
    """
    settings = comparison.settings
    pooled = comparison.pooled
    best = comparison.best
    tests = comparison.tests
    pooled_tests = tests[tests["concept"] == _POOLED]
    report = Report(title, kind="comparison", notice=notice,
                    meta={"comparison": comparison.to_dict()})

    level = f"{round(100 * float(settings.get('ci', 0.95)))}%"
    numbers = {f"pooled AUC, {m}": interval(r["roc_auc"], r["roc_auc_low"], r["roc_auc_high"], 3)
               for m, r in pooled.iterrows()}
    points = []
    values: dict[str, Any] = {"pooled": pooled.reset_index().to_dict(orient="records")}
    for t in pooled_tests.to_dict(orient="records"):
        if t["p_value"] is None or not np.isfinite(t["p_value"]):
            points.append(f"{t['model_a']} vs {t['model_b']}: the difference cannot be tested "
                          "(a class is missing).")
            continue
        better, worse = ((t["model_b"], t["model_a"]) if t["difference"] > 0
                         else (t["model_a"], t["model_b"]))
        significant = t["difference_low"] > 0 or t["difference_high"] < 0
        verdict = ("a difference the paired bootstrap supports" if significant else
                   "a difference the paired bootstrap does not distinguish from zero")
        points.append(
            f"{better} vs {worse}: pooled AUC higher by {rounded(abs(t['difference']), 2)} "
            f"({level} interval of {t['model_b']} − {t['model_a']}: "
            f"{rounded(t['difference_low'], 2)} to {rounded(t['difference_high'], 2)}, "
            f"p {_p_text(t['p_value'], settings.get('n_bootstrap'))}): {verdict}."
        )
    values["pooled tests"] = pooled_tests.to_dict(orient="records")
    n_concepts = len(comparison.auc) - 1
    wins = comparison.auc.drop(index=_POOLED).idxmax(axis=1).value_counts()
    points.append(
        "Per concept, the best model is " + ", ".join(
            f"{m} for {int(wins.get(m, 0))} of {n_concepts}" for m in comparison.models) + "."
    )
    report.add(Summary(
        "Findings",
        headline=(f"{best} annotates these concepts best: pooled AUC "
                  f"{rounded(pooled.loc[best, 'roc_auc'], 3)} on {settings.get('n_images')} "
                  f"images and {settings.get('n_labelled_pairs')} labelled (image, concept) pairs."),
        points=points, numbers=numbers, values=values,
    ))
    report.add(Table(
        "Annotation AUC per concept", frame=_auc_table(comparison), max_rows=max_rows,
        caption=(f"ROC-AUC of each model's concept scores against the labels, with {level} "
                 f"bootstrap intervals ({settings.get('n_bootstrap')} resamples of the images); "
                 "'pooled' ranks all labelled (image, concept) pairs together."),
    ))
    fig = plot_comparison(comparison)
    report.add(Figures.from_matplotlib(
        "AUC by concept and model", fig,
        caption="Dots: AUC; bars: bootstrap interval; pooled on top; dotted line: chance.",
        alts=["Forest plot of annotation AUC per concept for each model"],
        data={"auc": comparison.auc.reset_index().to_dict(orient="records")},
    ))
    import matplotlib.pyplot as plt

    plt.close(fig)
    shown = tests.copy()
    shown["concept"] = [("all concepts pooled" if c == _POOLED else n)
                        for c, n in zip(shown["concept"], shown["name"], strict=True)]
    shown = shown.drop(columns=["name"]).rename(columns={
        "model_a": "model A", "model_b": "model B", "auc_a": "AUC A", "auc_b": "AUC B",
        "difference": "B − A", "difference_low": "low", "difference_high": "high",
        "p_value": "p (paired bootstrap)"})
    report.add(Table(
        "Paired tests", frame=shown, max_rows=max_rows,
        caption=("Both models scored the same images; each bootstrap replicate resamples the "
                 "images once for both, so the interval of the difference accounts for the "
                 "pairing. p: two-sided, from the share of replicates on either side of zero."),
    ))
    for model in comparison.models:
        identity = dict(comparison.identities.get(model, {}))
        report.add(Facts(f"Model: {model}", facts={k: v for k, v in identity.items()
                                                   if v is not None},
                         collapsed=True, caption="Backbone identity (the feature-cache key)."))
    facts = {f"scoring {k}": v for k, v in (settings.get("scoring") or {}).items()}
    facts.update({k: v for k, v in settings.items() if k != "scoring"})
    for key, value in (vocabulary or {}).items():
        facts[f"vocabulary {key}"] = value
    report.add(Facts("Settings", facts=facts, collapsed=True,
                     caption="What produced these numbers (for reproducing them)."))
    return report
