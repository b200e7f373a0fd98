"""Side-by-side comparison of backbones on concept annotation ("does model A annotate my
concepts better than model B?").

Every backbone scores the same images with the same vocabulary and scoring settings (each
through its own feature cache, keyed by its identity); the scores are compared with the same
concept labels:

* per concept and pooled over all labelled (image, concept) pairs: ROC-AUC with a bootstrap
  percentile interval (:func:`~conceptlens.vocab.evaluation.evaluate_annotation`);
* between every pair of models, a *paired* bootstrap of the AUC difference: the same resampled
  images enter both models' AUC in each replicate, so the interval and the two-sided p-value
  of the difference account for the models being scored on the same images (they are
  correlated; two separate intervals that overlap do not mean "no difference").

The bootstrap resamples images, with all their concepts, for the pooled AUC as for the
per-concept ones.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from conceptlens.vocab.evaluation import POOLED, evaluate_annotation, weighted_auc_ap

__all__ = ["BackboneComparison", "compare_backbones", "paired_auc_test"]


@dataclass
class BackboneComparison:
    """Result of :func:`compare_backbones`.

    Attributes:
        models: Model names, in the order given.
        auc: ``(concepts + "pooled") x models`` ROC-AUC.
        metrics: Long table, one row per (model, concept): ``model, concept, name, n_pos,
            n_neg, roc_auc, roc_auc_low, roc_auc_high, average_precision``.
        tests: One row per (model pair, concept): ``model_a, model_b, concept, name,
            auc_a, auc_b, difference`` (= ``auc_b - auc_a``), ``difference_low,
            difference_high, p_value`` (paired bootstrap, two-sided).
        identities: Model name -> backbone identity (dict).
        scores: Model name -> score table (images x concepts) on the compared images.
        settings: Scoring settings, bootstrap size, confidence level, seed, image counts.
    """

    models: list[str]
    auc: pd.DataFrame
    metrics: pd.DataFrame
    tests: pd.DataFrame
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def pooled(self) -> pd.DataFrame:
        """Pooled AUC per model with its interval (rows = models)."""
        rows = self.metrics[self.metrics["concept"] == POOLED].set_index("model")
        return rows.loc[self.models, ["roc_auc", "roc_auc_low", "roc_auc_high"]]

    @property
    def best(self) -> str:
        """The model with the highest pooled AUC."""
        return str(self.pooled["roc_auc"].idxmax())

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready (NaN as ``None``)."""
        from conceptlens._jsonable import jsonable

        return jsonable({
            "models": self.models,
            "auc": self.auc.reset_index().to_dict(orient="records"),
            "metrics": self.metrics.to_dict(orient="records"),
            "tests": self.tests.to_dict(orient="records"),
            "identities": self.identities,
            "settings": self.settings,
        })

    def _repr_html_(self) -> str:
        table = self.auc.to_html(float_format=lambda v: f"{v:.3f}", na_rep="–", escape=True)
        best = html.escape(self.best)
        return f"<p>Best pooled annotation AUC: <b>{best}</b></p>{table}"

    def __repr__(self) -> str:
        pooled = ", ".join(f"{m}={v:.3f}" for m, v in self.pooled["roc_auc"].items())
        return f"BackboneComparison(pooled AUC: {pooled}; {len(self.auc) - 1} concepts)"


def paired_auc_test(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    image: np.ndarray,
    counts: np.ndarray,
    ci: float = 0.95,
) -> dict[str, float]:
    """Paired bootstrap of the ROC-AUC difference of two score vectors on the same pairs.

    Args:
        labels: ``(n,)`` 0/1 labels of the labelled pairs.
        scores_a, scores_b: ``(n,)`` the two models' scores of the same pairs.
        image: ``(n,)`` image index of each pair (``0 <= image < counts.shape[1]``).
        counts: ``(B, n_images)`` bootstrap multiplicities of the images, shared by both
            models (that is what makes the test paired).
        ci: Confidence level of the percentile interval.

    Returns:
        ``auc_a, auc_b, difference`` (``b - a``), ``difference_low, difference_high`` and
        ``p_value``: two-sided, ``2 * min(P*(d <= 0), P*(d >= 0))`` over the replicates
        with both classes present, with the ``+1`` correction (never 0), capped at 1.
    """
    nan = float("nan")
    y = np.asarray(labels, dtype=np.float64)
    out = {"auc_a": nan, "auc_b": nan, "difference": nan, "difference_low": nan,
           "difference_high": nan, "p_value": nan}
    if y.size == 0 or y.min() == y.max():
        return out
    auc_a = float(weighted_auc_ap(y, scores_a)[0][0])
    auc_b = float(weighted_auc_ap(y, scores_b)[0][0])
    out.update(auc_a=auc_a, auc_b=auc_b, difference=auc_b - auc_a)
    if counts.shape[0] == 0:
        return out
    weights = counts[:, image]
    boot = weighted_auc_ap(y, scores_b, weights)[0] - weighted_auc_ap(y, scores_a, weights)[0]
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return out
    tail = (1.0 - ci) / 2.0 * 100.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    below, above = int((boot <= 0).sum()), int((boot >= 0).sum())
    p = min(1.0, 2.0 * (min(below, above) + 1) / (boot.size + 1))
    out.update(difference_low=float(low), difference_high=float(high), p_value=p)
    return out


def _model_names(backbones: Sequence[Any], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(backbones):
            raise ValueError(f"names has {len(names)} entries for {len(backbones)} backbones")
    else:
        names = []
        for item in backbones:
            model_id = item if isinstance(item, str) else item.identity.model_id
            names.append(str(model_id).rstrip("/").split("/")[-1] or str(model_id))
    if len(set(names)) != len(names):
        seen: dict[str, int] = {}
        unique = []
        for name in names:
            seen[name] = seen.get(name, 0) + 1
            unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
        names = unique
    return names


def compare_backbones(
    backbones: Sequence[Any] | Mapping[str, Any],
    vocabulary: Any,
    images: Any,
    labels: pd.DataFrame,
    *,
    names: Sequence[str] | None = None,
    cache_dir: Any = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    random_state: int | None = 0,
    progress: bool = False,
    **scorer_options: Any,
) -> BackboneComparison:
    """Score the same images with several backbones and compare their concept annotation.

    Args:
        backbones: :class:`~conceptlens.models.Backbone` objects, names for
            :func:`~conceptlens.models.load_backbone`, or a mapping name -> either.
        vocabulary: The :class:`~conceptlens.vocab.ConceptVocabulary` every model scores.
        images: What :meth:`ConceptScorer.score` accepts (paths, a folder, image sources).
        labels: 0/1 concept labels, NaN where unknown: rows = image ids (as the scores
            name them), columns = concept ids (a subset of the vocabulary).
        names: Display names of the models (default: the mapping's keys, else the last part
            of each model id).
        cache_dir: Feature-cache folder shared by all models (each keyed by its identity, so
            re-running a comparison re-uses every model's features).
        n_bootstrap: Bootstrap replicates (images resampled) for the intervals and the paired
            tests; 0 for point estimates only.
        ci: Confidence level.
        random_state: Seed of the bootstrap (the same replicates serve every model).
        progress: Show progress bars while scoring.
        **scorer_options: Scoring settings shared by all models (``mode``, ``calibration``,
            ``templates``, ...; see :class:`~conceptlens.vocab.ConceptScorer`).

    Returns:
        :class:`BackboneComparison`; ``conceptlens.explain.report.comparison_report`` turns it
        into the HTML + JSON report.

    Raises:
        ValueError: Fewer than two backbones, no labelled image scored by every model, or
            labels of concepts the vocabulary lacks.
    """
    from conceptlens.vocab.scorer import ConceptScorer

    if isinstance(backbones, Mapping):
        names = list(backbones) if names is None else names
        backbones = list(backbones.values())
    backbones = list(backbones)
    if len(backbones) < 2:
        raise ValueError(f"compare_backbones needs at least two backbones, got {len(backbones)}")
    if not isinstance(labels, pd.DataFrame):
        raise TypeError(f"labels must be a DataFrame, got {type(labels).__name__}")
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    model_names = _model_names(backbones, names)
    labels = labels.copy()
    labels.index = labels.index.astype(str)
    labels.columns = [str(c) for c in labels.columns]
    unknown = [c for c in labels.columns if c not in set(vocabulary.ids)]
    if unknown:
        raise ValueError(f"labels have concept(s) the vocabulary lacks: {unknown[:5]}")

    tables: dict[str, pd.DataFrame] = {}
    identities: dict[str, dict[str, Any]] = {}
    scorer = None
    for name, backbone in zip(model_names, backbones, strict=True):
        if isinstance(backbone, str):
            from conceptlens.models import load_backbone

            backbone = load_backbone(backbone)
        scorer = ConceptScorer(backbone, vocabulary, cache_dir=cache_dir, progress=progress,
                               **scorer_options)
        table = scorer.score(images).table
        table.index = table.index.astype(str)
        tables[name] = table
        identities[name] = backbone.identity.to_dict()

    common = labels.index
    for table in tables.values():
        common = common.intersection(table.index, sort=False)
    if len(common) == 0:
        raise ValueError(
            "no labelled image was scored by every model; labels are matched to the scores by "
            f"image id (labels: {labels.index[:3].tolist()}, scores: "
            f"{next(iter(tables.values())).index[:3].tolist()})"
        )
    dropped = {n: int(len(labels.index.difference(t.index))) for n, t in tables.items()}
    labels = labels.loc[common]
    concepts = list(labels.columns)

    metrics = []
    for name in model_names:
        result = evaluate_annotation(tables[name].loc[common], labels, n_bootstrap=int(n_bootstrap),
                                     ci=ci, random_state=random_state)
        frame = result.reset_index().rename(columns={"index": "concept"})
        frame.insert(0, "model", name)
        metrics.append(frame)
    metrics_frame = pd.concat(metrics, ignore_index=True)[
        ["model", "concept", "name", "n_pos", "n_neg", "roc_auc", "roc_auc_low", "roc_auc_high",
         "average_precision", "note"]
    ]
    vocabulary_names = {c: vocabulary[c].name for c in concepts}
    metrics_frame["name"] = [vocabulary_names.get(c, n) for c, n in
                             zip(metrics_frame["concept"], metrics_frame["name"], strict=True)]
    auc = metrics_frame.pivot(index="concept", columns="model", values="roc_auc")
    auc = auc.loc[[*concepts, POOLED], model_names]
    auc.columns.name = None
    concept_names = dict(zip(metrics_frame["concept"], metrics_frame["name"], strict=False))

    values = labels.to_numpy(dtype=np.float64)
    known = ~np.isnan(values)
    rng = np.random.default_rng(random_state)
    n_images = len(common)
    counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=int(n_bootstrap))
    rows_of_pairs, cols_of_pairs = np.nonzero(known)
    tests = []
    for a, b in combinations(model_names, 2):
        sa = tables[a].loc[common, concepts].to_numpy(dtype=np.float64)
        sb = tables[b].loc[common, concepts].to_numpy(dtype=np.float64)
        for j, concept in enumerate([*concepts, POOLED]):
            if concept == POOLED:
                pick = (rows_of_pairs, cols_of_pairs)
                image = rows_of_pairs
            else:
                rows = np.flatnonzero(known[:, j])
                pick = (rows, np.full(rows.size, j))
                image = rows
            result = paired_auc_test(values[pick], sa[pick], sb[pick], image, counts, ci)
            tests.append({"model_a": a, "model_b": b, "concept": concept,
                          "name": concept_names.get(concept, concept), **result})
    settings = {
        "scoring": scorer.config.to_dict() if scorer is not None else {},
        "n_bootstrap": int(n_bootstrap), "ci": ci, "random_state": random_state,
        "n_images": int(n_images), "n_labelled_pairs": int(known.sum()),
        "n_labelled_images": int(len(labels)),
        "n_labelled_images_not_scored": dropped,
    }
    return BackboneComparison(
        models=model_names, auc=auc, metrics=metrics_frame, tests=pd.DataFrame(tests),
        identities=identities, scores={n: t.loc[common] for n, t in tables.items()},
        settings=settings,
    )
