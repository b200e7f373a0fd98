"""Small statistics used by the audit: rank tests, FDR control, Wilson intervals."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["benjamini_hochberg", "rank_association", "wilson_interval"]


def rank_association(X: np.ndarray, group: np.ndarray) -> dict[str, np.ndarray]:
    """Mann-Whitney U test of every column of ``X`` between ``group`` True and False.

    Args:
        X: ``(n_samples, n_concepts)`` scores.
        group: ``(n_samples,)`` booleans.

    Returns:
        ``auc`` (probability a group score exceeds a non-group score, ties half),
        ``effect_size`` (rank-biserial correlation ``2 auc - 1``, in ``[-1, 1]``),
        ``mean_diff`` (group mean - rest mean, original units) and two-sided ``p_value``,
        each ``(n_concepts,)``; all NaN when either group is empty.
    """
    g = np.asarray(group, dtype=bool)
    a, b = X[g], X[~g]
    p = X.shape[1]
    if len(a) == 0 or len(b) == 0:
        nan = np.full(p, np.nan)
        return {"auc": nan, "effect_size": nan.copy(), "mean_diff": nan.copy(), "p_value": nan.copy()}
    res = stats.mannwhitneyu(a, b, axis=0, alternative="two-sided", method="asymptotic")
    auc = np.asarray(res.statistic, dtype=float) / (len(a) * len(b))
    pval = np.asarray(res.pvalue, dtype=float)
    pval = np.where(np.isnan(pval), 1.0, pval)  # constant columns: no evidence
    return {
        "auc": auc,
        "effect_size": 2.0 * auc - 1.0,
        "mean_diff": a.mean(axis=0) - b.mean(axis=0),
        "p_value": pval,
    }


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN entries stay NaN."""
    p = np.asarray(p_values, dtype=float)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q


def wilson_interval(successes: np.ndarray, n: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for binomial proportions (vectorised); ``n = 0`` gives NaN."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = k / n
        denom = 1.0 + z**2 / n
        centre = (phat + z**2 / (2 * n)) / denom
        half = z * np.sqrt(phat * (1 - phat) / n + z**2 / (4 * n**2)) / denom
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
