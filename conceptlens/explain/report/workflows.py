"""From images to an explanation report: score, predict, map, attribute, render."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from conceptlens.explain.report.builders import ImageExplanation, explanation_report
from conceptlens.explain.report.document import Report

__all__ = ["explain_images", "explain_items", "model_notice"]


def model_notice(backbone: Any) -> str | None:
    """The not-for-clinical-use notice a backbone's model card asks for, if any.

    Reads ``README.md`` / ``MODEL_CARD.md`` in the backbone's
    :attr:`~conceptlens.models.base.Backbone.weights_folder` and returns the card's line
    that says "not for clinical use", or ``None``.
    """
    from conceptlens.models.base import weights_folder_of

    folder = weights_folder_of(backbone)
    if folder is None or not folder.is_dir():
        return None
    for card in ("README.md", "MODEL_CARD.md"):
        path = folder / card
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            if "not for clinical use" in line.lower():
                return "From the model card: " + line.strip(" #>*_-\t")
    return None


def explain_items(
    scorer: Any,
    images: Any,
    *,
    bottleneck: Any = None,
    method: str | None = "integrated_gradients",
    top_k: int = 4,
    n_steps: int | str = "auto",
    internal_batch_size: int | None = 8,
    max_images: int | None = 20,
) -> tuple[list[ImageExplanation], Any]:
    """Compute the per-image explanations that :func:`explain_images` renders.

    Returns:
        ``(explanations, scores)``: one :class:`ImageExplanation` per explained image and the
        ``ConceptScores`` of every image (its ``errors`` name the images that failed).
    """
    from conceptlens.explain import attribute
    from conceptlens.explain.faithfulness import faithfulness_card
    from conceptlens.vocab.sources import iter_image_sources

    scores = scorer.score(images)
    if len(scores) == 0:
        reasons = "; ".join(f"{r.image}: {r.reason}" for r in scores.errors.itertuples(index=False))
        raise ValueError(f"no image could be scored ({reasons})")
    loaders = {src.image_id: src.load for src in iter_image_sources(images)}
    names = dict(scores.concept_names)
    ids = scores.image_ids[: max_images or None]

    contributions = predictions = probabilities = None
    if bottleneck is not None:
        subset = scores.table.loc[ids]
        predictions = bottleneck.predict(subset)
        probabilities = pd.DataFrame(bottleneck.predict_proba(subset), index=ids,
                                     columns=[str(c) for c in bottleneck.classes_])
        contributions = bottleneck.contributions(subset)

    explanations: list[ImageExplanation] = []
    for i, image_id in enumerate(ids):
        loaded = loaders[image_id]()
        row = scores.table.loc[image_id]
        item = ImageExplanation(image_id=str(image_id), image=loaded.image, scores=row, concept_names=names,
                                warnings=scores.warnings_for(image_id))
        if bottleneck is not None:
            pred = predictions[i]
            item.prediction = str(pred)
            item.probabilities = probabilities.loc[image_id].to_dict()
            per_class = contributions.for_class(pred.item() if hasattr(pred, "item") else pred)
            item.contributions = per_class.loc[image_id] if image_id in per_class.index else per_class.iloc[i]
            # the decision at the training mean: the class's intercept plus its weights there
            weights, intercept = bottleneck.class_weights(pred)
            item.intercept = float(intercept + weights @ bottleneck.mean_)
            top = list(item.contributions.abs().sort_values(ascending=False).index[:top_k])
        else:
            top = list(row.sort_values(ascending=False).index[:top_k])
        maps = scorer.concept_maps(loaded.image, concepts=top)
        item.maps = {c: np.asarray(maps.upsampled(c)) for c in top}
        if method:
            if bottleneck is not None:
                from conceptlens.explain import ClassTarget

                target = ClassTarget(predictions[i].item() if hasattr(predictions[i], "item") else predictions[i])
            else:
                from conceptlens.explain import ConceptTarget

                target = ConceptTarget(top[0])
            attribution = attribute(scorer.backbone, loaded.image, target=target, method=method, scorer=scorer,
                                    bottleneck=bottleneck, n_steps=n_steps,
                                    internal_batch_size=internal_batch_size)
            item.attribution = np.asarray(attribution.map)
            item.attribution_label = f"{attribution.method} of {attribution.target.describe()}"
            item.faithfulness = faithfulness_card(attribution)
        explanations.append(item)

    return explanations, scores


def explain_images(
    scorer: Any,
    images: Any,
    *,
    bottleneck: Any = None,
    method: str = "integrated_gradients",
    top_k: int = 4,
    n_steps: int | str = "auto",
    internal_batch_size: int | None = 8,
    max_images: int | None = 20,
    notice: str | None = None,
    title: str = "Concept explanation report",
) -> tuple[Report, pd.DataFrame]:
    """Explain images end to end and return the report plus the images that failed.

    For each image: input warnings, concept scores; with a ``bottleneck``, the predicted class, its
    probabilities and each concept's signed contribution; the concept maps of the ``top_k``
    concepts (one forward pass); and a gradient attribution of the predicted class (or,
    without a bottleneck, of the top concept) with ``method``, with its faithfulness card
    (:func:`conceptlens.explain.faithfulness_card`).

    Args:
        scorer: A :class:`~conceptlens.vocab.ConceptScorer`.
        images: Anything :meth:`ConceptScorer.score` accepts.
        bottleneck: A fitted concept bottleneck (optional).
        method: Attribution method for :func:`conceptlens.explain.attribute`; ``None`` skips it.
        top_k: Concepts shown per image.
        n_steps: Integration steps of path methods (``"auto"``: until converged, see
            :func:`conceptlens.explain.attribute`).
        internal_batch_size: Bound on inputs per forward/backward pass during attribution.
        max_images: At most this many images are explained (the first ones scored).
        notice: Warning shown on top of the report.
        title: Page title.

    Returns:
        ``(report, errors)``: the :class:`Report` and a DataFrame of skipped images with reasons.
    """
    explanations, scores = explain_items(scorer, images, bottleneck=bottleneck, method=method, top_k=top_k,
                                         n_steps=n_steps, internal_batch_size=internal_batch_size,
                                         max_images=max_images)
    backbone = scorer.backbone.identity.to_dict()
    vocabulary = {"name": getattr(scorer.vocabulary, "name", ""), "hash": scorer.vocabulary.hash,
                  "concepts": len(scorer.vocabulary)}
    extra = {}
    if bottleneck is not None:
        extra = {"bottleneck": type(bottleneck).__name__,
                 "classes": [str(c) for c in bottleneck.classes_]}
    report = explanation_report(explanations, title=title, backbone=backbone, vocabulary=vocabulary,
                                scoring=dict(scores.config), extra_facts=extra, notice=notice,
                                top_k=max(top_k, 8))
    return report, scores.errors
