"""Assemble explanation and audit reports from computed results.

These builders only arrange numbers that were computed elsewhere (scores, contributions,
maps, attributions, audit tables) into a :class:`~conceptlens.explain.report.Report`;
:mod:`conceptlens.explain.report.workflows` computes them from images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from conceptlens.explain.report.document import Facts, Figures, Gallery, Report, Table, Text

__all__ = ["ImageExplanation", "audit_report", "explanation_report"]

NOT_FOR_CLINICAL_USE = "Not for clinical use: this model and its explanations are for research only."


@dataclass
class ImageExplanation:
    """Everything an explanation report shows about one image.

    Args:
        image_id: Name shown for the image (file name or id).
        image: The original image (PIL, RGB).
        scores: Concept id -> concept score.
        concept_names: Concept id -> preferred name.
        prediction: Predicted class, when a bottleneck was used.
        probabilities: Class -> probability.
        contributions: Concept id -> signed contribution to the predicted class's decision value.
        intercept: The predicted class's intercept (contributions + intercept = decision value).
        maps: Concept id -> ``(H, W)`` concept map in original-image coordinates.
        attribution: ``(H, W)`` gradient attribution in original-image coordinates.
        attribution_label: What the attribution explains (method and target).
        faithfulness: The attribution's faithfulness card
            (:func:`~conceptlens.explain.faithfulness_card`), shown beside it.
        warnings: Input warnings for this image (dicts with ``kind`` and ``message``, from
            ``ConceptScores.warnings``), shown beside the image.
    """

    image_id: str
    image: Image.Image
    scores: pd.Series
    concept_names: Mapping[str, str] = field(default_factory=dict)
    prediction: str | None = None
    probabilities: Mapping[str, float] | None = None
    contributions: pd.Series | None = None
    intercept: float | None = None
    maps: Mapping[str, np.ndarray] = field(default_factory=dict)
    attribution: np.ndarray | None = None
    attribution_label: str = ""
    faithfulness: Mapping[str, Any] | None = None
    warnings: Sequence[Mapping[str, Any]] = ()

    def name(self, concept_id: str) -> str:
        """Preferred name of a concept id (the id itself when no name is known)."""
        return self.concept_names.get(concept_id, concept_id)


def _identity_facts(backbone: Mapping[str, Any] | None, vocabulary: Mapping[str, Any] | None,
                    scoring: Mapping[str, Any] | None, extra: Mapping[str, Any] | None) -> Facts:
    facts: dict[str, Any] = {}
    if backbone:
        labels = {"model_id": "model", "family": "model family", "revision": "model revision",
                  "weights_hash": "weights hash (sha256)", "dtype": "dtype", "key": "backbone cache key"}
        for key, label in labels.items():
            if backbone.get(key) is not None:
                facts[label] = backbone[key]
        if backbone.get("preprocessing"):
            facts["preprocessing"] = backbone["preprocessing"]
    for key, value in (vocabulary or {}).items():
        facts[f"vocabulary {key}"] = value
    for key, value in (scoring or {}).items():
        facts[f"scoring {key}"] = value
    facts.update(extra or {})
    return Facts("Model, vocabulary and settings", facts=facts)


def explanation_report(
    explanations: Sequence[ImageExplanation],
    *,
    title: str = "Concept explanation report",
    backbone: Mapping[str, Any] | None = None,
    vocabulary: Mapping[str, Any] | None = None,
    scoring: Mapping[str, Any] | None = None,
    extra_facts: Mapping[str, Any] | None = None,
    notice: str | None = None,
    top_k: int = 8,
) -> Report:
    """Build the explanation report for one or more images.

    For each image: the image, the prediction and its confidence, a bar chart of the
    concepts' signed contributions (or of the scores when no bottleneck was used), the
    concept maps of the top concepts, a gradient attribution, and a table with every number.

    Args:
        explanations: One :class:`ImageExplanation` per image.
        title: Page title.
        backbone: Backbone identity dict (``BackboneIdentity.to_dict()``).
        vocabulary: Facts about the vocabulary (name, hash, size).
        scoring: The scoring configuration.
        extra_facts: More facts for the settings table (e.g. the bottleneck's settings).
        notice: Warning shown on top (the model card's not-for-clinical-use notice).
        top_k: Concepts shown in each bar chart.

    Returns:
        The :class:`Report`; call ``.save(out_dir, name)`` to write ``NAME.html`` and ``NAME.json``.
    """
    from conceptlens.explain.plots import plot_concept_bars, plot_concept_maps, plot_overlay

    if not explanations:
        raise ValueError("explanation_report needs at least one ImageExplanation")
    report = Report(title, kind="explanation", notice=notice)
    for item in explanations:
        heading = item.image_id if item.prediction is None else f"{item.image_id}: {item.prediction}"
        summary: dict[str, Any] = {"image": item.image_id, "size (w x h)": f"{item.image.width} x {item.image.height}"}
        if item.prediction is not None:
            summary["prediction"] = item.prediction
            if item.probabilities:
                summary["confidence"] = float(item.probabilities.get(item.prediction, np.nan))
                for cls, p in item.probabilities.items():
                    summary[f"p({cls})"] = float(p)
            if item.intercept is not None and item.contributions is not None:
                summary["intercept"] = float(item.intercept)
                summary["decision value"] = float(item.intercept + item.contributions.sum())
        report.add(Facts(heading, facts=summary))
        if item.warnings:
            report.add(Table(
                f"{item.image_id}: input warnings",
                frame=pd.DataFrame([{"kind": w.get("kind", ""), "message": w.get("message", "")}
                                    for w in item.warnings]),
                caption="The model should not be trusted on this input: read its explanation with care.",
            ))

        gallery = Gallery(f"{item.image_id}: image", caption="The image as loaded (thumbnail).")
        gallery.add(item.image, item.image_id, max_side=384, format="PNG")
        report.add(gallery)

        signed = item.contributions is not None
        values = item.contributions if signed else item.scores
        ranked = values.reindex(values.abs().sort_values(ascending=False).index)
        top = ranked.head(top_k)
        label = (f"contribution to '{item.prediction}'" if signed else "concept score")
        fig = plot_concept_bars(top, names=dict(item.concept_names), top_k=top_k, signed=signed,
                                title=f"{item.image_id}: top concepts", xlabel=label)
        report.add(Figures.from_matplotlib(
            f"{item.image_id}: concepts", fig,
            caption=("Signed contribution of each concept to the predicted class's decision value "
                     "(weight x standardised score)." if signed else "Concept scores, highest first."),
            data={item.name(c): float(v) for c, v in top.items()}))

        table = pd.DataFrame({
            "concept id": list(ranked.index),
            "concept": [item.name(c) for c in ranked.index],
            "score": [float(item.scores.get(c, np.nan)) for c in ranked.index],
        })
        if signed:
            table["contribution"] = [float(item.contributions[c]) for c in ranked.index]
        report.add(Table(f"{item.image_id}: concept table", frame=table, max_rows=top_k * 2))

        if item.maps:
            shown = [c for c in top.index if c in item.maps] or list(item.maps)
            maps = {item.name(c): np.asarray(item.maps[c]) for c in shown}
            fig = plot_concept_maps(maps, image=item.image, ncols=min(4, len(maps)))
            report.add(Figures.from_matplotlib(
                f"{item.image_id}: concept maps", fig,
                caption="Patch-level concept scores (local alignment) mapped back onto the original image.",
                data={name: {"min": float(m.min()), "max": float(m.max())} for name, m in maps.items()}))
        if item.attribution is not None:
            fig = plot_overlay(item.image, item.attribution, title=item.attribution_label or "attribution")
            report.add(Figures.from_matplotlib(
                f"{item.image_id}: attribution", fig, caption=item.attribution_label,
                data={"sum": float(np.sum(item.attribution)),
                      "max_abs": float(np.max(np.abs(item.attribution)))}))
        if item.faithfulness is not None:
            report.add(_faithfulness_facts(item.image_id, item.faithfulness))
    report.add(_identity_facts(backbone, vocabulary, scoring, extra_facts))
    return report


_CARD_LABELS = {
    "verdict": "verdict",
    "method": "method",
    "target": "explains",
    "input_value": "f(x), the explained output",
    "baseline": "baseline",
    "baseline_value": "f(baseline)",
    "n_steps": "integration steps",
    "completeness_gap": "completeness gap |sum - (f(x) - f(b))| / |f(x) - f(b)|",
    "convergence_delta": "convergence delta sum - (f(x) - f(b))",
    "tolerance": "tolerance",
    "baseline_same_side": "baseline on the input's side of the decision",
    "deletion_auc": "deletion AUC (normalised, lower is better)",
    "random_deletion_auc": "deletion AUC of random maps",
    "deletion_ratio": "deletion ratio map / random (below 1: better than chance)",
}


def _faithfulness_facts(image_id: str, card: Mapping[str, Any]) -> Facts:
    facts = {label: card[key] for key, label in _CARD_LABELS.items() if card.get(key) is not None}
    if card.get("completeness_gap") is None and card.get("convergence_delta") is not None:
        facts[_CARD_LABELS["completeness_gap"]] = "undefined: f(x) and f(baseline) nearly equal"
    return Facts(f"{image_id}: faithfulness card", facts=facts)


def _audit_findings(audit: Any, names: Mapping[str, str]) -> str:
    """One plain sentence per irrelevant concept: flagged (with its test) or not."""
    spurious = getattr(audit, "spurious", None)
    if not isinstance(spurious, pd.DataFrame) or spurious.empty or "concept" not in spurious:
        return ""
    lines = []
    for row in spurious.to_dict(orient="records"):
        name = names.get(str(row["concept"]), str(row["concept"]))
        verdict = ("FLAGGED: the decisions rely on" if row.get("flagged")
                   else "Not flagged: no evidence that the decisions rely on")
        reason = row.get("reason") or ""
        lines.append(f"{verdict} '{name}', which you declared irrelevant. {reason}".strip())
    return "\n".join(lines)


def _frame_fields(result: Any) -> list[tuple[str, pd.DataFrame]]:
    """The DataFrame fields of a result dataclass (an ``AuditResult``), in declaration order."""
    if not dataclasses.is_dataclass(result):
        raise TypeError(f"audit must be an AuditResult, got {type(result).__name__}")
    items = [(f.name, getattr(result, f.name)) for f in dataclasses.fields(result)]
    return [(name, value) for name, value in items if isinstance(value, pd.DataFrame)]


_AUDIT_TITLES = {
    "reliance_tests": "Conditional reliance tests (likelihood ratio, one-vs-rest)",
    "reliance": "Reliance of the surrogate on each concept",
    "spurious": "Spurious-concept flags",
    "unused_expected": "Expected concepts the decisions do not use",
    "association": "Concept-decision association",
    "surrogate_fidelity": "Surrogate bottleneck fidelity",
    "surrogate_coefficients": "Surrogate bottleneck weights",
    "errors": "Error analysis: concepts enriched among errors",
    "slices": "Worst concept-defined slices",
}


def audit_report(
    audit: Any,
    *,
    scores: Any,
    decisions: Sequence[Any],
    labels: Sequence[Any] | None = None,
    annotation: pd.DataFrame | None = None,
    weights: pd.DataFrame | None = None,
    images: Mapping[str, Any] | Callable[[str], Any] | None = None,
    title: str = "Concept audit report",
    notice: str | None = None,
    max_thumbnails: int = 24,
    max_rows: int = 40,
) -> Report:
    """Build the audit report of a decision-maker over a data set.

    Args:
        audit: The :class:`conceptlens.concepts.AuditResult` (its DataFrames become tables).
        scores: ``ConceptScores`` (or DataFrame) the audit was computed on.
        decisions: One decision per score row.
        labels: True labels per row, when known.
        annotation: Per-concept annotation quality (``evaluate_annotation``), when concept labels exist.
        weights: Bottleneck (or surrogate) weights, classes x concepts.
        images: Image id -> image (or a loader), for thumbnails of the most telling examples.
        title: Page title.
        notice: Warning shown on top.
        max_thumbnails: At most this many thumbnails (keeps the file small for large data sets).
        max_rows: Rows shown per table (the JSON holds all).
    """
    from conceptlens.explain.plots import plot_weights

    table = getattr(scores, "table", scores)
    if not isinstance(table, pd.DataFrame):
        table = pd.DataFrame(np.asarray(table))
    names = dict(getattr(scores, "concept_names", {}) or {})
    decisions = np.asarray(decisions)
    if len(decisions) != len(table):
        raise ValueError(f"decisions has {len(decisions)} entries but the score table has {len(table)} rows")
    report = Report(title, kind="audit", notice=notice)
    facts: dict[str, Any] = {"images": len(table), "concepts": table.shape[1]}
    classes, counts = np.unique(decisions.astype(str), return_counts=True)
    facts.update({f"decided '{c}'": int(n) for c, n in zip(classes, counts, strict=True)})
    if labels is not None:
        labels = np.asarray(labels)
        facts["accuracy of decisions"] = float(np.mean(labels.astype(str) == decisions.astype(str)))
    backbone = getattr(scores, "backbone", None) or {}
    if backbone.get("model_id"):
        facts["model"] = backbone["model_id"]
    if getattr(scores, "vocabulary_hash", None):
        facts["vocabulary hash"] = scores.vocabulary_hash
    summary = getattr(audit, "summary", None)
    if isinstance(summary, Mapping):
        facts.update({str(k): v for k, v in summary.items()})
    findings = _audit_findings(audit, names)
    if findings:
        report.add(Text("Findings", text=findings,
                        caption="Each flag names the test that produced it; the tables below hold every number."))
    report.add(Facts("Data set and decisions", facts=facts))

    if annotation is not None:
        report.add(Table("Concept annotation quality", frame=annotation, index=True, max_rows=max_rows,
                         caption="ROC-AUC and average precision of each concept score against the concept labels."))
    if weights is not None:
        fig = plot_weights(weights, names=names)
        report.add(Figures.from_matplotlib("Bottleneck weights", fig,
                                           data=weights.round(6).to_dict(orient="index")))

    prevalence = table.groupby(decisions.astype(str)).mean().T
    prevalence.index = [names.get(c, c) for c in prevalence.index]
    prevalence.index.name = "concept"
    prevalence.columns = [f"mean score | decided {c}" for c in prevalence.columns]
    report.add(Table("Concept prevalence by decision", frame=prevalence, index=True, max_rows=max_rows,
                     caption="Mean concept score among the images given each decision."))

    for name, frame in _frame_fields(audit):
        report.add(Table(_AUDIT_TITLES.get(name, name.replace("_", " ").capitalize()), frame=frame,
                         index=not isinstance(frame.index, pd.RangeIndex), max_rows=max_rows))

    if images is not None and max_thumbnails > 0:
        report.add(_telling_examples(table, names, decisions, labels, images, max_thumbnails))
    return report


def _telling_examples(table: pd.DataFrame, names: Mapping[str, str], decisions: np.ndarray,
                      labels: np.ndarray | None, images: Mapping[str, Any] | Callable[[str], Any],
                      max_thumbnails: int) -> Gallery:
    """Errors first (in data order, at most half the thumbnails), then the image that
    scores highest on each concept."""
    from conceptlens.models.images import load_image

    skipped: list[str] = []

    def fetch(image_id: str) -> Any:
        try:
            source = images(image_id) if callable(images) else images.get(image_id)
            if source is None:
                return None
            return source if isinstance(source, Image.Image) else load_image(source).image
        except (ValueError, OSError) as error:  # one unreadable thumbnail never sinks the report
            skipped.append(f"{image_id} ({getattr(error, 'reason', error)})")
            return None

    chosen: list[tuple[str, str]] = []
    if labels is not None:
        wrong = np.flatnonzero(labels.astype(str) != decisions.astype(str))
        for i in wrong[: max_thumbnails // 2]:
            chosen.append((table.index[i], f"error: decided {decisions[i]}, label {labels[i]}"))
    for concept in table.columns:
        if len(chosen) >= max_thumbnails:
            break
        i = int(np.argmax(table[concept].to_numpy()))
        chosen.append((table.index[i], f"highest '{names.get(concept, concept)}'"))
    gallery = Gallery("Telling examples", caption="Errors of the decision-maker, then the image that most "
                                                  "shows each concept. Thumbnails only.")
    for image_id, why in chosen[:max_thumbnails]:
        image = fetch(str(image_id))
        if image is None:
            continue
        row = table.loc[image_id]
        top = row.sort_values(ascending=False).head(3)
        details = {"why": why, **{names.get(c, c): round(float(v), 3) for c, v in top.items()}}
        gallery.add(image, str(image_id), details=details, max_side=128)
    if skipped:
        gallery.caption += (f" {len(skipped)} thumbnail(s) could not be loaded and are left out: "
                            + "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    return gallery
