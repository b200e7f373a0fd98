import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conceptlens.models.images import ImageLoadError
from conceptlens.vocab.scorer import ConceptScorer
from conceptlens.vocab.sources import SkippedFileError, count_images, iter_image_sources
from tests.helpers.fakes import make_image


def _ids(images, **kwargs):
    return [s.image_id for s in iter_image_sources(images, **kwargs)]


def test_folder_is_walked_recursively_in_sorted_order(image_folder):
    sub = image_folder / "sub"
    sub.mkdir()
    make_image(9).save(sub / "deep.jpg")
    (image_folder / "notes.txt").write_text("not an image")
    sources = list(iter_image_sources(image_folder))
    ids = [s.image_id for s in sources]
    # ids are paths relative to the folder; the text file is reported, not dropped
    assert ids == sorted(ids) and len(ids) == 7
    assert "sub/deep.jpg" in ids and "notes.txt" in ids
    with pytest.raises(SkippedFileError, match=r"notes\.txt'.*not an image file \(\.txt"):
        sources[ids.index("notes.txt")].load()


def test_loading_is_lazy_and_returns_rgb(image_folder):
    sources = list(iter_image_sources(image_folder))
    (image_folder / "img0.png").unlink()  # deleted after listing: only that load fails
    with pytest.raises(FileNotFoundError):
        sources[0].load()
    loaded = sources[1].load()
    assert loaded.image.mode == "RGB" and loaded.original_size == (20, 14)


def test_csv_manifest_resolves_relative_paths_and_ids(tmp_path, image_folder):
    manifest = image_folder / "manifest.csv"
    pd.DataFrame({"image_id": ["x", "y"], "path": ["img1.png", str(image_folder / "img2.png")]}).to_csv(
        manifest, index=False)
    sources = list(iter_image_sources(manifest))
    assert [s.image_id for s in sources] == ["x", "y"]
    assert np.array_equal(np.asarray(sources[0].load().image), np.asarray(Image.open(image_folder / "img1.png")))


def test_csv_manifest_column_choice_and_errors(tmp_path, image_folder):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"file_name": [str(image_folder / "img0.png")]}).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match="no path column"):
        _ids(manifest)
    assert _ids(manifest, path_column="file_name") == [str(image_folder / "img0.png")]
    with pytest.raises(ValueError, match="no id column 'key'"):
        _ids(manifest, path_column="file_name", id_column="key")


def test_manifest_with_missing_file_is_reported_by_the_scorer(backbone, vocabulary, image_folder):
    manifest = image_folder / "m.csv"
    pd.DataFrame({"path": ["img0.png", "gone.png", "img1.png"]}).to_csv(manifest, index=False)
    scores = ConceptScorer(backbone, vocabulary, progress=False).score(manifest)
    assert scores.image_ids == ["img0.png", "img1.png"]
    assert scores.errors["image"].tolist() == ["gone.png"]


def test_in_memory_images_mappings_and_batches():
    image = make_image(0)
    assert _ids(image) == ["image_0"]
    assert _ids([image, np.zeros((5, 5, 3), np.uint8)]) == ["image_0", "image_1"]
    assert _ids({"left": image, "right": image}) == ["left", "right"]
    assert _ids(np.zeros((3, 8, 8, 3), np.uint8)) == ["image_0", "image_1", "image_2"]
    assert _ids(torch.zeros(2, 3, 8, 8)) == ["image_0", "image_1"]
    assert count_images(torch.zeros(2, 3, 8, 8)) == 2 and count_images(image) == 1


def test_dataset_items_may_be_tuples_or_dicts():
    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return make_image(i), i  # (image, label)

    sources = list(iter_image_sources(Pairs()))
    assert [s.image_id for s in sources] == ["image_0", "image_1"]
    assert sources[1].load().image.tobytes() == make_image(1).tobytes()
    dict_items = [{"id": "case-7", "image": make_image(3)}]
    assert _ids(dict_items) == ["case-7"]
    assert next(iter_image_sources(dict_items)).load().original_size == (20, 14)


def test_duplicate_ids_are_made_unique(image_folder):
    path = str(image_folder / "img0.png")
    assert _ids([path, path, path]) == [path, f"{path}#2", f"{path}#3"]


def test_bad_collections_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _ids(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        _ids(empty)
    with pytest.raises(TypeError, match="got int"):
        _ids(7)
    with pytest.raises(ImageLoadError, match="unsupported source type"):
        next(iter_image_sources([7])).load()


def test_loaded_images_are_used_as_they_are(tmp_path):
    from PIL import Image

    from conceptlens.models.images import load_image
    from conceptlens.vocab.sources import count_images, iter_image_sources

    path = tmp_path / "a.png"
    Image.new("RGB", (8, 6), "red").save(path)
    from_file, in_memory = load_image(path), load_image(Image.new("RGB", (4, 4)))
    sources = list(iter_image_sources([from_file, in_memory]))
    assert [s.image_id for s in sources] == [str(path), "image_1"]
    assert sources[0].load() is from_file and sources[1].load() is in_memory
    assert [s.image_id for s in iter_image_sources({"x": in_memory})] == ["x"]
    assert next(iter_image_sources(from_file)).load() is from_file
    assert count_images(from_file) == 1
