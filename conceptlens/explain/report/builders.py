"""Assemble explanation and audit reports from computed results.

These builders only arrange numbers that were computed elsewhere (scores, contributions,
maps, attributions, audit tables) into a :class:`~conceptlens.explain.report.Report`;
:mod:`conceptlens.explain.report.workflows` computes them from images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from conceptlens.explain.report.document import (
    Contents,
    Facts,
    Figures,
    Gallery,
    Report,
    Section,
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
    is_hybrid,
)

__all__ = ["ImageExplanation", "audit_report", "concept_deviations", "explanation_report", "reason_text"]

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
        deviations: Concept id -> the score's signed deviation from the bottleneck's reference
            (its training mean, in standard deviations; :func:`concept_deviations`). A
            contribution that comes from a concept being *low* is then worded so ("low X
            score (+5.4 toward benign)"); :func:`explanation_report` fills it from its
            ``bottleneck`` when missing.
        residual: For a hybrid bottleneck (PCBM-h): the residual's term of the decision
            (toward ``prediction``); contributions + residual + intercept = decision value.
        residual_share: The decision's residual share, ``|residual| / (|residual| +
            sum |contributions|)``: the part of it the concepts do not explain.
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
    deviations: pd.Series | None = None
    residual: float | None = None
    residual_share: float | None = None

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
    return Facts("Model, vocabulary and settings", facts=facts, collapsed=True,
                 caption="Provenance: what produced these numbers (for reproducing them).")


def _image_finding(item: ImageExplanation, n_reasons: int = 3) -> tuple[str, dict[str, Any]]:
    """One plain sentence about an image (prediction, top reasons, verdict, warnings) and the
    exact values behind it."""
    from conceptlens.explain.attribution import VERDICTS

    values: dict[str, Any] = {}
    signed = item.contributions is not None
    ranked_source = item.contributions if signed else item.scores
    ranked = ranked_source.reindex(ranked_source.abs().sort_values(ascending=False).index)
    reasons = ranked.head(n_reasons)
    if item.prediction is not None:
        confidence = (item.probabilities or {}).get(item.prediction)
        text = f"{item.image_id}: {item.prediction}"
        if confidence is not None:
            text += f" (confidence {rounded(confidence)})"
            values["confidence"] = float(confidence)
        values["prediction"] = item.prediction
    else:
        text = f"{item.image_id}: no classifier; highest concept scores"
    if signed:
        deviations = item.deviations if item.deviations is not None else pd.Series(dtype=float)
        parts = [reason_text(item.name(c), float(v), deviations.get(c), item.prediction)
                 for c, v in reasons.items()]
        text += ". Top reasons: " + ", ".join(parts) + "."
        if item.residual_share is not None:
            text += (f" The concepts explain {rounded(100 * (1 - item.residual_share))}% of this "
                     f"decision; the residual on the image embedding the other "
                     f"{rounded(100 * item.residual_share)}%.")
            values["residual_share"] = float(item.residual_share)
    else:
        parts = [f"{item.name(c)} ({rounded(v)})" for c, v in reasons.items()]
        text += ": " + ", ".join(parts) + "."
    values["top_reasons"] = {item.name(c): float(v) for c, v in reasons.items()}
    card = item.faithfulness or {}
    verdict = card.get("verdict")
    if verdict:
        text += f" Attribution {verdict}: {VERDICTS.get(str(verdict), '')}"
        gap = card.get("completeness_gap")
        if gap is not None:
            text += f" (completeness gap {rounded(100 * float(gap))}%"
            ratio = card.get("deletion_ratio")
            if ratio is not None:
                text += f", deletion {rounded(ratio)}x random"
            text += ")"
        text += "."
        values["verdict"] = verdict
        values["completeness_gap"] = gap
        values["deletion_ratio"] = card.get("deletion_ratio")
    if item.warnings:
        kinds = sorted({str(w.get("kind", "")) for w in item.warnings})
        text += f" Input warning ({', '.join(kinds)}): read this explanation with care."
        values["warnings"] = kinds
    return text, values


def reason_text(name: str, contribution: float, deviation: float | None, target: str | None) -> str:
    """One reason of a decision in words, saying when it comes from a *low* score.

    A contribution is ``weight x (score - reference)``: a concept pushes toward a class either
    because its score is high and its weight positive, or because its score is *low* and its
    weight negative. The sign of the score's deviation from the reference (``deviation``)
    tells the two apart.

    Args:
        name: The concept's name.
        contribution: Its signed contribution to ``target``'s decision value.
        deviation: The score's signed deviation from the bottleneck's reference (``None``:
            unknown, the concept is named as is).
        target: The class the decision is about.

    Examples:
        >>> reason_text("atypical vascular pattern", 5.4, -1.3, "benign")
        'low atypical vascular pattern score (+5.4 toward benign)'
        >>> reason_text("pigment network", 2.0, 0.8, "melanoma")
        'pigment network (+2.0 toward melanoma)'
        >>> reason_text("streaks", -0.5, -0.2, "melanoma")
        'low streaks score (-0.50, against melanoma)'
    """
    low = deviation is not None and not pd.isna(deviation) and float(deviation) < 0
    subject = f"low {name} score" if low else name
    size = rounded(abs(contribution))
    if target is None:
        return f"{subject} ({'+' if contribution >= 0 else '-'}{size})"
    if contribution >= 0:
        return f"{subject} (+{size} toward {target})"
    return f"{subject} (-{size}, against {target})"


def concept_deviations(bottleneck: Any, scores: Any) -> pd.DataFrame:
    """Each score's signed deviation from a bottleneck's reference, in standard deviations.

    ``(transformed score - training mean) / training SD``, the quantity a contribution
    multiplies by the concept's standardised weight: its sign says whether a reason comes
    from a high or a low score (see :func:`reason_text`).

    Args:
        bottleneck: A fitted concept bottleneck (``mean_``, ``scale_``).
        scores: ``ConceptScores``, a DataFrame (or a Series: one image) of concept scores.

    Returns:
        DataFrame, one row per image, one column per concept of the bottleneck.
    """
    if isinstance(scores, pd.Series):
        scores = scores.to_frame().T
    values, ids = bottleneck._transformed(scores)
    z = (values - bottleneck.mean_[None, :]) / bottleneck.scale_[None, :]
    return pd.DataFrame(z, index=ids, columns=list(bottleneck.concept_ids_))


def _fill_from_bottleneck(items: Sequence[ImageExplanation], bottleneck: Any, embeddings: Any) -> None:
    """Deviations (for the wording of reasons) and, for a hybrid bottleneck, the residual and
    its share, where the items lack them."""
    for item in items:
        if item.deviations is None and item.contributions is not None:
            try:
                item.deviations = concept_deviations(bottleneck, item.scores).iloc[0]
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # scores in another space: reasons are named without high / low
    if not is_hybrid(bottleneck):
        return
    todo = [i for i in items if i.residual is None and i.prediction is not None]
    if not todo:
        return
    frame = pd.DataFrame([i.scores for i in todo], index=[i.image_id for i in todo])
    rows = embeddings
    if isinstance(embeddings, pd.DataFrame):
        rows = embeddings.reindex([i.image_id for i in todo])
    elif isinstance(embeddings, Mapping):
        rows = np.stack([np.asarray(embeddings[i.image_id], dtype=float) for i in todo])
    elif embeddings is not None:  # an array in the order of the explanations
        positions = [next(k for k, other in enumerate(items) if other is i) for i in todo]
        rows = np.asarray(embeddings, dtype=float)[positions]
    parts = hybrid_parts(bottleneck, frame, rows, predicted=[i.prediction for i in todo])
    for item, (_, row) in zip(todo, parts.iterrows(), strict=True):
        item.residual = float(row["residual"])
        item.residual_share = float(row["residual_share"])


def _image_anchor(position: int) -> str:
    return f"image-{position + 1}"


def _contents(explanations: Sequence[ImageExplanation]) -> Contents:
    entries = []
    for position, item in enumerate(explanations):
        details = []
        if item.prediction is not None:
            details.append(item.prediction)
            confidence = (item.probabilities or {}).get(item.prediction)
            if confidence is not None:
                details.append(f"confidence {rounded(confidence)}")
        if item.residual_share is not None:
            details.append(f"residual share {rounded(100 * item.residual_share)}%")
        if item.warnings:
            details.append("input warning")
        verdict = (item.faithfulness or {}).get("verdict")
        if verdict:
            details.append(f"attribution {verdict}")
        entries.append({"anchor": _image_anchor(position), "label": item.image_id,
                        "details": ", ".join(details)})
    return Contents("Images in this report", entries=entries, anchor="contents",
                    caption="Each image's evidence follows in this order; the links jump to it.")


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
    scorer: Any = None,
    bottleneck: Any = None,
    embeddings: Any = None,
    extra: Sequence[Any] | None = None,
) -> Report:
    """Build the explanation report for one or more images.

    For each image: the image, the prediction and its confidence, a bar chart of the
    concepts' signed contributions (or of the scores when no bottleneck was used), the
    concept maps of the top concepts, a gradient attribution, and a table with every number.
    With more than one image, a list of the images (linked to each one's evidence) follows
    the summary. For a hybrid bottleneck (PCBM-h) each decision's residual share is stated in
    the summary and the bars show the residual beside the concepts.

    After the images come the sections of what the chain carries (given ``scorer``: concepts
    learned from examples with their held-out accuracy, the calibration the scorer applies,
    the filtering of its vocabulary; see :mod:`conceptlens.explain.report.extras`) and of
    every object in ``extra``.

    Args:
        explanations: One :class:`ImageExplanation` per image.
        title: Page title.
        backbone: Backbone identity dict (``BackboneIdentity.to_dict()``).
        vocabulary: Facts about the vocabulary (name, hash, size).
        scoring: The scoring configuration.
        extra_facts: More facts for the settings table (e.g. the bottleneck's settings).
        notice: Warning shown on top (the model card's not-for-clinical-use notice).
        top_k: Concepts shown in each bar chart.
        scorer: The :class:`~conceptlens.vocab.ConceptScorer` behind the scores (its
            vocabulary and calibrator add their sections).
        bottleneck: The fitted bottleneck behind the decisions: words each reason by whether
            its score is high or low, and for a :class:`~conceptlens.concepts.HybridBottleneck`
            fills each image's residual and residual share when missing.
        embeddings: Image embeddings for a hybrid bottleneck whose residual reads them
            (DataFrame indexed by image id, a mapping image id -> vector, or an array in the
            order of ``explanations``).
        extra: Further objects with a ``report_sections()`` method (a TCAV result, an MPRT
            cascade, a calibration report, a filtering result, ...) or report sections.

    Returns:
        The :class:`Report`; call ``.save(out_dir, name)`` to write ``NAME.html`` and ``NAME.json``.

    Raises:
        TypeError: An object in ``extra`` has no ``report_sections()``.
    """
    from conceptlens.explain.plots import (
        plot_concept_bars,
        plot_concept_maps,
        plot_decision_parts,
        plot_overlay,
    )

    if not explanations:
        raise ValueError("explanation_report needs at least one ImageExplanation")
    if bottleneck is not None:
        _fill_from_bottleneck(explanations, bottleneck, embeddings)
    chained, chained_objects = chain_sections(scorer) if scorer is not None else ([], [])
    extras = extra_sections(extra, skip=chained_objects)
    report = Report(title, kind="explanation", notice=notice)
    points, values = [], {}
    for item in explanations:
        point, exact = _image_finding(item)
        points.append(point)
        values[item.image_id] = exact
    first = explanations[0]
    if len(explanations) == 1:
        headline, points = points[0], []
    else:
        predicted = [e.prediction for e in explanations if e.prediction is not None]
        counts = pd.Series(predicted).value_counts() if predicted else pd.Series(dtype=int)
        headline = (f"{len(explanations)} images explained"
                    + (": " + ", ".join(f"{n} {c}" for c, n in counts.items()) if len(counts) else "") + ".")
    n_ok = sum(1 for e in explanations if (e.faithfulness or {}).get("verdict") == "converged")
    n_cards = sum(1 for e in explanations if e.faithfulness is not None)
    numbers = {"images": str(len(explanations))}
    if n_cards:
        numbers["attributions converged"] = f"{n_ok} of {n_cards}"
    if first.prediction is not None and len(explanations) == 1 and first.probabilities:
        numbers["confidence"] = rounded(first.probabilities.get(first.prediction))
    shares = [e.residual_share for e in explanations if e.residual_share is not None]
    if shares:
        key = "residual share" if len(explanations) == 1 else "median residual share"
        numbers[key] = f"{rounded(100 * float(np.median(shares)))}%"
    report.add(Summary("Summary", headline=headline, points=points, numbers=numbers, values=values,
                       caption="Reasons are signed contributions to the predicted class's decision "
                               "value (weight x standardised concept score); the evidence per image "
                               "follows, the settings are at the end."))
    if len(explanations) > 1:
        report.add(_contents(explanations))
    for position, item in enumerate(explanations):
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
                if item.residual is not None:
                    summary["concepts (sum of contributions)"] = float(item.contributions.sum())
                    summary["residual (image embedding)"] = float(item.residual)
                    summary["residual share"] = float(item.residual_share or 0.0)
                summary["decision value"] = float(item.intercept + item.contributions.sum()
                                                  + (item.residual or 0.0))
        report.add(Facts(heading, facts=summary, anchor=_image_anchor(position)))
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
        if signed and item.residual is not None:
            fig = plot_decision_parts(values, item.residual, item.intercept, names=dict(item.concept_names),
                                      top_k=top_k, xlabel=label)
            data = {item.name(c): float(v) for c, v in top.items()}
            data.update({"residual (image embedding)": float(item.residual),
                         "residual share": float(item.residual_share or 0.0)})
            caption = ("Signed contribution of each concept to the predicted class's decision value "
                       "(weight x standardised score), the residual on the image embedding (hatched: "
                       "what the concepts do not explain) and the intercept; they add up to the "
                       "decision value.")
        else:
            fig = plot_concept_bars(top, names=dict(item.concept_names), top_k=top_k, signed=signed,
                                    title=f"{item.image_id}: top concepts", xlabel=label)
            data = {item.name(c): float(v) for c, v in top.items()}
            caption = ("Signed contribution of each concept to the predicted class's decision value "
                       "(weight x standardised score)." if signed else "Concept scores, highest first.")
        report.add(Figures.from_matplotlib(f"{item.image_id}: concepts", fig, caption=caption, data=data))

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
    hybrid_items = [e for e in explanations if e.residual is not None and e.contributions is not None]
    if len(hybrid_items) > 1:
        parts = pd.DataFrame(
            [{"class": e.prediction, "concepts": float(e.contributions.sum()), "residual": e.residual,
              "intercept": e.intercept, "decision": float((e.intercept or 0.0) + e.contributions.sum()
                                                          + e.residual),
              "residual_share": e.residual_share} for e in hybrid_items],
            index=pd.Index([e.image_id for e in hybrid_items], name="image"))
        for section in hybrid_sections(parts, bottleneck):
            report.add(section)
    for section in [*chained, *extras]:
        report.add(section)
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
        reason = str(row.get("reason") or "")
        reason = reason[:1].upper() + reason[1:]
        lines.append(f"{verdict} '{name}', which you declared irrelevant. {reason}".strip())
    return "\n".join(lines)


_COLUMN_LABELS = {"p_value": "p", "q_value": "q (FDR)", "auc": "AUC", "roc_auc": "ROC-AUC",
                  "ci_low": "95% CI low", "ci_high": "95% CI high", "n": "images", "df": "df"}


def _human_column(name: Any) -> Any:
    """A table column's label for readers: ``q_value`` -> ``q (FDR)``, ``n_error`` -> ``n error``."""
    if not isinstance(name, str):
        return name
    return _COLUMN_LABELS.get(name, name.replace("_", " "))


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
    "group_reliance": "Reliance per concept group",
}


def audit_report(
    audit: Any,
    *,
    scores: Any = None,
    decisions: Sequence[Any],
    labels: Sequence[Any] | None = None,
    annotation: pd.DataFrame | None = None,
    weights: pd.DataFrame | None = None,
    images: Mapping[str, Any] | Callable[[str], Any] | None = None,
    title: str = "Concept audit report",
    notice: str | None = None,
    max_thumbnails: int = 24,
    max_rows: int = 40,
    scorer: Any = None,
    bottleneck: Any = None,
    embeddings: Any = None,
    extra: Sequence[Any] | None = None,
) -> Report:
    """Build the audit report of a decision-maker over a data set.

    Findings first (flagged concepts with their test, surrogate fidelity, concepts enriched
    among errors, concept groups relied upon), then the evidence: the audit's tables
    (reliance, reliance per concept group when the audit was given ``concept_groups``, tests,
    association, errors, slices), the residual share of each decision when ``bottleneck`` is
    a :class:`~conceptlens.concepts.HybridBottleneck`, what the chain carries (with
    ``scorer``: learned concepts, calibration, filtering) and the sections of ``extra``;
    settings last, collapsed.

    Args:
        audit: The :class:`conceptlens.concepts.AuditResult` (its DataFrames become tables).
        scores: ``ConceptScores`` (or DataFrame) the audit was computed on; without them the
            report leaves out the prevalence table and the thumbnails.
        decisions: One decision per score row.
        labels: True labels per row, when known.
        annotation: Per-concept annotation quality (``evaluate_annotation``), when concept labels exist.
        weights: Bottleneck (or surrogate) weights, classes x concepts.
        images: Image id -> image (or a loader), for thumbnails of the most telling examples.
        title: Page title.
        notice: Warning shown on top.
        max_thumbnails: At most this many thumbnails (keeps the file small for large data sets).
        max_rows: Rows shown per table (the JSON holds all).
        scorer: The :class:`~conceptlens.vocab.ConceptScorer` behind the scores (its
            vocabulary and calibrator add their sections).
        bottleneck: The concept bottleneck that made the decisions, when it is one; for a
            :class:`~conceptlens.concepts.HybridBottleneck` the report shows each decision's
            residual share (computed on ``scores``, which are then required).
        embeddings: Image embeddings for a hybrid bottleneck whose residual reads them.
        extra: Further objects with a ``report_sections()`` method (TCAV, MPRT cascade,
            calibration, filtering, ...) or report sections.

    Raises:
        TypeError: An object in ``extra`` has no ``report_sections()``.
        EmbeddingsError: A hybrid bottleneck on embeddings without ``embeddings``.
    """
    from conceptlens.explain.plots import plot_weights

    has_scores = scores is not None
    table = getattr(scores, "table", scores) if has_scores else pd.DataFrame(index=range(len(decisions)))
    if not isinstance(table, pd.DataFrame):
        table = pd.DataFrame(np.asarray(table))
    names = dict(getattr(scores, "concept_names", {}) or {})
    reliance = getattr(audit, "reliance", None)
    if not names and isinstance(reliance, pd.DataFrame) and {"concept", "name"} <= set(reliance.columns):
        names = {str(c): str(n) for c, n in zip(reliance["concept"], reliance["name"], strict=True) if n}
    decisions = np.asarray(decisions)
    if len(decisions) != len(table):
        raise ValueError(f"decisions has {len(decisions)} entries but the score table has {len(table)} rows")
    report = Report(title, kind="audit", notice=notice)
    summary = dict(getattr(audit, "summary", None) or {})
    parts = None
    if is_hybrid(bottleneck):
        if not has_scores:
            raise ValueError("the residual share of a hybrid bottleneck's decisions needs the scores")
        parts = hybrid_parts(bottleneck, scores, embeddings)
    chained, chained_objects = chain_sections(scorer) if scorer is not None else ([], [])
    extras = extra_sections(extra, skip=chained_objects)
    report.add(_audit_summary(audit, summary, names, decisions, labels, parts))
    facts: dict[str, Any] = {"images": len(table)}
    if has_scores:
        facts["concepts"] = table.shape[1]
    classes, counts = np.unique(decisions.astype(str), return_counts=True)
    facts.update({f"decided '{c}'": int(n) for c, n in zip(classes, counts, strict=True)})
    if labels is not None:
        labels = np.asarray(labels)
        facts["accuracy of the decisions"] = rounded(np.mean(labels.astype(str) == decisions.astype(str)))
    if summary.get("fidelity_ci"):
        low, high = summary["fidelity_ci"]
        facts["surrogate fidelity (held out, 95% interval)"] = interval(summary.get("fidelity"), low, high)
    if summary.get("surrogate_concepts") is not None:
        facts["concepts the surrogate uses"] = int(summary["surrogate_concepts"])
    report.add(Facts("Data set and decisions", facts=facts))
    settings: dict[str, Any] = {}
    backbone = getattr(scores, "backbone", None) or {}
    if backbone.get("model_id"):
        settings["model"] = backbone["model_id"]
    vocabulary_hash = getattr(scores, "vocabulary_hash", None) or summary.get("vocabulary_hash")
    if vocabulary_hash:
        settings["vocabulary hash"] = vocabulary_hash
    if summary.get("spurious_test"):
        settings["test deciding the spurious flags"] = summary["spurious_test"]
    settings["audit summary (as computed)"] = {k: v for k, v in summary.items() if v is not None}

    if annotation is not None:
        report.add(Table("Concept annotation quality", frame=annotation, index=True, max_rows=max_rows,
                         caption="ROC-AUC and average precision of each concept score against the concept labels."))
    if weights is not None:
        fig = plot_weights(weights, names=names)
        report.add(Figures.from_matplotlib("Bottleneck weights", fig,
                                           data=weights.round(6).to_dict(orient="index")))

    if has_scores:
        prevalence = table.groupby(decisions.astype(str)).mean().T
        prevalence.index = [names.get(c, c) for c in prevalence.index]
        prevalence.index.name = "concept"
        prevalence.columns = [f"mean score | decided {c}" for c in prevalence.columns]
        report.add(Table("Concept prevalence by decision", frame=prevalence, index=True, max_rows=max_rows,
                         caption="Mean concept score among the images given each decision."))

    for name, frame in _frame_fields(audit):
        if name == "group_reliance":
            continue  # right after the reliance table
        report.add(Table(_AUDIT_TITLES.get(name, name.replace("_", " ").capitalize()),
                         frame=frame.rename(columns=_human_column),
                         index=not isinstance(frame.index, pd.RangeIndex), max_rows=max_rows))
        if name == "reliance":
            for section in _group_sections(audit, names, max_rows):
                report.add(section)
    if not any(name == "reliance" for name, _ in _frame_fields(audit)):
        for section in _group_sections(audit, names, max_rows):
            report.add(section)
    if parts is not None:
        label_of = (dict(zip(parts.index, np.asarray(labels).astype(str), strict=True))
                    if labels is not None else None)
        for section in hybrid_sections(parts, bottleneck, max_rows=max_rows, labels=label_of):
            report.add(section)

    if has_scores and images is not None and max_thumbnails > 0:
        report.add(_telling_examples(table, names, decisions, labels, images, max_thumbnails))
    for section in [*chained, *extras]:
        report.add(section)
    report.add(Facts("Settings and provenance", facts=settings, collapsed=True))
    return report


def _group_frame(audit: Any, names: Mapping[str, str]) -> pd.DataFrame | None:
    """The audit's reliance per concept group, members named, or ``None`` without groups."""
    groups = getattr(audit, "group_reliance", None)
    if not isinstance(groups, pd.DataFrame) or groups.empty:
        return None
    frame = groups.copy()
    if "concepts" in frame:
        frame["concepts"] = [", ".join(names.get(str(c), str(c)) for c in members)
                             if isinstance(members, (list, tuple, np.ndarray)) else str(members)
                             for members in frame["concepts"]]
    return frame


def _group_sections(audit: Any, names: Mapping[str, str], max_rows: int) -> list[Section]:
    """Reliance aggregated per concept group: a table and a bar chart of the group shares."""
    frame = _group_frame(audit, names)
    if frame is None:
        return []
    import matplotlib.pyplot as plt

    caption = ("Concepts of one group (e.g. the one-hot columns of one finding) count as one: "
               "share = the surrogate's reliance summed over the group's members; 'relied' when "
               "it reaches the audit's min_reliance. The test drops the whole group and asks "
               "whether the decisions still depend on it (likelihood ratio given every concept "
               "outside the group; q: Benjamini-Hochberg over groups x classes).")
    sections: list[Section] = [
        Table("Reliance per concept group", frame=frame.rename(columns=_human_column),
              max_rows=max_rows, caption=caption)]
    if "share" in frame:
        top = frame.sort_values("share", ascending=False, kind="stable").head(15).iloc[::-1]
        fig, ax = plt.subplots(figsize=(6.0, 0.4 * len(top) + 1.3), layout="constrained")
        relied = top["relied"].astype(bool) if "relied" in top else pd.Series(False, index=top.index)
        ax.barh([str(g) for g in top["group"]], top["share"],
                color=["#0072b2" if r else "#9ab" for r in relied])
        ax.set_xlabel("share of the surrogate's reliance (summed over the group)")
        ax.set_title("Reliance per concept group (dark: relied upon)")
        ax.grid(axis="x", alpha=0.3)
        sections.append(Figures.from_matplotlib(
            "Reliance per concept group: plot", fig, alts=["Bar chart of the reliance per concept group"],
            caption="Each group's summed share of the surrogate's reliance, largest first.",
            data={str(g): float(v) for g, v in zip(frame["group"], frame["share"], strict=True)}))
    return sections


def _audit_summary(audit: Any, summary: Mapping[str, Any], names: Mapping[str, str],
                   decisions: np.ndarray, labels: Any, parts: pd.DataFrame | None = None) -> Summary:
    """Findings first: flagged concepts with their test, surrogate fidelity, error concepts,
    concept groups relied upon and, for a hybrid bottleneck, the residual share."""
    findings = [line for line in _audit_findings(audit, names).split("\n") if line]
    flagged = [names.get(c, c) for c in summary.get("flagged_spurious", [])]
    if flagged:
        headline = ("The decisions rely on " + ", ".join(f"'{n}'" for n in flagged)
                    + ", which you declared irrelevant.")
    elif findings:
        headline = "No irrelevant concept is relied on by the decisions (see the tests below)."
    else:
        headline = "No concept was declared irrelevant; the evidence below shows what the decisions rely on."
    points = list(findings)
    numbers: dict[str, str] = {"images": str(len(decisions))}
    values: dict[str, Any] = {"flagged": list(summary.get("flagged_spurious", []))}
    if labels is not None:
        accuracy = float(np.mean(np.asarray(labels).astype(str) == decisions.astype(str)))
        numbers["accuracy of the decisions"] = rounded(accuracy)
        values["accuracy"] = accuracy
    if summary.get("fidelity") is not None and summary.get("fidelity_ci"):
        low, high = summary["fidelity_ci"]
        shown = interval(summary["fidelity"], low, high)
        numbers["surrogate fidelity (95% interval)"] = shown
        values["fidelity"] = {"value": summary["fidelity"], "ci_low": low, "ci_high": high}
        points.append(f"A sparse concept surrogate reproduces the decisions on held-out images with "
                      f"fidelity {shown}: the concept evidence below describes the decisions this well.")
    enriched = _enriched_among_errors(getattr(audit, "errors", None))
    if enriched:
        points.append("Concepts enriched among errors: " + "; ".join(text for text, _ in enriched) + ".")
        values["enriched_among_errors"] = [v for _, v in enriched]
    elif labels is not None:
        points.append("No concept is enriched among the errors (q < 0.05).")
    groups = _group_frame(audit, names)
    if groups is not None and "share" in groups:
        relied = groups[groups["relied"].astype(bool)] if "relied" in groups else groups.head(0)
        if len(relied):
            parts_text = [f"{g} ({rounded(100 * float(v))}% of the reliance)"
                          for g, v in zip(relied["group"], relied["share"], strict=True)]
            points.append("Concept groups relied upon (each counted as one concept): "
                          + ", ".join(parts_text[:5]) + ("" if len(parts_text) <= 5 else ", ...") + ".")
        else:
            points.append("No concept group is relied upon as a whole.")
        values["group_reliance"] = {str(g): float(v) for g, v in zip(groups["group"], groups["share"],
                                                                     strict=True)}
    if parts is not None and len(parts):
        median = float(parts["residual_share"].median())
        numbers["median residual share"] = f"{rounded(100 * median)}%"
        values["residual_share"] = {"median": median, "mean": float(parts["residual_share"].mean())}
        points.append(f"The decisions come from a hybrid bottleneck: the concepts leave a median "
                      f"{rounded(100 * median)}% of each decision to the residual on the image "
                      f"embedding ({int((parts['residual_share'] > 0.5).sum())} of {len(parts)} "
                      "decisions mostly residual).")
    return Summary("Summary", headline=headline, points=points, numbers=numbers, values=values,
                   caption="Each flag names the test that produced it; the tables below hold every number.")


def _enriched_among_errors(errors: Any, q: float = 0.05, k: int = 3) -> list[tuple[str, dict[str, Any]]]:
    """The ``k`` most significant (q below ``q``) concepts enriched among errors, as text."""
    if not isinstance(errors, pd.DataFrame) or errors.empty or "q_value" not in errors:
        return []
    rows = errors[errors["q_value"] < q].sort_values("q_value").head(k)
    out = []
    for row in rows.to_dict(orient="records"):
        kind = str(row.get("error_type", "errors")).replace("_", " ") + "s"
        direction = "higher" if float(row.get("mean_diff", 0)) > 0 else "lower"
        name = str(row.get("name") or row.get("concept"))
        out.append((f"{name} {direction} among {kind} of '{row.get('class')}' "
                    f"({row.get('n_error')} cases, q = {rounded(row['q_value'])})",
                    {"concept": row.get("concept"), "error_type": row.get("error_type"),
                     "class": row.get("class"), "q_value": row["q_value"]}))
    return out


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
        # the file name only: ids can be local paths, which do not belong in a shared report
        gallery.add(image, PurePath(str(image_id)).name or str(image_id), details=details, max_side=128)
    if skipped:
        gallery.caption += (f" {len(skipped)} thumbnail(s) could not be loaded and are left out: "
                            + "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    return gallery
