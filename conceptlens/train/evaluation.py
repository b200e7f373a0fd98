"""Evaluate a trained concept model through the library's own scorer and metrics."""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ConceptModelEvaluation", "evaluate_concept_model"]


@dataclass
class ConceptModelEvaluation:
    """Per-concept annotation ROC AUC (and pointing game with masks) on held-out images.

    Attributes:
        table: One row per concept: ``auc`` (score vs label), ``prevalence`` and, with masks,
            ``pointing_game`` (share of positive images whose concept-map maximum lies in
            the concept's patch mask).
        scores: The :class:`~conceptlens.vocab.ConceptScores` the AUCs come from.
    """

    table: pd.DataFrame
    scores: Any

    def __repr__(self) -> str:
        return f"ConceptModelEvaluation({len(self.table)} concepts, AUC min {self.table['auc'].min():.3f})"

    def report_sections(self, title: str = "Concept model on held-out images") -> list[Any]:
        """Sections for a :class:`~conceptlens.explain.report.Report`: each concept's ROC AUC
        (and pointing game) on the held-out images, with a one-line summary."""
        from conceptlens.explain.report.document import Table

        frame = self.table.reset_index()
        frame = frame.rename(columns={frame.columns[0]: "concept"})
        frame["concept"] = frame["concept"].astype(str)
        auc = self.table["auc"].dropna()
        caption = (f"Concept scores of the trained model against the concept labels of {len(self.scores)} "
                   f"held-out images, through the library's scorer: ROC AUC per concept"
                   + (" and pointing game (share of positive images whose concept-map maximum lies "
                      "in the concept's mask)" if "pointing_game" in self.table else "")
                   + (f". AUC from {auc.min():.3f} to {auc.max():.3f}." if len(auc) else "."))
        return [Table(title, frame=frame, caption=caption)]

    def _repr_html_(self) -> str:
        cols = [c for c in ("auc", "pointing_game", "prevalence") if c in self.table]
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        rows = "".join(
            f"<tr><td>{html.escape(str(cid))}</td>"
            + "".join(f"<td>{row[c]:.3f}</td>" for c in cols) + "</tr>"
            for cid, row in self.table.iterrows()
        )
        return (f"<table><caption>Concept model on held-out images</caption><thead><tr><th>concept"
                f"</th>{head}</tr></thead><tbody>{rows}</tbody></table>")


def evaluate_concept_model(
    backbone: Any,
    vocabulary: Any,
    images: np.ndarray,
    concepts: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    tolerance: int = 0,
    map_calibration: str | None = None,
    **scorer_options: Any,
) -> ConceptModelEvaluation:
    """Score held-out images with :class:`~conceptlens.vocab.ConceptScorer` and measure.

    Args:
        backbone: A backbone (``load_backbone(folder)`` or ``ConceptCLIPBackbone(model, processor)``).
        vocabulary: The concepts, in label-column order.
        images: ``(n, H, W, 3)`` uint8.
        concepts: ``(n, K)`` 0/1 labels.
        masks: Optional ``(n, K, H, W)`` bool masks for the pointing game.
        tolerance: Pointing-game tolerance in patches: a hit when the map's maximum lies
            within this many patches (4-neighbourhood steps) of the concept's patch mask.
        map_calibration: Calibration of the concept maps the pointing game reads (see
            :meth:`~conceptlens.vocab.ConceptScorer.patch_scores_tensor`; e.g. ``"cosine"``
            for ``cos(patch, concept)``); default: the scorer's.
        **scorer_options: Passed to the scorer (default ``reference=None``, no progress bar).

    Returns:
        ConceptModelEvaluation

    Raises:
        ValueError: ``tolerance`` is not a non-negative int.
    """
    from sklearn.metrics import roc_auc_score

    from conceptlens.train.core import patch_masks
    from conceptlens.vocab.scorer import ConceptScorer

    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative int; got {tolerance!r}")
    options = {"reference": None, "progress": False, **scorer_options}
    scorer = ConceptScorer(backbone, vocabulary, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = scorer.score({f"img{i:05d}": image for i, image in enumerate(images)})
    rows: dict[str, dict[str, float]] = {}
    ids = list(vocabulary.ids)
    patch_scores = None
    if masks is not None:
        import torch

        mapper = scorer if map_calibration is None else scorer.with_config(calibration=map_calibration)
        step = scorer.image_batch_size()
        with torch.no_grad():
            patch_scores = np.concatenate([  # (n, K, P)
                mapper.patch_scores_tensor(backbone.preprocess(list(images[i:i + step]))).float().cpu().numpy()
                for i in range(0, len(images), step)
            ])
    for k, cid in enumerate(ids):
        y = concepts[:, k]
        row = {"prevalence": float(y.mean()),
               "auc": float(roc_auc_score(y, scores.table[cid])) if 0 < y.sum() < len(y) else float("nan")}
        if patch_scores is not None and masks is not None:
            grid = backbone.grid_size if isinstance(backbone.grid_size, tuple) else None
            n_patches = patch_scores.shape[-1]
            side = int(round(np.sqrt(n_patches)))
            grid = grid or (side, n_patches // side)
            labels = _dilate(patch_masks(masks[:, k], grid), tolerance).reshape(len(images), -1)
            positive = np.flatnonzero((y == 1) & labels.any(axis=1))
            hits = [labels[i, int(np.argmax(patch_scores[i, k]))] for i in positive]
            row["pointing_game"] = float(np.mean(hits)) if hits else float("nan")
        rows[cid] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "concept"
    return ConceptModelEvaluation(table=table, scores=scores)


def _dilate(grid_masks: np.ndarray, steps: int) -> np.ndarray:
    """Grow ``(..., gh, gw)`` patch masks by ``steps`` 4-neighbourhood steps."""
    out = grid_masks.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[..., 1:, :] |= out[..., :-1, :]
        grown[..., :-1, :] |= out[..., 1:, :]
        grown[..., :, 1:] |= out[..., :, :-1]
        grown[..., :, :-1] |= out[..., :, 1:]
        out = grown
    return out
