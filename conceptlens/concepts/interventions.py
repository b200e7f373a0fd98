"""Intervention curves: task accuracy as true concept values replace predicted ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from conceptlens.concepts._inputs import as_finite_matrix
from conceptlens.concepts.score_space import transform_scores

__all__ = ["INTERVENTION_POLICIES", "intervention_curve", "list_intervention_policies"]

INTERVENTION_POLICIES = ("random", "uncertainty", "importance")


def list_intervention_policies() -> list[str]:
    """The orders in which :func:`intervention_curve` can correct concepts, sorted.

    Examples:
        >>> list_intervention_policies()
        ['importance', 'random', 'uncertainty']
    """
    return sorted(INTERVENTION_POLICIES)


def _intervention_order(
    model: Any, X_pred: np.ndarray, policy: str, rng: np.random.Generator
) -> np.ndarray:
    """``(n_samples, n_concepts)`` concept indices, first to intervene on first."""
    n, p = X_pred.shape
    if policy == "random":
        return np.argsort(rng.random((n, p)), axis=1)
    if policy == "uncertainty":
        # A predicted score near the training mean is the least decided one (|z| small).
        z = np.abs((X_pred - model.mean_[None, :]) / model.scale_[None, :])
        return np.argsort(z + 1e-12 * rng.random((n, p)), axis=1, kind="stable")
    # importance: largest |contribution| to the decision the model currently takes.
    contrib = (X_pred - model.mean_[None, :])[:, None, :] * model.coef_[None, :, :]
    d = model._decision(X_pred)
    top = np.zeros(n, dtype=int) if d.shape[1] == 1 else np.argmax(d, axis=1)
    magnitude = np.abs(contrib[np.arange(n), top, :])
    return np.argsort(-magnitude - 1e-12 * rng.random((n, p)), axis=1, kind="stable")


def intervention_curve(
    model: Any,
    X_pred: Any,
    X_true: Any,
    y: Any,
    policy: str = "random",
    k_max: int | None = None,
    random_state: int | None = 0,
) -> pd.DataFrame:
    """Accuracy of a fitted bottleneck as ``k = 0..k_max`` predicted concept scores per sample
    are replaced by their true values (a test-time intervention by an expert).

    Args:
        model: A fitted bottleneck (``SparseLinearBottleneck`` or ``AssociationBottleneck``).
        X_pred: ``(n_samples, n_concepts)`` concept scores the model sees (e.g. from images).
        X_true: ``(n_samples, n_concepts)`` ground-truth concept values (e.g. annotations), in
            the same units and column order.
        y: ``(n_samples,)`` true class labels.
        policy: Which concepts an expert corrects first, per sample: ``"random"``;
            ``"uncertainty"`` (predicted score closest to the training mean, in standard
            deviations); ``"importance"`` (largest absolute contribution to the currently
            predicted class).
        k_max: Largest number of corrected concepts (default: all).
        random_state: Seed of the random order (and of tie-breaking for the other policies).

    Returns:
        DataFrame with one row per ``k``: ``k``, ``accuracy``, ``n_changed`` (predictions that
        differ from ``k = 0``) and ``policy``.

    Examples:
        >>> import numpy as np
        >>> from conceptlens.concepts import SparseLinearBottleneck
        >>> rng = np.random.default_rng(0)
        >>> X_true = rng.normal(size=(200, 4)); y = (X_true[:, 0] > 0).astype(int)
        >>> X_pred = X_true + rng.normal(scale=1.0, size=X_true.shape)
        >>> model = SparseLinearBottleneck(cv=None).fit(X_true, y)
        >>> curve = intervention_curve(model, X_pred, X_true, y, policy="importance")
        >>> bool(curve["accuracy"].iloc[-1] >= curve["accuracy"].iloc[0])
        True
    """
    check_is_fitted(model)
    if policy not in INTERVENTION_POLICIES:
        raise ValueError(f"policy must be one of {INTERVENTION_POLICIES}, got {policy!r}")
    model._validate_predict_data(X_pred)
    model._validate_predict_data(X_true)
    Xp, _, _ = as_finite_matrix(X_pred, name="X_pred")
    Xt, _, _ = as_finite_matrix(X_true, name="X_true")
    y_arr = np.asarray(y)
    if Xp.shape != Xt.shape:
        raise ValueError(f"X_pred {Xp.shape} and X_true {Xt.shape} must have the same shape")
    if y_arr.ndim != 1 or len(y_arr) != len(Xp):
        raise ValueError(f"y must be 1-D with {len(Xp)} labels, got shape {y_arr.shape}")
    how = model._input_transform
    Xp, Xt = transform_scores(Xp, how), transform_scores(Xt, how)
    n, p = Xp.shape
    k_max = p if k_max is None else int(k_max)
    if not 0 <= k_max <= p:
        raise ValueError(f"k_max must be in [0, {p}], got {k_max}")
    rng = np.random.default_rng(random_state)
    order = _intervention_order(model, Xp, policy, rng)
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(p)[None, :]

    base = model._labels_from_decision(model._decision(Xp))
    rows = []
    for k in range(k_max + 1):
        X_k = np.where(rank < k, Xt, Xp)
        pred = model._labels_from_decision(model._decision(X_k))
        rows.append(
            {"k": k, "accuracy": float(np.mean(pred == y_arr)),
             "n_changed": int(np.sum(pred != base)), "policy": policy}
        )
    return pd.DataFrame(rows)
