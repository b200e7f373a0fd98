"""Zero-shot classification and concept retrieval: the model's own uses explanations hang on.

* :func:`zero_shot_classify` labels images with free-text class names, either with the
  upstream README's recipe (global alignment only) or with the ConceptCLIP authors' zero-shot
  diagnosis recipe (global alignment mixed with local, patch-level alignment of the class-name
  tokens).
* :func:`retrieve_images` ranks images by how much they show a concept;
  :func:`retrieve_concepts` ranks concepts by how much an image shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from conceptlens.models.base import Backbone
from conceptlens.vocab.cache import FeatureCache
from conceptlens.vocab.scorer import ConceptScorer, encode_text_vectors, iter_feature_batches
from conceptlens.vocab.scores import ConceptScores
from conceptlens.vocab.vocabulary import match_concept

__all__ = ["DEFAULT_ZERO_SHOT_TEMPLATES", "retrieve_concepts", "retrieve_images", "zero_shot_classify"]

#: The upstream README's prompt: ``f"a medical image of {label}"``.
DEFAULT_ZERO_SHOT_TEMPLATES: tuple[str, ...] = ("a medical image of {}",)
_RECIPES = ("global", "conceptclip")
_SLOTS = ("{}", "{label}", "{concept}")


def _fill(template: str, label: str) -> tuple[str, tuple[int, int]]:
    slots = [slot for slot in _SLOTS if slot in template]
    if len(slots) != 1 or template.count(slots[0]) != 1:
        raise ValueError(
            f"zero-shot template {template!r} must contain exactly one slot: '{{}}' (or "
            "'{label}' / '{concept}')"
        )
    start = template.index(slots[0])
    text = template[:start] + label + template[start + len(slots[0]):]
    return text, (start, start + len(label))


def zero_shot_classify(
    backbone: Backbone,
    images: Any,
    labels: Sequence[str],
    *,
    templates: str | Sequence[str] = DEFAULT_ZERO_SHOT_TEMPLATES,
    recipe: str = "global",
    alpha: float = 0.5,
    top_k: int = 128,
    batch_size: int = 32,
    cache: FeatureCache | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Classify images into ``labels`` without training.

    Recipes (``T`` = templates, ``g`` = normalised image embedding, ``p_i`` = normalised
    patch tokens):

    * ``"global"`` (upstream README): class vector ``t_c`` = the mean over templates of the
      normalised text embeddings of ``template.format(label)``, renormalised (with one
      template: the model's ``text_features``); probabilities
      ``softmax_c(logit_scale * g.t_c)``.
    * ``"conceptclip"`` (the authors' zero-shot diagnosis script): besides the global
      probabilities, a class-name token vector ``u_c`` = the mean over templates of the mean
      of the class-name tokens' features (``text_token_features`` of the tokens inside the
      label's character span), normalised once at the end, as the authors do (they locate the
      name's tokens by the first occurrence of each of its word pieces in the prompt, which
      agrees with the span unless a piece of the name also occurs earlier in the template);
      local logits
      ``L_c`` = mean of the ``top_k`` largest ``concept_logit_scale * p_i.u_c`` over patches
      (``top_k`` clipped to the number of patches); result
      ``alpha * softmax_c(logit_scale * g.t_c) + (1 - alpha) * softmax_c(L_c)``. The two
      softmaxes are taken separately and mixed (rows still sum to 1). ``alpha`` weighs the
      global part, as in :class:`~conceptlens.vocab.ConceptScorer` (the authors' script
      names the local weight ``alpha``; both are 0.5 by default).

    Args:
        backbone: The backbone.
        images: Anything :func:`~conceptlens.vocab.sources.iter_image_sources` accepts.
        labels: Class names, in column order (distinct).
        templates: Format strings with one ``{}`` slot (default: ``"a medical image of {}"``).
        recipe: ``"global"`` or ``"conceptclip"``.
        alpha: Weight of the global probabilities in ``"conceptclip"``.
        top_k: Patches averaged for the local logits in ``"conceptclip"``.
        batch_size: Images per image-tower pass.
        cache: Optional :class:`~conceptlens.vocab.cache.FeatureCache`.
        progress: Show a progress bar.

    Returns:
        DataFrame of probabilities, rows = image ids, columns = labels; rows sum to 1.
        Images that could not be read are left out and listed in ``.attrs["errors"]``
        (a DataFrame with ``image`` and ``reason``).

    Raises:
        ValueError: Empty or duplicate labels, a template without exactly one slot, an
            unknown recipe, ``alpha`` outside ``[0, 1]``.
    """
    if recipe not in _RECIPES:
        raise ValueError(f"recipe must be one of {_RECIPES}; got {recipe!r}")
    if isinstance(labels, str) or not labels:
        raise ValueError("labels must be a non-empty list of class names")
    labels = [str(label) for label in labels]
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct; got {labels}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int; got {top_k!r}")
    templates = [templates] if isinstance(templates, str) else list(templates)
    if not templates:
        raise ValueError("templates must not be empty")

    texts, spans, groups = [], [], []
    for label in labels:
        rows = []
        for template in templates:
            text, span = _fill(template, label)
            rows.append(len(texts))
            texts.append(text)
            spans.append(span)
        groups.append(rows)
    global_vecs, local_vecs = encode_text_vectors(backbone, texts, spans, text_token="span", batch_size=batch_size)
    class_global = F.normalize(
        torch.stack([F.normalize(global_vecs[g], dim=-1).mean(dim=0) for g in groups]), dim=-1
    )
    class_local = F.normalize(torch.stack([local_vecs[g].mean(dim=0) for g in groups]), dim=-1)

    errors: list[dict[str, str]] = []
    ids: list[str] = []
    rows_out: list[torch.Tensor] = []
    for batch in iter_feature_batches(
        backbone, images, batch_size=batch_size, cache=cache, progress=progress, errors=errors,
        desc="zero-shot",
    ):
        device = batch.global_embeds.device
        image = batch.global_embeds.float()
        probs = (backbone.logit_scale * image @ class_global.to(device).T).softmax(dim=-1)
        if recipe == "conceptclip":
            patches = F.normalize(batch.patch_embeds.float(), dim=-1)
            logits = backbone.concept_logit_scale * patches @ class_local.to(device).T  # (b, P, C)
            k = min(top_k, logits.shape[1])
            local = logits.topk(k, dim=1).values.mean(dim=1).softmax(dim=-1)
            probs = alpha * probs + (1 - alpha) * local
        rows_out.append(probs.cpu())
        ids.extend(batch.image_ids)
    values = torch.cat(rows_out).double().numpy() if rows_out else torch.empty(0, len(labels)).numpy()
    frame = pd.DataFrame(values, index=pd.Index(ids, name="image", dtype=object),
                         columns=pd.Index(labels, name="label", dtype=object))
    frame.attrs["errors"] = pd.DataFrame(errors, columns=["image", "reason"])
    frame.attrs["recipe"] = recipe
    return frame


def _resolve_concept(scores: ConceptScores, concept: str) -> str:
    ids = [str(c) for c in scores.table.columns]
    return ids[match_concept(concept, ids, scores.concept_names, where="these scores")]


def retrieve_images(
    scores_or_scorer: ConceptScores | ConceptScorer,
    concept: str,
    k: int = 10,
    *,
    images: Any = None,
) -> pd.DataFrame:
    """The ``k`` images that most show a concept, best first.

    Args:
        scores_or_scorer: Computed :class:`ConceptScores`, or a :class:`ConceptScorer`
            together with ``images`` to score first.
        concept: Concept id or preferred name.
        k: How many images to return (fewer if there are fewer).
        images: Images to score when a scorer is given.

    Returns:
        DataFrame indexed by image id with columns ``rank`` (1 = best) and ``score``.

    Raises:
        KeyError: Unknown concept. ValueError: a scorer without ``images``.
    """
    scores = _as_scores(scores_or_scorer, images)
    column = _resolve_concept(scores, concept)
    _check_k(k)
    ranked = scores.table[column].astype(float).sort_values(ascending=False, kind="stable").head(k)
    out = ranked.to_frame("score")
    out.insert(0, "rank", range(1, len(out) + 1))
    out.index.name = "image"
    return out


def retrieve_concepts(
    scores: ConceptScores | ConceptScorer, image: str, k: int = 10, *, images: Any = None
) -> pd.DataFrame:
    """The ``k`` concepts an image most shows, best first.

    Args:
        scores: Computed :class:`ConceptScores` (or a scorer with ``images``).
        image: Image id (a row label of the table).
        k: How many concepts to return.
        images: Images to score when a scorer is given.

    Returns:
        DataFrame indexed by concept id with columns ``rank``, ``name`` and ``score``.

    Raises:
        KeyError: ``image`` is not a row of the table.
    """
    scores = _as_scores(scores, images)
    _check_k(k)
    if image not in scores.table.index:
        raise KeyError(f"image {image!r} is not among the scored images")
    row = scores.table.loc[image]
    if isinstance(row, pd.DataFrame):
        raise KeyError(f"image id {image!r} is not unique in the scores")
    ranked = row.astype(float).sort_values(ascending=False, kind="stable").head(k)
    out = pd.DataFrame({
        "rank": range(1, len(ranked) + 1),
        "name": [scores.concept_names.get(str(c), str(c)) for c in ranked.index],
        "score": ranked.to_numpy(),
    }, index=pd.Index([str(c) for c in ranked.index], name="concept"))
    return out


def _as_scores(scores_or_scorer: Any, images: Any) -> ConceptScores:
    if isinstance(scores_or_scorer, ConceptScores):
        return scores_or_scorer
    if isinstance(scores_or_scorer, ConceptScorer):
        if images is None:
            raise ValueError("pass images=... to retrieve with a ConceptScorer")
        return scores_or_scorer.score(images)
    raise TypeError(f"expected ConceptScores or ConceptScorer, got {type(scores_or_scorer).__name__}")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}")
