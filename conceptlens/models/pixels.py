"""Shared low-level pieces of image loading: the loaded-image type, its errors, intensity
conversion and the frame / pixel-count guards.

Both :mod:`conceptlens.models.images` (every format but DICOM) and
:mod:`conceptlens.models.dicom` build on this module, which imports neither of them, so the
two loaders import each other's parts without a cycle. The public names are re-exported by
:mod:`conceptlens.models.images`, where users import them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from conceptlens.errors import ConceptlensError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DefaultFrame",
    "ImageLoadError",
    "ImageNotFoundError",
    "LoadedImage",
    "check_max_pixels_argument",
    "check_pixel_count",
    "resolve_frame",
    "to_uint8",
]

#: Default limit on ``width * height`` of one image (about 179 M pixels). It equals the point at
#: which Pillow itself refuses to open a file (twice ``PIL.Image.MAX_IMAGE_PIXELS``'s default),
#: so a 13 000 x 13 000 image still loads while a decompression bomb does not.
DEFAULT_MAX_PIXELS: int = 2 * 89_478_485


class ImageLoadError(ConceptlensError, ValueError):
    """An image could not be loaded; the message names the source and the reason.

    Parameters
    ----------
    source : str
        The path, or a description such as ``"<numpy.ndarray>"``, of the image at fault.
    reason : str
        What went wrong and, where possible, what to do about it.

    Attributes
    ----------
    source, reason : str
        The two parts of the message, for programs that report bad items in a batch.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"cannot load image {source!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.reason))


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """The image path does not exist (both an :class:`ImageLoadError` and a
    :class:`FileNotFoundError`)."""


@dataclass(frozen=True)
class LoadedImage:
    """An image ready for a backbone's preprocessing, with where it came from.

    Attributes
    ----------
    image : PIL.Image.Image
        The image in mode ``"RGB"`` (8 bits per channel), EXIF orientation applied.
    original_size : tuple[int, int]
        ``(width, height)`` of ``image``: the grid onto which maps are drawn back.
    source : str
        The path, or a description such as ``"<PIL.Image>"`` or ``"<numpy.ndarray>"``.
    meta : dict
        What was done on the way: ``"format"`` (``"PNG"``, ``"DICOM"``, ``"array"`` ...),
        ``"mode"`` (the source's PIL mode or array dtype), ``"bit_depth"``,
        ``"intensity_scaling"``, ``"exif_transposed"``, ``"alpha"``, ``"n_frames"``,
        ``"frame"`` and, for DICOM, the modality LUT and window used (see
        :func:`conceptlens.models.dicom.read_dicom`).
    """

    image: Image.Image
    original_size: tuple[int, int]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        """Width of :attr:`image` in pixels."""
        return self.original_size[0]

    @property
    def height(self) -> int:
        """Height of :attr:`image` in pixels."""
        return self.original_size[1]


def to_uint8(array: np.ndarray) -> tuple[np.ndarray, str]:
    """Convert intensities of any numeric dtype to ``uint8`` by the rules documented in
    :mod:`conceptlens.models.images`.

    Parameters
    ----------
    array : numpy.ndarray
        Any shape; bool, integer or floating-point values.

    Returns
    -------
    tuple[numpy.ndarray, str]
        The ``uint8`` array (same shape) and a short description of the scaling applied.
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array, "none"
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255), "bool*255"
    if np.issubdtype(array.dtype, np.integer):
        if array.size == 0:
            return array.astype(np.uint8), "none"
        low, high = int(array.min()), int(array.max())
        if array.dtype == np.uint16 or (low >= 0 and high <= 65535):
            scaled = np.rint(array.astype(np.float64) * (255.0 / 65535.0))
            return scaled.astype(np.uint8), "16-bit range: value*255/65535"
        return _min_max(array.astype(np.float64), low, high)
    if np.issubdtype(array.dtype, np.floating):
        work = array.astype(np.float64)
        finite = np.isfinite(work)
        work[~finite] = 0.0
        if not finite.any():
            return np.zeros(array.shape, dtype=np.uint8), "non-finite -> 0"
        low, high = float(work[finite].min()), float(work[finite].max())
        if low >= 0.0 and high <= 1.0:
            return np.rint(work * 255.0).astype(np.uint8), "float in [0, 1]: value*255"
        return _min_max(work, low, high)
    raise TypeError(f"unsupported dtype {array.dtype}; expected bool, integer or float values")


def _min_max(array: np.ndarray, low: float, high: float) -> tuple[np.ndarray, str]:
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8), f"constant ({low:g}) -> 0"
    scaled = np.rint((array - low) * (255.0 / (high - low)))
    return np.clip(scaled, 0, 255).astype(np.uint8), f"min-max [{low:g}, {high:g}] -> [0, 255]"


class DefaultFrame(int):
    """A frame index that applies to multi-frame images only (``default_frame=``).

    :func:`resolve_frame` takes frame 0 of a single-frame image when given one of these,
    where a plain ``int`` other than 0 would be out of range.
    """


def resolve_frame(name: str, frame: int | None, n_frames: int) -> int:
    """The frame index to decode from an image with ``n_frames`` frames.

    Parameters
    ----------
    name : str
        The source, for messages.
    frame : int, DefaultFrame or None
        The requested frame; ``None`` is allowed for single-frame images only.
    n_frames : int
        Frames in the image.

    Returns
    -------
    int

    Raises
    ------
    ImageLoadError
        No ``frame`` for a multi-frame image, a non-integer ``frame``, or one out of range.
    """
    if isinstance(frame, DefaultFrame):
        if n_frames == 1:
            return 0
        frame = int(frame)
    if frame is None:
        if n_frames > 1:
            raise ImageLoadError(
                name, f"has {n_frames} frames; pass frame= (0 to {n_frames - 1}) to pick one "
                "(on the command line: --frame)"
            )
        return 0
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
        raise ImageLoadError(name, f"frame must be an int, got {type(frame).__name__}")
    if not 0 <= frame < n_frames:
        raise ImageLoadError(
            name, f"frame={frame} is out of range; the image has {n_frames} frame(s) "
            f"(0 to {n_frames - 1})"
        )
    return int(frame)


def check_pixel_count(name: str, size: tuple[int, int], max_pixels: int | None) -> None:
    """Refuse an image of ``size`` = ``(width, height)`` with more than ``max_pixels`` pixels.

    Raises
    ------
    ImageLoadError
        Too many pixels (the decompression-bomb guard); nothing when ``max_pixels`` is ``None``.
    """
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            name,
            f"too many pixels: {width} x {height} = {width * height:,} exceeds "
            f"max_pixels={max_pixels:,} (decompression-bomb guard); pass a larger max_pixels "
            "if the file is trusted",
        )


def check_max_pixels_argument(max_pixels: int | None) -> None:
    """Validate a ``max_pixels`` argument (a positive int or ``None``).

    Raises
    ------
    ValueError
        Anything else, booleans included.
    """
    if max_pixels is not None and (
        isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer))
        or max_pixels < 1
    ):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
