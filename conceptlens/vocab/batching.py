"""Image features batch by batch: records from the host pipeline -> forward -> feature store.

:func:`iter_feature_batches` drives the streaming pipeline of :mod:`conceptlens.vocab.stream`
(DataLoader workers decode, hash and resize; prefetch; pinned memory on CUDA), runs the image
tower on the images the feature store does not hold, and hands their features to a background
thread that appends them to the store (one fsync per shard). Batches come out in input order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from conceptlens.models.base import Backbone
from conceptlens.vocab.cache import FeatureCache, patch_mean_of
from conceptlens.vocab.sources import count_images
from conceptlens.vocab.stream import ImageStream, RecordBatch, collate_records, resolve_workers

__all__ = ["DirectSink", "FeatureBatch", "auto_batch_size", "encode_records", "iter_feature_batches"]


@dataclass
class FeatureBatch:
    """Image features of one batch of successfully read images.

    Attributes:
        image_ids: Ids of the images, in input order (bad images left out).
        global_embeds: ``(b, D)`` in the backbone's dtype, on its device.
        patch_embeds: ``(b, P, D)`` in the backbone's dtype, or ``None`` when the caller did
            not ask for patch tokens.
        patch_mean: ``(b, D)`` float32 mean of the L2-normalised patch tokens.
        grid_size: ``(grid_h, grid_w)``.
        stats: Per image, ``(6,)`` pixel statistics (width, height, luminance mean and std,
            chroma mean and 99th percentile) or ``None`` when not computed.
        encoded: How many of the images ran through the image tower (the rest came from the
            feature store).
    """

    image_ids: list[str]
    global_embeds: torch.Tensor
    patch_embeds: torch.Tensor | None
    patch_mean: torch.Tensor
    grid_size: tuple[int, int]
    stats: list[np.ndarray | None]
    encoded: int = 0


def auto_batch_size(backbone: Backbone, *, limit: int = 1024) -> int:
    """Images per forward pass: 32 on a CPU; on CUDA the largest power of two up to ``limit``
    whose forward pass fits in memory, halved for headroom (at least 1)."""
    device = backbone.device
    if device.type != "cuda":
        return 32
    height, width = (int(v) for v in backbone.image_size)
    best, size = 0, 8
    while size <= limit:
        try:
            pixels = torch.zeros(size, 3, height, width, device=device, dtype=backbone.dtype)
            backbone.encode_images(pixels)
            best = size
            size *= 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return max(1, best // 2) if best >= 16 else max(1, best)


def iter_feature_batches(
    backbone: Backbone,
    images: Any,
    *,
    batch_size: int = 32,
    cache: FeatureCache | None = None,
    progress: bool = True,
    errors: list[dict[str, str]] | None = None,
    desc: str = "images",
    need_patches: bool = True,
    need_stats: bool = False,
    num_workers: int | str = "auto",
) -> Iterator[FeatureBatch]:
    """Load, preprocess and encode images batch by batch, through the feature store.

    Images that cannot be loaded or preprocessed are skipped and appended to ``errors`` as
    ``{"image": id, "reason": message}``. New features go to the store from a background
    thread; the open shard is committed when the iteration ends (also on an error or when
    the caller stops early), so an interrupted run keeps every finished batch.

    Args:
        backbone: The backbone.
        images: Anything :func:`~conceptlens.vocab.sources.iter_image_sources` accepts.
        batch_size: Images per forward pass of the image tower.
        cache: Optional feature store.
        progress: Show a ``tqdm`` progress bar (images/s).
        errors: List to collect bad images into.
        desc: Progress-bar label.
        need_patches: Return patch tokens (``False``: globals and patch means only, which the
            store serves without reading any patch token).
        need_stats: Compute the pixel statistics of the input checks.
        num_workers: DataLoader worker processes (``"auto"``: see
            :func:`~conceptlens.vocab.stream.resolve_workers`).

    Yields:
        FeatureBatch: one per batch with at least one good image, in input order.
    """
    if errors is None:
        errors = []
    if isinstance(images, Iterator):
        images = list(images)  # a one-shot iterator cannot be shared with worker processes
    count = count_images(images)
    workers = resolve_workers(num_workers, count, batch_size)
    stream = ImageStream(images, backbone, block=batch_size, cache=cache,
                         need_patches=need_patches, need_stats=need_stats)
    cuda = backbone.device.type == "cuda"
    loader = DataLoader(
        stream, batch_size=batch_size, collate_fn=collate_records, num_workers=workers,
        pin_memory=cuda, prefetch_factor=4 if workers else None,
        multiprocessing_context="fork" if workers else None,
    )
    batches = iter(loader)  # forks the workers before the writer thread starts
    writer = _StoreWriter(cache) if cache is not None else None
    bar = tqdm(total=count, disable=not progress, unit="img", desc=desc)
    try:
        for batch in _in_order(batches, batch_size):
            bar.update(len(batch.records))
            features = encode_records(backbone, stream, batch, cache=cache, sink=writer,
                                      errors=errors, need_patches=need_patches)
            if features is not None:
                yield features
    finally:
        bar.close()
        if writer is not None:
            writer.close()


def _in_order(loader: Iterator[RecordBatch], block: int) -> Iterator[RecordBatch]:
    """The loader's batches sorted by block (they arrive in order; this guards it)."""
    waiting: dict[int, RecordBatch] = {}
    expected = 0
    for batch in loader:
        waiting[batch.records[0].position // block] = batch
        while expected in waiting:
            yield waiting.pop(expected)
            expected += 1
    for index in sorted(waiting):
        yield waiting[index]


def encode_records(backbone: Backbone, stream: ImageStream, batch: RecordBatch, *,
                   cache: FeatureCache | None, sink: Any, errors: list[dict[str, str]],
                   need_patches: bool) -> FeatureBatch | None:
    """Run the image tower on a block's records that need it and assemble a :class:`FeatureBatch`.

    Args:
        backbone: The backbone.
        stream: The :class:`~conceptlens.vocab.stream.ImageStream` that made the records.
        batch: The block.
        cache: The feature store (worker-side hit counts are added to it).
        sink: Where new features go (``submit`` / ``submit_paths``), or ``None``.
        errors: Bad images are appended here.
        need_patches: Put patch tokens into the batch.
    """
    writer = sink
    records = batch.records
    if cache is not None:
        for record in records:
            hits, misses, corrupt = record.events
            cache.hits += hits
            cache.misses += misses
            cache.corrupt += corrupt
    good = [r for r in records if r.error is None]
    for record in records:
        if record.error is not None:
            errors.append({"image": record.image_id, "reason": record.error})
    if not good:
        return None
    device, dtype = backbone.device, backbone.dtype
    fresh: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    grids: set[tuple[int, int]] = set()
    if batch.pixels is not None:
        pixels = batch.pixels.to(device, non_blocking=True)
        if pixels.dtype == torch.uint8:
            pixels = stream.normalize(pixels)
        out = backbone.encode_images(pixels.to(dtype))
        grid = (int(out.grid_size[0]), int(out.grid_size[1]))
        grids.add(grid)
        means = patch_mean_of(out.patch_embeds)
        for row, index in enumerate(batch.to_encode):
            fresh[index] = (out.global_embeds[row], out.patch_embeds[row], means[row])
        if writer is not None:
            writer.submit([
                (records[i].key, out.global_embeds[row], out.patch_embeds[row], grid, means[row],
                 records[i].stats)
                for row, i in enumerate(batch.to_encode) if records[i].key is not None
            ])
    if writer is not None:
        writer.submit_paths([r.path_info for r in records if r.path_info is not None and len(r.path_info) == 5])
    globals_, patches, means, stats, ids = [], [], [], [], []
    for index, record in enumerate(records):
        if record.error is not None:
            continue
        if index in fresh:
            g, p, m = fresh[index]
        else:
            hit = record.cached
            grids.add(tuple(hit.grid_size))
            g = hit.global_embed.to(device=device, dtype=dtype)
            p = hit.patch_embeds.to(device=device, dtype=dtype) if hit.patch_embeds is not None else None
            m = hit.patch_mean.to(device) if hit.patch_mean is not None else patch_mean_of(p)
        globals_.append(g)
        patches.append(p)
        means.append(m)
        stats.append(record.stats)
        ids.append(record.image_id)
    if len(grids) != 1:
        raise RuntimeError(f"images of one batch produced different patch grids: {sorted(grids)}")
    return FeatureBatch(
        image_ids=ids,
        global_embeds=torch.stack(globals_),
        patch_embeds=torch.stack(patches) if need_patches else None,
        patch_mean=torch.stack(means).float(),
        grid_size=grids.pop(),
        stats=stats,
        encoded=len(fresh),
    )


class DirectSink:
    """Writes new features to the store in the calling thread (a Ray actor's sink)."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def submit(self, items: list[tuple[Any, ...]]) -> None:
        for key, g, p, grid, m, s in items:
            self.cache.put(key, g.detach().cpu(), p.detach().cpu(), grid, patch_mean=m.detach().cpu(),
                           stats=s)

    def submit_paths(self, rows: list[tuple[Any, ...]]) -> None:
        for path, frame, size, mtime_ns, content_hash in rows:
            self.cache.remember_path(path, frame, size, mtime_ns, content_hash)


class _StoreWriter:
    """Appends features to the store from a background thread; :meth:`close` commits."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=8)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="conceptlens-store-writer", daemon=True)
        self.thread.start()

    def submit(self, items: list[tuple[Any, ...]]) -> None:
        if items:
            cpu = [(key, g.detach().cpu(), p.detach().cpu(), grid, m.detach().cpu(), s)
                   for key, g, p, grid, m, s in items]
            self.queue.put(("features", cpu))

    def submit_paths(self, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.queue.put(("paths", rows))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            kind, rows = item
            try:
                if kind == "features":
                    for key, g, p, grid, m, s in rows:
                        self.cache.put(key, g, p, grid, patch_mean=m, stats=s)
                else:
                    for path, frame, size, mtime_ns, content_hash in rows:
                        self.cache.remember_path(path, frame, size, mtime_ns, content_hash)
            except BaseException as error:  # noqa: BLE001 - re-raised by close()
                self.error = error

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.cache.flush()
        if self.error is not None:
            raise self.error
