import builtins
import json
import os
import struct

import numpy as np
import pytest
import torch

from conceptlens.models.base import BackboneIdentity
from conceptlens.vocab.cache import FeatureCache, _checksum, image_content_hash, patch_mean_of
from conceptlens.vocab.scorer import ConceptScorer
from tests.helpers.fakes import FakeBackbone, make_image

IDENTITY = BackboneIdentity("model-a", "fake", dtype="float32", preprocessing='{"size": 18}')


def _key(cache, n=0, identity=IDENTITY):
    return cache.key(image_content_hash(make_image(n)), identity)


def _footer(path):
    data = path.read_bytes()
    length, magic = struct.unpack("<Q8s", data[-16:])
    assert magic == b"CLSHARD2"
    return json.loads(data[-16 - length:-16])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_features_round_trip_bit_exactly(tmp_path, dtype):
    cache = FeatureCache(tmp_path)
    g, p = torch.randn(6, dtype=dtype), torch.randn(4, 6, dtype=dtype)
    key = _key(cache)
    cache.put(key, g, p, (2, 2))
    cache.flush()
    hit = FeatureCache(tmp_path).get(key)
    assert hit.global_embed.dtype == dtype and hit.patch_embeds.dtype == dtype and hit.grid_size == (2, 2)
    assert torch.equal(hit.global_embed, g) and torch.equal(hit.patch_embeds, p)


def test_float32_patches_are_half_precision_within_the_bound_and_exact_on_request(tmp_path):
    g, p = torch.randn(16), torch.randn(9, 16) * 1e4  # beyond float16's range before normalising
    half, exact = FeatureCache(tmp_path / "half"), FeatureCache(tmp_path / "exact", precision="exact")
    key = _key(half)
    for cache in (half, exact):
        cache.put(key, g, p, (3, 3))
        cache.flush()
    read_half = FeatureCache(tmp_path / "half").get(key)
    read_exact = FeatureCache(tmp_path / "exact").get(key)
    assert torch.equal(read_half.global_embed, g) and torch.equal(read_exact.patch_embeds, p)
    relative = (read_half.patch_embeds - p).norm(dim=-1) / p.norm(dim=-1)
    assert torch.isfinite(read_half.patch_embeds).all() and float(relative.max()) < 2 ** -10
    torch.testing.assert_close(read_half.patch_mean, patch_mean_of(p))
    half_bytes = half.size_bytes
    assert half_bytes < exact.size_bytes


def test_a_shard_is_one_file_of_raw_arrays_and_json_without_pickle(tmp_path):
    cache = FeatureCache(tmp_path, shard_rows=2)
    for n in range(5):
        cache.put(_key(cache, n), torch.full((3,), float(n)), torch.ones(1, 3), (1, 1))
    assert cache.shards_committed == 2 and len(cache) == 5  # 2 + 2 committed, 1 open
    cache.flush()
    shards = cache.shard_files()
    assert len(shards) == 3
    footers = [_footer(shard) for shard in shards]
    assert sorted(f["rows"] for f in footers) == [1, 2, 2]
    assert set(footers[0]["arrays"]) == {"global", "mean", "stats", "patch", "norm"}
    assert not list(tmp_path.rglob(".tmp-*"))


def test_thousands_of_images_take_one_file_per_thousand_plus_a_constant(tmp_path):
    cache = FeatureCache(tmp_path)
    for n in range(2100):
        cache.put(format(n, "064x"), torch.randn(4), torch.randn(1, 4), (1, 1))
    cache.flush()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(cache.shard_files()) == 3 and len(files) <= 3 + 3  # shards + index (and its WAL)
    assert len(FeatureCache(tmp_path)) == 2100


def test_key_depends_on_pixels_and_backbone_identity(tmp_path):
    cache = FeatureCache(tmp_path)
    other_dtype = BackboneIdentity("model-a", "fake", dtype="bfloat16", preprocessing='{"size": 18}')
    other_pre = BackboneIdentity("model-a", "fake", dtype="float32", preprocessing='{"size": 20}')
    keys = {_key(cache, 0), _key(cache, 1), _key(cache, 0, other_dtype), _key(cache, 0, other_pre)}
    assert len(keys) == 4
    assert image_content_hash(make_image(0)) == image_content_hash(make_image(0).copy())


def test_truncated_shard_is_detected_deleted_and_missed(tmp_path):
    cache = FeatureCache(tmp_path)
    key = _key(cache)
    cache.put(key, torch.ones(3), torch.zeros(1, 3), (1, 1))
    cache.flush()
    path = cache.shard_files()[0]
    path.write_bytes(path.read_bytes()[:40])
    again = FeatureCache(tmp_path)
    assert again.get(key) is None
    assert again.corrupt == 1 and not path.exists() and key not in again


def test_tampered_values_fail_the_checksum(tmp_path):
    cache = FeatureCache(tmp_path, precision="exact")
    key = _key(cache)
    cache.put(key, torch.ones(3), torch.zeros(1, 3), (1, 1))
    cache.flush()
    path = cache.shard_files()[0]
    data = bytearray(path.read_bytes())
    offset = _footer(path)["arrays"]["global"]["offset"]
    data[offset:offset + 4] = np.float32(2.0).tobytes()
    path.write_bytes(bytes(data))
    assert FeatureCache(tmp_path).get(key) is None


def test_tampered_patch_block_fails_its_checksum_when_patches_are_read(tmp_path):
    cache = FeatureCache(tmp_path)
    key = _key(cache)
    cache.put(key, torch.ones(3), torch.ones(1, 3), (1, 1))
    cache.flush()
    path = cache.shard_files()[0]
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    store = FeatureCache(tmp_path)
    assert store.get(key, need_patches=False) is not None  # globals and means verify apart
    assert store.get(key) is None and store.corrupt == 1


def test_corrupt_shard_is_recomputed_by_the_scorer(tmp_path, vocabulary):
    backbone = FakeBackbone()
    images = [make_image(0), make_image(1)]
    scorer = ConceptScorer(backbone, vocabulary, cache_dir=tmp_path, progress=False)
    first = scorer.score(images)
    scorer.cache.shard_files()[0].write_bytes(b"garbage")
    backbone.image_calls = 0
    again = ConceptScorer(backbone, vocabulary, cache_dir=tmp_path, progress=False)
    second = again.score(images)
    assert backbone.image_calls == 2
    np.testing.assert_allclose(second.to_numpy(), first.to_numpy(), rtol=1e-6)
    assert again.cache.corrupt == 1


def test_bounded_store_evicts_least_recently_used_shards(tmp_path):
    probe = FeatureCache(tmp_path / "probe", shard_rows=1)
    probe.put("ab" * 32, torch.zeros(8), torch.zeros(4, 8), (2, 2))
    entry_size = probe.size_bytes
    cache = FeatureCache(tmp_path / "bounded", max_bytes=int(entry_size * 2.5), shard_rows=1)
    keys = [_key(cache, n) for n in range(3)]
    for n, key in enumerate(keys[:2]):
        cache.put(key, torch.full((8,), float(n)), torch.zeros(4, 8), (2, 2))
    assert cache.get(keys[0]) is not None  # refreshes entry 0: entry 1 is now the oldest
    cache.put(keys[2], torch.zeros(8), torch.zeros(4, 8), (2, 2))
    assert keys[0] in cache and keys[2] in cache and keys[1] not in cache
    assert cache.size_bytes <= cache.max_bytes


def test_clear_removes_everything(tmp_path):
    cache = FeatureCache(tmp_path)
    for n in range(3):
        cache.put(_key(cache, n), torch.zeros(2), torch.zeros(1, 2), (1, 1))
    cache.flush()
    assert cache.clear() == 3
    assert len(cache) == 0 and cache.size_bytes == 0 and not cache.shard_files()


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        FeatureCache(tmp_path, max_bytes=0)
    with pytest.raises(ValueError, match="precision"):
        FeatureCache(tmp_path, precision="quarter")
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(NotADirectoryError, match="file"):
        FeatureCache(file)
    with pytest.raises(ValueError, match=r"\(D,\)"):
        FeatureCache(tmp_path).put("ab" * 32, torch.zeros(1, 2), torch.zeros(1, 2), (1, 1))
    with pytest.raises(ValueError, match="do not match grid"):
        FeatureCache(tmp_path).put("ab" * 32, torch.zeros(2), torch.zeros(3, 2), (2, 2))


@pytest.mark.parametrize("key", ["../" + "a" * 61, "AB" * 32, "ab" * 31, 7])
def test_keys_that_are_not_digests_are_refused(tmp_path, key):
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="64 lower-case hex"):
        cache.put(key, torch.zeros(2), torch.zeros(1, 2), (1, 1))
    assert key not in cache


def _write_v1_entry(directory, key, global_embed, patch_embeds, grid):
    arrays = {"global": global_embed.numpy(), "patch": patch_embeds.numpy()}
    path = directory / key[:2] / f"{key}.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **arrays, grid=np.asarray(grid), dtype=np.asarray("float32"),
             version=np.asarray(1), checksum=np.frombuffer(
                 _checksum(arrays["global"], arrays["patch"]), dtype=np.uint8))


def test_format_1_caches_keep_working_and_migrate(tmp_path):
    key = "cd" * 32
    g, p = torch.randn(4), torch.randn(4, 4)
    _write_v1_entry(tmp_path, key, g, p, (2, 2))
    cache = FeatureCache(tmp_path)
    assert key in cache and len(cache) == 1
    hit = cache.get(key)
    assert torch.equal(hit.patch_embeds, p) and torch.equal(hit.global_embed, g)
    assert cache.migrate() == 1
    assert not list(tmp_path.rglob("*.npz")) and len(cache.shard_files()) == 1
    moved = FeatureCache(tmp_path).get(key)
    assert torch.equal(moved.global_embed, g) and torch.allclose(moved.patch_embeds, p, rtol=1e-3, atol=1e-3)


class _OpenCounter:
    """Counts files opened under a folder (through ``open``, as PIL and numpy do)."""

    def __init__(self, monkeypatch, folder):
        self.folder, self.count = str(folder), 0
        real = builtins.open

        def counting(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and str(file).startswith(self.folder):
                self.count += 1
            return real(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", counting)


@pytest.mark.parametrize("aggregation", ["max", "mean"])
def test_rescoring_a_new_vocabulary_runs_no_forward_and_opens_no_image(
        tmp_path, monkeypatch, image_folder, vocabulary, other_vocabulary, aggregation):
    backbone = FakeBackbone()
    options = {"cache_dir": tmp_path / "store", "progress": False, "aggregation": aggregation}
    first = ConceptScorer(backbone, vocabulary, **options).score(image_folder)
    forwards = backbone.image_forwards
    opened = _OpenCounter(monkeypatch, image_folder)
    again = ConceptScorer(FakeBackbone(), other_vocabulary, **options).score(image_folder)
    assert opened.count == 0 and backbone.image_forwards == forwards
    assert again.image_ids == first.image_ids and len(again.errors) == 0
    fresh = ConceptScorer(FakeBackbone(), other_vocabulary, progress=False,
                          aggregation=aggregation).score(image_folder)
    # half-precision patch tokens: within the documented bound of the float32 scores
    np.testing.assert_allclose(again.to_numpy(), fresh.to_numpy(), atol=2e-3)
    if aggregation == "mean":  # global + stored patch mean: float32 all the way
        np.testing.assert_allclose(again.to_numpy(), fresh.to_numpy(), rtol=1e-6, atol=1e-7)


def test_globals_only_store_serves_global_and_mean_scores(tmp_path, image_folder, vocabulary):
    backbone = FakeBackbone()
    store = FeatureCache(tmp_path, patches=False)
    ConceptScorer(backbone, vocabulary, cache=store, progress=False, aggregation="mean").score(image_folder)
    forwards = backbone.image_forwards
    ConceptScorer(backbone, vocabulary, cache=store, progress=False, mode="global").score(image_folder)
    ConceptScorer(backbone, vocabulary, cache=store, progress=False, aggregation="mean").score(image_folder)
    assert backbone.image_forwards == forwards
    ConceptScorer(backbone, vocabulary, cache=store, progress=False).score(image_folder)  # max: patches
    assert backbone.image_forwards > forwards
    assert "patch" not in _footer(store.shard_files()[0])["arrays"]


def test_input_warnings_are_served_from_the_store(tmp_path, monkeypatch, vocabulary):
    folder = tmp_path / "imgs"
    folder.mkdir()
    make_image(0).convert("L").convert("RGB").save(folder / "gray.png")
    make_image(1).save(folder / "colour.png")
    options = {"cache_dir": tmp_path / "store", "progress": False, "reference": None}
    with pytest.warns(UserWarning):
        first = ConceptScorer(FakeBackbone(), vocabulary, **options).score(folder)
    opened = _OpenCounter(monkeypatch, folder)
    with pytest.warns(UserWarning):
        again = ConceptScorer(FakeBackbone(), vocabulary, **options).score(folder)
    assert opened.count == 0
    assert "grayscale" in set(first.warnings["kind"])
    assert first.warnings.equals(again.warnings)


def test_a_changed_file_is_read_again(tmp_path, image_folder, vocabulary):
    backbone = FakeBackbone()
    options = {"cache_dir": tmp_path / "store", "progress": False}
    ConceptScorer(backbone, vocabulary, **options).score(image_folder)
    target = sorted(image_folder.glob("*.png"))[0]
    make_image(99).save(target)
    os.utime(target, ns=(1, 1))
    backbone.image_calls = 0
    ConceptScorer(backbone, vocabulary, **options).score(image_folder)
    assert backbone.image_calls == 1
