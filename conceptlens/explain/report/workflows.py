"""From images to an explanation report: score, predict, map, attribute, render."""

from __future__ import annotations

from dataclasses import replace
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
    scores: Any = None,
) -> tuple[list[ImageExplanation], Any]:
    """Compute the per-image explanations that :func:`explain_images` renders.

    Each image is loaded once: the scoring pass keeps the images it loads for the first
    ``max_images``, and their concept maps and attributions are computed from that same
    :class:`~conceptlens.models.images.LoadedImage`, its model input and its features (one
    forward pass for the maps, none repeated by :func:`~conceptlens.explain.attribute`).
    Scoring with DataLoader workers (large inputs) loads in the workers, so the explained
    images are loaded once more here.

    Args:
        scorer, images, bottleneck, method, top_k, n_steps, internal_batch_size, max_images:
            As :func:`explain_images`.
        scores: The images' :class:`~conceptlens.vocab.ConceptScores` when already
            computed with this scorer; then nothing is scored again.

    Returns:
        ``(explanations, scores)``: one :class:`ImageExplanation` per explained image and the
        ``ConceptScores`` of every image (its ``errors`` name the images that failed).
    """
    from conceptlens.explain import attribute
    from conceptlens.explain.faithfulness import faithfulness_card
    from conceptlens.vocab.sources import iter_image_sources

    sources = {source.image_id: source for source in iter_image_sources(images)}
    kept = _KeptImages(max_images or None)
    if scores is None:
        scores = scorer.score([kept.wrap(source) for source in sources.values()])
    if len(scores) == 0:
        reasons = "; ".join(f"{r.image}: {r.reason}" for r in scores.errors.itertuples(index=False))
        raise ValueError(f"no image could be scored ({reasons})")
    names = dict(scores.concept_names)
    ids = scores.image_ids[: max_images or None]
    missing = [image_id for image_id in ids if image_id not in sources]
    if missing:
        raise ValueError(f"scores name images that are not among the images given: {missing[:5]}")

    contributions = predictions = probabilities = None
    if bottleneck is not None:
        subset = scores.table.loc[ids]
        predictions = bottleneck.predict(subset)
        probabilities = pd.DataFrame(bottleneck.predict_proba(subset), index=ids,
                                     columns=[str(c) for c in bottleneck.classes_])
        contributions = bottleneck.contributions(subset)

    backbone = scorer.backbone
    explanations: list[ImageExplanation] = []
    for i, image_id in enumerate(ids):
        loaded = kept.load(sources[image_id])
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
        # one model input and one forward pass for the maps; the attribution starts from both
        pixels = backbone.preprocess([loaded.image]).to(backbone.device).float()
        maps = scorer.concept_maps(loaded, concepts=top, features=backbone.encode_images(pixels))
        item.maps = {c: np.asarray(maps.upsampled(c)) for c in top}
        if method:
            if bottleneck is not None:
                from conceptlens.explain import ClassTarget

                target = ClassTarget(predictions[i].item() if hasattr(predictions[i], "item") else predictions[i])
            else:
                from conceptlens.explain import ConceptTarget

                target = ConceptTarget(top[0])
            attribution = attribute(scorer, loaded, target=target, method=method, bottleneck=bottleneck,
                                    pixels=pixels, n_steps=n_steps, internal_batch_size=internal_batch_size)
            item.attribution = np.asarray(attribution.map)
            item.attribution_label = f"{attribution.method} of {attribution.target.describe()}"
            item.faithfulness = faithfulness_card(attribution)
        explanations.append(item)

    return explanations, scores


class _KeptImages:
    """Keeps the first ``limit`` images the scoring pass loads, so that they are not loaded again."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.images: dict[str, Any] = {}

    def wrap(self, source: Any) -> Any:
        """``source`` with a ``load`` that keeps what it loads (while there is room)."""

        def load() -> Any:
            loaded = source.load()
            if self.limit is None or len(self.images) < self.limit:
                self.images[source.image_id] = loaded
            return loaded

        return replace(source, load=load)

    def load(self, source: Any) -> Any:
        """The kept image of ``source``, else ``source.load()``."""
        loaded = self.images.pop(source.image_id, None)
        return loaded if loaded is not None else source.load()


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
    scores: Any = None,
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
        scores: The images' :class:`~conceptlens.vocab.ConceptScores` when already computed
            with ``scorer``; then the images are not scored again (each explained image is
            loaded once, for its maps and attribution).

    Returns:
        ``(report, errors)``: the :class:`Report` and a DataFrame of skipped images with reasons.
    """
    explanations, scores = explain_items(scorer, images, bottleneck=bottleneck, method=method, top_k=top_k,
                                         n_steps=n_steps, internal_batch_size=internal_batch_size,
                                         max_images=max_images, scores=scores)
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
