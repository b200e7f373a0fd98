"""The pixels the input-check statistics are computed on (a box-reduced copy)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conceptlens.vocab.input_checks import check_image, image_statistics, statistics_pixels


@pytest.mark.parametrize(("size", "side"), [((384, 384), 192), ((999, 301), 250), ((256, 40), 256),
                                            ((30, 20), 30)])
def test_statistics_pixels_are_a_box_reduced_copy_of_at_most_256_px(size, side):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    pixels = statistics_pixels(image)
    factor = -(-max(size) // 256)
    assert pixels.dtype == np.uint8 and pixels.shape == (-(-size[0] // factor) * -(-size[1] // factor), 3)
    assert max(-(-size[0] // factor), -(-size[1] // factor)) == side
    # box means keep the image mean up to rounding
    assert abs(pixels.mean() - np.asarray(image).mean()) < 0.6


def test_noisy_grayscale_jpeg_is_still_grayscale_and_means_are_kept():
    rng = np.random.default_rng(1)
    gray = np.clip(rng.normal(120, 30, (512, 512)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)).save(buffer, format="JPEG", quality=80)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    kinds = [kind for kind, _ in check_image(image, (384, 384))]
    assert "grayscale" in kinds
    stats = image_statistics(image)
    assert abs(stats["mean"] - np.asarray(image.convert("L"), dtype=np.float64).mean()) < 1.0
