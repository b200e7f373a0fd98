"""DICOM reading: one frame of a DICOM file -> RGB ``uint8`` image, the way a viewer shows it.

Grayscale (``MONOCHROME1`` / ``MONOCHROME2``) pixels go through the DICOM display pipeline:

1. **Modality LUT**: ``Rescale Slope`` / ``Rescale Intercept`` (e.g. CT values to Hounsfield
   units) or a Modality LUT Sequence (:func:`pydicom.pixels.apply_modality_lut`).
2. **VOI**: in order of preference, the ``window`` passed by the caller, the dataset's first
   VOI LUT Sequence item, its first ``Window Center`` / ``Window Width`` pair (``LINEAR``,
   ``LINEAR_EXACT`` or ``SIGMOID`` as in ``VOI LUT Function``, DICOM PS3.3 C.11.2.1.2), else
   the frame's own minimum-maximum range.
3. **MONOCHROME1** images (low values shown bright) are inverted after the VOI step.

Colour images (``RGB``, ``YBR_*`` converted to RGB by pydicom, ``PALETTE COLOR`` through its
colour LUT) are scaled from their ``Bits Stored`` range to 8 bits.

pydicom (the ``dicom`` extra: ``pip install "conceptlens[dicom]"``) is imported only when a DICOM
file is read. Compressed transfer syntaxes need pydicom's decoding plugins (Pillow, pylibjpeg,
...); a missing one gives an :class:`~conceptlens.models.images.ImageLoadError` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from conceptlens.models.pixels import (
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    ImageNotFoundError,
    LoadedImage,
    check_max_pixels_argument,
    check_pixel_count,
    resolve_frame,
    to_uint8,
)

__all__ = ["apply_window", "read_dicom"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_MIN_PYDICOM_MAJOR = 3


def read_dicom(
    source: str | os.PathLike | BinaryIO,
    *,
    frame: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    window: tuple[float, float] | None = None,
    name: str | None = None,
) -> LoadedImage:
    """Read one frame of a DICOM file as an RGB image, applying the display pipeline.

    Parameters
    ----------
    source : str, os.PathLike or binary file object
        The DICOM file. Files without the 128-byte preamble and ``"DICM"`` marker are read
        too (pydicom's ``force=True``) as long as they hold pixel data.
    frame : int, optional
        Frame index (from 0) of a multi-frame file; required when it has more than one frame.
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Refuse frames with more than ``Rows * Columns`` pixels before decoding them;
        ``None`` switches the guard off.
    window : (float, float), optional
        ``(center, width)`` of a linear window in modality units (e.g. ``(40, 400)`` for a CT
        soft-tissue window in HU), overriding the dataset's VOI. Grayscale images only.
    name : str, optional
        How to call the source in messages and in ``LoadedImage.source`` (default: the path).

    Returns
    -------
    LoadedImage
        ``meta`` holds ``format="DICOM"``, ``photometric``, ``modality``, ``transfer_syntax``,
        ``bit_depth`` (Bits Stored), ``n_frames``, ``frame``, ``rescale`` (slope, intercept or
        ``"modality LUT sequence"``), ``voi`` (how intensities were mapped), ``window_center``
        and ``window_width`` when a window was used, and ``inverted`` (MONOCHROME1).

    Raises
    ------
    ImportError
        pydicom 3 or newer is not installed.
    ImageNotFoundError
        The path does not exist.
    ImageLoadError
        Not a DICOM file, no pixel data, undecodable pixel data, too many pixels, or a
        multi-frame file without a valid ``frame``.
    """
    check_max_pixels_argument(max_pixels)
    pydicom = _import_pydicom()
    if name is None:
        name = str(source) if isinstance(source, (str, os.PathLike)) else str(
            getattr(source, "name", "<DICOM stream>")
        )
    if isinstance(source, (str, os.PathLike)) and not Path(source).exists():
        raise ImageNotFoundError(name, "file not found")

    dataset = _read_dataset(pydicom, source, name)
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS) and not _looks_like_dicom(dataset):
        raise ImageLoadError(
            name, "corrupt or not a DICOM file: the header does not parse as DICOM (no SOP "
            "class, no modality, no pixel data)"
        )
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        raise ImageLoadError(
            name, f"DICOM file holds no pixel data (Modality {dataset.get('Modality', '?')}, "
            f"SOP class {_sop_class_name(dataset)}); it is not an image"
        )
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    check_pixel_count(name, (columns, rows), max_pixels)
    n_frames = _number_of_frames(dataset)
    frame_index = resolve_frame(name, frame, n_frames)
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if window is not None and photometric not in _MONOCHROME:
        raise ImageLoadError(name, f"window= applies to grayscale images, not {photometric}")

    pixels = _decode_frame(dataset, name, frame_index if n_frames > 1 else None)

    meta: dict[str, Any] = {
        "format": "DICOM",
        "mode": photometric,
        "photometric": photometric,
        "modality": str(dataset.get("Modality", "")),
        "transfer_syntax": _transfer_syntax_name(dataset),
        "bit_depth": int(dataset.get("BitsStored", 0) or 0) or None,
        "n_frames": n_frames,
        "frame": frame_index,
        "exif_transposed": False,
        "alpha": "none",
    }
    if photometric in _MONOCHROME:
        rgb = _monochrome_to_rgb(pydicom, dataset, pixels, name, window, meta)
    else:
        rgb = _colour_to_rgb(pydicom, dataset, pixels, name, photometric, meta)
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    return LoadedImage(image=image, original_size=image.size, source=name, meta=meta)


def apply_window(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Map modality values through a DICOM window to display intensities in ``[0, 1]``.

    Implements DICOM PS3.3 C.11.2.1.2 with an output range of ``[0, 1]``:

    * ``LINEAR``: ``clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)`` (``w >= 1``);
    * ``LINEAR_EXACT``: ``clip((x - c) / w + 0.5, 0, 1)`` (``w > 0``);
    * ``SIGMOID``: ``1 / (1 + exp(-4 (x - c) / w))`` (``w > 0``).

    Parameters
    ----------
    values : numpy.ndarray
        Modality values (after rescale), any shape.
    center, width : float
        Window Center and Window Width.
    function : {"LINEAR", "LINEAR_EXACT", "SIGMOID"}
        The VOI LUT Function.

    Returns
    -------
    numpy.ndarray
        ``float64`` array of the same shape, values in ``[0, 1]``.

    Examples
    --------
    >>> apply_window(np.array([-1000.0, 40.0, 1000.0]), 40, 400, "LINEAR_EXACT").tolist()
    [0.0, 0.5, 1.0]
    """
    values = np.asarray(values, dtype=np.float64)
    function = function.upper()
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width}")
        if width == 1:
            return (values > center - 0.5).astype(np.float64)
        return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    if width <= 0:
        raise ValueError(f"{function} window width must be > 0, got {width}")
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    raise ValueError(
        f"unsupported VOI LUT Function {function!r}; expected LINEAR, LINEAR_EXACT or SIGMOID"
    )


# ----------------------------------------------------------------------------------------------
# Pipeline steps
# ----------------------------------------------------------------------------------------------


def _monochrome_to_rgb(pydicom: Any, dataset: Any, pixels: np.ndarray, name: str,
                       window: tuple[float, float] | None, meta: dict[str, Any]) -> np.ndarray:
    if pixels.ndim != 2:
        raise ImageLoadError(name, f"grayscale frame has unexpected shape {pixels.shape}")
    if "ModalityLUTSequence" in dataset:
        values = pydicom.pixels.apply_modality_lut(pixels, dataset).astype(np.float64)
        meta["rescale"] = "modality LUT sequence"
    else:
        slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
        values = pixels.astype(np.float64) * slope + intercept
        meta["rescale"] = {"slope": slope, "intercept": intercept}

    try:
        display = _apply_voi(pydicom, dataset, values, pixels, window, meta)
    except ValueError as error:
        raise ImageLoadError(name, f"invalid VOI (window) attributes: {error}") from error
    if meta["photometric"] == "MONOCHROME1":
        display = 1.0 - display
    meta["inverted"] = meta["photometric"] == "MONOCHROME1"
    gray = np.rint(display * 255.0).astype(np.uint8)
    meta["intensity_scaling"] = f"DICOM VOI: {meta['voi']}"
    return np.repeat(gray[:, :, None], 3, axis=2)


def _apply_voi(pydicom: Any, dataset: Any, values: np.ndarray, stored: np.ndarray,
               window: tuple[float, float] | None, meta: dict[str, Any]) -> np.ndarray:
    if window is not None:
        center, width = (float(part) for part in window)
        meta.update(voi="window (caller)", window_center=center, window_width=width)
        return apply_window(values, center, width, "LINEAR")
    if dataset.get("VOILUTSequence"):
        item = dataset.VOILUTSequence[0]
        output_bits = int(item.LUTDescriptor[2])
        mapped = pydicom.pixels.apply_voi(stored, dataset, index=0).astype(np.float64)
        meta["voi"] = "VOI LUT sequence"
        return np.clip(mapped / float(2**output_bits - 1), 0.0, 1.0)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        center = _first_value(dataset.WindowCenter)
        width = _first_value(dataset.WindowWidth)
        function = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        meta.update(voi=f"window (dataset, {function})", window_center=center,
                    window_width=width)
        return apply_window(values, center, width, function)
    low, high = float(values.min()), float(values.max())
    meta.update(voi=f"min-max [{low:g}, {high:g}]")
    if high <= low:
        return np.zeros(values.shape, dtype=np.float64)
    return (values - low) / (high - low)


def _colour_to_rgb(pydicom: Any, dataset: Any, pixels: np.ndarray, name: str,
                   photometric: str, meta: dict[str, Any]) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        try:
            pixels = pydicom.pixels.apply_color_lut(pixels, dataset)
        except (ValueError, KeyError, AttributeError) as error:
            raise ImageLoadError(name, f"invalid palette colour LUT: {error}") from error
        as_uint8, scaling = to_uint8(pixels)
        meta["intensity_scaling"] = f"palette colour LUT, {scaling}"
    else:
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise ImageLoadError(
                name, f"unsupported photometric interpretation {photometric!r} with pixel "
                f"shape {pixels.shape}"
            )
        bits = int(dataset.get("BitsStored", 8) or 8)
        if bits == 8 and pixels.dtype == np.uint8:
            as_uint8, meta["intensity_scaling"] = pixels, "none"
        else:
            maximum = float(2**bits - 1)
            scaled = np.rint(np.clip(pixels.astype(np.float64) / maximum, 0.0, 1.0) * 255.0)
            as_uint8 = scaled.astype(np.uint8)
            meta["intensity_scaling"] = f"{bits}-bit range: value*255/{int(maximum)}"
    if photometric.startswith("YBR"):
        meta["color_conversion"] = f"{photometric} -> RGB (pydicom)"
    return as_uint8[..., :3]


# ----------------------------------------------------------------------------------------------
# pydicom access
# ----------------------------------------------------------------------------------------------


def _import_pydicom() -> Any:
    try:
        import pydicom
        import pydicom.pixels
    except ImportError as error:
        raise ImportError(
            "reading DICOM files needs pydicom >= 3: pip install \"conceptlens[dicom]\""
        ) from error
    major = int(str(pydicom.__version__).split(".")[0])
    if major < _MIN_PYDICOM_MAJOR:
        raise ImportError(
            f"reading DICOM files needs pydicom >= 3, found {pydicom.__version__}: "
            "pip install -U pydicom"
        )
    return pydicom


def _read_dataset(pydicom: Any, source: Any, name: str) -> Any:
    from pydicom.errors import InvalidDicomError

    start = source.tell() if hasattr(source, "tell") else None
    try:
        return pydicom.dcmread(source)
    except InvalidDicomError:
        pass
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as error:
        raise ImageLoadError(name, f"corrupt DICOM file ({error})") from error
    if start is not None:
        source.seek(start)
    try:
        dataset = pydicom.dcmread(source, force=True)
    except Exception as error:  # noqa: BLE001 - any failure here means "not DICOM"
        raise ImageLoadError(name, f"not a valid DICOM file ({error})") from error
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        raise ImageLoadError(
            name, "not a valid DICOM file (no 'DICM' marker at byte 128, and the content does not "
            "parse as DICOM image data)"
        )
    return dataset


def _decode_frame(dataset: Any, name: str, index: int | None) -> np.ndarray:
    try:
        dataset.pixel_array_options(index=index)
        return np.asarray(dataset.pixel_array)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types; all mean "cannot decode"
        raise ImageLoadError(
            name, f"cannot decode DICOM pixel data (transfer syntax "
            f"{_transfer_syntax_name(dataset)}): {error}"
        ) from error


def _number_of_frames(dataset: Any) -> int:
    try:
        return max(int(dataset.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _first_value(value: Any) -> float:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _transfer_syntax_name(dataset: Any) -> str:
    file_meta = getattr(dataset, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if uid is None:
        return "unknown"
    return str(getattr(uid, "name", uid) or uid)


def _sop_class_name(dataset: Any) -> str:
    uid = dataset.get("SOPClassUID")
    if uid is None:
        return "unknown"
    return str(getattr(uid, "name", uid) or uid)


def _looks_like_dicom(dataset: Any) -> bool:
    """Whether a parsed dataset has the attributes every real DICOM object carries."""
    try:
        return any(keyword in dataset for keyword in ("SOPClassUID", "Modality", "StudyInstanceUID"))
    except Exception:  # noqa: BLE001 - a garbage dataset may fail on lookup itself
        return False
