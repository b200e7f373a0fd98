"""Tests for conceptlens.models.images: formats, conversions, errors and map resizing."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conceptlens.models.images import (
    ImageLoadError,
    ImageNotFoundError,
    LoadedImage,
    grid_coverage,
    is_image_file,
    load_image,
    resize_map_to_original,
    to_uint8,
)


def _pixel(loaded: LoadedImage, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in loaded.image.getpixel((x, y)))


# ---------------------------------------------------------------- 8-bit formats and modes


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".webp"])
def test_rgb_file_round_trips_exactly_for_lossless_formats(tmp_path, suffix):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)
    path = tmp_path / f"img{suffix}"
    save_args = {"lossless": True} if suffix == ".webp" else {}
    Image.fromarray(pixels).save(path, **save_args)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB"
    assert loaded.original_size == (11, 7)
    assert loaded.source == str(path)
    np.testing.assert_array_equal(np.asarray(loaded.image), pixels)


def test_grayscale_png_is_replicated_to_three_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    loaded = load_image(str(path))
    rgb = np.asarray(loaded.image)
    assert loaded.meta["mode"] == "L"
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], gray)


def test_palette_png_maps_indices_to_palette_colours(tmp_path):
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putpixel((3, 1), 1)
    path = tmp_path / "palette.png"
    image.save(path)
    loaded = load_image(path)
    assert _pixel(loaded, 0, 0) == (255, 0, 0)
    assert _pixel(loaded, 3, 1) == (0, 0, 255)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 255)       # opaque black stays black
    rgba[0, 1] = (0, 0, 0, 0)         # transparent becomes white
    rgba[0, 2] = (0, 0, 0, 128)       # half transparent black -> mid grey
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    loaded = load_image(path)
    assert _pixel(loaded, 0, 0) == (0, 0, 0)
    assert _pixel(loaded, 1, 0) == (255, 255, 255)
    assert _pixel(loaded, 2, 0) == (127, 127, 127)
    assert loaded.meta["alpha"] == "composited on white"


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))   # pure red in CMYK
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=100)
    loaded = load_image(path)
    assert loaded.meta["mode"] == "CMYK"
    red, green, blue = np.asarray(loaded.image)[8, 8].astype(int)
    assert red > 240 and green < 15 and blue < 15


def test_exif_orientation_rotates_image_and_planted_pixel(tmp_path):
    # 40 wide x 20 high with a white block in the top-left corner; orientation 6 means
    # "rotate 90 degrees clockwise to display", so the block ends up top-right.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:6, :6] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.original_size == (20, 40)
    assert loaded.meta["exif_transposed"] is True
    rgb = np.asarray(loaded.image).astype(int)
    assert rgb[2, 17].min() > 200          # top-right corner is white
    assert rgb[2, 2].max() < 50            # top-left corner is black now


# ---------------------------------------------------------------- high bit depth


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_grayscale_scales_by_type_range(tmp_path, suffix):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    assert loaded.meta["bit_depth"] == 16
    np.testing.assert_array_equal(np.asarray(loaded.image)[0, :, 0], [0, 1, 128, 255])


def test_float_tiff_outside_unit_range_is_min_max_scaled(tmp_path):
    values = np.array([[-2.0, 0.0, 2.0]], dtype=np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    loaded = load_image(path)
    assert loaded.meta["mode"] == "F"
    np.testing.assert_array_equal(np.asarray(loaded.image)[0, :, 0], [0, 128, 255])
    assert "min-max" in loaded.meta["intensity_scaling"]


def test_mode_i_image_with_sixteen_bit_values_is_scaled_like_uint16():
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    loaded = load_image(image)
    assert loaded.source == "<PIL.Image>"
    np.testing.assert_array_equal(np.asarray(loaded.image)[0, :, 0], [0, 255])


# ---------------------------------------------------------------- arrays, tensors, bytes


def test_float_array_in_unit_range_is_multiplied_by_255():
    array = np.array([[0.0, 0.5, 1.0]], dtype=np.float64)
    loaded = load_image(array)
    assert loaded.source == "<numpy.ndarray>"
    np.testing.assert_array_equal(np.asarray(loaded.image)[0, :, 1], [0, 128, 255])


def test_to_uint8_handles_nan_and_constant_arrays():
    out, _ = to_uint8(np.array([np.nan, 0.25, 1.0]))
    np.testing.assert_array_equal(out, [0, 64, 255])
    out, description = to_uint8(np.full((2, 2), 7.0))
    np.testing.assert_array_equal(out, 0)
    assert "constant" in description


def test_tensor_channels_first_and_last_give_the_same_image():
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    from_chw = load_image(torch.from_numpy(hwc).permute(2, 0, 1).contiguous())
    from_hwc = load_image(torch.from_numpy(hwc))
    assert from_chw.original_size == (6, 5)
    np.testing.assert_array_equal(np.asarray(from_chw.image), hwc)
    np.testing.assert_array_equal(np.asarray(from_hwc.image), hwc)


def test_bfloat16_tensor_loads():
    tensor = torch.tensor([[[0.0, 1.0]]], dtype=torch.bfloat16)   # (1, 1, 2) channels-first
    loaded = load_image(tensor)
    np.testing.assert_array_equal(np.asarray(loaded.image)[0, :, 0], [0, 255])


def test_bytes_and_file_object_sources(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 20, 30)).save(buffer, format="PNG")
    from_bytes = load_image(buffer.getvalue())
    buffer.seek(0)
    from_stream = load_image(buffer)
    assert from_bytes.source == "<bytes>"
    assert _pixel(from_bytes, 2, 1) == (10, 20, 30)
    assert _pixel(from_stream, 0, 0) == (10, 20, 30)


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros((3, 8, 9), dtype=np.uint8), "channels-first"),
        (np.zeros((1, 8, 9, 3), dtype=np.uint8), "batch dimension"),
        (np.zeros((8, 9, 5), dtype=np.uint8), "not an image"),
        (np.zeros((2, 2), dtype=np.complex64), "dtype"),
    ],
)
def test_bad_arrays_raise_clear_errors(array, fragment):
    with pytest.raises(ImageLoadError, match=fragment) as info:
        load_image(array)
    assert "<numpy.ndarray>" in str(info.value)


def test_unsupported_source_type_is_rejected():
    with pytest.raises(ImageLoadError, match="unsupported source type"):
        load_image(12345)


# ---------------------------------------------------------------- errors and guards


def test_missing_file_is_a_file_not_found_error(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="not found") as info:
        load_image(missing)
    assert isinstance(info.value, ImageNotFoundError)
    assert isinstance(info.value, ImageLoadError)
    assert str(missing) in str(info.value)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageLoadError, match="not a recognised image format") as info:
        load_image(path)
    assert info.value.source == str(path)


def test_truncated_png_is_reported_as_corrupt(tmp_path):
    buffer = io.BytesIO()
    noise = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated|corrupt") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_decompression_bomb_guard_stops_large_images_before_decoding(tmp_path):
    path = tmp_path / "large.png"
    Image.new("L", (100, 50)).save(path)
    with pytest.raises(ImageLoadError, match="too many pixels: 100 x 50 = 5,000") as info:
        load_image(path, max_pixels=4_999)
    assert str(path) in str(info.value)
    assert load_image(path, max_pixels=5_000).original_size == (100, 50)
    assert load_image(path, max_pixels=None).original_size == (100, 50)
    with pytest.raises(ImageLoadError, match="too many pixels"):
        load_image(np.zeros((50, 100), dtype=np.uint8), max_pixels=10)


def test_pillow_decompression_bomb_error_is_wrapped(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)   # Pillow refuses above 200 pixels
    with pytest.raises(ImageLoadError, match="Pillow's global guard"):
        load_image(path, max_pixels=None)


def test_multi_page_tiff_needs_a_frame(tmp_path):
    path = tmp_path / "pages.tif"
    pages = [Image.new("L", (4, 4), value) for value in (10, 200, 90)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    with pytest.raises(ImageLoadError, match="has 3 frames; pass frame="):
        load_image(path)
    assert _pixel(load_image(path, frame=1), 0, 0) == (200, 200, 200)
    with pytest.raises(ImageLoadError, match="out of range"):
        load_image(path, frame=3)


def test_error_pickles_with_its_parts():
    error = pickle.loads(pickle.dumps(ImageLoadError("a.png", "broken")))
    assert (error.source, error.reason) == ("a.png", "broken")


def test_is_image_file_by_suffix_and_dicom_magic(tmp_path):
    (tmp_path / "a.JPG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x" * 200)
    (tmp_path / "scan").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    (tmp_path / "folder.png").mkdir()
    assert is_image_file(tmp_path / "a.JPG")
    assert is_image_file(tmp_path / "scan")
    assert not is_image_file(tmp_path / "notes.txt")
    assert not is_image_file(tmp_path / "folder.png")
    assert not is_image_file(tmp_path / "missing.png")


# ---------------------------------------------------------------- maps back onto the original


def test_grid_coverage_for_conceptclip():
    assert grid_coverage(384, 14) == (27 * 14 / 384, 27 * 14 / 384)
    assert grid_coverage((224, 230), 16) == (1.0, 224 / 230)
    with pytest.raises(ValueError, match="patch_size"):
        grid_coverage(10, 14)


def test_planted_peak_lands_in_the_right_place_of_a_non_square_image():
    width, height = 600, 240
    fraction = grid_coverage(384, 14)
    grid = np.zeros((27, 27), dtype=np.float32)
    row, col = 5, 20
    grid[row, col] = 1.0
    full = resize_map_to_original(grid, (width, height), covered_fraction=fraction)
    assert full.shape == (height, width)
    assert full.dtype == np.float32
    peak_y, peak_x = np.unravel_index(np.argmax(full), full.shape)
    expected_y = (row + 0.5) * fraction[0] * height / 27 - 0.5
    expected_x = (col + 0.5) * fraction[1] * width / 27 - 0.5
    assert abs(peak_y - expected_y) <= 0.5
    assert abs(peak_x - expected_x) <= 0.5
    assert full.max() == pytest.approx(1.0, abs=0.05)


def test_uncovered_border_takes_the_nearest_covered_value():
    grid = np.arange(9, dtype=np.float64).reshape(3, 3)
    full = resize_map_to_original(grid, (100, 50), covered_fraction=(0.5, 0.5))
    # Rows 25..49 and columns 50..99 are outside the covered part of the input.
    np.testing.assert_allclose(full[30:, 0], grid[2, 0])
    np.testing.assert_allclose(full[0, 60:], grid[0, 2])
    np.testing.assert_allclose(full[49, 99], grid[2, 2])
    # Between cell centres the map is interpolated, so values are monotone along a row.
    assert np.all(np.diff(full[10, :50]) >= 0)


def test_resize_map_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2-D"):
        resize_map_to_original(np.zeros((2, 2, 2)), (4, 4))
    with pytest.raises(ValueError, match="covered_fraction"):
        resize_map_to_original(np.zeros((2, 2)), (4, 4), covered_fraction=(0.0, 1.0))
    with pytest.raises(ValueError, match="original_size"):
        resize_map_to_original(np.zeros((2, 2)), (0, 4))


# ---------------------------------------------------------------- module structure


def test_images_and_dicom_import_without_a_cycle():
    """``pixels`` is the low module both loaders build on: neither imports the other lazily,
    and the shared names stay importable from ``images``."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import conceptlens.models.dicom as dicom
    import conceptlens.models.images as images
    import conceptlens.models.pixels as pixels

    def imported(module):
        return {node.module or "" for node in ast.walk(ast.parse(Path(module.__file__).read_text()))
                if isinstance(node, ast.ImportFrom)}

    assert "conceptlens.models.images" not in imported(dicom)
    assert not [m for m in imported(pixels) if m.startswith("conceptlens.models")]
    for module in (images, dicom):
        tree = ast.parse(Path(module.__file__).read_text())
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            local = [n.module for n in ast.walk(function) if isinstance(n, ast.ImportFrom)]
            assert not [m for m in local if m and m.startswith("conceptlens.models")], (module, function.name)
    for name in ("ImageLoadError", "ImageNotFoundError", "LoadedImage", "DEFAULT_MAX_PIXELS", "to_uint8"):
        assert getattr(images, name) is getattr(pixels, name)
    for first in ("conceptlens.models.dicom", "conceptlens.models.images"):
        subprocess.run([sys.executable, "-c", f"import {first}"], check=True)


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (3, 3, 64, 64), (1, 3, 1, 1)])
def test_cpu_normalisation_image_by_image_equals_the_whole_batch_arithmetic_bit_for_bit(shape):
    from conceptlens.models.images import _normalize_arithmetic, normalize_pixels

    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    settings = ((1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                (0.00392156862745098, (0.48145466, 0.4578275, 0.40821073),
                 (0.26862954, 0.26130258, 0.27577711)))
    for rescale, mean, std in settings:
        for batch in (pixels, pixels.transpose(2, 3)):
            expected = _normalize_arithmetic(batch, rescale, mean, std)
            assert torch.equal(normalize_pixels(batch, rescale=rescale, mean=mean, std=std), expected)
            out = torch.full(tuple(batch.shape), float("nan"))
            assert normalize_pixels(batch, rescale=rescale, mean=mean, std=std, out=out) is out
            assert torch.equal(out, expected)


def test_loaded_files_are_not_copied_but_a_callers_image_is(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    loaded = load_image(tmp_path / "x.png").image
    assert type(loaded) is Image.Image and np.array_equal(np.asarray(loaded), array)
    mine = Image.fromarray(array)
    copied = load_image(mine).image
    copied.paste((0, 0, 0), (0, 0, 5, 5))
    assert np.array_equal(np.asarray(mine), array) and not np.array_equal(np.asarray(copied), array)
