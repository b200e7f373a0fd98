"""Deletion and insertion curves (Petsiuk et al., RISE, 2018) and their area under curve."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from conceptlens.explain._spatial import resize_map

__all__ = ["PerturbationCurve", "deletion_curve", "insertion_curve", "make_baseline"]

BaselineKind = Literal["blur", "mean", "zero"]


@dataclass(frozen=True)
class PerturbationCurve:
    """A deletion or insertion curve.

    Attributes:
        kind: ``"deletion"`` or ``"insertion"``.
        fractions: ``(steps + 1,)`` fraction of pixels deleted / inserted, from 0 to 1.
        scores: ``(steps + 1,)`` model output at each fraction.
        auc: Trapezoidal area under ``scores`` over ``fractions`` (the unit interval).
            Deletion: lower is more faithful; insertion: higher is more faithful.
        baseline: Name of the baseline the pixels were replaced with / revealed from.
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: float
    baseline: str

    def __repr__(self) -> str:
        return (
            f"PerturbationCurve(kind={self.kind!r}, steps={len(self.fractions) - 1}, "
            f"baseline={self.baseline!r}, auc={self.auc:.4f})"
        )


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = image.shape[0]
    out = image[None]
    pad = (radius, radius, 0, 0)
    out = F.conv2d(F.pad(out, pad, mode="reflect"), kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    pad = (0, 0, radius, radius)
    out = F.conv2d(F.pad(out, pad, mode="reflect"), kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return out[0]


def make_baseline(
    image: torch.Tensor, kind: BaselineKind | torch.Tensor = "blur", *, blur_sigma: float | None = None
) -> torch.Tensor:
    """The reference image pixels are replaced with (deletion) or revealed from (insertion).

    Args:
        image: ``(3, H, W)`` pixels (in the model's input space).
        kind: ``"blur"`` (Gaussian blur of the image), ``"mean"`` (per-channel mean of the
            image), ``"zero"`` (all zeros in the model's input space; for mean/std-normalised
            inputs that is the dataset-mean colour), or a tensor of the image's shape.
        blur_sigma: Blur standard deviation in pixels (default ``max(H, W) / 20``).

    Returns:
        ``(3, H, W)`` tensor.
    """
    if isinstance(kind, torch.Tensor):
        if kind.shape != image.shape:
            raise ValueError(f"baseline tensor shape {tuple(kind.shape)} != image shape {tuple(image.shape)}")
        return kind.to(image)
    if kind == "zero":
        return torch.zeros_like(image)
    if kind == "mean":
        return image.mean(dim=(1, 2), keepdim=True).expand_as(image).clone()
    if kind == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(image.shape[-2:]) / 20.0
        if sigma <= 0:
            raise ValueError(f"blur_sigma must be > 0, got {sigma}")
        return _gaussian_blur(image, float(sigma))
    raise ValueError(f"unknown baseline {kind!r}: use 'blur', 'mean', 'zero' or a tensor")


def _prepare(image: torch.Tensor, attribution: Any) -> tuple[torch.Tensor, np.ndarray]:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor (3, H, W), got {type(image).__name__}")
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3:
        raise ValueError(f"image must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    attr = attribution.detach().cpu().double().numpy() if isinstance(attribution, torch.Tensor) else np.asarray(
        attribution, dtype=np.float64
    )
    if attr.ndim == 4 and attr.shape[0] == 1:
        attr = attr[0]
    if attr.ndim == 3:
        attr = attr.sum(axis=0)
    if attr.ndim != 2:
        raise ValueError(f"attribution must be (H, W) or (3, H, W), got {attr.shape}")
    h, w = image.shape[-2:]
    if attr.shape != (h, w):
        attr = resize_map(attr, (h, w))
    return image.detach(), attr


def _curve(
    kind: str,
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    attribution: Any,
    steps: int,
    baseline: BaselineKind | torch.Tensor,
    batch_size: int,
    blur_sigma: float | None,
) -> PerturbationCurve:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    image, attr = _prepare(image, attribution)
    reference = make_baseline(image, baseline, blur_sigma=blur_sigma)
    h, w = image.shape[-2:]
    n_pixels = h * w
    order = torch.from_numpy(np.argsort(-attr.ravel(), kind="stable").copy())
    rank = torch.empty(n_pixels, dtype=torch.long)
    rank[order] = torch.arange(n_pixels)
    rank = rank.view(1, h, w).to(image.device)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * n_pixels).astype(np.int64)
    start, end = (image, reference) if kind == "deletion" else (reference, image)
    scores: list[np.ndarray] = []
    with torch.no_grad():
        for i in range(0, len(counts), batch_size):
            chunk = torch.as_tensor(counts[i : i + batch_size], device=image.device)
            changed = (rank[None] < chunk.view(-1, 1, 1, 1)).to(image.dtype)
            batch = start[None] * (1 - changed) + end[None] * changed
            out = forward(batch)
            if not isinstance(out, torch.Tensor) or out.shape != (len(chunk),):
                raise ValueError(
                    f"forward must return a tensor of shape (B,) = ({len(chunk)},), got "
                    f"{getattr(out, 'shape', type(out).__name__)}"
                )
            scores.append(out.detach().float().cpu().numpy())
    values = np.concatenate(scores).astype(np.float64)
    auc = float(np.trapezoid(values, fractions))
    name = baseline if isinstance(baseline, str) else "tensor"
    return PerturbationCurve(kind=kind, fractions=fractions, scores=values, auc=auc, baseline=name)


def deletion_curve(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    attribution: Any,
    *,
    steps: int = 20,
    baseline: BaselineKind | torch.Tensor = "blur",
    batch_size: int = 8,
    blur_sigma: float | None = None,
) -> PerturbationCurve:
    """Replace the most important pixels first and follow the model's score down.

    Pixels are ranked by the attribution (largest first, ties in raster order); at step
    ``i`` the top ``round(i / steps * H * W)`` pixels take the baseline's values. A faithful
    map makes the score fall fast: a low AUC.

    Args:
        forward: ``(B, 3, H, W) -> (B,)`` model output to follow (e.g. a concept score);
            called without gradients on batches of at most ``batch_size`` images.
        image: ``(3, H, W)`` pixels in the model's input space.
        attribution: ``(h, w)`` map (or ``(3, h, w)``, summed over channels); resized
            bilinearly to ``(H, W)`` when it differs (e.g. ``Attribution.map`` in
            original-image coordinates).
        steps: Number of perturbation steps (``steps + 1`` forward passes).
        baseline: ``"blur"``, ``"mean"``, ``"zero"`` or a ``(3, H, W)`` tensor, see :func:`make_baseline`.
        batch_size: Perturbed images per forward call (bounds memory).
        blur_sigma: Blur standard deviation for ``baseline="blur"``.

    Returns:
        :class:`PerturbationCurve` with ``kind="deletion"``.

    Examples:
        >>> import torch
        >>> img = torch.zeros(3, 8, 8); img[:, :4] = 1.0
        >>> f = lambda x: x[:, 0, :4].mean(dim=(1, 2))
        >>> attr = torch.zeros(8, 8); attr[:4] = 1.0
        >>> deletion_curve(f, img, attr, steps=4, baseline="zero").scores.tolist()
        [1.0, 0.5, 0.0, 0.0, 0.0]
    """
    return _curve("deletion", forward, image, attribution, steps, baseline, batch_size, blur_sigma)


def insertion_curve(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    attribution: Any,
    *,
    steps: int = 20,
    baseline: BaselineKind | torch.Tensor = "blur",
    batch_size: int = 8,
    blur_sigma: float | None = None,
) -> PerturbationCurve:
    """Start from the baseline and reveal the most important pixels first.

    The mirror of :func:`deletion_curve` (same arguments): a faithful map makes the
    score rise fast, a high AUC. The default ``"blur"`` baseline follows RISE.

    Returns:
        :class:`PerturbationCurve` with ``kind="insertion"``.
    """
    return _curve("insertion", forward, image, attribution, steps, baseline, batch_size, blur_sigma)
