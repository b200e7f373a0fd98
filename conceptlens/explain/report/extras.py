"""What a report shows beyond scores and decisions: objects that bring their own sections,
and what the scorer / bottleneck chain carries.

Every report builder (:func:`~conceptlens.explain.report.explanation_report`,
:func:`~conceptlens.explain.report.audit_report`,
:func:`~conceptlens.explain.report.dataset_report`) takes ``extra=[...]``: any object with a
``report_sections()`` method (a :class:`~conceptlens.explain.tcav.TCAVResult`, an
:class:`~conceptlens.explain.metrics.MPRTCascade`, a
:class:`~conceptlens.vocab.calibration.CalibrationReport` or
:class:`~conceptlens.vocab.calibration.ConceptCalibrator`, a
:class:`~conceptlens.vocab.filtering.ConceptFilterResult`, a
:class:`~conceptlens.vocab.examples.LearnedConceptVector`, a
:class:`~conceptlens.train.ConceptModelEvaluation` or
:class:`~conceptlens.train.TrainingHistory`, ...) or a
:class:`~conceptlens.explain.report.Section` itself. Their sections go into the evidence part
of the page (after the summary; their collapsed parts join the settings at the end), through
the same autoescaped template, with their numbers in the JSON twin.

Given the ``scorer`` (and ``bottleneck``), the builders also add on their own
(:func:`chain_sections`, :func:`hybrid_sections`):

* the concepts of the vocabulary learned from example images, with their held-out accuracy;
* the calibrator the scorer applies: ECE before and after and the reliability plot (from its
  latest :func:`~conceptlens.vocab.calibration.calibration_report`), and its maps;
* what :func:`~conceptlens.vocab.filtering.filter_concepts` dropped and why, when the
  vocabulary came out of it;
* for a :class:`~conceptlens.concepts.HybridBottleneck` (PCBM-h): each decision's residual
  share, its distribution and the decisions the concepts explain least.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from conceptlens.explain.report.document import Facts, Figures, Section, Table, Text, rounded

__all__ = [
    "chain_sections",
    "extra_sections",
    "hybrid_parts",
    "hybrid_sections",
    "is_hybrid",
    "model_kwargs",
    "sections_of",
]


def sections_of(obj: Any) -> list[Section]:
    """The report sections of one object.

    Args:
        obj: A :class:`Section`, an object with a ``report_sections()`` method returning
            sections, or a list / tuple of those.

    Returns:
        The sections, in order.

    Raises:
        TypeError: ``obj`` has no ``report_sections()`` (or returns something other than
            sections).

    Examples:
        >>> [s.title for s in sections_of(Text("Note", text="hello"))]
        ['Note']
    """
    if isinstance(obj, Section):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [s for item in obj for s in sections_of(item)]
    method = getattr(obj, "report_sections", None)
    if not callable(method):
        raise TypeError(
            f"cannot put a {type(obj).__name__} in a report: extra= takes Section objects or "
            "objects with a report_sections() method (TCAVResult, MPRTCascade, "
            "CalibrationReport, ConceptCalibrator, ConceptFilterResult, LearnedConceptVector, "
            "ConceptModelEvaluation, TrainingHistory, ...)"
        )
    sections = list(method())
    wrong = [type(s).__name__ for s in sections if not isinstance(s, Section)]
    if wrong:
        raise TypeError(f"{type(obj).__name__}.report_sections() returned {wrong[0]} objects, "
                        "not report sections")
    return sections


def extra_sections(extra: Iterable[Any] | None, *, skip: Iterable[Any] = ()) -> list[Section]:
    """Sections of every object in ``extra`` (``None`` items are left out), in order.

    Args:
        extra: The objects (see :func:`sections_of`).
        skip: Objects already in the report (compared by identity), left out.
    """
    if extra is None:
        return []
    if isinstance(extra, Section) or hasattr(extra, "report_sections"):
        extra = [extra]
    seen = {id(o) for o in skip}
    out: list[Section] = []
    for obj in extra:
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        out.extend(sections_of(obj))
    return out


# ----------------------------------------------------------------------------------------------
# What the scorer carries
# ----------------------------------------------------------------------------------------------


def _learned_concepts(vocabulary: Any, backbone: Any) -> tuple[list[Section], list[Any]]:
    from conceptlens.vocab.examples import ExampleConceptError, is_example_concept, learned_vector

    rows, vectors, missing = [], [], []
    for concept in vocabulary or ():
        if not is_example_concept(concept):
            continue
        try:
            vector = learned_vector(concept, backbone)
        except ExampleConceptError as error:
            missing.append(f"{concept.name} ({error})")
            continue
        vectors.append(vector)
        v = vector.validation
        rows.append({
            "concept": concept.name, "concept id": concept.id,
            "positives": vector.n_positives, "negatives": vector.n_negatives,
            "negatives from": vector.negatives,
            "held-out AUC": v.get("global_auc", np.nan),
            "held-out accuracy": v.get("global_accuracy", np.nan),
            "held-out local AUC": v.get("local_auc", np.nan),
            "held-out images": int(v.get("n_holdout_pos", 0)) + int(v.get("n_holdout_neg", 0)),
        })
    if not rows and not missing:
        return [], []
    caption = ("Concepts defined by example images rather than prompts: their vectors were "
               "learned from the positives against the negatives (or random reference images). "
               "Held-out: a stratified part of the examples kept out of the fit, scored by the "
               "learned vector (ROC AUC and accuracy of the global score; AUC of the local one).")
    if missing:
        caption += " Vectors not loaded, accuracy unknown: " + "; ".join(missing[:5]) + "."
    frame = pd.DataFrame(rows, columns=["concept", "concept id", "positives", "negatives",
                                        "negatives from", "held-out AUC", "held-out accuracy",
                                        "held-out local AUC", "held-out images"])
    return [Table("Concepts learned from example images", caption=caption, frame=frame)], vectors


def _calibration(calibrator: Any) -> tuple[list[Section], list[Any]]:
    if calibrator is None:
        return [], []
    objects: list[Any] = [calibrator]
    evaluation = getattr(calibrator, "evaluation_", None)
    sections: list[Section] = []
    if evaluation is not None:
        sections += sections_of(evaluation)
        objects.append(evaluation)
    else:
        n = len(getattr(calibrator, "concept_ids_", []) or [])
        sections.append(Text(
            "Concept score calibration",
            text=(f"The scores are calibrated probabilities: the scorer maps each of {n} concept "
                  f"scores through a {calibrator.method} calibration fitted on concept labels. "
                  "How well calibrated they are is not known here: evaluate the calibrator on "
                  "held-out labelled images with calibration_report(calibrator, scores, labels) "
                  "before building the report to show the ECE before and after and the "
                  "reliability plot.")))
    if getattr(calibrator, "is_fitted", False):
        sections += sections_of(calibrator)
    return sections, objects


def chain_sections(scorer: Any = None, *, vocabulary: Any = None, calibrator: Any = None,
                   backbone: Any = None) -> tuple[list[Section], list[Any]]:
    """The sections a report adds on its own for what the scorer carries.

    Args:
        scorer: The :class:`~conceptlens.vocab.ConceptScorer` behind the scores (its
            vocabulary, backbone and calibrator are read); ``None``: only the arguments below.
        vocabulary: The vocabulary (default: the scorer's).
        calibrator: The concept calibrator (default: the scorer's ``calibrator``).
        backbone: The backbone the learned concepts belong to (default: the scorer's).

    Returns:
        ``(sections, objects)``: the sections (learned concepts with their held-out
        accuracy, the calibration with ECE before / after and the reliability plot, the
        filtering table) and the objects they came from (so ``extra=`` does not repeat them).
    """
    from conceptlens.vocab.filtering import filtering_of

    vocabulary = vocabulary if vocabulary is not None else getattr(scorer, "vocabulary", None)
    calibrator = calibrator if calibrator is not None else getattr(scorer, "calibrator", None)
    backbone = backbone if backbone is not None else getattr(scorer, "backbone", None)
    sections: list[Section] = []
    objects: list[Any] = []
    if vocabulary is not None:
        found, vectors = _learned_concepts(vocabulary, backbone)
        sections += found
        objects += vectors
        filtered = filtering_of(vocabulary)
        if filtered is not None:
            sections += sections_of(filtered)
            objects.append(filtered)
    found, used = _calibration(calibrator)
    sections += found
    objects += used
    return sections, objects


# ----------------------------------------------------------------------------------------------
# Hybrid bottlenecks (PCBM-h)
# ----------------------------------------------------------------------------------------------


def is_hybrid(bottleneck: Any) -> bool:
    """Whether ``bottleneck`` is a fitted :class:`~conceptlens.concepts.HybridBottleneck`."""
    from conceptlens.concepts.hybrid import HybridBottleneck

    return isinstance(bottleneck, HybridBottleneck) and hasattr(bottleneck, "residual_coef_")


def model_kwargs(bottleneck: Any, embeddings: Any = None) -> dict[str, Any]:
    """Keyword arguments of ``predict`` / ``predict_proba``: ``embeddings`` for a hybrid
    bottleneck whose residual reads them, nothing otherwise.

    Raises:
        EmbeddingsError: A hybrid bottleneck on embeddings, but ``embeddings`` is ``None``.
    """
    if not is_hybrid(bottleneck) or not bottleneck.uses_embeddings_:
        return {}
    if embeddings is None:
        from conceptlens.concepts.hybrid import EmbeddingsError

        raise EmbeddingsError(
            "the hybrid bottleneck's residual reads image embeddings: pass embeddings= to the "
            "report (e.g. scorer.embed(images), indexed by image id)"
        )
    return {"embeddings": embeddings}


def hybrid_parts(bottleneck: Any, scores: Any, embeddings: Any = None,
                 predicted: Any = None) -> pd.DataFrame | None:
    """Each decision of a hybrid bottleneck split into concepts, residual and intercept.

    Args:
        bottleneck: A fitted :class:`~conceptlens.concepts.HybridBottleneck` (anything else:
            ``None`` is returned).
        scores: The concept scores (``ConceptScores`` or DataFrame), one row per image.
        embeddings: The image embeddings when its residual reads them.
        predicted: The class each row is explained for (default: the predicted class).

    Returns:
        One row per image (indexed by image id): ``class``, ``concepts`` (sum of the concept
        contributions), ``residual``, ``intercept``, ``decision`` (all toward ``class``; they
        add up to ``decision``) and ``residual_share`` (``|residual| / (|residual| + sum |c_j|)``,
        the part of the decision the concepts do not explain); ``None`` for a bottleneck
        without a residual.
    """
    if not is_hybrid(bottleneck):
        return None
    kwargs = model_kwargs(bottleneck, embeddings)
    parts = bottleneck.decompose(scores, **kwargs)
    if predicted is None:
        predicted = bottleneck.predict(scores, **kwargs)
    predicted = list(predicted)
    outputs = [str(o) for o in parts.contributions.outputs]
    concepts = parts.contributions.values.sum(axis=2)
    rows = []
    for i, cls in enumerate(predicted):
        name = str(cls.item() if hasattr(cls, "item") else cls)
        if name in outputs:
            k, sign = outputs.index(name), 1.0
        elif len(outputs) == 1:  # the negative class of a binary model: minus the decision
            k, sign = 0, -1.0
        else:
            raise ValueError(f"class {name!r} is not one of the bottleneck's outputs {outputs}")
        rows.append({"class": name, "concepts": sign * concepts[i, k],
                     "residual": sign * parts.residual[i, k], "intercept": sign * parts.intercept[k],
                     "decision": sign * parts.decision[i, k],
                     "residual_share": float(parts.residual_share[i, k])})
    index = pd.Index([str(s) for s in parts.contributions.sample_ids], name="image")
    return pd.DataFrame(rows, index=index)


def hybrid_sections(parts: pd.DataFrame, bottleneck: Any = None, *, max_rows: int = 20,
                    title: str = "Residual share of the decisions (hybrid bottleneck)",
                    labels: Mapping[str, Any] | None = None) -> list[Section]:
    """Report sections for :func:`hybrid_parts`: the residual share per class, its
    distribution and the decisions the concepts explain least.

    Args:
        parts: The output of :func:`hybrid_parts`.
        bottleneck: The hybrid bottleneck (its settings go into the facts).
        max_rows: Decisions listed (the JSON twin holds every one).
        title: Heading of the first section.
        labels: Image id -> true label, shown beside each decision when given.
    """
    from conceptlens.explain.plots import plot_residual_share

    share = parts["residual_share"]
    by_class = (parts.groupby("class", sort=True)["residual_share"]
                .agg(decisions="size", mean="mean", median="median", maximum="max").reset_index())
    by_class = by_class.rename(columns={"mean": "mean residual share", "median": "median residual share",
                                        "maximum": "largest residual share"})
    facts: dict[str, Any] = {"decisions": len(parts), "median residual share": float(share.median()),
                             "mean residual share": float(share.mean()),
                             "decisions mostly residual (share > 0.5)": int((share > 0.5).sum())}
    if bottleneck is not None:
        facts["residual reads"] = ("image embeddings" if getattr(bottleneck, "uses_embeddings_", False)
                                   else "the concept scores")
        if getattr(bottleneck, "residual_C_", None) is not None:
            facts["residual C (inverse L2)"] = float(bottleneck.residual_C_)
        if getattr(bottleneck, "concept_accuracy_", None) is not None:
            facts["training accuracy of the concepts alone"] = float(bottleneck.concept_accuracy_)
    caption = ("A hybrid bottleneck (PCBM-h) adds a residual on the image embedding to the concept "
               "bottleneck. Residual share of a decision: |residual| / (|residual| + sum of "
               "|concept contributions|), the part of it the concepts do not explain (0: all "
               f"concepts). Median over these decisions: {rounded(float(share.median()))}.")
    worst = parts.sort_values("residual_share", ascending=False, kind="stable").reset_index()
    if labels is not None:
        worst.insert(2, "label", [str(labels.get(i, "")) for i in worst["image"]])
    fig = plot_residual_share(share.to_numpy(), parts["class"].to_numpy(),
                              title="Residual share of each decision, by predicted class")
    return [
        Facts(title, caption=caption, facts=facts),
        Table(f"{title}: by class", frame=by_class,
              caption="Residual share of the decisions for each class."),
        Figures.from_matplotlib(f"{title}: distribution", fig,
                                caption="How much of each decision the concepts leave to the "
                                        "residual, stacked by class; dashed lines: medians.",
                                alts=["Histogram of the residual share per decision"],
                                data={"bins": 20, "residual_share": share.round(6).tolist(),
                                      "class": parts["class"].tolist()}),
        Table(f"{title}: decisions the concepts explain least", frame=worst, max_rows=max_rows,
              caption="Each decision toward its class: concepts + residual + intercept = decision "
                      "value; largest residual share first."),
    ]
