"""The data-set report: what drives each class across a data set, and where the model errs.

Built from concept scores, a fitted concept bottleneck and the true labels: per class the
concepts that drive it (mean contribution with its spread), concept prevalence by class,
the confusion matrix, the errors grouped by the concept that pushed each one over, and a
gallery of representative correct and wrong cases, each with its concept bars, the map of
its top concept, a gradient attribution and that attribution's faithfulness verdict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from conceptlens.explain.report.builders import (
    NOT_FOR_CLINICAL_USE,
    ImageExplanation,
    _fill_from_bottleneck,
)
from conceptlens.explain.report.document import (
    Facts,
    Figures,
    Report,
    Summary,
    Table,
    interval,
    rounded,
)
from conceptlens.explain.report.extras import (
    chain_sections,
    extra_sections,
    hybrid_parts,
    hybrid_sections,
    model_kwargs,
)

__all__ = ["NOT_FOR_CLINICAL_USE", "choose_cases", "dataset_report", "dataset_tables"]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _count(n: int, noun: str) -> str:
    """``1 error``, ``2 errors``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def dataset_tables(scores: Any, bottleneck: Any, labels: Sequence[Any], *,
                   embeddings: Any = None) -> dict[str, Any]:
    """The numbers of the data-set report, as DataFrames (no images, no rendering).

    Args:
        scores: ``ConceptScores`` (or a DataFrame) in the bottleneck's score space.
        bottleneck: A fitted concept bottleneck (``predict``, ``predict_proba``, ``contributions``).
        labels: The true class of each score row.
        embeddings: Image embeddings, for a hybrid bottleneck whose residual reads them.

    Returns:
        A dict with ``predictions`` (Series), ``confidence`` (Series), ``drivers`` (class,
        concept, mean and SD of the contribution among images predicted as the class),
        ``prevalence`` (concepts x true classes, mean score), ``confusion`` (true x predicted
        counts), ``errors`` (one row per misclassified image with the concept that pushed it
        most toward the wrong class), ``error_groups`` (those errors counted by concept) and
        ``accuracy`` (value, ci_low, ci_high); for a hybrid bottleneck also ``hybrid``
        (:func:`~conceptlens.explain.report.extras.hybrid_parts`: each decision's concepts,
        residual, intercept and residual share), else ``None``.
    """
    from conceptlens.concepts._stats import wilson_interval

    table = getattr(scores, "table", scores)
    names = dict(getattr(scores, "concept_names", {}) or {})
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(table):
        raise ValueError(f"labels has {len(labels)} entries but the score table has {len(table)} rows")
    kwargs = model_kwargs(bottleneck, embeddings)
    predicted_raw = bottleneck.predict(scores, **kwargs)
    predicted = pd.Series(np.asarray(predicted_raw).astype(str), index=table.index, name="predicted")
    classes = [str(c) for c in bottleneck.classes_]
    proba = pd.DataFrame(bottleneck.predict_proba(scores, **kwargs), index=table.index, columns=classes)
    confidence = pd.Series([proba.loc[i, p] for i, p in predicted.items()], index=table.index)
    contributions = bottleneck.contributions(scores)
    per_class = {str(c): contributions.for_class(_plain(c)) for c in bottleneck.classes_}

    drivers = []
    for cls, frame in per_class.items():
        rows = frame.to_numpy()[(predicted == cls).to_numpy()]
        if len(rows) == 0:
            continue
        mean, sd = rows.mean(axis=0), rows.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(rows.shape[1])
        order = np.argsort(-np.abs(mean))
        for j in order:
            if mean[j] == 0 and sd[j] == 0:
                continue
            concept = frame.columns[j]
            drivers.append({"class": cls, "concept": names.get(concept, concept), "concept id": concept,
                            "mean contribution": float(mean[j]), "SD": float(sd[j]), "images": len(rows)})
    drivers_frame = pd.DataFrame(drivers, columns=["class", "concept", "concept id", "mean contribution",
                                                   "SD", "images"])

    prevalence = table.groupby(labels).mean().T
    prevalence.index = [names.get(c, c) for c in prevalence.index]
    prevalence.index.name = "concept"
    prevalence.columns = [f"mean score | label {c}" for c in prevalence.columns]

    order = sorted(set(labels) | set(predicted))
    confusion = pd.crosstab(pd.Series(labels, name="label"), pd.Series(predicted.to_numpy(), name="predicted"))
    confusion = confusion.reindex(index=order, columns=order, fill_value=0)
    confusion.index = [f"label {c}" for c in confusion.index]
    confusion.index.name = "true label"
    confusion.columns = [f"predicted {c}" for c in confusion.columns]

    wrong = np.flatnonzero(predicted.to_numpy() != labels)
    means = table.mean()
    errors = []
    for i in wrong:
        image_id = table.index[i]
        row = per_class[predicted.iloc[i]].iloc[i]
        concept = str(row.idxmax())
        level = "high" if table.iloc[i][concept] >= means[concept] else "low"
        errors.append({"image": str(image_id), "label": labels[i], "predicted": predicted.iloc[i],
                       "confidence": float(confidence.iloc[i]), "concept": names.get(concept, concept),
                       "concept id": concept, "score": level, "contribution": float(row.max())})
    errors_frame = pd.DataFrame(errors, columns=["image", "label", "predicted", "confidence", "concept",
                                                 "concept id", "score", "contribution"])
    if len(errors_frame):
        groups = (errors_frame.groupby(["concept", "score", "label", "predicted"], sort=False)
                  .agg(errors=("image", "size"), mean_contribution=("contribution", "mean"),
                       examples=("image", lambda s: ", ".join(list(s)[:3])))
                  .reset_index().sort_values("errors", ascending=False, kind="stable"))
        groups = groups.rename(columns={"mean_contribution": "mean contribution"})
    else:
        groups = pd.DataFrame(columns=["concept", "score", "label", "predicted", "errors", "mean contribution",
                                       "examples"])
    n_correct = int((predicted.to_numpy() == labels).sum())
    low, high = wilson_interval(np.array([n_correct]), np.array([len(labels)]))
    return {
        "predictions": predicted, "confidence": confidence, "drivers": drivers_frame,
        "prevalence": prevalence, "confusion": confusion, "errors": errors_frame,
        "error_groups": groups.reset_index(drop=True), "classes": classes,
        "accuracy": (n_correct / len(labels), float(low[0]), float(high[0])),
        "hybrid": hybrid_parts(bottleneck, scores, embeddings, predicted=list(predicted_raw)),
    }


def _rows_of(scores: Any, ids: Sequence[str], names: Mapping[str, str] | None = None) -> Any:
    """The ``ConceptScores`` of the images ``ids`` only, in that order.

    Parameters
    ----------
    scores : ConceptScores or pandas.DataFrame
        Scores of a data set, one row per image.
    ids : sequence of str
        Image ids (as strings) of rows of ``scores``.
    names : mapping, optional
        Concept id -> preferred name, when ``scores`` is a DataFrame.

    Returns
    -------
    ConceptScores
        Those rows, with their input warnings and no errors.
    """
    from conceptlens.vocab.scores import ConceptScores

    table = getattr(scores, "table", scores)
    by_name = {str(i): i for i in table.index}
    table = table.loc[[by_name[i] for i in ids]]
    if not isinstance(scores, ConceptScores):
        return ConceptScores(table, concept_names=dict(names or {}))
    warnings = scores.warnings[scores.warnings["image_id"].astype(str).isin(set(ids))]
    return dataclasses.replace(scores, table=table, errors=scores.errors.iloc[:0],
                               warnings=warnings.reset_index(drop=True))


def _embeddings_of(embeddings: Any, scores: Any, ids: Sequence[str]) -> pd.DataFrame | None:
    """The embeddings of the images ``ids`` (indexed by them), or ``None`` when none are given.

    Parameters
    ----------
    embeddings : pandas.DataFrame, array-like or None
        Embeddings of every row of ``scores``: indexed by image id, or in the row order.
    scores : ConceptScores or pandas.DataFrame
        The scores they belong to.
    ids : sequence of str
        Image ids of rows of ``scores``.
    """
    if embeddings is None:
        return None
    if isinstance(embeddings, pd.DataFrame):
        by_name = {str(i): i for i in embeddings.index}
        if all(i in by_name for i in ids):
            return embeddings.loc[[by_name[i] for i in ids]]
    positions = {str(i): k for k, i in enumerate(getattr(scores, "table", scores).index)}
    rows = np.asarray(embeddings, dtype=float)[[positions[i] for i in ids]]
    return pd.DataFrame(rows, index=pd.Index(list(ids), name="image", dtype=object))


def choose_cases(tables: Mapping[str, Any], labels: Sequence[Any], n_cases: int = 4) -> list[str]:
    """Representative cases: the most confident correct image of each class, then the most
    confident errors (a confident error is the most telling), ``n_cases`` in all."""
    predicted, confidence = tables["predictions"], tables["confidence"]
    labels = np.asarray(labels).astype(str)
    correct = predicted.to_numpy() == labels
    chosen: list[str] = []
    n_right = max(1, n_cases // 2) if (~correct).any() else n_cases
    for cls in tables["classes"]:
        mask = correct & (predicted.to_numpy() == cls)
        if mask.any() and len(chosen) < n_right:
            chosen.append(str(confidence[mask].idxmax()))
    wrong = confidence[~correct].sort_values(ascending=False)
    for image_id in wrong.index:
        if len(chosen) >= n_cases:
            break
        chosen.append(str(image_id))
    rest = confidence[correct].sort_values(ascending=False)
    for image_id in rest.index:
        if len(chosen) >= n_cases:
            break
        if str(image_id) not in chosen:
            chosen.append(str(image_id))
    return chosen


def _drivers_figure(drivers: pd.DataFrame, k: int) -> Any:
    import matplotlib.pyplot as plt

    classes = list(dict.fromkeys(drivers["class"]))
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 0.45 * k + 1.2), squeeze=False)
    for ax, cls in zip(axes[0], classes, strict=True):
        top = drivers[drivers["class"] == cls].head(k).iloc[::-1]
        colours = ["#0072b2" if v >= 0 else "#d55e00" for v in top["mean contribution"]]
        ax.barh(top["concept"], top["mean contribution"], xerr=top["SD"], color=colours,
                error_kw={"ecolor": "#444", "capsize": 3})
        ax.axvline(0, color="#888", lw=0.8)
        ax.set_title(f"predicted {cls}")
        ax.set_xlabel("mean contribution (bars: SD)")
    fig.tight_layout()
    return fig


def _case_figure(item: ImageExplanation, label: str, top_k: int = 6) -> Any:
    import matplotlib.pyplot as plt

    from conceptlens.explain.plots import plot_concept_bars, plot_overlay

    panels = 2 + (item.attribution is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.0 * panels, 3.4),
                             gridspec_kw={"width_ratios": [1.5] + [1] * (panels - 1)})
    values = item.contributions if item.contributions is not None else item.scores
    plot_concept_bars(values, names=dict(item.concept_names), top_k=top_k, signed=item.contributions is not None,
                      ax=axes[0], title=f"label {label}, predicted {item.prediction}",
                      xlabel=f"contribution to '{item.prediction}'")
    if item.maps:
        concept = next(iter(item.maps))
        plot_overlay(item.image, item.maps[concept], ax=axes[1], colorbar=False,
                     title=f"map: {item.name(concept)}"[:40])
    if item.attribution is not None:
        plot_overlay(item.image, item.attribution, ax=axes[2], colorbar=False, title="attribution")
    return fig


def dataset_report(
    scores: Any,
    bottleneck: Any,
    labels: Sequence[Any],
    *,
    scorer: Any = None,
    images: Mapping[str, Any] | None = None,
    n_cases: int = 4,
    method: str | None = "integrated_gradients",
    n_steps: int | str = "auto",
    top_k: int = 6,
    title: str = "Data-set report",
    notice: str | None = None,
    max_rows: int = 40,
    embeddings: Any = None,
    extra: Sequence[Any] | None = None,
) -> Report:
    """Build the data-set report of a concept bottleneck on labelled data.

    Args:
        scores: ``ConceptScores`` in the bottleneck's score space (one row per image).
        bottleneck: A fitted concept bottleneck.
        labels: The true class of each row.
        scorer: The :class:`~conceptlens.vocab.ConceptScorer` the scores came from; with
            ``images`` it draws the gallery (concept maps, attributions, faithfulness) from
            ``scores`` (the cases are not scored again; each is loaded once).
        images: Image id -> image source (PIL, array, path) for the gallery; without it (or
            without ``scorer``) the report has no gallery.
        n_cases: Representative cases in the gallery.
        method: Attribution method of the gallery (``None``: no attribution).
        n_steps: Integration steps of path methods (``"auto"``: until converged).
        top_k: Concepts per class and per case in the charts.
        title: Page title.
        notice: Warning shown on top (the model card's not-for-clinical-use notice).
        max_rows: Rows shown per table (the JSON holds all).
        embeddings: Image embeddings (DataFrame indexed by image id) for a
            :class:`~conceptlens.concepts.HybridBottleneck` whose residual reads them; a hybrid
            bottleneck adds each decision's residual share (summary, table, plot, and each
            case of the gallery).
        extra: Further objects with a ``report_sections()`` method (TCAV, MPRT cascade,
            calibration, filtering, training results, ...) or report sections; with ``scorer``
            its learned concepts, calibration and filtering are added on their own.

    Returns:
        The :class:`Report`; ``.save(out, "dataset")`` writes ``dataset.html`` + ``dataset.json``.

    Raises:
        TypeError: An object in ``extra`` has no ``report_sections()``.
    """
    from conceptlens.explain.report.workflows import explain_items

    tables = dataset_tables(scores, bottleneck, labels, embeddings=embeddings)
    residuals = tables["hybrid"]
    chained, chained_objects = chain_sections(scorer) if scorer is not None else ([], [])
    extras = extra_sections(extra, skip=chained_objects)
    labels = np.asarray(labels).astype(str)
    accuracy, low, high = tables["accuracy"]
    drivers, groups = tables["drivers"], tables["error_groups"]
    report = Report(title, kind="dataset", notice=notice)

    items: list[ImageExplanation] = []
    if scorer is not None and images is not None and n_cases > 0:
        cases = [c for c in choose_cases(tables, labels, n_cases) if c in images]
        if cases:
            # the scores computed already (nothing scored again); the embeddings given, else
            # those of the features computed for the maps
            case_embeddings = _embeddings_of(embeddings, scores, cases)
            items, _ = explain_items(scorer, {c: images[c] for c in cases}, bottleneck=bottleneck,
                                     method=method, top_k=top_k, n_steps=n_steps, max_images=None,
                                     scores=_rows_of(scores, cases, scorer.concept_names),
                                     embeddings=case_embeddings)
            _fill_from_bottleneck(items, bottleneck, case_embeddings)

    points, values = [], {"accuracy": {"value": accuracy, "ci_low": low, "ci_high": high}}
    for cls in tables["classes"]:
        top = drivers[(drivers["class"] == cls) & (drivers["mean contribution"] > 0)].head(3)
        if len(top):
            parts = [f"{r['concept']} ({rounded(r['mean contribution'])} ± {rounded(r['SD'])})"
                     for r in top.to_dict(orient="records")]
            points.append(f"'{cls}' is driven by " + ", ".join(parts) + " (mean contribution ± SD).")
            values[f"drivers of {cls}"] = top[["concept", "mean contribution", "SD"]].to_dict(orient="records")
    n_errors = len(tables["errors"])
    if n_errors and len(groups):
        g = groups.iloc[0]
        points.append(f"{_count(n_errors, 'error')}; the most common pattern: "
                      f"{_count(int(g['errors']), 'image')} labelled "
                      f"'{g['label']}' predicted '{g['predicted']}', pushed there mostly by a {g['score']} "
                      f"{g['concept']} score.")
        values["most common error"] = {k: _plain(v) for k, v in g.items()}
    else:
        points.append("No errors on this data set.")
    cards = [i.faithfulness for i in items if i.faithfulness is not None]
    if cards:
        ok = sum(1 for c in cards if c.get("verdict") == "converged")
        points.append(f"{ok} of {len(cards)} attributions in the gallery converged "
                      "(they sum to f(x) - f(baseline) within the tolerance).")
        values["attributions converged"] = [ok, len(cards)]
    if residuals is not None and len(residuals):
        median = float(residuals["residual_share"].median())
        points.append(f"Hybrid bottleneck: the concepts leave a median {rounded(100 * median)}% of each "
                      f"decision to the residual on the image embedding "
                      f"({int((residuals['residual_share'] > 0.5).sum())} of {len(residuals)} decisions "
                      "mostly residual).")
        values["residual_share"] = {"median": median, "mean": float(residuals["residual_share"].mean())}
    headline = (f"Accuracy {interval(accuracy, low, high)} on {_count(len(labels), 'labelled image')} "
                f"({_count(n_errors, 'error')}).")
    numbers = {"images": str(len(labels)), "accuracy (95% interval)": interval(accuracy, low, high),
               "errors": str(n_errors), "classes": ", ".join(tables["classes"])}
    if residuals is not None and len(residuals):
        numbers["median residual share"] = f"{rounded(100 * float(residuals['residual_share'].median()))}%"
    report.add(Summary("Summary", headline=headline, points=points, numbers=numbers, values=values,
                       caption="Contributions are signed: weight x standardised concept score, toward "
                               "the predicted class. The evidence follows; the settings are at the end."))

    if len(drivers):
        fig = _drivers_figure(drivers, min(top_k, 8))
        report.add(Figures.from_matplotlib(
            "Concepts that drive each class", fig,
            caption="Mean signed contribution among the images predicted as each class; the error "
                    "bars show the spread (SD) across those images.",
            data={c: drivers[drivers["class"] == c].head(min(top_k, 8))
                  .set_index("concept")[["mean contribution", "SD"]].to_dict(orient="index")
                  for c in tables["classes"]}))
        report.add(Table("Contributions by class", frame=drivers, max_rows=max_rows,
                         caption="Every concept with a non-zero contribution, largest mean first."))
    report.add(Table("Concept prevalence by class", frame=tables["prevalence"], index=True, max_rows=max_rows,
                     caption="Mean concept score among the images of each true class."))
    report.add(Table("Confusion matrix", frame=tables["confusion"], index=True,
                     caption="Images by true label (rows) and predicted class (columns)."))
    report.add(Table("Errors grouped by the concept that explains them", frame=groups, max_rows=max_rows,
                     caption="Each misclassified image is assigned the concept that contributed most "
                             "toward the wrong class (its score high or low against the data-set "
                             "mean); groups by concept and error, largest first."))
    if len(tables["errors"]):
        report.add(Table("Misclassified images", frame=tables["errors"], max_rows=max_rows))
    if residuals is not None and len(residuals):
        label_of = dict(zip(residuals.index, labels, strict=True))
        for section in hybrid_sections(residuals, bottleneck, max_rows=max_rows, labels=label_of):
            report.add(section)

    faith_rows = []
    for item in items:
        label = labels[list(map(str, getattr(scores, "table", scores).index)).index(item.image_id)]
        verdict = (item.faithfulness or {}).get("verdict", "not computed")
        outcome = "correct" if label == item.prediction else "wrong"
        caption = (f"{outcome}: label {label}, predicted {item.prediction} with confidence "
                   f"{rounded((item.probabilities or {}).get(item.prediction))}; attribution {verdict}.")
        top = (item.contributions if item.contributions is not None else item.scores)
        top = top.reindex(top.abs().sort_values(ascending=False).index).head(top_k)
        data = {"label": label, "prediction": item.prediction,
                "contributions": {item.name(c): float(v) for c, v in top.items()}}
        if item.residual_share is not None:  # hybrid: what the concepts leave to the residual
            caption += (f" The concepts explain {rounded(100 * (1 - item.residual_share))}% of this "
                        f"decision; the residual on the image embedding "
                        f"{rounded(100 * item.residual_share)}%.")
            data.update({"residual": item.residual, "residual_share": item.residual_share})
        report.add(Figures.from_matplotlib(
            f"Case {item.image_id} ({outcome})", _case_figure(item, label, top_k), caption=caption,
            data=data))
        card = item.faithfulness or {}
        faith_rows.append({"image": item.image_id, "outcome": outcome, "verdict": verdict,
                           "integration steps": card.get("n_steps"),
                           "completeness gap": card.get("completeness_gap"),
                           "deletion ratio": card.get("deletion_ratio")})
    if faith_rows:
        report.add(Table("Faithfulness of the attributions shown", frame=pd.DataFrame(faith_rows),
                         caption="Completeness gap: |sum - (f(x) - f(baseline))| / |f(x) - f(baseline)| "
                                 "(below 0.05 converged). Deletion ratio: deletion area of the map over "
                                 "that of random maps (below 1: better than chance)."))

    for section in [*chained, *extras]:
        report.add(section)
    settings: dict[str, Any] = {"bottleneck": type(bottleneck).__name__, "classes": tables["classes"]}
    backbone = getattr(scores, "backbone", None) or {}
    if backbone.get("model_id"):
        settings["model"] = backbone["model_id"]
    if getattr(scores, "vocabulary_hash", None):
        settings["vocabulary hash"] = scores.vocabulary_hash
    if items:
        settings["attribution method"] = method
        settings["integration steps"] = n_steps
    report.add(Facts("Settings and provenance", facts=settings, collapsed=True))
    return report
