"""How well concept scores recover concept labels: ROC-AUC and average precision."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from conceptlens.vocab.scores import ConceptScores

__all__ = ["POOLED", "evaluate_annotation", "weighted_auc_ap"]

POOLED = "pooled"
"""Index label of the row that pools every (image, concept) pair (the authors' metric)."""

_COLUMNS = [
    "name", "n_pos", "n_neg", "n_missing",
    "roc_auc", "roc_auc_low", "roc_auc_high",
    "average_precision", "average_precision_low", "average_precision_high",
    "note",
]


def weighted_auc_ap(
    y: np.ndarray, s: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and average precision under many weightings of the same samples at once.

    Equal to scikit-learn's ``roc_auc_score`` / ``average_precision_score`` with
    ``sample_weight`` (tied scores count one half in the AUC and form one threshold in
    AP). Bootstrap resamples are integer weights, so one sort serves all of them.

    Args:
        y: ``(n,)`` 0/1 labels.
        s: ``(n,)`` scores.
        weights: ``(n_weightings, n)`` non-negative weights; default one row of ones.

    Returns:
        ``(auc, ap)``, each ``(n_weightings,)``; NaN where a class has zero weight
        (AP: where positives have zero weight).
    """
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    w = np.ones((1, y.size)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    w_sorted = w[:, order]
    y_sorted = y[order]
    pos = np.add.reduceat(w_sorted * y_sorted, starts, axis=1)  # (B, n_groups)
    neg = np.add.reduceat(w_sorted * (1.0 - y_sorted), starts, axis=1)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    total_pos, total_neg = tp[:, -1], fp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        below = total_neg[:, None] - fp
        auc = np.sum(pos * (below + 0.5 * neg), axis=1) / (total_pos * total_neg)
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
        ap = np.sum(pos * precision, axis=1) / total_pos
    auc[(total_pos == 0) | (total_neg == 0)] = np.nan
    ap[total_pos == 0] = np.nan
    return auc, ap


def _as_table(scores: ConceptScores | pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    if isinstance(scores, ConceptScores):
        return scores.table, dict(scores.concept_names)
    if isinstance(scores, pd.DataFrame):
        return scores, {}
    raise TypeError(f"scores must be ConceptScores or a DataFrame, got {type(scores).__name__}")


def _align(table: pd.DataFrame, labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Scores and labels as ``(n_images, n_concepts)`` arrays in the labels' layout."""
    if not isinstance(labels, pd.DataFrame):
        raise TypeError(f"labels must be a DataFrame, got {type(labels).__name__}")
    score_rows = pd.Index(table.index.astype(str))
    label_rows = pd.Index(labels.index.astype(str))
    for name, index in (("scores", score_rows), ("labels", label_rows)):
        if index.has_duplicates:
            dup = index[index.duplicated()].unique()[:3].tolist()
            raise ValueError(f"{name} has duplicate image ids, e.g. {dup}")
    unknown_rows = label_rows.difference(score_rows, sort=False)
    if len(unknown_rows):
        raise ValueError(
            f"{len(unknown_rows)} labelled image(s) have no score, e.g. {unknown_rows[:3].tolist()}; "
            "labels and scores are matched by image id (the index). Drop them with "
            "labels.loc[labels.index.intersection(scores.table.index)] if they failed to score"
        )
    score_cols = pd.Index(table.columns.astype(str))
    label_cols = [str(c) for c in labels.columns]
    unknown_cols = [c for c in label_cols if c not in score_cols]
    if unknown_cols:
        raise ValueError(
            f"labels have concept column(s) the scores lack: {unknown_cols[:5]}; "
            f"score columns are {score_cols[:5].tolist()}..."
        )
    if not label_cols:
        raise ValueError("labels have no concept columns")
    frame = table.copy()
    frame.index, frame.columns = score_rows, score_cols
    score_values = frame.loc[label_rows, label_cols].to_numpy(dtype=np.float64)
    try:
        label_values = labels.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"labels must be numeric 0/1 with NaN for missing ({err})") from None
    finite = label_values[~np.isnan(label_values)]
    bad = np.setdiff1d(np.unique(finite), [0.0, 1.0])
    if bad.size:
        columns = [label_cols[j] for j in range(len(label_cols))
                   if np.isin(label_values[:, j], bad).any()]
        raise ValueError(
            f"labels must be 0, 1 or NaN; found {bad[:5].tolist()} in concept(s) {columns[:5]}"
        )
    missing_scores = np.isnan(score_values) & ~np.isnan(label_values)
    if missing_scores.any():
        j = int(np.argwhere(missing_scores)[0, 1])
        raise ValueError(f"scores contain NaN where labels exist (concept {label_cols[j]!r})")
    return score_values, label_values, label_cols


def _interval(values: np.ndarray, ci: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - ci) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def _evaluate(
    y: np.ndarray, s: np.ndarray, image: np.ndarray, n_images: int,
    n_bootstrap: int, ci: float, rng: np.random.Generator, chunk: int = 100,
) -> dict[str, float | int | str]:
    """Metrics of labelled pairs; the bootstrap resamples images (with all their pairs).

    ``image[k]`` is the image (``0 <= image[k] < n_images``) of pair ``k``.
    """
    n_pos = int(y.sum())
    row: dict[str, float | int | str] = {"n_pos": n_pos, "n_neg": int(y.size - n_pos), "note": ""}
    nan = float("nan")
    row.update(roc_auc_low=nan, roc_auc_high=nan, average_precision_low=nan,
               average_precision_high=nan)
    if n_pos == 0 or n_pos == y.size:
        present = "no labelled pairs" if y.size == 0 else f"only class {int(y[0])} present"
        row.update(roc_auc=nan, average_precision=nan, note=f"{present}: AUC and AP undefined")
        return row
    row["roc_auc"] = float(roc_auc_score(y, s))
    row["average_precision"] = float(average_precision_score(y, s))
    if n_bootstrap == 0:
        return row
    aucs, aps = [], []
    for done in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - done)
        counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=size)
        auc, ap = weighted_auc_ap(y, s, counts[:, image])
        aucs.append(auc)
        aps.append(ap)
    auc, ap = np.concatenate(aucs), np.concatenate(aps)
    row["roc_auc_low"], row["roc_auc_high"] = _interval(auc, ci)
    row["average_precision_low"], row["average_precision_high"] = _interval(ap, ci)
    skipped = int(np.isnan(auc).sum())
    if skipped:
        row["note"] = f"{skipped} of {n_bootstrap} bootstrap samples had one class and were skipped"
    return row


def evaluate_annotation(
    scores: ConceptScores | pd.DataFrame,
    labels: pd.DataFrame,
    *,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Per-concept ROC-AUC and average precision of concept scores against labels.

    Args:
        scores: :class:`ConceptScores` or a DataFrame (rows = image ids, columns = concept ids).
        labels: DataFrame of 0/1 labels, NaN where unknown; its index (image ids) and
            columns (concept ids) must be subsets of the scores'. Rows are matched by
            image id, not position.
        n_bootstrap: Bootstrap resamples of the images for the confidence intervals
            (0: no intervals).
        ci: Confidence level of the percentile intervals.
        random_state: Seed of the bootstrap.

    Returns:
        One row per labelled concept (in the labels' column order), then a row
        ``"pooled"`` over all labelled (image, concept) pairs (the pooled AUC of the
        ConceptCLIP paper). Columns: ``name, n_pos, n_neg, n_missing, roc_auc,
        roc_auc_low, roc_auc_high, average_precision, average_precision_low,
        average_precision_high, note``. A concept whose labels hold a single class gets
        NaN metrics and a note. The pooled row's bootstrap resamples whole images.

    Raises:
        ValueError: On labelled images or concepts absent from the scores, labels other
            than 0/1/NaN, or NaN scores where labels exist.
        TypeError: On inputs of the wrong type.

    Examples:
        >>> import pandas as pd
        >>> s = pd.DataFrame({"a": [0.9, 0.2, 0.7, 0.1]}, index=list("wxyz"))
        >>> y = pd.DataFrame({"a": [1, 0, 1, 0]}, index=list("zyxw"))
        >>> float(evaluate_annotation(s, y, n_bootstrap=0).loc["a", "roc_auc"])
        0.0
    """
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci!r}")
    table, names = _as_table(scores)
    score_values, label_values, concept_ids = _align(table, labels)
    rng = np.random.default_rng(random_state)
    rows: dict[str, dict] = {}
    for j, concept_id in enumerate(concept_ids):
        known = ~np.isnan(label_values[:, j])
        y_col, s_col = label_values[known, j], score_values[known, j]
        row = _evaluate(y_col, s_col, np.arange(y_col.size), y_col.size, int(n_bootstrap), ci, rng)
        row["name"] = names.get(concept_id, concept_id)
        row["n_missing"] = int((~known).sum())
        rows[concept_id] = row
    known = ~np.isnan(label_values)
    labelled_images = np.flatnonzero(known.any(axis=1))
    image_of_row = np.full(label_values.shape[0], -1)
    image_of_row[labelled_images] = np.arange(labelled_images.size)
    rows_of_pairs, _ = np.nonzero(known)
    pooled = _evaluate(
        label_values[known], score_values[known], image_of_row[rows_of_pairs],
        max(labelled_images.size, 1), int(n_bootstrap), ci, rng,
    )
    pooled["name"] = "all concepts pooled"
    pooled["n_missing"] = int(np.isnan(label_values).sum())
    rows[POOLED] = pooled
    result = pd.DataFrame.from_dict(rows, orient="index")[_COLUMNS]
    result.index.name = "concept"
    result.attrs.update(n_bootstrap=int(n_bootstrap), ci=ci, random_state=random_state)
    return result
