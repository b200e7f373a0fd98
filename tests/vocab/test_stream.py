"""The streaming pipeline: DataLoader workers, one open and decode per file, order, pixels."""

import builtins
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from conceptlens.models import ConceptCLIPBackbone, create_reference_model
from conceptlens.models.images import normalize_pixels, resize_to_uint8
from conceptlens.vocab.batching import iter_feature_batches
from conceptlens.vocab.scorer import ConceptScorer
from conceptlens.vocab.scores import ConceptScores
from conceptlens.vocab.stream import pixel_recipe, resolve_workers
from tests.helpers.fakes import FakeBackbone, make_image


@pytest.fixture(scope="module")
def tiny():
    model, processor = create_reference_model("tiny", seed=3)
    return ConceptCLIPBackbone(model, processor, model_id="tiny-stream")


@pytest.fixture
def many(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        make_image(i, size=(20 + i % 7, 14 + i % 5)).save(folder / f"{i:03d}.png")
    return folder


def test_split_preprocessing_equals_the_backbones_own(tiny):
    recipe = pixel_recipe(tiny)
    assert recipe is not None and recipe.size == tuple(tiny.image_size)
    images = [make_image(i, size=(31 + 17 * i, 45 + 9 * i)) for i in range(4)]
    mine = recipe.normalize(torch.from_numpy(np.stack([recipe.resize(im) for im in images])))
    torch.testing.assert_close(mine, tiny.preprocess(images), rtol=0, atol=1e-6)
    assert pixel_recipe(FakeBackbone()) is None  # no recorded mean/std: its own preprocess


def test_resize_and_normalize_helpers():
    image = Image.fromarray(np.full((5, 7, 3), 255, np.uint8))
    array = resize_to_uint8(image, (3, 4))
    assert array.shape == (3, 3, 4) and array.dtype == np.uint8
    out = normalize_pixels(torch.from_numpy(array[None]), rescale=1 / 255, mean=[0.5] * 3, std=[0.5] * 3)
    torch.testing.assert_close(out, torch.ones(1, 3, 3, 4))
    with pytest.raises(ValueError, match="resample"):
        resize_to_uint8(image, (3, 4), "cubic")


def test_workers_give_the_same_scores_in_the_same_order(many, vocabulary):
    backbone = FakeBackbone()
    serial = ConceptScorer(backbone, vocabulary, batch_size=4, num_workers=0, progress=False).score(many)
    (many / "bad.png").write_bytes(b"not an image")
    parallel = ConceptScorer(backbone, vocabulary, batch_size=4, num_workers=2, progress=False).score(many)
    assert parallel.image_ids == serial.image_ids
    np.testing.assert_allclose(parallel.to_numpy(), serial.to_numpy(), rtol=0, atol=1e-7)
    assert parallel.errors["image"].tolist() == ["bad.png"]


def test_each_file_is_opened_and_decoded_once(monkeypatch, many, tiny, vocabulary, tmp_path):
    opened: dict[str, int] = {}
    real = builtins.open

    def counting(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and str(file).startswith(str(many)):
            opened[str(file)] = opened.get(str(file), 0) + 1
        return real(file, *args, **kwargs)

    decoded = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self):
        name = str(getattr(getattr(self, "fp", None), "name", ""))
        if name.startswith(str(many)):
            decoded.append(name)
        return real_load(self)

    monkeypatch.setattr(builtins, "open", counting)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    ConceptScorer(tiny, vocabulary, cache_dir=tmp_path / "store", num_workers=0,
                  progress=False, reference=None).score(many)
    assert len(opened) == 40 and set(opened.values()) == {1}
    assert len(decoded) == 40 and len(set(decoded)) == 40


def test_features_come_in_input_order_with_workers(many):
    backbone = FakeBackbone()
    batches = list(iter_feature_batches(backbone, many, batch_size=3, num_workers=2, progress=False))
    ids = [i for b in batches for i in b.image_ids]
    assert ids == sorted(ids) and len(ids) == 40 and [len(b.image_ids) for b in batches][:2] == [3, 3]


def test_score_to_file_writes_row_groups_that_load_as_scores(tmp_path, many, vocabulary):
    import pyarrow.parquet as pq

    scorer = ConceptScorer(FakeBackbone(), vocabulary, batch_size=8, progress=False)
    written = scorer.score_to_file(many, tmp_path / "scores.parquet")
    assert written.n_images == 40 and pq.ParquetFile(written.path).num_row_groups == 5
    loaded = ConceptScores.load(written.path)
    expected = scorer.score(many)
    assert loaded.image_ids == expected.image_ids and loaded.vocabulary_hash == vocabulary.hash
    np.testing.assert_allclose(loaded.to_numpy(), expected.to_numpy())
    assert not list(tmp_path.glob(".scores.parquet.tmp-*"))


def test_auto_workers():
    assert resolve_workers("auto", 10, 32) == 0
    assert resolve_workers(3, 10, 32) == 3
    with pytest.raises(ValueError, match="num_workers"):
        resolve_workers(-1, None, 32)


def test_statistics_equal_the_input_checks_bit_for_bit():
    from conceptlens.demo.generator import generate
    from conceptlens.vocab.input_checks import image_statistics
    from conceptlens.vocab.stream import statistics_row

    rng = np.random.default_rng(5)
    images = [Image.fromarray(x) for x in generate(n=6, seed=1, size=300, masks=False).images]
    images += [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
               for h, w in ((1, 1), (2, 3), (50, 70), (257, 256), (301, 999))]
    images += [Image.fromarray(np.full((30, 30, 3), 7, np.uint8)),
               make_image(3).convert("L"), make_image(4).convert("RGBA")]
    for image in images:
        stats = image_statistics(image)
        row = statistics_row(image)
        assert row.tolist() == [*image.size, stats["mean"], stats["std"], stats["chroma_mean"],
                                stats["chroma_p99"]]


def test_cpu_batches_reuse_a_released_buffer_and_never_one_in_use(tiny):
    from conceptlens.models.images import _normalize_arithmetic
    from conceptlens.vocab.stream import ImageStream

    stream = ImageStream([], tiny, block=4, cache=None, need_patches=False, need_stats=False)
    recipe = stream.recipe
    size = recipe.size
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.integers(0, 256, (n, 3, *size), dtype=np.uint8)) for n in (4, 4, 3, 4)]

    def expected(batch):
        return _normalize_arithmetic(batch, recipe.rescale, recipe.mean, recipe.std)

    first = stream.normalize(batches[0])
    kept = first[1:]  # a view keeps the memory in use
    address = first.data_ptr()
    del first
    second = stream.normalize(batches[1])
    assert second.data_ptr() != address and torch.equal(kept, expected(batches[0])[1:])
    assert torch.equal(second, expected(batches[1]))
    address = second.data_ptr()
    del kept, second
    third = stream.normalize(batches[2])  # a smaller batch: the front of the released buffer
    assert third.data_ptr() == address and torch.equal(third, expected(batches[2]))
    del third
    fourth = stream.normalize(batches[3])
    assert fourth.data_ptr() == address and torch.equal(fourth, expected(batches[3]))


def test_threads_sharing_a_backbone_never_share_a_batch(tiny):
    import threading

    from conceptlens.models.images import _normalize_arithmetic
    from conceptlens.vocab.stream import ImageStream

    stream = ImageStream([], tiny, block=2, cache=None, need_patches=False, need_stats=False)
    recipe = stream.recipe
    failures: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(30):
            batch = torch.from_numpy(rng.integers(0, 256, (2, 3, *recipe.size), dtype=np.uint8))
            out = stream.normalize(batch)
            held = out.clone() if seed % 2 else out  # half the threads keep their batch a while
            if not torch.equal(held, _normalize_arithmetic(batch, recipe.rescale, recipe.mean,
                                                           recipe.std)):
                failures.append(f"thread {seed}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
