"""Similarity of two explanation maps: Spearman rank correlation and SSIM."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage, stats

from conceptlens._deprecation import renamed_parameters
from conceptlens.explain._spatial import to_numpy_2d

__all__ = ["spearman_correlation", "ssim"]


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = to_numpy_2d(a, name="first map"), to_numpy_2d(b, name="second map")
    if x.shape != y.shape:
        raise ValueError(f"maps must have the same shape, got {x.shape} and {y.shape}")
    return x, y


def spearman_correlation(a: Any, b: Any, *, absolute: bool = False) -> float:
    """Spearman rank correlation between two ``(H, W)`` maps, pixel by pixel.

    Args:
        a: First map.
        b: Second map, same shape.
        absolute: Compare ``|a|`` and ``|b|`` (importance regardless of sign).

    Returns:
        The correlation in ``[-1, 1]``; ``nan`` when either map is constant.
    """
    x, y = _pair(a, b)
    if absolute:
        x, y = np.abs(x), np.abs(y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x.ravel(), y.ravel()).statistic)


def _unit_range(x: np.ndarray) -> np.ndarray:
    span = np.ptp(x)
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


@renamed_parameters(normalise="normalize")
def ssim(a: Any, b: Any, *, sigma: float = 1.5, normalize: bool = True) -> float:
    """Structural similarity (Wang et al. 2004) of two ``(H, W)`` maps, Gaussian window.

    Local means, variances and covariance are taken with a Gaussian window of standard
    deviation ``sigma`` (truncated at 3.5 sigma, i.e. 11 x 11 for ``sigma = 1.5``),
    constants ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2`` with data range ``L``; the result
    is the mean SSIM over the map.

    Args:
        a: First map.
        b: Second map, same shape.
        sigma: Standard deviation of the Gaussian window, in pixels.
        normalize: Min-max scale each map to ``[0, 1]`` first (``L = 1``); explanation maps
            of different models live on different scales. When ``False``, ``L`` is the
            joint range of both maps.

    Returns:
        Mean SSIM, ``1.0`` for identical maps.
    """
    x, y = _pair(a, b)
    if normalize:
        x, y = _unit_range(x), _unit_range(y)
        data_range = 1.0
    else:
        data_range = float(max(x.max(), y.max()) - min(x.min(), y.min())) or 1.0
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(z, sigma=sigma, mode="reflect", truncate=3.5)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean(num / den))
