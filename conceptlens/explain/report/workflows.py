"""From images to an explanation report: score, predict, map, attribute, render."""

from __future__ import annotations

from collections.abc import Sequence
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
    embeddings: Any = None,
) -> tuple[list[ImageExplanation], Any]:
    """Compute the per-image explanations that :func:`explain_images` renders.

    Each image is loaded once: the scoring pass keeps the images it loads for the first
    ``max_images``, and their concept maps, attributions and (for a hybrid bottleneck)
    embeddings are computed from that same :class:`~conceptlens.models.images.LoadedImage`,
    its model input and its features (one forward pass per image for the maps and the
    embedding, none repeated by :func:`~conceptlens.explain.attribute`). Scoring with
    DataLoader workers (large inputs) loads in the workers, so the explained images are
    loaded once more here.

    Parameters
    ----------
    scorer, images, bottleneck, method, top_k, n_steps, internal_batch_size, max_images
        As :func:`explain_images`.
    scores : ConceptScores, optional
        The images' :class:`~conceptlens.vocab.ConceptScores` when already computed with this
        scorer; then nothing is scored again.
    embeddings : pandas.DataFrame, optional
        Image embeddings indexed by image id, for a
        :class:`~conceptlens.concepts.HybridBottleneck` whose residual reads them (e.g. the
        ones it was evaluated on). Default: the global embeddings of the features computed
        here for the maps (what :meth:`ConceptScorer.embed` returns for these images).

    Returns
    -------
    explanations : list of ImageExplanation
        One per explained image; for a hybrid bottleneck with its ``residual`` and
        ``residual_share``.
    scores : ConceptScores
        The scores of every image (its ``errors`` name the images that failed).
    """
    from conceptlens.explain import attribute
    from conceptlens.explain.faithfulness import faithfulness_card
    from conceptlens.explain.report.extras import hybrid_parts, is_hybrid, model_kwargs
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

    # each image once: loaded, preprocessed and encoded (the maps and the embedding read the features)
    backbone = scorer.backbone
    inputs: list[tuple[Any, Any, Any]] = []
    for image_id in ids:
        loaded = kept.load(sources[image_id])
        pixels = backbone.preprocess([loaded.image]).to(backbone.device).float()
        inputs.append((loaded, pixels, backbone.encode_images(pixels)))

    contributions = predictions = probabilities = parts = None
    if bottleneck is not None:
        subset = scores.table.loc[ids]
        if not (is_hybrid(bottleneck) and bottleneck.uses_embeddings_):
            embeddings = None
        elif embeddings is None:  # the global embeddings of the features computed above
            embeddings = pd.DataFrame(
                np.stack([features.global_embeds[0].detach().float().cpu().numpy()
                          for _, _, features in inputs]),
                index=pd.Index(ids, name="image", dtype=object))
        elif isinstance(embeddings, pd.DataFrame):
            embeddings = embeddings.loc[ids]
        kwargs = model_kwargs(bottleneck, embeddings)
        predictions = bottleneck.predict(subset, **kwargs)
        probabilities = pd.DataFrame(bottleneck.predict_proba(subset, **kwargs), index=ids,
                                     columns=[str(c) for c in bottleneck.classes_])
        contributions = bottleneck.contributions(subset)
        parts = hybrid_parts(bottleneck, subset, embeddings, predicted=list(predictions))

    explanations: list[ImageExplanation] = []
    for i, image_id in enumerate(ids):
        loaded, pixels, features = inputs[i]
        inputs[i] = (None, None, None)  # let the features go once used
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
            if parts is not None:  # hybrid (PCBM-h): the residual's part of the decision
                item.residual = float(parts["residual"].iloc[i])
                item.residual_share = float(parts["residual_share"].iloc[i])
            top = list(item.contributions.abs().sort_values(ascending=False).index[:top_k])
        else:
            top = list(row.sort_values(ascending=False).index[:top_k])
        maps = scorer.concept_maps(loaded, concepts=top, features=features)
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
    method: str | None = "integrated_gradients",
    top_k: int = 4,
    n_steps: int | str = "auto",
    internal_batch_size: int | None = 8,
    max_images: int | None = 20,
    notice: str | None = None,
    title: str = "Concept explanation report",
    scores: Any = None,
    embeddings: Any = None,
    extra: Sequence[Any] | None = None,
) -> tuple[Report, pd.DataFrame]:
    """Explain images end to end and return the report plus the images that failed.

    For each image: input warnings, concept scores; with a ``bottleneck``, the predicted class,
    its probabilities and each concept's signed contribution, worded by whether the score is
    high or low ("low X score (+5.4 toward benign)"), and for a
    :class:`~conceptlens.concepts.HybridBottleneck` the residual's share of the decision; the
    concept maps of the ``top_k`` concepts (one forward pass); and a gradient attribution of
    the predicted class (or, without a bottleneck, of the top concept) with ``method``, with
    its faithfulness card (:func:`conceptlens.explain.faithfulness_card`). Then the sections
    of what the scorer carries (concepts learned from examples, calibration, filtering; see
    :mod:`conceptlens.explain.report.extras`) and of every object in ``extra``.

    Parameters
    ----------
    scorer : ConceptScorer
        A :class:`~conceptlens.vocab.ConceptScorer`.
    images : object
        Anything :meth:`ConceptScorer.score` accepts.
    bottleneck : object, optional
        A fitted concept bottleneck.
    method : str or None
        Attribution method for :func:`conceptlens.explain.attribute`; ``None`` skips it.
    top_k : int
        Concepts shown per image.
    n_steps : int or "auto"
        Integration steps of path methods (``"auto"``: until converged, see
        :func:`conceptlens.explain.attribute`).
    internal_batch_size : int or None
        Bound on inputs per forward/backward pass during attribution.
    max_images : int or None
        At most this many images are explained (the first ones scored).
    notice : str, optional
        Warning shown on top of the report.
    title : str
        Page title.
    scores : ConceptScores, optional
        The images' :class:`~conceptlens.vocab.ConceptScores` when already computed with
        ``scorer``; then the images are not scored again (each explained image is loaded
        once, for its maps, embedding and attribution).
    embeddings : pandas.DataFrame, optional
        Image embeddings indexed by image id for a hybrid bottleneck whose residual reads
        them; default: computed from the images with the maps (see :func:`explain_items`).
    extra : sequence, optional
        Further objects with a ``report_sections()`` method (a TCAV result, an MPRT cascade,
        a calibration report, a filtering result, ...) or report sections.

    Returns
    -------
    report : Report
        The explanation report.
    errors : pandas.DataFrame
        The images that were skipped, with reasons.

    Raises
    ------
    TypeError
        An object in ``extra`` has no ``report_sections()``.
    """
    explanations, scores = explain_items(scorer, images, bottleneck=bottleneck, method=method, top_k=top_k,
                                         n_steps=n_steps, internal_batch_size=internal_batch_size,
                                         max_images=max_images, scores=scores, embeddings=embeddings)
    backbone = scorer.backbone.identity.to_dict()
    vocabulary = {"name": getattr(scorer.vocabulary, "name", ""), "hash": scorer.vocabulary.hash,
                  "concepts": len(scorer.vocabulary)}
    facts = {}
    if bottleneck is not None:
        facts = {"bottleneck": type(bottleneck).__name__,
                 "classes": [str(c) for c in bottleneck.classes_]}
    report = explanation_report(explanations, title=title, backbone=backbone, vocabulary=vocabulary,
                                scoring=dict(scores.config), extra_facts=facts, notice=notice,
                                top_k=max(top_k, 8), scorer=scorer, bottleneck=bottleneck, extra=extra)
    return report, scores.errors
