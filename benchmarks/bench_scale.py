"""Benchmark: the feature store and the streaming pipeline at scale (issue 14).

Every speed number is a ratio of two runs in this process on the same inputs; the baseline
("today") is the serial loop the scorer ran before the streaming pipeline, rebuilt here from
the library's own functions: per image ``load_image`` (with its separate DICOM-marker open),
a SHA-256 content hash, a format-1 cache lookup and write (one ``.npz`` per image, SHA-256
over the entry on put and get, one fsync per image, a folder scan per put when bounded), the
backbone's own ``preprocess`` (which loads the image again) and the pixel checks (their
statistics as computed then: a PIL thumbnail, float64 percentiles).

Sections (``--json`` prints one object):

* ``store``: bytes per image of the full-size model's features (P = 729, D = 1152), format 1
  vs the sharded store, float32 and bfloat16 models; files per 1,000 images; cost of a put
  with ``max_bytes`` at 1k vs 10k entries (and format 1's at 200 vs 1k).
* ``host``: host-side images/s (everything but the forward) on 384 px inputs, one core (one
  torch thread, no workers): today's loop and the new host side interleaved over repeats,
  median [min, max] of images/s and of the per-repeat ratio, in wall time and in CPU time of
  the process; ``*_gpu_feed`` leaves out the normalisation of the ``uint8`` batch, which runs
  on the device when the backbone is on a GPU (today's loop normalises on the host either way).
* ``end_to_end``: images/s of today's loop vs ``ConceptScorer.score`` (no workers, and
  DataLoader workers) vs Ray local with 2 workers (when Ray is installed) on the demo model.
* ``rescoring``: warm rescoring with a new vocabulary, ms per image, mean and max aggregation,
  and the largest score difference caused by half-precision patch tokens.
* ``rss``: peak RSS of scoring 1,000 vs 10,000 demo images (each in a fresh subprocess).
* ``text_bank``: text bank of the demo vocabulary, cold vs from disk; span-mode encoding
  padded to the longest prompt of each batch vs to 77 tokens (demo and tiny models).

``--quick`` shrinks every size for a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conceptlens.models import ConceptCLIPBackbone, create_reference_model, load_backbone  # noqa: E402
from conceptlens.models.base import Backbone, ImageFeatures  # noqa: E402
from conceptlens.models.images import has_dicom_magic, load_image  # noqa: E402
from conceptlens.vocab import ConceptVocabulary  # noqa: E402
from conceptlens.vocab.batching import DirectSink, encode_records  # noqa: E402
from conceptlens.vocab.cache import FeatureCache, image_content_hash  # noqa: E402
from conceptlens.vocab.cache import _checksum as _v1_checksum  # noqa: E402 - format 1, as read back
from conceptlens.vocab.input_checks import check_statistics  # noqa: E402
from conceptlens.vocab.scorer import ConceptScorer  # noqa: E402
from conceptlens.vocab.stream import ImageStream, collate_records  # noqa: E402
from conceptlens.vocab.textbank import clear_text_memo  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Format 1 (the store before): one .npz per entry, as FeatureCache wrote it
# ----------------------------------------------------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    return t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()


def v1_put(folder: Path, key: str, g: torch.Tensor, p: torch.Tensor, grid, max_bytes=None) -> None:
    arrays = {"global": _np(g), "patch": _np(p)}
    path = folder / key[:2] / f"{key}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", suffix=".npz", delete=False) as handle:
        np.savez(handle, **arrays, grid=np.asarray(grid), dtype=np.asarray(str(g.dtype)[6:]),
                 version=np.asarray(1),
                 checksum=np.frombuffer(_v1_checksum(arrays["global"], arrays["patch"]), np.uint8))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
    if max_bytes is not None:  # the LRU scan of every entry after each put
        entries = sorted(((q, q.stat()) for q in folder.glob("*/*.npz")), key=lambda e: e[1].st_mtime)
        total = sum(s.st_size for _, s in entries)
        for q, s in entries:
            if total <= max_bytes:
                break
            q.unlink()
            total -= s.st_size


def v1_get(folder: Path, key: str):
    path = folder / key[:2] / f"{key}.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        g, p = data["global"], data["patch"]
        assert bytes(data["checksum"].tobytes()) == _v1_checksum(g, p)
        grid = tuple(int(v) for v in data["grid"])
    os.utime(path)
    return torch.from_numpy(g.copy()), torch.from_numpy(p.copy()), grid


def v1_image_statistics(image) -> dict[str, float]:
    """The input-check statistics as the library computed them before (a PIL thumbnail of at
    most 256 px, float64 percentiles), so that the baseline does not move when they get faster."""
    small = image.convert("RGB")
    if max(small.size) > 256:
        small = small.copy()
        small.thumbnail((256, 256))
    pixels = np.asarray(small).reshape(-1, 3).astype(np.float64)
    luminance = pixels @ np.array([0.299, 0.587, 0.114])
    chroma = pixels.max(axis=1) - pixels.min(axis=1)
    return {"mean": float(luminance.mean()), "std": float(luminance.std()),
            "chroma_mean": float(chroma.mean()), "chroma_p99": float(np.percentile(chroma, 99))}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def bench_store(work: Path, quick: bool) -> dict:
    out: dict = {}
    n_full = 4 if quick else 16
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype)[6:]
        old, new = work / f"old-{name}", work / f"new-{name}"
        cache = FeatureCache(new)
        for i in range(n_full):
            g, p = torch.randn(1152).to(dtype), torch.randn(729, 1152).to(dtype)
            key = format(i, "064x")
            v1_put(old, key, g, p, (27, 27))
            cache.put(key, g, p, (27, 27))
        cache.flush()
        old_b, new_b = _size(old) / n_full, cache.size_bytes / n_full
        out[f"bytes_per_image_{name}_model"] = {"format1": round(old_b), "sharded": round(new_b),
                                                "ratio": round(new_b / old_b, 3)}
    n = 200 if quick else 1000
    small_g, small_p = torch.randn(64), torch.randn(64, 64)
    old, new = work / "old-files", FeatureCache(work / "new-files")
    t_old = time.perf_counter()
    for i in range(n):
        v1_put(old, format(i, "064x"), small_g, small_p, (8, 8), max_bytes=10 ** 12)
    t_old = (time.perf_counter() - t_old) / n
    for i in range(n):
        new.put(format(i, "064x"), small_g, small_p, (8, 8))
    new.flush()
    out["files_per_1000_images"] = {"format1": round(_files(old) * 1000 / n),
                                    "sharded": round(_files(new.directory) * 1000 / n)}
    # format 1: bounded put cost grows with the entries (folder scan); sharded: constant
    old_small = work / "old-small"
    t0 = time.perf_counter()
    for i in range(n // 5):
        v1_put(old_small, format(i, "064x"), small_g, small_p, (8, 8), max_bytes=10 ** 12)
    t_old_small = (time.perf_counter() - t0) / (n // 5)
    out["format1_put_ms_bounded"] = {f"{n // 5}_entries": round(t_old_small * 1e3, 3),
                                     f"{n}_entries": round(t_old * 1e3, 3)}
    total = 2000 if quick else 10000
    entry = 64 * 64 * 2 + 64 * 4 * 3 + 48 + 64 * 4
    bounded = FeatureCache(work / "bounded", max_bytes=int(entry * total * 0.6))
    times = np.zeros(total)
    for i in range(total):
        t0 = time.perf_counter()
        bounded.put(format(i, "064x"), small_g, small_p, (8, 8))
        times[i] = time.perf_counter() - t0
    first, last = times[:1000].mean(), times[-1000:].mean()
    out["sharded_put_ms_bounded"] = {"first_1000": round(first * 1e3, 4),
                                     f"last_1000_of_{total}": round(last * 1e3, 4),
                                     "ratio": round(last / first, 3),
                                     "size_within_bound": bounded.size_bytes <= bounded.max_bytes}
    return out


class _NoForward(Backbone):
    """A real backbone's preprocessing and identity with a free forward (host side only)."""

    def __init__(self, inner: Backbone) -> None:
        self.inner, self.model = inner, inner.model
        for name in ("identity", "image_size", "grid_size", "embed_dim", "logit_scale", "logit_bias",
                     "concept_logit_scale", "concept_logit_bias"):
            setattr(self, name, getattr(inner, name))

    def preprocess(self, images):
        return self.inner.preprocess(images)

    def forward_images(self, pixel_values):
        b, (h, w) = pixel_values.shape[0], self.grid_size
        g = torch.nn.functional.normalize(torch.ones(b, self.embed_dim), dim=-1)
        return ImageFeatures(g, torch.ones(b, h * w, self.embed_dim), (h, w))

    def forward_texts(self, texts):
        return self.inner.forward_texts(texts)


def _demo_images(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    from PIL import Image

    from conceptlens.demo.generator import generate

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    world = generate(n=min(n, 64), seed=seed, size=size, masks=False)
    for i in range(n):
        path = folder / f"{i:05d}.png"
        pixels = world.images[i % len(world.images)].copy()
        pixels[0, 0] = [i % 256, (i // 256) % 256, 0]  # distinct content per file
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _today(backbone: Backbone, paths: list[Path], cache_dir: Path, batch: int, forward: bool,
           scorer: ConceptScorer | None = None) -> float:
    """Today's serial loop (scoring each batch with ``scorer`` when given); returns seconds."""
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        loaded, keys, found, pixels, missing = [], [], {}, [], []
        for path in chunk:
            has_dicom_magic(path)  # the separate marker open before decoding
            item = load_image(path)
            loaded.append(item)
            keys.append(FeatureCache.key(image_content_hash(item.image), backbone.identity))
        for i, (item, key) in enumerate(zip(loaded, keys, strict=True)):
            hit = v1_get(cache_dir, key)
            if hit is None:
                pixels.append(backbone.preprocess([item.image]))
                missing.append(i)
            else:
                found[i] = hit[:2]
        if pixels and forward:
            out = backbone.encode_images(torch.cat(pixels))
            for row, i in enumerate(missing):
                found[i] = (out.global_embeds[row], out.patch_embeds[row])
                v1_put(cache_dir, keys[i], out.global_embeds[row], out.patch_embeds[row], out.grid_size)
        if scorer is not None:
            with torch.no_grad():
                scorer._scores_from_features(torch.stack([found[i][0] for i in range(len(chunk))]),
                                             torch.stack([found[i][1] for i in range(len(chunk))]))
        for item in loaded:
            check_statistics(item.image.size, v1_image_statistics(item.image), backbone.image_size,
                             grid_size=backbone.grid_size)
    return time.perf_counter() - t0


class _TimedRecipe:
    """A pixel recipe that clocks its batched normalisation (device work when fed to a GPU)."""

    def __init__(self, recipe) -> None:
        self.recipe, self.wall, self.cpu = recipe, 0.0, 0.0

    def resize(self, image, pixels=None):
        return self.recipe.resize(image, pixels)

    def normalize(self, pixels, out=None):
        wall, cpu = time.perf_counter(), time.process_time()
        out = self.recipe.normalize(pixels, out=out)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        return out


def _streamed(backbone: Backbone, paths: list[Path], cache_dir: Path, batch: int) -> tuple[float, float, float]:
    """The new host side in one process (no workers): records, batched normalise, store put.

    Returns wall seconds, and the wall and CPU seconds of them spent normalising the ``uint8``
    batch (on the host here, where the backbone sits on the CPU; on a GPU that step runs on the
    device after the transfer)."""
    cache = FeatureCache(cache_dir)
    stream = ImageStream(paths, backbone, block=batch, cache=cache, need_patches=True, need_stats=True)
    stream.recipe = timed = _TimedRecipe(stream.recipe)
    sink = DirectSink(cache)
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch):
        records = [stream.record(start + i, src) for i, src in
                   enumerate(_sources(paths[start:start + batch]))]
        encode_records(backbone, stream, collate_records(records), cache=cache, sink=sink,
                       errors=[], need_patches=True)
    cache.flush()
    return time.perf_counter() - t0, timed.wall, timed.cpu


def _sources(paths):
    from conceptlens.vocab.sources import iter_image_sources

    return list(iter_image_sources([str(p) for p in paths]))


def bench_host(work: Path, quick: bool) -> dict:
    model, processor = create_reference_model("tiny", seed=0,
                                              vision_config={"image_size": 384, "patch_size": 14})
    inner = ConceptCLIPBackbone(model, processor, model_id="tiny-384")
    backbone = _NoForward(inner)
    n = 32 if quick else 128
    repeats = 1 if quick else 5
    paths = _demo_images(work / "host384", n, 384)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _streamed(backbone, paths[:8], work / "host-warmup", 8)  # imports, probe, first-call costs
    _today(backbone, paths[:8], work / "host-warmup-old", 8, forward=True)
    old, new, old_cpu, new_cpu, norm, norm_cpu = [], [], [], [], [], []
    for r in range(repeats):  # interleaved, fresh stores, so load drifts hit both alike
        cpu = time.process_time()
        old.append(_today(backbone, paths, work / f"host-old-{r}", 32, forward=True))
        old_cpu.append(time.process_time() - cpu)
        cpu = time.process_time()
        wall, normalize_wall, normalize_cpu = _streamed(backbone, paths, work / f"host-new-{r}", 32)
        new_cpu.append(time.process_time() - cpu)
        new.append(wall)
        norm.append(normalize_wall)
        norm_cpu.append(normalize_cpu)
    torch.set_num_threads(threads)
    fed = [w - z for w, z in zip(new, norm, strict=True)]
    fed_cpu = [w - z for w, z in zip(new_cpu, norm_cpu, strict=True)]
    return {"images": n, "input_px": 384, "repeats": repeats, "threads": 1,
            "today_images_per_s": _spread([n / t for t in old], 1),
            "stream_images_per_s": _spread([n / t for t in new], 1),
            "today_ms_per_image": _spread([t / n * 1e3 for t in old], 2),
            "stream_ms_per_image": _spread([t / n * 1e3 for t in new], 2),
            "ratio": _spread([o / w for o, w in zip(old, new, strict=True)], 2),
            # CPU seconds of this process (one thread): what a core does, less exposed to other
            # processes on a shared machine; leaves out time blocked in I/O (today's fsyncs)
            "today_cpu_ms_per_image": _spread([t / n * 1e3 for t in old_cpu], 2),
            "stream_cpu_ms_per_image": _spread([t / n * 1e3 for t in new_cpu], 2),
            "ratio_cpu": _spread([o / w for o, w in zip(old_cpu, new_cpu, strict=True)], 2),
            # as fed to a GPU: the uint8 batch normalised on the device, not by the host
            "stream_gpu_feed_ms_per_image": _spread([t / n * 1e3 for t in fed], 2),
            "ratio_gpu_feed": _spread([o / w for o, w in zip(old, fed, strict=True)], 2),
            "ratio_gpu_feed_cpu": _spread([o / w for o, w in zip(old_cpu, fed_cpu, strict=True)], 2)}


def _spread(values: list[float], digits: int) -> dict[str, float]:
    """``{"median", "min", "max"}`` of repeated measurements."""
    return {"median": round(float(np.median(values)), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def bench_end_to_end(work: Path, quick: bool) -> dict:
    backbone, vocabulary = load_backbone("demo"), ConceptVocabulary.builtin("demo")
    n = 64 if quick else 512
    paths = _demo_images(work / "e2e", n, 64, seed=1)
    baseline = ConceptScorer(backbone, vocabulary, progress=False)
    baseline.text_bank()
    old = _today(backbone, paths, work / "e2e-old", 32, forward=True, scorer=baseline)
    out = {"images": n, "model": "demo", "today_images_per_s": round(n / old, 1)}
    for workers in (0, 1):
        scorer = ConceptScorer(backbone, vocabulary, cache_dir=work / f"e2e-new-{workers}",
                               progress=False, num_workers=workers)
        scorer.text_bank()
        t0 = time.perf_counter()
        scorer.score([str(p) for p in paths])
        seconds = time.perf_counter() - t0
        out[f"stream_{workers}_workers_images_per_s"] = round(n / seconds, 1)
        out[f"ratio_stream_{workers}_workers"] = round(old / seconds, 2)
    try:
        import ray
    except ImportError:
        out["ray"] = "not installed"
        return out
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    scorer = ConceptScorer(backbone, vocabulary, progress=False)
    t0 = time.perf_counter()
    scorer.score([str(p) for p in paths], engine="ray", ray_workers=2)
    seconds = time.perf_counter() - t0
    ray.shutdown()
    out["ray_2_workers_images_per_s"] = round(n / seconds, 1)
    out["ratio_ray_2_workers"] = round(old / seconds, 2)
    return out


def bench_rescoring(work: Path, quick: bool) -> dict:
    backbone, vocabulary = load_backbone("demo"), ConceptVocabulary.builtin("demo")
    other = vocabulary.subset(vocabulary.ids[: max(2, len(vocabulary) // 2)]) \
        if hasattr(vocabulary, "subset") else vocabulary
    n = 64 if quick else 256
    paths = [str(p) for p in _demo_images(work / "warm", n, 64, seed=2)]
    old_dir = work / "warm-old"
    _today(backbone, [Path(p) for p in paths], old_dir, 32, forward=True)
    out: dict = {"images": n}
    for aggregation in ("mean", "max"):
        store = work / f"warm-new-{aggregation}"
        ConceptScorer(backbone, vocabulary, cache_dir=store, progress=False, num_workers=0,
                      aggregation=aggregation).score(paths)
        scorer = ConceptScorer(backbone, other, cache_dir=store, progress=False, num_workers=0,
                               aggregation=aggregation, calibration="sigmoid")
        scorer.text_bank()
        t0 = time.perf_counter()
        warm = scorer.score(paths)
        new = time.perf_counter() - t0
        t0 = time.perf_counter()
        _today(backbone, [Path(p) for p in paths], old_dir, 32, forward=True, scorer=scorer)  # all hits
        old = time.perf_counter() - t0
        fresh = ConceptScorer(backbone, other, progress=False, num_workers=0,
                              aggregation=aggregation, calibration="sigmoid").score(paths)
        out[aggregation] = {"today_ms_per_image": round(old / n * 1e3, 3),
                            "store_ms_per_image": round(new / n * 1e3, 3),
                            "ratio": round(old / new, 2),
                            "max_abs_diff_vs_float32": float(np.abs(warm.to_numpy() - fresh.to_numpy()).max())}
    return out


_RSS_CHILD = """
import resource, sys
sys.path.insert(0, sys.argv[3])
from conceptlens.models import load_backbone
from conceptlens.vocab import ConceptVocabulary
from conceptlens.vocab.scorer import ConceptScorer
scorer = ConceptScorer(load_backbone("demo"), ConceptVocabulary.builtin("demo"), cache_dir=sys.argv[2],
                       progress=False, num_workers=1)
scorer.score_to_file(sys.argv[1], sys.argv[2] + ".parquet")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_rss(work: Path, quick: bool) -> dict:
    sizes = (200, 2000) if quick else (1000, 10000)
    out = {}
    for n in sizes:
        folder = work / f"rss-{n}"
        _demo_images(folder, n, 64, seed=3)
        result = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(folder), str(work / f"rss-store-{n}"),
                                 str(ROOT)], capture_output=True, text=True, check=True)
        out[f"peak_rss_mb_{n}"] = round(int(result.stdout.split()[-1]) / 1024, 1)
    out["ratio"] = round(out[f"peak_rss_mb_{sizes[1]}"] / out[f"peak_rss_mb_{sizes[0]}"], 3)
    return out


def bench_text_bank(work: Path, quick: bool) -> dict:
    out = {}
    for name, backbone in (("demo", load_backbone("demo")),):
        vocabulary = ConceptVocabulary.builtin("demo")
        clear_text_memo()
        t0 = time.perf_counter()
        ConceptScorer(backbone, vocabulary, progress=False, text_cache_dir=work / "text").text_bank()
        cold = time.perf_counter() - t0
        clear_text_memo()
        t0 = time.perf_counter()
        ConceptScorer(backbone, vocabulary, progress=False, text_cache_dir=work / "text").text_bank()
        disk = time.perf_counter() - t0
        out[name] = {"concepts": len(vocabulary), "cold_s": round(cold, 4), "from_disk_s": round(disk, 4),
                     "ratio": round(cold / disk, 1)}
    out["padding"] = _bench_padding(quick)
    return out


def _bench_padding(quick: bool) -> dict:
    """Span-mode text encoding padded to the batch's longest prompt vs to 77 tokens."""
    from conceptlens.vocab import textbank

    vocabulary = ConceptVocabulary.builtin("demo")
    settings = dict(templates=None, synonyms=True, text_token="span", need_reference=False)
    tiny = ConceptCLIPBackbone(*create_reference_model("tiny", seed=0), model_id="tiny-pad")
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name, backbone in (("demo", load_backbone("demo")), ("tiny", tiny)):
        times: dict[str, list[float]] = {"longest": [], "max_length": []}
        banks = {}
        for repeat in range(-1, 1 if quick else 7):  # -1: warm-up, not counted
            for mode in times:  # interleaved
                original = textbank._accepts_padding
                if mode == "max_length":
                    textbank._accepts_padding = lambda _: False
                try:
                    t0 = time.process_time()
                    banks[mode] = textbank.build_text_bank(backbone, vocabulary, **settings)
                    if repeat >= 0:
                        times[mode].append(time.process_time() - t0)
                finally:
                    textbank._accepts_padding = original
        diff = max(float((banks["longest"].tensors()[k] - v).abs().max())
                   for k, v in banks["max_length"].tensors().items())
        out[name] = {"longest_s": _spread(times["longest"], 4), "padded_77_s": _spread(times["max_length"], 4),
                     "speedup": _spread([a / b for a, b in zip(times["max_length"], times["longest"],
                                                               strict=True)], 2),
                     "max_abs_diff": diff}
    torch.set_num_threads(threads)
    out["clock"] = "CPU seconds of this process, one torch thread"
    return out


SECTIONS = {"store": bench_store, "host": bench_host, "end_to_end": bench_end_to_end,
            "rescoring": bench_rescoring, "rss": bench_rss, "text_bank": bench_text_bank}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run these sections")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or SECTIONS:
            t0 = time.perf_counter()
            results[name] = SECTIONS[name](Path(tmp) / name, args.quick)
            results[name]["section_s"] = round(time.perf_counter() - t0, 1)
            print(name, json.dumps(results[name]), file=sys.stderr if args.json else sys.stdout,
                  flush=True)
    results["peak_rss_mb_benchmark"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
