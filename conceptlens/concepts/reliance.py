"""Conditional tests of a decision-maker's reliance on each concept.

A concept *score* can be associated with the decisions without the decisions using the
concept: the model's score of one concept often leaks others (concept leakage), so a
marginal test flags it whenever the leaked concepts drive the decision. The tests here
ask instead whether a concept adds to a logistic model of the decisions that already holds
every other concept (a likelihood-ratio test, 1 degree of freedom), and, when true labels
are known, whether it adds beyond the labels too.

Every concept score enters standardised (mean 0, unit variance) on the scale it was given;
the logistic models carry a light ridge penalty (``l2``; the intercept is not penalised) so
that separable data, e.g. decisions that equal the labels, and strongly correlated concept
scores still give finite, well-conditioned fits. (Rank-based normal scores were tried and
rejected: on sigmoid-calibrated scores they spread the saturated, uninformative range out and
doubled the false-alarm rate in the simulation of ``tests/concepts/test_audit_calibration.py``.) The statistic is twice the gain in penalised log-likelihood, compared with a
chi-squared distribution with one degree of freedom.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import special, stats

from conceptlens._deprecation import deprecated_alias

__all__ = [
    "RELIANCE_TESTS",
    "fit_logistic",
    "group_likelihood_ratio_tests",
    "likelihood_ratio_tests",
    "standardize",
]

RELIANCE_TESTS: dict[str, str] = {
    "conditional": "decisions ~ other concepts + concept (likelihood-ratio test)",
    "beyond_labels": "decisions ~ other concepts + labels + concept (likelihood-ratio test)",
    "label_conditional": "labels ~ other concepts + concept (likelihood-ratio test)",
}
"""Test name -> the model comparison it makes (the name is written into every result row)."""


def standardize(X: np.ndarray) -> np.ndarray:
    """Center every column and scale it to unit variance.

    Args:
        X: ``(n_samples, n_features)`` values.

    Returns:
        ``(n_samples, n_features)`` z-scores; constant columns become 0.
    """
    X = np.asarray(X, dtype=float)
    Z = X - X.mean(axis=0)
    sd = Z.std(axis=0)
    return np.divide(Z, sd, out=np.zeros_like(Z), where=sd > 1e-12)


standardise = deprecated_alias(standardize, "standardise")


def _penalised_loglik(A: np.ndarray, y: np.ndarray, w: np.ndarray, pen: np.ndarray) -> float:
    eta = A @ w
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)) - 0.5 * np.sum(pen * w * w))


def fit_logistic(
    A: np.ndarray,
    y: np.ndarray,
    l2: float = 1.0,
    *,
    w0: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-9,
) -> tuple[np.ndarray, float]:
    """Ridge-penalised logistic regression by Newton's method with step halving.

    Maximises ``sum(y eta - log(1 + exp(eta))) - l2 / 2 * ||w[1:]||^2`` with
    ``eta = w[0] + A @ w[1:]``.

    Args:
        A: ``(n_samples, n_features)`` design matrix, without the intercept column.
        y: ``(n_samples,)`` 0/1 targets.
        l2: Ridge penalty on the slopes (in log-likelihood units; 1 is light for n >= 100).
        w0: ``(n_features + 1,)`` starting weights (intercept first), e.g. a nearby fit.
        max_iter: Newton iterations at most.
        tol: Stop when the penalised log-likelihood gains less than this.

    Returns:
        ``(w, penalised_loglik)``: ``(n_features + 1,)`` weights, intercept first.
    """
    n = A.shape[0]
    D = np.column_stack([np.ones(n), A])
    y = np.asarray(y, dtype=float)
    pen = np.full(D.shape[1], float(l2))
    pen[0] = 0.0
    if w0 is None:
        w = np.zeros(D.shape[1])
        prior = np.clip(y.mean(), 1e-6, 1 - 1e-6)
        w[0] = special.logit(prior)
    else:
        w = np.asarray(w0, dtype=float).copy()
    current = _penalised_loglik(D, y, w, pen)
    for _ in range(max_iter):
        mu = special.expit(D @ w)
        grad = D.T @ (y - mu) - pen * w
        hess = (D * (mu * (1.0 - mu))[:, None]).T @ D + np.diag(pen + 1e-10)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            trial = w + t * step
            value = _penalised_loglik(D, y, trial, pen)
            if value >= current - 1e-12 or t < 1e-6:
                break
            t /= 2.0
        gain = value - current
        w, current = trial, value
        if gain < tol:
            break
    return w, current


def _reduced_loglik(C: np.ndarray, Z: np.ndarray, y: np.ndarray, l2: float,
                    full_w: np.ndarray, offset: int, drop: list[int]) -> float:
    """Penalised log-likelihood of the model without the columns ``drop`` of ``Z``,
    warm-started from the full model's weights."""
    keep = np.delete(np.arange(Z.shape[1]), drop)
    start = np.delete(full_w, [offset + j for j in drop])
    return fit_logistic(np.column_stack([C, Z[:, keep]]), y, l2, w0=start)[1]


def _reduced_logliks(C: np.ndarray, Z: np.ndarray, y: np.ndarray, l2: float,
                     full_w: np.ndarray, offset: int, drops: list[list[int]],
                     n_jobs: int | None) -> list[float]:
    """:func:`_reduced_loglik` for each column set in ``drops``, in parallel threads with
    ``n_jobs`` (each fit is independent and deterministic: the same numbers as serial)."""
    if n_jobs in (None, 1) or len(drops) < 2:
        return [_reduced_loglik(C, Z, y, l2, full_w, offset, d) for d in drops]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(_reduced_loglik)(C, Z, y, l2, full_w, offset, d) for d in drops))


def likelihood_ratio_tests(
    Z: np.ndarray,
    y: np.ndarray,
    *,
    covariates: np.ndarray | None = None,
    columns: Sequence[int] | None = None,
    l2: float = 1.0,
    n_jobs: int | None = None,
) -> dict[str, np.ndarray]:
    """Drop-one likelihood-ratio test of every tested column of ``Z``.

    The full model regresses ``y`` on ``covariates`` and every column of ``Z``; the reduced
    model of column ``j`` leaves ``Z[:, j]`` out (refitted from the full fit). A large
    statistic means ``Z[:, j]`` predicts ``y`` beyond everything else in the model.

    Args:
        Z: ``(n_samples, n_concepts)`` standardised concept scores (see :func:`standardize`).
        y: ``(n_samples,)`` 0/1 targets (one class of the decisions or labels).
        covariates: ``(n_samples, n_covariates)`` columns always kept (e.g. label indicators).
        columns: Indices of the columns of ``Z`` to test (default: all).
        l2: Ridge penalty of both models (see :func:`fit_logistic`).
        n_jobs: Threads for the reduced fits (independent of each other; joblib, ``None``:
            1, ``-1``: all cores). The results do not depend on it.

    Returns:
        Dict of ``(len(columns),)`` arrays: ``effect`` (full-model coefficient: change in
        log-odds per standard deviation of the concept score), ``statistic``
        (twice the penalised log-likelihood gain, >= 0) and ``p_value`` (chi-squared, 1 df).
        Targets with a single value give effect 0, statistic 0 and p-value 1.
    """
    Z = np.asarray(Z, dtype=float)
    y = np.asarray(y, dtype=float)
    cols = list(range(Z.shape[1])) if columns is None else [int(c) for c in columns]
    k = len(cols)
    effect, statistic, pval = np.zeros(k), np.zeros(k), np.ones(k)
    if k == 0 or y.min() == y.max():
        return {"effect": effect, "statistic": statistic, "p_value": pval}
    C = np.empty((len(y), 0)) if covariates is None else np.asarray(covariates, dtype=float)
    C = C.reshape(len(y), -1)
    full_w, full_ll = fit_logistic(np.column_stack([C, Z]), y, l2)
    offset = 1 + C.shape[1]  # intercept and covariates come first
    reduced = _reduced_logliks(C, Z, y, l2, full_w, offset, [[j] for j in cols], n_jobs)
    for i, j in enumerate(cols):
        effect[i] = full_w[offset + j]
        statistic[i] = max(2.0 * (full_ll - reduced[i]), 0.0)
    pval = stats.chi2.sf(statistic, df=1)
    return {"effect": effect, "statistic": statistic, "p_value": pval}


def group_likelihood_ratio_tests(
    Z: np.ndarray,
    y: np.ndarray,
    groups: Sequence[Sequence[int]],
    *,
    covariates: np.ndarray | None = None,
    l2: float = 1.0,
    n_jobs: int | None = None,
) -> dict[str, np.ndarray]:
    """Drop-group likelihood-ratio tests: does a whole concept group predict ``y`` beyond
    every concept outside it?

    Like :func:`likelihood_ratio_tests`, but the reduced model leaves every column of one
    group out at once (a one-hot family of ``k`` columns is one ``k``-df test), so reliance
    split across the members of a group is tested as one.

    Args:
        Z: ``(n_samples, n_concepts)`` standardised scores.
        y: ``(n_samples,)`` 0/1 targets.
        groups: Column indices of each group.
        covariates: Columns always kept (e.g. label indicators).
        l2: Ridge penalty of both models.
        n_jobs: Threads for the reduced fits (see :func:`likelihood_ratio_tests`).

    Returns:
        Dict of ``(len(groups),)`` arrays: ``statistic``, ``df`` (group size) and ``p_value``
        (chi-squared with ``df`` degrees of freedom).
    """
    Z = np.asarray(Z, dtype=float)
    y = np.asarray(y, dtype=float)
    g = len(groups)
    statistic, df, pval = np.zeros(g), np.array([len(m) for m in groups], float), np.ones(g)
    if g == 0 or y.min() == y.max():
        return {"statistic": statistic, "df": df, "p_value": pval}
    C = np.empty((len(y), 0)) if covariates is None else np.asarray(covariates, dtype=float)
    C = C.reshape(len(y), -1)
    full_w, full_ll = fit_logistic(np.column_stack([C, Z]), y, l2)
    offset = 1 + C.shape[1]
    drops = [sorted(int(j) for j in members) for members in groups]
    reduced = _reduced_logliks(C, Z, y, l2, full_w, offset, drops, n_jobs)
    for i in range(g):
        statistic[i] = max(2.0 * (full_ll - reduced[i]), 0.0)
    pval = stats.chi2.sf(statistic, df=np.maximum(df, 1))
    return {"statistic": statistic, "df": df, "p_value": pval}
