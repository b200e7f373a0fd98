"""GPU benchmark: does the streaming pipeline keep a GPU busy? (issue 14, one prepared run)

On one CUDA GPU, the full-size ConceptCLIP reference architecture (random weights, 384 px,
~0.54 B parameters) in bfloat16:

1. **bare forward**: ``backbone.encode_images`` on a resident batch of random pixels,
   images/s (the ceiling);
2. **streaming pipeline, store on**: ``ConceptScorer.score`` on a folder of 384 px JPEG
   files with a fresh feature store (DataLoader workers decode, hash, compute the input-check
   statistics and resize; the main process normalises on the GPU, runs the forward and scores;
   a background thread appends bfloat16 patch tokens to the store), images/s;
3. **GPU busy / waiting share** of the pipeline run: the image tower's GPU time (CUDA events
   around every forward) over the run's wall time; the rest is time the GPU waits for the host;
4. **warm rescoring** with a new vocabulary from the store (``aggregation="mean"``: no patch
   token read, no image opened), images/s.

Prints one JSON object (GPU name, settings, numbers) to stdout; progress goes to stderr.
Needs only torch and conceptlens. Finishes in well under 4 minutes on an H200
(``--images`` and ``--batch-size`` scale it); ``--device cpu --size tiny`` is a smoke test.

    python benchmarks/bench_gpu_stream.py > gpu_stream.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conceptlens.models import ConceptCLIPBackbone, create_reference_model  # noqa: E402
from conceptlens.vocab import ConceptVocabulary  # noqa: E402
from conceptlens.vocab.scorer import ConceptScorer  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _write_images(args: tuple[str, int, int, int]) -> int:
    folder, start, stop, side = args
    from PIL import Image

    from conceptlens.demo.generator import generate

    world = generate(n=16, seed=start, size=side, masks=False)
    for i in range(start, stop):
        pixels = world.images[i % 16].copy()
        pixels[:4, :4] = [i % 256, (i // 256) % 256, 17]  # distinct content, distinct store keys
        Image.fromarray(pixels).save(Path(folder) / f"{i:06d}.jpg", quality=92)
    return stop - start


def make_folder(folder: Path, n: int, side: int, processes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, -(-n // processes))
    jobs = [(str(folder), s, min(n, s + step), side) for s in range(0, n, step)]
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_write_images, jobs))


class ForwardTimer:
    """Wraps ``backbone.forward_images`` with CUDA events; ``busy_s`` sums the GPU time."""

    def __init__(self, backbone) -> None:
        self.backbone, self.inner, self.events = backbone, backbone.forward_images, []

    def __call__(self, pixel_values):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.inner(pixel_values)
        end.record()
        self.events.append((start, end))
        return out

    def busy_s(self) -> float:
        torch.cuda.synchronize()
        return sum(s.elapsed_time(e) for s, e in self.events) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="full", choices=["full", "tiny"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=3072, help="files the pipeline scores")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers (default: CPU cores - 2, at most 12)")
    parser.add_argument("--repeats", type=int, default=20, help="bare forward passes timed")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    t_start = time.perf_counter()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; pass --device cpu --size tiny for a smoke test")
    workers = args.workers if args.workers is not None else max(1, min(12, (os.cpu_count() or 4) - 2))
    work = Path(args.work or tempfile.mkdtemp(prefix="conceptlens-gpu-"))
    result: dict = {
        "gpu": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "model": f"reference-{args.size}", "dtype": "bfloat16",
        "batch_size": args.batch_size, "images": args.images, "dataloader_workers": workers,
        "cpu_cores": os.cpu_count(),
    }

    side = 384 if args.size == "full" else 64
    log(f"writing {args.images} {side} px JPEG files with {workers} processes")
    folder = work / "images"
    make_folder(folder, args.images, side, workers)  # before CUDA starts (the pool forks)
    try:
        result["dev_shm_bytes"] = shutil.disk_usage("/dev/shm").total
    except OSError:
        result["dev_shm_bytes"] = None

    log("building the model")
    model, processor = create_reference_model(args.size, seed=0)
    model.to(device=device, dtype=torch.bfloat16)
    backbone = ConceptCLIPBackbone(model, processor, model_id=f"reference-{args.size}-random")
    assert int(backbone.image_size[0]) == side
    result["input_px"] = side
    result["parameters"] = int(sum(p.numel() for p in model.parameters()))

    log("bare forward")
    pixels = torch.randn(args.batch_size, 3, side, side, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        backbone.encode_images(pixels)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        backbone.encode_images(pixels)
    if cuda:
        torch.cuda.synchronize()
    bare = args.repeats * args.batch_size / (time.perf_counter() - t0)
    result["bare_forward_images_per_s"] = round(bare, 1)
    del pixels

    vocabulary = ConceptVocabulary.builtin("demo")
    store = work / "store"
    timer = ForwardTimer(backbone) if cuda else None
    if timer is not None:
        backbone.forward_images = timer
    scorer = ConceptScorer(backbone, vocabulary, cache_dir=store, batch_size=args.batch_size,
                           num_workers=workers, progress=False, reference=None)
    log("text bank")
    t0 = time.perf_counter()
    scorer.text_bank()
    result["text_bank_s"] = round(time.perf_counter() - t0, 2)

    log("streaming pipeline, store on (cold)")
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    try:
        scores = scorer.score(folder)
    except Exception as error:  # noqa: BLE001 - keep the numbers measured so far
        result["stream_error"] = f"{type(error).__name__}: {error}"[:2000]
        print(json.dumps(result, indent=2))
        raise
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    assert len(scores) == args.images, (len(scores), scores.errors.head())
    result["stream_images_per_s"] = round(args.images / wall, 1)
    result["stream_vs_bare"] = round(args.images / wall / bare, 3)
    if timer is not None:
        busy = timer.busy_s()
        result["gpu_busy_share"] = round(busy / wall, 3)
        result["gpu_waits_for_host_share"] = round(1 - busy / wall, 3)
    result["store_bytes_per_image"] = round(scorer.cache.size_bytes / args.images)
    result["store_files"] = len(scorer.cache.shard_files())

    log("warm rescoring, new vocabulary, mean aggregation")
    other = vocabulary.subset(vocabulary.ids[: max(2, len(vocabulary) // 2)])
    warm = ConceptScorer(backbone, other, cache_dir=store, batch_size=args.batch_size,
                         num_workers=workers, progress=False, reference=None, aggregation="mean")
    warm.text_bank()
    forwards = len(timer.events) if timer is not None else 0
    t0 = time.perf_counter()
    warm.score(folder)
    result["warm_rescoring_images_per_s"] = round(args.images / (time.perf_counter() - t0), 1)
    if timer is not None:
        result["warm_rescoring_forwards"] = len(timer.events) - forwards

    result["total_s"] = round(time.perf_counter() - t_start, 1)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
