"""Cheap per-image input checks: inputs a model should not be trusted on.

:func:`check_image` looks at the pixels of one loaded image (before the backbone's resize)
and returns the problems it finds, each a ``(kind, message)`` pair. The thresholds are
properties of the input, stated in gray levels of the 8-bit RGB image or as resize factors,
not fitted to a data set (see :class:`InputChecks`).

Kinds (:data:`WARNING_KINDS`):

``too_small``
    The original image is upsampled more than ``max_upsample`` times on a side to reach the
    model input, so each patch of the grid sees few (or less than one) original pixels.
``constant``
    Near-constant pixels (luminance standard deviation under ``constant_std`` gray levels):
    blank, all-black or all-white images. Brightness and contrast are not reported then.
``grayscale``
    All three channels equal (up to compression noise) while the model expects colour.
``too_dark`` / ``too_bright``
    Mean luminance under ``dark_mean`` / over ``bright_mean`` gray levels.
``low_contrast``
    Luminance standard deviation under ``low_contrast_std`` gray levels.
``out_of_distribution``
    Added by the scorer from an :class:`~conceptlens.vocab.reference.EmbeddingReference`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from conceptlens.errors import InputQualityWarning

__all__ = [
    "GRAYSCALE_MODALITY_WORDS",
    "WARNING_COLUMNS",
    "WARNING_KINDS",
    "InputChecks",
    "InputQualitySummary",
    "check_image",
    "check_statistics",
    "empty_warnings",
    "expects_color",
    "image_statistics",
    "statistics_pixels",
]

WARNING_COLUMNS = ("image_id", "kind", "message")
WARNING_KINDS = ("too_small", "constant", "grayscale", "too_dark", "too_bright", "low_contrast",
                 "out_of_distribution")

#: Words in a vocabulary's modality that mean grayscale images are normal (no ``grayscale`` check).
GRAYSCALE_MODALITY_WORDS = ("x-ray", "xray", "radiograph", "ct", "mri", "magnetic resonance",
                            "ultrasound", "sonograph", "mammogra", "tomograph", "pet")

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights, as PIL's "L" conversion
_STATS_SIDE = 256  # statistics are computed on a box-reduced copy at most this large


class InputQualitySummary(InputQualityWarning):
    """The Python warning :meth:`ConceptScorer.score` emits once per call when images were flagged.

    Attributes:
        warnings: The per-image warnings (columns ``image_id``, ``kind``, ``message``), the
            same frame as :attr:`ConceptScores.warnings`, so that code that only sees the
            warning (e.g. a command-line wrapper) can print them.
    """

    def __init__(self, message: str, warnings: pd.DataFrame | None = None) -> None:
        super().__init__(message)
        self.warnings = warnings if warnings is not None else empty_warnings()


def empty_warnings() -> pd.DataFrame:
    """An empty warnings frame with the columns ``image_id``, ``kind``, ``message``."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in WARNING_COLUMNS})


@dataclass(frozen=True)
class InputChecks:
    """Thresholds of the cheap input checks (gray levels are of the 8-bit image, 0-255).

    Args:
        max_upsample: ``too_small`` when the model input side exceeds the original side by
            more than this factor (2: an image under half the model input, e.g. under 192 px
            for ConceptCLIP's 384 px or 32 px for the 64 px demo model).
        constant_std: ``constant`` when the luminance standard deviation is below this.
        grayscale_chroma: ``grayscale`` when the mean of ``max(R, G, B) - min(R, G, B)`` is
            below this ...
        grayscale_chroma_p99: ... and its 99th percentile is at most this (allows JPEG noise).
        dark_mean: ``too_dark`` when the mean luminance is below this (10 % of the range).
        bright_mean: ``too_bright`` when the mean luminance is above this (90 % of the range).
        low_contrast_std: ``low_contrast`` when the luminance standard deviation is below this
            (3 % of the range).
        expect_color: Whether the model expects colour images; ``None`` decides from the
            vocabulary's modality (see :func:`expects_color`).

    On clean demo images (1100 images from 5 generator seeds) none of these checks fires:
    their mean luminance lies in 88-193, their luminance standard deviation in 12-61 and their
    99th-percentile chroma is at least 50.
    """

    max_upsample: float = 2.0
    constant_std: float = 1.0
    grayscale_chroma: float = 2.0
    grayscale_chroma_p99: float = 6.0
    dark_mean: float = 25.5
    bright_mean: float = 229.5
    low_contrast_std: float = 7.65
    expect_color: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready thresholds."""
        return asdict(self)


def expects_color(vocabulary: Any) -> bool:
    """Whether images for this vocabulary are expected in colour.

    ``False`` when the vocabulary's ``modality`` names a grayscale modality (X-ray, CT, MRI,
    ultrasound, mammography ...; :data:`GRAYSCALE_MODALITY_WORDS`), else ``True``
    (dermoscopy, histopathology, fundus, blood cells ...).
    """
    modality = str(getattr(vocabulary, "modality", "") or "").lower()
    words = modality.replace("/", " ").replace(",", " ").split()
    for marker in GRAYSCALE_MODALITY_WORDS:
        if (" " in marker or "-" in marker) and marker in modality:
            return False
        if any(word == marker or (len(marker) > 3 and word.startswith(marker)) for word in words):
            return False
    return True


def statistics_pixels(image: Any) -> np.ndarray:
    """The ``(N, 3)`` ``uint8`` RGB pixels the statistics are computed on.

    Images larger than 256 px a side are box-reduced by the smallest integer factor that
    brings both sides to at most 256 px (:meth:`PIL.Image.Image.reduce`: each output pixel is
    the rounded mean of a ``k x k`` block), several times cheaper than a resampling thumbnail;
    every original pixel keeps its weight, so the luminance mean moves by rounding only, and
    noise is averaged as a viewer's downscale would.

    Args:
        image: PIL image of any mode (converted to RGB) or ``(H, W, 3)`` ``uint8`` array
            (used as it is).

    Returns:
        ``(N, 3)`` ``uint8`` (a view where no conversion or reduction was needed).
    """
    if isinstance(image, np.ndarray):
        return image.reshape(-1, image.shape[-1])
    small = image if image.mode == "RGB" else image.convert("RGB")
    factor = -(-max(small.size) // _STATS_SIDE)
    if factor > 1:
        small = small.reduce(factor)
    return np.asarray(small).reshape(-1, 3)


def image_statistics(image: Any) -> dict[str, float]:
    """Pixel statistics of an RGB image (on a box-reduced copy of at most 256 px a side).

    Args:
        image: PIL image (converted to RGB) or ``(H, W, 3)`` uint8 array (see
            :func:`statistics_pixels`).

    Returns:
        ``mean`` and ``std`` of the luminance, ``chroma_mean`` and ``chroma_p99`` of
        ``max(R, G, B) - min(R, G, B)``, all in gray levels.
    """
    pixels = statistics_pixels(image).astype(np.float64)
    luminance = pixels @ _LUMA
    chroma = pixels.max(axis=1) - pixels.min(axis=1)
    return {
        "mean": float(luminance.mean()),
        "std": float(luminance.std()),
        "chroma_mean": float(chroma.mean()),
        "chroma_p99": float(np.percentile(chroma, 99)),
    }


def check_image(
    image: Any,
    model_size: tuple[int, int],
    checks: InputChecks | None = None,
    *,
    expect_color: bool = True,
    grid_size: tuple[int, int] | None = None,
) -> list[tuple[str, str]]:
    """The input problems of one image.

    Args:
        image: The loaded PIL image at its original size.
        model_size: ``(height, width)`` of the model input.
        checks: Thresholds (defaults of :class:`InputChecks`).
        expect_color: Run the ``grayscale`` check (``checks.expect_color`` overrides it when set).
        grid_size: ``(grid_h, grid_w)`` of the patch grid, named in the ``too_small`` message.

    Returns:
        ``[(kind, message), ...]`` in the order of :data:`WARNING_KINDS`; empty when clean.
    """
    return check_statistics(image.size, image_statistics(image), model_size, checks,
                            expect_color=expect_color, grid_size=grid_size)


def check_statistics(
    size: tuple[int, int],
    stats: dict[str, float],
    model_size: tuple[int, int],
    checks: InputChecks | None = None,
    *,
    expect_color: bool = True,
    grid_size: tuple[int, int] | None = None,
) -> list[tuple[str, str]]:
    """:func:`check_image` from an image's ``(width, height)`` and :func:`image_statistics`
    (what a feature store keeps, so that rescoring opens no image file)."""
    checks = checks or InputChecks()
    if checks.expect_color is not None:
        expect_color = checks.expect_color
    found: list[tuple[str, str]] = []
    width, height = (int(v) for v in size)
    model_h, model_w = (int(v) for v in model_size)
    factor = max(model_h / max(height, 1), model_w / max(width, 1))
    if factor > checks.max_upsample:
        grid = f" and its {grid_size[0]}x{grid_size[1]} patch grid" if grid_size else ""
        found.append(("too_small", (
            f"{width}x{height} px image is upsampled {factor:.1f}x to the {model_w}x{model_h} model "
            f"input{grid}; details below the original resolution are invented by the resize"
        )))
    if stats["std"] < checks.constant_std:
        found.append(("constant", (
            f"near-constant pixels (luminance {stats['mean']:.0f} +- {stats['std']:.2f} of 255): "
            "nothing for the model to see"
        )))
        return found
    if expect_color and stats["chroma_mean"] < checks.grayscale_chroma and (
        stats["chroma_p99"] <= checks.grayscale_chroma_p99
    ):
        found.append(("grayscale", "grayscale image (all channels equal) fed to a model that expects colour"))
    if stats["mean"] < checks.dark_mean:
        found.append(("too_dark", f"very dark image (mean luminance {stats['mean']:.0f} of 255)"))
    elif stats["mean"] > checks.bright_mean:
        found.append(("too_bright", f"very bright image (mean luminance {stats['mean']:.0f} of 255)"))
    if stats["std"] < checks.low_contrast_std:
        found.append(("low_contrast", f"very low contrast (luminance std {stats['std']:.1f} of 255)"))
    return found
