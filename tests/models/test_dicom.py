"""Tests for conceptlens.models.dicom, on pydicom's bundled test files and crafted datasets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from conceptlens.models.dicom import apply_window, read_dicom  # noqa: E402
from conceptlens.models.images import ImageLoadError, is_image_file, load_image  # noqa: E402

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _bundled(name: str) -> Path:
    path = TEST_FILES / name
    if not path.is_file():
        pytest.skip(f"{name} is not bundled with this pydicom")
    return path


def _gray(loaded) -> np.ndarray:
    rgb = np.asarray(loaded.image).astype(int)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0]


def _write_dataset(path: Path, pixels: np.ndarray, **attributes) -> Path:
    """Write a minimal uncompressed single-sample DICOM file holding ``pixels``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"   # Secondary Capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "OT"
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    if pixels.ndim == 3:
        dataset.NumberOfFrames = pixels.shape[0]
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = pixels.astype("<u2").tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------- bundled files


def test_ct_rescale_then_min_max_when_no_window():
    path = _bundled("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    hounsfield = dataset.pixel_array * float(dataset.RescaleSlope) + float(
        dataset.RescaleIntercept
    )
    loaded = load_image(path)
    assert loaded.meta["format"] == "DICOM"
    assert loaded.meta["rescale"] == {"slope": 1.0, "intercept": -1024.0}
    assert loaded.original_size == (dataset.Columns, dataset.Rows)
    expected = np.rint((hounsfield - hounsfield.min()) / np.ptp(hounsfield) * 255)
    np.testing.assert_array_equal(_gray(loaded), expected)


def test_caller_window_overrides_and_clips_in_hounsfield_units():
    path = _bundled("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    hounsfield = dataset.pixel_array.astype(float) - 1024.0
    loaded = read_dicom(path, window=(40, 400))
    gray = _gray(loaded)
    assert loaded.meta["window_center"] == 40 and loaded.meta["window_width"] == 400
    assert (gray[hounsfield <= 40 - 0.5 - 399 / 2] == 0).all()
    assert (gray[hounsfield > 40 - 0.5 + 399 / 2] == 255).all()


def test_mr_uses_the_dataset_window():
    path = _bundled("MR_small.dcm")
    dataset = pydicom.dcmread(path)
    center, width = float(dataset.WindowCenter), float(dataset.WindowWidth)
    loaded = load_image(path)
    expected = np.rint(apply_window(dataset.pixel_array, center, width) * 255)
    assert loaded.meta["voi"].startswith("window (dataset")
    np.testing.assert_array_equal(_gray(loaded), expected)


def test_monochrome1_is_inverted(tmp_path):
    path = _bundled("MR_small.dcm")
    dataset = pydicom.dcmread(path)
    dataset.PhotometricInterpretation = "MONOCHROME1"
    inverted_path = tmp_path / "mono1.dcm"
    dataset.save_as(inverted_path)
    normal = _gray(load_image(path))
    inverted = load_image(inverted_path)
    assert inverted.meta["inverted"] is True
    assert np.abs(_gray(inverted) - (255 - normal)).max() <= 1


def test_rgb_dicom_keeps_its_colours():
    path = _bundled("examples_rgb_color.dcm")
    dataset = pydicom.dcmread(path)
    loaded = load_image(path)
    assert loaded.meta["photometric"] == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded.image), dataset.pixel_array)


def test_sixteen_bit_rgb_dicom_is_scaled_to_eight_bits():
    eight = load_image(_bundled("SC_rgb_rle.dcm"))
    sixteen = load_image(_bundled("SC_rgb_rle_16bit.dcm"))
    assert np.abs(np.asarray(eight.image).astype(int) - np.asarray(sixteen.image)).max() <= 1


def test_multi_frame_requires_frame_and_picks_it():
    path = _bundled("SC_rgb_rle_2frame.dcm")
    with pytest.raises(ImageLoadError, match="has 2 frames; pass frame=") as info:
        load_image(path)
    assert str(path) in str(info.value)
    all_frames = pydicom.dcmread(path).pixel_array
    second = load_image(path, frame=1)
    assert second.meta["frame"] == 1 and second.meta["n_frames"] == 2
    np.testing.assert_array_equal(np.asarray(second.image), all_frames[1])
    with pytest.raises(ImageLoadError, match="out of range"):
        load_image(path, frame=2)


def test_file_without_pixel_data_is_not_an_image():
    path = _bundled("rtplan.dcm")
    with pytest.raises(ImageLoadError, match="no pixel data") as info:
        load_image(path)
    assert "rtplan.dcm" in str(info.value)


def test_truncated_pixel_data_names_the_file():
    path = _bundled("MR_truncated.dcm")
    with pytest.raises(ImageLoadError, match="cannot decode DICOM pixel data") as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_image(path)
    assert "MR_truncated.dcm" in str(info.value)


# ---------------------------------------------------------------- crafted files


def test_crafted_rescale_and_linear_exact_window(tmp_path):
    stored = np.array([[0, 50, 100, 150]], dtype=np.uint16)
    path = _write_dataset(
        tmp_path / "crafted.dcm", stored, RescaleSlope=2, RescaleIntercept=-100,
        WindowCenter=0, WindowWidth=200, VOILUTFunction="LINEAR_EXACT",
    )
    # modality values -100, 0, 100, 200 -> (x - 0) / 200 + 0.5 -> 0, 0.5, 1, 1
    np.testing.assert_array_equal(_gray(load_image(path))[0], [0, 128, 255, 255])


def test_dicom_recognised_by_magic_without_suffix(tmp_path):
    path = _write_dataset(tmp_path / "scan_without_suffix", np.full((2, 3), 7, np.uint16))
    assert is_image_file(path)
    loaded = load_image(path)
    assert loaded.meta["format"] == "DICOM" and loaded.original_size == (3, 2)
    assert load_image(path.read_bytes()).meta["format"] == "DICOM"


def test_crafted_multi_frame_picks_the_requested_frame(tmp_path):
    frames = np.stack([np.full((2, 2), value, np.uint16) for value in (0, 100, 200)])
    frames[:, 0, 0] = 0
    frames[:, 1, 1] = 200
    path = _write_dataset(tmp_path / "frames.dcm", frames)
    with pytest.raises(ImageLoadError, match="has 3 frames"):
        load_image(path)
    gray = _gray(load_image(path, frame=1))
    np.testing.assert_array_equal(gray, [[0, 128], [128, 255]])


def test_dicom_pixel_guard_runs_before_decoding(tmp_path):
    path = _write_dataset(tmp_path / "big.dcm", np.zeros((10, 20), np.uint16))
    with pytest.raises(ImageLoadError, match="too many pixels: 20 x 10"):
        load_image(path, max_pixels=199)


def test_corrupt_dicom_file_names_the_file(tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(ImageLoadError, match="not a valid DICOM file|corrupt DICOM") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_apply_window_functions_and_validation():
    values = np.array([-100.0, 0.0, 100.0])
    np.testing.assert_allclose(apply_window(values, 0, 200, "LINEAR_EXACT"), [0, 0.5, 1])
    sigmoid = apply_window(values, 0, 200, "SIGMOID")
    assert sigmoid[1] == pytest.approx(0.5) and sigmoid[0] < 0.5 < sigmoid[2]
    with pytest.raises(ValueError, match=">= 1"):
        apply_window(values, 0, 0.5, "LINEAR")
    with pytest.raises(ValueError, match="unsupported VOI LUT Function"):
        apply_window(values, 0, 10, "CUBIC")


def test_voi_lut_sequence_is_applied(tmp_path):
    lut_item = Dataset()
    lut_item.LUTDescriptor = [4, 0, 8]
    lut_item.LUTData = np.array([0, 85, 170, 255], "<u2").tobytes()
    path = _write_dataset(
        tmp_path / "voilut.dcm", np.array([[3, 2, 1, 0]], np.uint16), VOILUTSequence=[lut_item]
    )
    loaded = load_image(path)
    assert loaded.meta["voi"] == "VOI LUT sequence"
    np.testing.assert_array_equal(_gray(loaded)[0], [255, 170, 85, 0])
