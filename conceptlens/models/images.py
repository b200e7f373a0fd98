"""Image loading: any common image source -> an RGB ``uint8`` PIL image plus its provenance.

:func:`load_image` accepts a path (JPEG, PNG, TIFF, BMP, WebP, DICOM), raw bytes or a binary
file object, a PIL image, a NumPy array or a torch tensor, and always returns a
:class:`LoadedImage` whose ``image`` is a PIL image in mode ``"RGB"``. The size of that image
(after EXIF orientation) is kept in ``original_size`` so that patch-level maps computed on the
squash-resized model input can be drawn back onto it with :func:`resize_map_to_original`.

Intensity conversion rules (recorded in ``LoadedImage.meta["intensity_scaling"]``):

* ``uint8`` and ``bool`` data are used as they are (``bool`` -> 0 / 255).
* Unsigned 16-bit data (PNG/TIFF ``"I;16"``, ``uint16`` arrays) are scaled by the type's range,
  ``value * 255 / 65535``; a 12-bit image stored in 16 bits therefore looks dark, as it does in
  any viewer that respects the file's bit depth.
* Other integer data (PIL mode ``"I"``, ``int32`` arrays ...) whose values all lie in
  ``[0, 65535]`` are treated as 16-bit data; otherwise they are min-max scaled.
* Floating-point data whose finite values all lie in ``[0, 1]`` are multiplied by 255; any other
  range is min-max scaled to ``[0, 255]``. NaN and infinite values become 0.
* A constant image that has to be min-max scaled becomes black.
* Transparency (``RGBA``, ``LA``, palette images with a transparent colour) is composited onto a
  white background, the usual page colour behind dermoscopy, pathology and document images.
* CMYK, YCbCr, LAB and palette images are converted to RGB by Pillow.

DICOM files go through :mod:`conceptlens.models.dicom` (modality LUT, VOI LUT / windowing,
MONOCHROME1 inversion, frame selection); see :func:`conceptlens.models.dicom.read_dicom`.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from conceptlens._io.files import os_error_reason
from conceptlens.models.dicom import read_dicom
from conceptlens.models.pixels import (
    DEFAULT_MAX_PIXELS,
    DefaultFrame,
    ImageLoadError,
    ImageNotFoundError,
    LoadedImage,
    check_max_pixels_argument,
    check_pixel_count,
    resolve_frame,
    to_uint8,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageLoadError",
    "ImageNotFoundError",
    "LoadedImage",
    "grid_coverage",
    "has_dicom_magic",
    "is_image_file",
    "load_image",
    "load_pil_images",
    "normalize_pixels",
    "resize_map_to_original",
    "resize_to_uint8",
    "to_uint8",
]


#: File-name suffixes (lower case) that :func:`is_image_file` accepts without reading the file.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".dcm", ".dicom"}
)

_DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"

#: What :func:`load_image` accepts.
ImageSource: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray | torch.Tensor"  # noqa: E501


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def load_image(
    source: ImageSource,
    *,
    frame: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    default_frame: int | None = None,
) -> LoadedImage:
    """Load one image from a path, bytes, file object, PIL image, array or tensor as RGB.

    Parameters
    ----------
    source : str, os.PathLike, bytes, file object, PIL.Image.Image, numpy.ndarray or torch.Tensor
        * a path to a JPEG, PNG, TIFF, BMP, WebP or DICOM file (DICOM is recognised by a
          ``.dcm``/``.dicom`` suffix or the ``"DICM"`` marker at byte 128);
        * the bytes of such a file, or a binary file object opened on one;
        * a PIL image of any mode (EXIF orientation is applied);
        * a NumPy array shaped ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``;
        * a torch tensor shaped ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` with ``C`` in
          1, 3, 4; when both readings are possible, ``(C, H, W)`` (torch's convention) wins.

        Intensities are converted as described in the module docstring.
    frame : int, optional
        Which frame of a multi-frame image (multi-frame DICOM, multi-page TIFF) to load,
        counting from 0. Required when the image has more than one frame, unless
        ``default_frame`` is given.
    default_frame : int, optional
        The frame to take from *multi-frame* images when ``frame`` is not given; single-frame
        images ignore it (this is the CLI's ``--frame``).
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Refuse images with more than this many pixels (``width * height``), checked from the
        header before the pixels are decoded. ``None`` switches this guard off; Pillow's own
        global guard (``PIL.Image.MAX_IMAGE_PIXELS``) still applies to files Pillow decodes.

    Returns
    -------
    LoadedImage
        ``image`` in mode ``"RGB"``, ``original_size`` ``(width, height)``, ``source``, ``meta``.

    Raises
    ------
    ImageNotFoundError
        The path does not exist (also a :class:`FileNotFoundError`).
    ImageLoadError
        Unsupported type or shape, corrupt or truncated data, too many pixels, a multi-frame
        image without ``frame``, or a frame index out of range. The message names the source.

    Examples
    --------
    >>> import numpy as np
    >>> loaded = load_image(np.zeros((20, 30), dtype=np.uint16))
    >>> loaded.image.mode, loaded.original_size
    ('RGB', (30, 20))
    """
    check_max_pixels_argument(max_pixels)
    if frame is None and default_frame is not None:
        frame = DefaultFrame(default_frame)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source), frame=frame, max_pixels=max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageLoadError("<bytes>", "empty data (0 bytes)")
        return _load_stream(io.BytesIO(bytes(source)), "<bytes>", frame=frame,
                            max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        return _load_pil(source, "<PIL.Image>", frame=frame, max_pixels=max_pixels)
    if isinstance(source, np.ndarray):
        return _load_array(source, "<numpy.ndarray>", channels_first=False, frame=frame,
                           max_pixels=max_pixels)
    if _is_torch_tensor(source):
        array = source.detach().to("cpu")
        if array.dtype.is_floating_point and array.dtype != _torch().float64:
            array = array.float()
        return _load_array(array.numpy(), "<torch.Tensor>", channels_first=True, frame=frame,
                           max_pixels=max_pixels)
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "<file object>"))
        return _load_stream(source, name, frame=frame, max_pixels=max_pixels)
    raise ImageLoadError(
        f"<{type(source).__name__}>",
        "unsupported source type; pass a path, bytes, a binary file object, a PIL image, "
        "a numpy array or a torch tensor",
    )


def load_pil_images(images: Any) -> list[Image.Image]:
    """One image, a sequence of images or a batch as a list of RGB PIL images.

    Accepts paths, bytes, PIL images, :class:`LoadedImage`, ``(H, W[, C])`` / ``(C, H, W)``
    arrays or tensors, ``(B, ...)`` batches of them and sequences of any of these; each item
    goes through :func:`load_image` (EXIF orientation, DICOM, 16-bit, palette ...).

    Raises:
        ValueError: An empty sequence.
        TypeError: ``images`` is neither an image nor a sequence.
        ImageLoadError: An item that cannot be read (names the source).
    """
    if isinstance(images, (str, os.PathLike, bytes, Image.Image, LoadedImage)):
        items = [images]
    elif isinstance(images, np.ndarray) or _is_torch_tensor(images):
        items = [images] if images.ndim in (2, 3) else list(images)
    elif isinstance(images, Sequence):
        items = list(images)
    else:
        raise TypeError(f"images must be an image or a sequence of images, got {type(images).__name__}")
    if not items:
        raise ValueError("images is empty; pass at least one image")
    return [item.image if isinstance(item, LoadedImage) else load_image(item).image for item in items]


#: PIL resampling filters by the names backbones record in their preprocessing.
RESAMPLE_FILTERS: dict[str, int] = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


def resize_to_uint8(image: Image.Image, size: tuple[int, int], resample: str = "bicubic", *,
                    pixels: np.ndarray | None = None) -> np.ndarray:
    """Squash-resize an RGB image to ``size`` = ``(height, width)``; ``(3, H, W)`` ``uint8``.

    The per-image half of a backbone's preprocessing (PIL's filters, as Hugging Face image
    processors use them); :func:`normalize_pixels` does the rest for a whole batch at once.

    Args:
        image: The image (converted to RGB when in another mode).
        size: ``(height, width)`` of the result.
        resample: Name of a PIL filter (:data:`RESAMPLE_FILTERS`).
        pixels: ``np.asarray(image)`` of an RGB ``image`` if the caller already made it; an
            image already at ``size`` is then not copied again.

    Returns:
        ``(3, H, W)`` ``uint8``; a channels-first *view* of ``pixels`` (not contiguous) when
        ``pixels`` is given and no resize is needed, else a contiguous array.

    Raises:
        ValueError: An unknown ``resample`` name.
    """
    if resample not in RESAMPLE_FILTERS:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE_FILTERS)}, got {resample!r}")
    height, width = (int(v) for v in size)
    if pixels is not None and image.mode == "RGB" and image.size == (width, height):
        return pixels.transpose(2, 0, 1)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), RESAMPLE_FILTERS[resample])
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def normalize_pixels(pixels: torch.Tensor, *, rescale: float, mean: Sequence[float],
                     std: Sequence[float], out: torch.Tensor | None = None) -> torch.Tensor:
    """A ``(B, 3, H, W)`` ``uint8`` batch as float32 model input, ``(x * rescale - mean) / std``.

    Runs on the tensor's device (on a GPU: after the 4x smaller ``uint8`` transfer). On a
    CPU the same arithmetic runs one image at a time into one output batch, so that each
    image's values are still in the cache for the next operation (bit for bit the result of
    the whole-batch arithmetic; the uint8 -> float32 conversion is fused with the copy from
    any strides). Fresh output memory is zeroed by the kernel page by page (56 MB at
    32 x 384 px), which costs more than the arithmetic: NumPy allocates it (huge pages,
    fewer faults), and ``out`` reuses a released batch.

    Args:
        pixels: ``(B, 3, H, W)`` integer batch (any strides).
        rescale, mean, std: The normalisation.
        out: On a CPU, a contiguous float32 ``(B, 3, H, W)`` tensor to write the result into
            (a previous batch's buffer that nothing else holds: no page zeroing); ignored on
            other devices.
    """
    torch = _torch()
    if pixels.device.type == "cpu" and pixels.ndim == 4 and not pixels.dtype.is_floating_point \
            and pixels.shape[1] == len(mean) == len(std):
        if out is None or out.device.type != "cpu" or out.dtype != torch.float32 \
                or out.shape != pixels.shape or not out.is_contiguous():
            out = torch.from_numpy(np.empty(tuple(pixels.shape), dtype=np.float32))
        mean_t = torch.tensor([float(v) for v in mean], dtype=torch.float32)[:, None, None]
        std_t = torch.tensor([float(v) for v in std], dtype=torch.float32)[:, None, None]
        for index in range(pixels.shape[0]):
            image = out[index]
            image.copy_(pixels[index])
            image.mul_(float(rescale)).sub_(mean_t).div_(std_t)
        return out
    return _normalize_arithmetic(pixels, rescale, mean, std)


def _normalize_arithmetic(pixels: torch.Tensor, rescale: float, mean: Sequence[float],
                          std: Sequence[float]) -> torch.Tensor:
    torch = _torch()
    x = pixels.to(torch.float32).mul_(float(rescale))
    mean_t = torch.tensor([float(v) for v in mean], dtype=torch.float32, device=x.device)
    std_t = torch.tensor([float(v) for v in std], dtype=torch.float32, device=x.device)
    return x.sub_(mean_t[:, None, None]).div_(std_t[:, None, None])


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an image file :func:`load_image` can read.

    A file counts when its suffix (case-insensitive) is in :data:`IMAGE_SUFFIXES`, or when it
    is a DICOM file without such a suffix (the ``"DICM"`` marker at byte 128). Only the first
    132 bytes of suffix-less candidates are read; directories and missing paths give ``False``.

    Parameters
    ----------
    path : str or os.PathLike
        The path to test.

    Returns
    -------
    bool
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return path.is_file()
    return has_dicom_magic(path)


def has_dicom_magic(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` carries the DICOM ``"DICM"`` marker at byte 128.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool
        ``False`` for unreadable paths, directories and short files.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError:
        return False
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def grid_coverage(input_size: int | Sequence[int], patch_size: int) -> tuple[float, float]:
    """Fraction ``(rows, cols)`` of a model input covered by its whole patches.

    A ViT with patch size ``p`` on an ``S``-pixel input sees ``S // p`` patches per side and
    ignores the last ``S % p`` pixels. For ConceptCLIP (384 px, patch 14) that is
    ``27 * 14 / 384 = 0.984375`` in both directions.

    Parameters
    ----------
    input_size : int or (int, int)
        Model input side, or ``(height, width)``.
    patch_size : int
        Patch side in pixels.

    Returns
    -------
    tuple[float, float]
        Covered fraction of the rows and of the columns, for
        :func:`resize_map_to_original`'s ``covered_fraction``.

    Examples
    --------
    >>> grid_coverage(384, 14)
    (0.984375, 0.984375)
    """
    if isinstance(input_size, (int, np.integer)):
        height = width = int(input_size)
    else:
        height, width = (int(side) for side in input_size)
    if patch_size <= 0 or height < patch_size or width < patch_size:
        raise ValueError(
            f"patch_size={patch_size} must be positive and fit in input_size={input_size}"
        )
    return ((height // patch_size) * patch_size / height,
            (width // patch_size) * patch_size / width)


def resize_map_to_original(
    map_hw: np.ndarray,
    original_size: tuple[int, int],
    *,
    covered_fraction: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Draw a patch-grid map back onto the original image's pixel grid (undo the squash resize).

    The model saw the original ``(W, H)`` image squash-resized (no crop) to its input size; its
    ``(h, w)`` patch grid covers the top-left ``covered_fraction`` ``(rows, cols)`` of that
    input (see :func:`grid_coverage`). Because a squash resize scales each axis linearly, cell
    ``(i, j)`` corresponds to the original-image rectangle
    ``rows [i, i + 1) * fr * H / h`` by ``cols [j, j + 1) * fc * W / w``. Each original pixel
    takes the bilinear interpolation of the cell values at the cell centres; pixels outside
    the outermost cell centres, including the uncovered bottom and right border, take the
    nearest covered value (edge clamping), so the border never invents new values.

    Parameters
    ----------
    map_hw : numpy.ndarray, shape (h, w)
        One map on the patch grid, row-major (row 0 at the top).
    original_size : (int, int)
        ``(width, height)`` of the original image, as in :attr:`LoadedImage.original_size`.
    covered_fraction : (float, float), default (1.0, 1.0)
        Fraction of the model input's rows and columns that the grid covers, in ``(0, 1]``.

    Returns
    -------
    numpy.ndarray, shape (height, width)
        ``float32`` when ``map_hw`` is ``float32``, otherwise ``float64``.

    Examples
    --------
    >>> import numpy as np
    >>> grid = np.zeros((27, 27), dtype=np.float32)
    >>> grid[13, 20] = 1.0                 # centre row, right part of the input
    >>> full = resize_map_to_original(grid, (600, 300), covered_fraction=grid_coverage(384, 14))
    >>> full.shape, [int(i) for i in np.unravel_index(full.argmax(), full.shape)]
    ((300, 600), [147, 448])
    """
    values = np.asarray(map_hw)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"map_hw must be a 2-D (h, w) array, got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise TypeError(f"map_hw must be numeric, got dtype {values.dtype}")
    width, height = (int(side) for side in original_size)
    if width < 1 or height < 1:
        raise ValueError(f"original_size must be positive (width, height), got {original_size}")
    row_fraction, col_fraction = (float(part) for part in covered_fraction)
    if not (0.0 < row_fraction <= 1.0 and 0.0 < col_fraction <= 1.0):
        raise ValueError(f"covered_fraction must lie in (0, 1], got {covered_fraction}")

    dtype = np.float32 if values.dtype == np.float32 else np.float64
    values = values.astype(dtype, copy=False)
    rows_low, rows_high, rows_weight = _interpolation_axis(height, values.shape[0], row_fraction)
    cols_low, cols_high, cols_weight = _interpolation_axis(width, values.shape[1], col_fraction)
    rows_weight = rows_weight.astype(dtype)[:, None]
    cols_weight = cols_weight.astype(dtype)[None, :]
    by_rows = values[rows_low] * (1 - rows_weight) + values[rows_high] * rows_weight
    return by_rows[:, cols_low] * (1 - cols_weight) + by_rows[:, cols_high] * cols_weight


# ----------------------------------------------------------------------------------------------
# Loaders per source kind
# ----------------------------------------------------------------------------------------------


def _load_path(path: Path, *, frame: int | None, max_pixels: int | None) -> LoadedImage:
    name = str(path)
    try:
        status = path.stat()
    except OSError as error:
        if path.is_symlink() and error.errno == errno.ENOENT:
            raise ImageNotFoundError(name, "broken symbolic link (its target does not exist)") \
                from None
        if error.errno == errno.ENOENT:
            raise ImageNotFoundError(name, "file not found") from None
        raise ImageLoadError(name, os_error_reason(error)) from None
    if stat.S_ISDIR(status.st_mode):
        raise ImageLoadError(name, "is a directory, not an image file")
    if status.st_size == 0:
        raise ImageLoadError(name, "empty file (0 bytes)")
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return read_dicom(path, frame=frame, max_pixels=max_pixels)
    try:
        # One open per file: the DICOM marker is read from the handle that then decodes.
        with open(path, "rb") as handle:
            if _stream_has_dicom_magic(handle):
                return read_dicom(handle, frame=frame, max_pixels=max_pixels, name=name)
            return _load_stream(handle, name, frame=frame, max_pixels=max_pixels,
                                dicom_checked=True)
    except OSError as error:
        if isinstance(error, ImageLoadError):
            raise
        raise ImageLoadError(name, os_error_reason(error)) from error


def _load_stream(stream: BinaryIO, name: str, *, frame: int | None, max_pixels: int | None,
                 dicom_checked: bool = False) -> LoadedImage:
    if not dicom_checked and _stream_has_dicom_magic(stream):
        return read_dicom(stream, frame=frame, max_pixels=max_pixels, name=name)
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning-level guard.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise ImageLoadError(
            name,
            f"too many pixels for Pillow's global guard ({error}); if the file is trusted, "
            "raise PIL.Image.MAX_IMAGE_PIXELS and pass a larger max_pixels",
        ) from error
    except UnidentifiedImageError as error:
        raise ImageLoadError(
            name, "not a recognised image format (corrupt file, or not an image: supported are "
            "JPEG, PNG, TIFF, BMP, WebP and DICOM)"
        ) from error
    except OSError as error:
        raise ImageLoadError(name, f"cannot read image ({error})") from error
    with opened:
        return _load_pil(opened, name, frame=frame, max_pixels=max_pixels, owned=True)


def _load_pil(image: Image.Image, name: str, *, frame: int | None,
              max_pixels: int | None, owned: bool = False) -> LoadedImage:
    """``owned``: ``image`` was opened here from a file or bytes, so its pixels need no copy
    (a caller's image is copied: the result must not share its memory)."""
    n_frames = int(getattr(image, "n_frames", 1) or 1)
    frame_index = resolve_frame(name, frame, n_frames)
    check_pixel_count(name, image.size, max_pixels)
    meta: dict[str, Any] = {
        "format": image.format or "PIL",
        "mode": image.mode,
        "bit_depth": _PIL_BIT_DEPTH.get(image.mode),
        "n_frames": n_frames,
        "frame": frame_index,
    }
    try:
        if n_frames > 1:
            image.seek(frame_index)
        image.load()
        rotated = _has_exif_rotation(image)
        # exif_transpose copies even an upright image: only rotated ones go through it (then
        # the RGB step below needs no second copy)
        oriented = ImageOps.exif_transpose(image) if rotated else image
    except Image.DecompressionBombError as error:
        raise ImageLoadError(name, f"too many pixels ({error})") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageLoadError(name, f"corrupt or truncated image data ({error})") from error
    meta["exif_transposed"] = rotated
    rgb, conversion = _pil_to_rgb(oriented, copy=oriented is image and not owned)
    meta.update(conversion)
    return LoadedImage(image=rgb, original_size=rgb.size, source=name, meta=meta)


def _load_array(array: np.ndarray, name: str, *, channels_first: bool, frame: int | None,
                max_pixels: int | None) -> LoadedImage:
    original_dtype = str(array.dtype)
    if frame not in (None, 0) and not isinstance(frame, DefaultFrame):
        raise ImageLoadError(name, f"frame={frame} requested but an array holds a single frame")
    pixels = _to_channels_last(np.asarray(array), name, channels_first=channels_first)
    height, width = pixels.shape[:2]
    check_pixel_count(name, (width, height), max_pixels)
    try:
        as_uint8, scaling = to_uint8(pixels)
    except TypeError as error:
        raise ImageLoadError(name, str(error)) from error
    channels = as_uint8.shape[2]
    alpha = "none"
    if channels == 1:
        rgb = np.repeat(as_uint8, 3, axis=2)
    elif channels == 3:
        rgb = as_uint8
    else:
        rgb = _composite_on_white(as_uint8[..., :3], as_uint8[..., 3])
        alpha = "composited on white"
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    meta = {
        "format": "array",
        "mode": original_dtype,
        "bit_depth": int(np.dtype(original_dtype).itemsize * 8),
        "intensity_scaling": scaling,
        "alpha": alpha,
        "n_frames": 1,
        "frame": 0,
        "exif_transposed": False,
    }
    return LoadedImage(image=image, original_size=image.size, source=name, meta=meta)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

_PIL_BIT_DEPTH = {
    "1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "La": 8, "RGB": 8, "RGBA": 8, "RGBa": 8,
    "RGBX": 8, "CMYK": 8, "YCbCr": 8, "LAB": 8, "HSV": 8, "I;16": 16, "I;16L": 16,
    "I;16B": 16, "I;16N": 16, "I": 32, "F": 32,
}
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def _pil_to_rgb(image: Image.Image, *, copy: bool = True) -> tuple[Image.Image, dict[str, Any]]:
    """Convert any PIL mode to RGB uint8; return the image and what was done.

    An RGB image comes back as a plain :class:`PIL.Image.Image` with its own pixels
    (``copy``) or, when nobody else holds ``image`` (one opened here), sharing them: no
    copy of the decoded pixels, and no reference to the file it came from.
    """
    mode = image.mode
    if mode == "RGB":
        image.load()
        shared = image._new(image.im) if not copy and hasattr(image, "_new") else image.copy()
        return shared, {"intensity_scaling": "none", "alpha": "none"}
    if mode in _HIGH_DEPTH_MODES:
        as_uint8, scaling = to_uint8(np.asarray(image))
        gray = Image.fromarray(as_uint8, mode="L")
        return gray.convert("RGB"), {"intensity_scaling": scaling, "alpha": "none"}
    if mode == "P":
        has_transparency = "transparency" in image.info
        image = image.convert("RGBA" if has_transparency else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image, {"intensity_scaling": "palette", "alpha": "none"}
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"))
        rgb = _composite_on_white(rgba[..., :3], rgba[..., 3])
        return Image.fromarray(rgb, mode="RGB"), {"intensity_scaling": "none",
                                                  "alpha": "composited on white"}
    return image.convert("RGB"), {"intensity_scaling": "none", "alpha": "none"}


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    weight = alpha.astype(np.float32)[..., None] / 255.0
    blended = rgb.astype(np.float32) * weight + 255.0 * (1.0 - weight)
    return np.rint(blended).astype(np.uint8)


def _to_channels_last(array: np.ndarray, name: str, *, channels_first: bool) -> np.ndarray:
    """Return ``(H, W, C)`` with C in (1, 3, 4), or raise a clear error."""
    valid = (1, 3, 4)
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3:
        first, last = array.shape[0] in valid, array.shape[2] in valid
        if channels_first and first:
            return np.moveaxis(array, 0, 2)
        if last:
            return array
        if first:
            hint = " (channels-first arrays: transpose to (H, W, C))" if not channels_first else ""
            raise ImageLoadError(
                name, f"shape {array.shape} looks channels-first; expected (H, W, C){hint}"
            )
    if array.ndim == 4 and array.shape[0] == 1:
        reason = f"shape {array.shape} has a batch dimension; pass one image (drop axis 0)"
    else:
        layout = "(H, W), (C, H, W) or (H, W, C)" if channels_first else "(H, W) or (H, W, C)"
        reason = f"shape {array.shape} is not an image; expected {layout} with C in 1, 3, 4"
    raise ImageLoadError(name, reason)


def _interpolation_axis(n_out: int, n_cells: int,
                        fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights to sample ``n_cells`` cell centres at ``n_out`` pixel centres."""
    cell_extent = fraction * n_out / n_cells
    position = (np.arange(n_out, dtype=np.float64) + 0.5) / cell_extent - 0.5
    position = np.clip(position, 0.0, n_cells - 1)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, n_cells - 1)
    return low, high, position - low


def _has_exif_rotation(image: Image.Image) -> bool:
    try:
        return int(image.getexif().get(0x0112, 1)) not in (1, 0)
    except Exception:  # noqa: BLE001 - malformed EXIF simply means "no rotation"
        return False


def _stream_has_dicom_magic(stream: BinaryIO) -> bool:
    if not (hasattr(stream, "seek") and hasattr(stream, "tell")):
        return False
    start = stream.tell()
    head = stream.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    stream.seek(start)
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def _is_torch_tensor(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("torch") and hasattr(value, "detach") and hasattr(value, "numpy")


def _torch() -> Any:
    import torch

    return torch
