import os
import time

import numpy as np
import pytest
import torch

from conceptlens.models.base import BackboneIdentity
from conceptlens.vocab.cache import FeatureCache, image_content_hash
from conceptlens.vocab.scorer import ConceptScorer
from tests.vocab.conftest import FakeBackbone, make_image

IDENTITY = BackboneIdentity("model-a", "fake", dtype="float32", preprocessing='{"size": 18}')


def _key(cache, n=0, identity=IDENTITY):
    return cache.key(image_content_hash(make_image(n)), identity)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_round_trip_is_bit_exact_in_the_backbone_dtype(tmp_path, dtype):
    cache = FeatureCache(tmp_path)
    g, p = torch.randn(6, dtype=dtype), torch.randn(4, 6, dtype=dtype)
    key = _key(cache)
    cache.put(key, g, p, (2, 2))
    hit = cache.get(key)
    assert hit.global_embed.dtype == dtype and hit.grid_size == (2, 2)
    assert torch.equal(hit.global_embed, g) and torch.equal(hit.patch_embeds, p)
    assert cache.hits == 1 and key in cache and len(cache) == 1


def test_entries_are_plain_npz_without_pickle(tmp_path):
    cache = FeatureCache(tmp_path)
    key = _key(cache)
    cache.put(key, torch.ones(3), torch.zeros(1, 3), (1, 1))
    with np.load(cache.path_for(key), allow_pickle=False) as data:
        assert set(data.files) == {"global", "patch", "grid", "dtype", "version", "checksum"}
    assert not list(tmp_path.rglob(".tmp-*"))  # the temporary file was moved into place


def test_key_depends_on_pixels_and_backbone_identity(tmp_path):
    cache = FeatureCache(tmp_path)
    other_dtype = BackboneIdentity("model-a", "fake", dtype="bfloat16", preprocessing='{"size": 18}')
    other_pre = BackboneIdentity("model-a", "fake", dtype="float32", preprocessing='{"size": 20}')
    keys = {_key(cache, 0), _key(cache, 1), _key(cache, 0, other_dtype), _key(cache, 0, other_pre)}
    assert len(keys) == 4
    assert image_content_hash(make_image(0)) == image_content_hash(make_image(0).copy())


def test_truncated_entry_is_detected_deleted_and_missed(tmp_path):
    cache = FeatureCache(tmp_path)
    key = _key(cache)
    cache.put(key, torch.ones(3), torch.zeros(1, 3), (1, 1))
    path = cache.path_for(key)
    path.write_bytes(path.read_bytes()[:40])
    assert cache.get(key) is None
    assert cache.corrupt == 1 and not path.exists()


def test_tampered_values_fail_the_checksum(tmp_path):
    cache = FeatureCache(tmp_path)
    key = _key(cache)
    cache.put(key, torch.ones(3), torch.zeros(1, 3), (1, 1))
    path = cache.path_for(key)
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["patch"] = arrays["patch"] + 1.0
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    assert cache.get(key) is None and cache.corrupt == 1


def test_corrupt_entry_is_recomputed_by_the_scorer(tmp_path, vocabulary):
    backbone = FakeBackbone()
    images = [make_image(0), make_image(1)]
    scorer = ConceptScorer(backbone, vocabulary, cache_dir=tmp_path, progress=False)
    first = scorer.score(images)
    entry = next(tmp_path.rglob("*.npz"))
    entry.write_bytes(b"garbage")
    backbone.image_calls = 0
    again = scorer.score(images)
    assert backbone.image_calls == 1
    np.testing.assert_allclose(again.to_numpy(), first.to_numpy())
    assert scorer.cache.corrupt == 1


def test_bounded_cache_evicts_least_recently_used(tmp_path):
    probe = FeatureCache(tmp_path / "probe")
    probe.put("ab" * 32, torch.zeros(8), torch.zeros(4, 8), (2, 2))
    entry_size = probe.size_bytes
    cache = FeatureCache(tmp_path / "bounded", max_bytes=int(entry_size * 2.5))
    keys = [_key(cache, n) for n in range(3)]
    for n, key in enumerate(keys[:2]):
        cache.put(key, torch.full((8,), float(n)), torch.zeros(4, 8), (2, 2))
        os.utime(cache.path_for(key), (time.time() - 100 + n, time.time() - 100 + n))
    assert cache.get(keys[0]) is not None  # refreshes entry 0: entry 1 is now the oldest
    cache.put(keys[2], torch.zeros(8), torch.zeros(4, 8), (2, 2))
    assert keys[0] in cache and keys[2] in cache and keys[1] not in cache
    assert cache.size_bytes <= cache.max_bytes


def test_clear_removes_everything(tmp_path):
    cache = FeatureCache(tmp_path)
    for n in range(3):
        cache.put(_key(cache, n), torch.zeros(2), torch.zeros(1, 2), (1, 1))
    assert cache.clear() == 3
    assert len(cache) == 0 and cache.size_bytes == 0


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        FeatureCache(tmp_path, max_bytes=0)
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(NotADirectoryError, match="file"):
        FeatureCache(file)
    with pytest.raises(ValueError, match=r"\(D,\)"):
        FeatureCache(tmp_path).put("ab" * 32, torch.zeros(1, 2), torch.zeros(1, 2), (1, 1))


@pytest.mark.parametrize("key", ["../" + "a" * 61, "AB" * 32, "ab" * 31, 7])
def test_keys_that_are_not_digests_are_refused(tmp_path, key):
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="64 lower-case hex"):
        cache.put(key, torch.zeros(2), torch.zeros(1, 2), (1, 1))
    assert key not in cache
    assert not list(tmp_path.rglob("*.npz"))
