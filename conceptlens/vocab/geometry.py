"""Where a backbone's patch grid sits on its input: patch size and covered fraction."""

from __future__ import annotations

from conceptlens.models.base import Backbone

__all__ = ["covered_fraction", "patch_size_of"]


def patch_size_of(backbone: Backbone, grid_size: tuple[int, int]) -> tuple[int, int]:
    """``(patch_h, patch_w)`` in input pixels: ``backbone.patch_size`` when the backbone has
    one, else the largest patch that fits, ``image_size // grid`` (ConceptCLIP: ``384 // 27 = 14``).
    """
    height, width = (int(v) for v in backbone.image_size)
    patch = getattr(backbone, "patch_size", None)
    if patch is None:
        return height // grid_size[0], width // grid_size[1]
    if isinstance(patch, (tuple, list)):
        return int(patch[0]), int(patch[1])
    return int(patch), int(patch)


def covered_fraction(backbone: Backbone, grid_size: tuple[int, int]) -> tuple[float, float]:
    """Fraction ``(rows, cols)`` of the model input covered by the patch grid.

    See :func:`patch_size_of` for the patch size (ConceptCLIP: ``27 * 14 / 384``).
    """
    height, width = (int(v) for v in backbone.image_size)
    patch_h, patch_w = patch_size_of(backbone, grid_size)
    return (
        min(1.0, grid_size[0] * patch_h / height),
        min(1.0, grid_size[1] * patch_w / width),
    )
