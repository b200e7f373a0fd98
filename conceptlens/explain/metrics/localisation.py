"""Does a map point at the annotated region? Pointing game, energy pointing game, AUROC."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import ndimage

from conceptlens.explain._spatial import to_numpy_2d

__all__ = ["energy_pointing_game", "map_auroc", "pointing_game"]


def _map_and_mask(saliency: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    m = to_numpy_2d(saliency, name="map")
    k = to_numpy_2d(mask, name="mask")
    if m.shape != k.shape:
        raise ValueError(
            f"mask shape {k.shape} does not match map shape {m.shape}; pass the map in the "
            "mask's coordinates (Attribution.map is in original-image coordinates)"
        )
    if np.isnan(m).any():
        raise ValueError("map contains NaN values")
    k = k > 0.5
    if not k.any():
        raise ValueError("mask is empty: it marks no pixel")
    return m, k


def pointing_game(saliency: Any, mask: Any, tolerance: float = 0) -> bool:
    """Whether the map's maximum falls inside the mask (Zhang et al., 2016).

    Args:
        saliency: ``(H, W)`` map; larger means more important.
        mask: ``(H, W)`` binary mask of the region the concept lives in.
        tolerance: A hit also counts within this many pixels (Euclidean) of the mask
            (the original protocol uses 15 px).

    Returns:
        ``True`` for a hit. When several pixels share the maximum, all of them must hit,
        so a constant map does not score.

    Raises:
        ValueError: Shapes differ or the mask is empty.
    """
    m, k = _map_and_mask(saliency, mask)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    near = k if tolerance == 0 else ndimage.distance_transform_edt(~k) <= tolerance
    peaks = m == m.max()
    return bool(near[peaks].all())


def energy_pointing_game(saliency: Any, mask: Any) -> float:
    """Share of the map's positive energy inside the mask (Wang et al., Score-CAM, 2020).

    ``sum(max(map, 0)[mask]) / sum(max(map, 0))``. A uniform map scores the mask's
    area fraction; a perfectly localised map scores 1.

    Returns:
        A value in ``[0, 1]``, or ``nan`` (with a warning) when the map has no positive values.

    Raises:
        ValueError: Shapes differ or the mask is empty.
    """
    m, k = _map_and_mask(saliency, mask)
    positive = np.clip(m, 0.0, None)
    total = positive.sum()
    if total <= 0:
        warnings.warn("map has no positive values: energy pointing game undefined", stacklevel=2)
        return float("nan")
    return float(positive[k].sum() / total)


def map_auroc(saliency: Any, mask: Any) -> float:
    """Area under the ROC curve of the map's values as a pixel classifier of the mask.

    Returns:
        AUROC in ``[0, 1]``; 0.5 is chance, 1 means every mask pixel outranks every other pixel.

    Raises:
        ValueError: Shapes differ, or the mask is empty or covers the whole map.
    """
    from sklearn.metrics import roc_auc_score

    m, k = _map_and_mask(saliency, mask)
    if k.all():
        raise ValueError("mask covers the whole map: AUROC needs pixels outside the mask")
    return float(roc_auc_score(k.ravel(), m.ravel()))
