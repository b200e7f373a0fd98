"""Hostile image files and folders: a bad file fails alone with a named reason; a folder
reports every entry it skips and scores every good image."""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
from PIL import Image

from conceptlens.models.images import ImageLoadError, ImageNotFoundError, load_image
from conceptlens.vocab.scorer import ConceptScorer
from conceptlens.vocab.sources import SkippedFileError, iter_image_sources
from tests.hostile.conftest import needs_non_root, one_line


def _png_bytes(size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _random(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


BAD_FILES = [
    ("zero.png", b"", "empty file (0 bytes)"),
    ("zero.dcm", b"", "empty file (0 bytes)"),
    ("random.png", _random(3000), "not a recognised image format"),
    ("truncated.png", _png_bytes((300, 300))[:200], "corrupt or truncated image data"),
    ("text.jpg", b"hello, I am not a JPEG\n" * 10, "not a recognised image format"),
    ("random.dcm", _random(3000, 1), "not a valid DICOM file (no 'DICM' marker"),
    ("garbage_with_marker.dcm", bytes(128) + b"DICM" + _random(2000, 2),
     "corrupt or not a DICOM file"),
]


@pytest.mark.parametrize(("name", "content", "reason"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_image_file_fails_alone_with_a_named_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = one_line(str(info.value))
    assert str(path) in message and reason in message


def test_empty_bytes_are_called_empty():
    with pytest.raises(ImageLoadError, match="empty data"):
        load_image(b"")


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "x.png").mkdir()
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path / "x.png")


def test_broken_symlink_is_named_as_such(tmp_path):
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageNotFoundError, match="broken symbolic link"):
        load_image(tmp_path / "link.png")


@needs_non_root
def test_unreadable_image_says_permission_denied(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(_png_bytes())
    path.chmod(0)
    with pytest.raises(ImageLoadError, match="permission denied"):
        load_image(path)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    path = tmp_path / "big.png"
    Image.new("1", (4000, 4000)).save(path)
    with pytest.raises(ImageLoadError, match="too many pixels"):
        load_image(path, max_pixels=1000)


def _tiff(path, n_frames: int) -> None:
    frames = [Image.new("L", (16, 12), 40 * i) for i in range(n_frames)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def test_multi_frame_tiff_needs_a_frame_and_default_frame_picks_it(tmp_path):
    _tiff(tmp_path / "stack.tif", 3)
    with pytest.raises(ImageLoadError, match=r"has 3 frames; pass frame= .*--frame"):
        load_image(tmp_path / "stack.tif")
    assert load_image(tmp_path / "stack.tif", default_frame=2).meta["frame"] == 2
    with pytest.raises(ImageLoadError, match="frame=5 is out of range"):
        load_image(tmp_path / "stack.tif", default_frame=5)
    Image.new("RGB", (8, 8)).save(tmp_path / "single.png")
    assert load_image(tmp_path / "single.png", default_frame=2).meta["frame"] == 0


@pytest.fixture
def messy_folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (12, 10), (10, 200, 10)).save(root / "a.png")
    Image.new("RGB", (12, 10), (10, 10, 200)).save(root / "sub" / "b.jpg")
    Image.new("P", (12, 10)).save(root / "anim.gif")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\x00")
    (root / "empty.png").write_bytes(b"")
    (root / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "self.png").symlink_to(root / "self.png")
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)
    return root


def test_folder_reports_each_skip_with_its_reason(messy_folder):
    sources = {s.image_id: s for s in iter_image_sources(messy_folder)}
    assert ".DS_Store" not in sources  # hidden entries are ignored by rule
    reasons = {}
    for image_id, source in sources.items():
        try:
            source.load()
        except (SkippedFileError, ImageLoadError) as error:
            reasons[image_id] = str(error)
    assert set(sources) - set(reasons) == {"a.png", "anim.gif", "sub/b.jpg"}
    assert "not an image file (.txt" in reasons["notes.txt"]
    assert "broken symbolic link" in reasons["dangling.png"]
    assert "symbolic link loop" in reasons["self.png"]
    assert "symbolic link loop" in reasons["sub/up"]
    assert "empty file (0 bytes)" in reasons["empty.png"]


def test_scoring_a_messy_folder_keeps_every_good_image(messy_folder, backbone, vocabulary):
    scores = ConceptScorer(backbone, vocabulary, progress=False).score(messy_folder)
    assert scores.image_ids == ["a.png", "anim.gif", "sub/b.jpg"]
    assert sorted(scores.errors["image"]) == ["dangling.png", "empty.png", "notes.txt",
                                              "self.png", "sub/up"]
    assert np.isfinite(scores.to_numpy()).all()


def test_frame_reaches_images_in_a_folder(tmp_path, backbone, vocabulary):
    _tiff(tmp_path / "stack.tif", 3)
    Image.new("RGB", (12, 10)).save(tmp_path / "flat.png")
    scorer = ConceptScorer(backbone, vocabulary, progress=False)
    without = scorer.score(tmp_path)
    assert without.image_ids == ["flat.png"] and "has 3 frames" in without.errors["reason"][0]
    sources = list(iter_image_sources(tmp_path, frame=1))
    assert scorer.score(sources).image_ids == ["flat.png", "stack.tif"]


def test_folder_of_only_non_images_is_an_error_counting_the_skips(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no image files found in folder .* \(1 other file"):
        list(iter_image_sources(tmp_path))


def test_negative_frame_is_refused(tmp_path):
    with pytest.raises(ValueError, match="frame must be a non-negative int"):
        list(iter_image_sources(tmp_path, frame=-1))


def test_symlinked_folder_is_followed_once(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    Image.new("RGB", (8, 8)).save(real / "x.png")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(real, root / "linked", target_is_directory=True)
    assert [s.image_id for s in iter_image_sources(root)] == ["linked/x.png"]
