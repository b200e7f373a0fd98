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


def pointing_game(saliency: Any, mask: Any, tolerance: float = 0, rtol: float = 1e-6) -> bool:
    """Whether the map's maximum falls inside the mask (Zhang et al., 2016).

    Tie rule. Pixels within ``rtol * (max - min)`` of the maximum are *tied maxima*; tied
    maxima that touch (8-connectivity) form one *peak*. A peak hits when any of its pixels
    lies in the mask (within ``tolerance``); the map hits when every peak hits.

    Why: a patch-level map (ViT, CAM) drawn onto the image by bilinear upsampling turns its
    maximum into a plateau of equal values wherever interpolation is clamped (the outer half
    patch along the border, a quarter patch in a corner) or symmetric. The plateau is one
    peak whose position is only known to a patch, so any of its pixels stands for it;
    requiring all of them to hit would count a concept at the image border (e.g. an ink
    marking near a corner) as a miss although the patch-grid map points at it. Separate
    peaks of equal height are a genuinely ambiguous pointing and must all hit, and a
    constant map (no peak) never scores.

    Args:
        saliency: ``(H, W)`` map; larger means more important.
        mask: ``(H, W)`` binary mask of the region the concept lives in.
        tolerance: A hit also counts within this many pixels (Euclidean) of the mask
            (the original protocol uses 15 px).
        rtol: Relative tolerance (of the map's range) within which values tie with the
            maximum; covers float32 rounding of interpolated maps. ``0``: exact ties only.

    Returns:
        ``True`` for a hit.

    Raises:
        ValueError: Shapes differ, the mask is empty, or ``tolerance`` / ``rtol`` is negative.
    """
    m, k = _map_and_mask(saliency, mask)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    top, span = float(m.max()), float(m.max() - m.min())
    if span == 0:
        return False  # a constant map points nowhere
    near = k if tolerance == 0 else ndimage.distance_transform_edt(~k) <= tolerance
    peaks, n_peaks = ndimage.label(m >= top - rtol * span, structure=np.ones((3, 3)))
    hit_labels = np.unique(peaks[near & (peaks > 0)])
    return bool(len(hit_labels) == n_peaks)


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
