"""Small array helpers shared by attributions, metrics and plots (not public API)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def to_numpy_2d(array: Any, *, name: str = "map") -> np.ndarray:
    """A 2-D float64 array from a numpy array, tensor or nested sequence.

    A leading singleton dimension (``(1, H, W)``) is squeezed; anything else that is
    not 2-D raises ``ValueError`` naming ``name``.
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float64).numpy()
    out = np.asarray(array, dtype=np.float64)
    if out.ndim == 3 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {tuple(out.shape)}")
    return out


def resize_map(array: np.ndarray, size: tuple[int, int], *, mode: str = "bilinear") -> np.ndarray:
    """Resize a 2-D map to ``size = (H, W)``.

    Bilinear interpolation with ``align_corners=False``, i.e. pixel centres are mapped
    consistently in both directions, which is how a squash resize of the image is undone.
    ``mode="nearest"`` keeps hard edges (masks, patch grids).
    """
    array = np.asarray(array, dtype=np.float64)
    if tuple(array.shape) == tuple(size):
        return array.copy()
    tensor = torch.from_numpy(array)[None, None]
    kwargs = {"align_corners": False} if mode in {"bilinear", "bicubic"} else {}
    out = F.interpolate(tensor, size=tuple(int(s) for s in size), mode=mode, **kwargs)
    return out[0, 0].numpy()


def to_display_image(image: Any) -> np.ndarray:
    """An image as a ``(H, W, 3)`` float array in ``[0, 1]`` for ``imshow``.

    Accepts a PIL image, a ``(H, W)``, ``(H, W, 3|4)`` array (uint8 or float) or a
    ``(3, H, W)`` tensor/array (e.g. preprocessed pixels, which are min-max rescaled).
    """
    if hasattr(image, "convert") and hasattr(image, "size"):
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if isinstance(image, torch.Tensor):
        image = image.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(
            f"image must be PIL, (H, W), (H, W, 3|4) or (3, H, W); got shape {tuple(np.shape(image))}"
        )
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo < 0.0 or hi > 1.0:
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return arr

