"""Hostile feature caches: corrupt, truncated, wrong-shape, raced and half-written entries
are recomputed; a run never aborts because of the cache."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conceptlens.vocab.cache import FeatureCache
from conceptlens.vocab.scorer import ConceptScorer
from tests.helpers.fakes import make_image

REPO = Path(__file__).resolve().parents[2]


def _scored(tmp_path, backbone, vocabulary, cache_dir):
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        make_image(i).save(folder / f"img{i}.png")
    # one image per shard, so that damage to one shard is damage to one entry; float32 kept
    # exactly, so that recomputed scores equal the first ones to 1e-6
    scorer = ConceptScorer(backbone, vocabulary, cache=FeatureCache(cache_dir, shard_rows=1, precision="exact"),
                           progress=False)
    return scorer, folder, scorer.score(folder)


def _entries(cache_dir):
    return sorted(p for p in (cache_dir / "shards").glob("*.shard") if not p.name.startswith("."))


def _split(path):
    data = path.read_bytes()
    length, magic = struct.unpack("<Q8s", data[-16:])
    return data[:-16 - length], json.loads(data[-16 - length:-16])


def _rewrite_footer(path, change):
    body, footer = _split(path)
    change(footer)
    raw = json.dumps(footer).encode()
    path.write_bytes(body + raw + struct.pack("<Q8s", len(raw), b"CLSHARD2"))


def _valid_shard_of_width(width):
    def damage(path):
        _, footer = _split(path)
        other = path.parent.parent / "other"
        cache = FeatureCache(other)
        cache.put(footer["keys"][0], torch.ones(width), torch.ones(footer["patches"], width),
                  tuple(footer["grid"]))
        cache.flush()
        path.write_bytes(cache.shard_files()[0].read_bytes())
    return damage


def _set(*keys, value):
    def change(footer):
        target = footer
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


DAMAGE = {
    "random-bytes": lambda p: p.write_bytes(os.urandom(500)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "footer-not-json": lambda p: p.write_bytes(p.read_bytes()[:-40] + b"{" * 24 + p.read_bytes()[-16:]),
    "checksum-mismatch": lambda p: _rewrite_footer(p, _set("checksum", "small", value="0" * 64)),
    "wrong-width-valid-checksum": _valid_shard_of_width(5),
    "global-patch-disagree": lambda p: _rewrite_footer(p, _set("arrays", "global", "shape", value=[1, 3])),
    "grid-disagrees": lambda p: _rewrite_footer(p, _set("grid", value=[3, 3])),
    "offset-beyond-the-file": lambda p: _rewrite_footer(p, _set("arrays", "patch", "offset", value=10 ** 9)),
    "pickled-object": lambda p: _rewrite_footer(p, _set("arrays", "global", "dtype", value="object")),
    "patch-bytes-flipped": lambda p: p.write_bytes(b"\xff\xff" + p.read_bytes()[2:]),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_entry_is_recomputed_and_scores_are_unchanged(tmp_path, backbone, vocabulary,
                                                               damage):
    cache_dir = tmp_path / "cache"
    scorer, folder, first = _scored(tmp_path, backbone, vocabulary, cache_dir)
    entries = _entries(cache_dir)
    assert len(entries) == 3
    DAMAGE[damage](entries[0])
    again = ConceptScorer(backbone, vocabulary, cache=FeatureCache(cache_dir, shard_rows=1, precision="exact"),
                          progress=False)
    second = again.score(folder)
    assert second.image_ids == first.image_ids and len(second.errors) == 0
    np.testing.assert_allclose(second.to_numpy(), first.to_numpy(), rtol=1e-5, atol=1e-6)
    assert again.cache.corrupt == 1 and again.cache.hits == 2


def test_wrong_width_entry_is_a_miss_for_the_caller(tmp_path):
    cache = FeatureCache(tmp_path)
    key = "a" * 64
    cache.put(key, torch.ones(5), torch.ones(4, 5), (2, 2))
    cache.flush()
    assert cache.get(key, embed_dim=8) is None and cache.corrupt == 1 and key not in cache


def test_damaged_index_is_rebuilt_from_the_shards(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put("b" * 64, torch.ones(4), torch.ones(1, 4), (1, 1))
    cache.close()
    (tmp_path / "index.sqlite").write_bytes(os.urandom(4096))
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    again = FeatureCache(tmp_path)
    assert again.get("b" * 64) is not None and len(again) == 1


def _writer(directory: str, seed: int) -> None:
    cache = FeatureCache(directory)
    for i in range(30):
        key = hashlib.sha256(str(i % 5).encode()).hexdigest()
        value = float(i % 5)
        cache.put(key, torch.full((4,), value), torch.full((4, 4), value), (2, 2))
    # no flush: the open shard is committed when the process exits


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
cache = FeatureCache(sys.argv[1], shard_rows=2)
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
    while len(_entries(tmp_path)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cache = FeatureCache(tmp_path)
    keys = cache.keys()
    assert len(keys) >= 4 and len(keys) == 2 * len(_entries(tmp_path))
    assert all(cache.get(key) is not None for key in keys) and cache.corrupt == 0
    assert len(cache) == len(keys)  # the unfinished shard is not counted ...
    assert not list(tmp_path.rglob(".tmp-*"))  # ... and the next store removes its file


_KILLED_SCORER = """
import sys, time
sys.path.insert(0, sys.argv[3])
from conceptlens.vocab.cache import FeatureCache
from conceptlens.vocab.scorer import ConceptScorer
from conceptlens.vocab import Concept, ConceptVocabulary
from tests.helpers.fakes import FakeBackbone

class Stalling(FakeBackbone):
    def forward_images(self, pixel_values):
        if self.image_forwards == 3:  # after 6 images: one shard of 4 committed, 2 open
            print("stalled", flush=True)
            time.sleep(600)
        return super().forward_images(pixel_values)

vocabulary = ConceptVocabulary([Concept("t:a", "streaks")], name="t", modality="dermoscopy")
scorer = ConceptScorer(Stalling(), vocabulary, cache=FeatureCache(sys.argv[1], shard_rows=4),
                       batch_size=2, progress=False, num_workers=0)
scorer.score(sys.argv[2])
"""


def test_scorer_killed_mid_shard_loses_only_that_shard(tmp_path, vocabulary):
    from tests.helpers.fakes import FakeBackbone

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        make_image(i).save(folder / f"img{i:02d}.png")
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SCORER, str(store), str(folder), str(REPO)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "stalled"
        deadline = time.time() + 30
        while len(_entries(store)) < 1 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(FeatureCache(store)) == 4
    backbone = FakeBackbone()
    scorer = ConceptScorer(backbone, vocabulary, cache_dir=store, progress=False)
    resumed = scorer.score(folder)
    assert backbone.image_calls == 8 and scorer.cache.corrupt == 0
    fresh = ConceptScorer(FakeBackbone(), vocabulary, progress=False).score(folder)
    assert resumed.image_ids == fresh.image_ids
    np.testing.assert_allclose(resumed.to_numpy(), fresh.to_numpy(), atol=2e-3)
