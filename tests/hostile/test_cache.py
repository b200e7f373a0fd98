"""Hostile feature caches: corrupt, truncated, wrong-shape, raced and half-written entries
are recomputed; a run never aborts because of the cache."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conceptlens.vocab.cache import FeatureCache, _checksum
from conceptlens.vocab.scorer import ConceptScorer
from tests.vocab.conftest import make_image


def _scored(tmp_path, backbone, vocabulary, cache_dir):
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        make_image(i).save(folder / f"img{i}.png")
    scorer = ConceptScorer(backbone, vocabulary, cache_dir=cache_dir, progress=False)
    return scorer, folder, scorer.score(folder)


def _entries(cache_dir):
    return sorted(p for p in cache_dir.rglob("*.npz") if not p.name.startswith(".tmp-"))


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    if "checksum" not in changes:
        arrays["checksum"] = np.frombuffer(_checksum(arrays["global"], arrays["patch"]), np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


DAMAGE = {
    "random-bytes": lambda p: p.write_bytes(os.urandom(500)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "checksum-mismatch": lambda p: _rewrite(p, checksum=np.zeros(32, np.uint8)),
    "wrong-width-valid-checksum": lambda p: _rewrite(
        p, **{"global": np.ones(5, np.float32), "patch": np.ones((16, 5), np.float32)}),
    "global-patch-disagree": lambda p: _rewrite(
        p, **{"global": np.ones(3, np.float32)}),
    "grid-disagrees": lambda p: _rewrite(p, grid=np.asarray([3, 3])),
    "pickled-object": lambda p: _rewrite(p, grid=np.array([object()], dtype=object)),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_entry_is_recomputed_and_scores_are_unchanged(tmp_path, backbone, vocabulary,
                                                               damage):
    cache_dir = tmp_path / "cache"
    scorer, folder, first = _scored(tmp_path, backbone, vocabulary, cache_dir)
    entries = _entries(cache_dir)
    assert len(entries) == 3
    try:
        DAMAGE[damage](entries[0])
    except ValueError:  # numpy refuses to save what it would not load either: same outcome
        entries[0].write_bytes(b"\x00")
    again = ConceptScorer(backbone, vocabulary, cache_dir=cache_dir, progress=False)
    second = again.score(folder)
    assert second.image_ids == first.image_ids and len(second.errors) == 0
    np.testing.assert_allclose(second.to_numpy(), first.to_numpy(), rtol=1e-5, atol=1e-6)
    assert again.cache.corrupt == 1 and again.cache.hits == 2


def test_wrong_width_entry_is_a_miss_for_the_caller():
    import tempfile

    cache = FeatureCache(tempfile.mkdtemp())
    key = "a" * 64
    cache.put(key, torch.ones(5), torch.ones(4, 5), (2, 2))
    assert cache.get(key, embed_dim=8) is None and cache.corrupt == 1 and key not in cache


def _writer(directory: str, seed: int) -> None:
    cache = FeatureCache(directory)
    for i in range(30):
        key = hashlib.sha256(str(i % 5).encode()).hexdigest()
        value = float(i % 5)
        cache.put(key, torch.full((4,), value), torch.full((4, 4), value), (2, 2))


def test_concurrent_writers_leave_only_whole_entries(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_writer, args=(str(tmp_path), s)) for s in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    cache = FeatureCache(tmp_path)
    for i in range(5):
        hit = cache.get(hashlib.sha256(str(i).encode()).hexdigest())
        assert hit is not None and torch.equal(hit.global_embed, torch.full((4,), float(i)))
    assert cache.corrupt == 0 and not list(tmp_path.rglob(".tmp-*"))


_KILLED_WRITER = """
import sys, torch
from conceptlens.vocab.cache import FeatureCache
cache = FeatureCache(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    key = format(i, "064x")
    cache.put(key, torch.randn(256), torch.randn(1024, 256), (32, 32))
    i += 1
"""


def test_writer_killed_mid_run_leaves_usable_entries(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 30
    while len(_entries(tmp_path)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cache = FeatureCache(tmp_path)
    keys = [p.stem for p in _entries(tmp_path)]
    assert len(keys) >= 3
    assert all(cache.get(key) is not None for key in keys) and cache.corrupt == 0
    assert len(cache) == len(keys)  # a stray temporary file is not counted as an entry
