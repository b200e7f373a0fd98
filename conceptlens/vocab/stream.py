"""The host side of the feature pipeline: images -> records, in DataLoader workers.

Each image is opened and decoded **once**, in a :class:`torch.utils.data.DataLoader` worker,
which then hashes its pixels (the feature-store key), computes the pixel statistics the input
checks need and makes the model input. A file the feature store has seen at the same size and
modification time is not opened at all: its content hash comes from the store's path table and
its features from the store (memory-mapped, read in the worker too).

Model input: where a backbone's recorded preprocessing is a squash resize with a PIL filter
followed by rescale and normalisation (ConceptCLIP, SigLIP-style processors), and a probe
shows the result equals ``backbone.preprocess`` (within ``1e-5``), workers only resize to
``uint8`` (:class:`PixelRecipe`) and the main process normalises the whole batch at once on
the model's device (4x less data through shared memory and PCIe). Other backbones' own
``preprocess`` runs in the workers.

Workers take blocks of ``batch_size`` consecutive images in turn, so the DataLoader's batches
arrive in input order.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from conceptlens.models.base import Backbone
from conceptlens.models.images import RESAMPLE_FILTERS, normalize_pixels, resize_to_uint8
from conceptlens.vocab.cache import CachedFeatures, FeatureCache, image_content_hash
from conceptlens.vocab.input_checks import _LUMA, statistics_pixels
from conceptlens.vocab.sources import ImageSource, iter_image_sources

__all__ = ["ImageRecord", "PixelRecipe", "RecordBatch", "pixel_recipe", "resolve_workers"]

_PROBE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class PixelRecipe:
    """A backbone's preprocessing split into a per-image resize and a batched normalisation.

    Attributes:
        size: ``(height, width)`` of the model input.
        resample: PIL filter name.
        rescale: Factor from ``uint8`` to the model's range (``1 / 255``).
        mean, std: Per-channel normalisation.
    """

    size: tuple[int, int]
    resample: str
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def resize(self, image: Any, pixels: np.ndarray | None = None) -> np.ndarray:
        """``(3, H, W)`` ``uint8`` model-size image (``pixels``: ``np.asarray(image)`` if made;
        see :func:`~conceptlens.models.images.resize_to_uint8`)."""
        return resize_to_uint8(image, self.size, self.resample, pixels=pixels)

    def normalize(self, pixels: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` ``uint8`` -> float32 model input on the same device (``out``: see
        :func:`~conceptlens.models.images.normalize_pixels`)."""
        return normalize_pixels(pixels, rescale=self.rescale, mean=self.mean, std=self.std, out=out)


_RECIPES: weakref.WeakKeyDictionary[Backbone, PixelRecipe | None] = weakref.WeakKeyDictionary()
# the float32 memory of the last CPU model-input batch per backbone (see ImageStream.normalize)
_SPARE_BATCHES: weakref.WeakKeyDictionary[Backbone, tuple[np.ndarray, int]] = weakref.WeakKeyDictionary()
# checking that a spare batch is free and taking it must be one step: two threads scoring
# with the same backbone would otherwise both write into it
_SPARE_LOCK = threading.Lock()


def pixel_recipe(backbone: Backbone) -> PixelRecipe | None:
    """The split preprocessing of ``backbone`` if its description allows one *and* a probe
    gives the same pixels as ``backbone.preprocess``; else ``None`` (memoised)."""
    if backbone in _RECIPES:
        return _RECIPES[backbone]
    recipe = _recipe_from(getattr(backbone.identity, "preprocessing", "{}"))
    if recipe is not None and not _probe_matches(backbone, recipe):
        recipe = None
    _RECIPES[backbone] = recipe
    return recipe


def _recipe_from(description: str) -> PixelRecipe | None:
    try:
        spec = json.loads(description)
        size = spec["size"]
        size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        recipe = PixelRecipe(size=size, resample=str(spec["resample"]),
                             rescale=float(spec["rescale_factor"]),
                             mean=tuple(float(v) for v in spec["mean"]),
                             std=tuple(float(v) for v in spec["std"]))
    except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError):
        return None
    if (spec.get("resize") != "squash" or recipe.resample not in RESAMPLE_FILTERS
            or len(recipe.mean) != 3 or len(recipe.std) != 3 or min(recipe.std) <= 0):
        return None
    return recipe


def _probe_matches(backbone: Backbone, recipe: PixelRecipe) -> bool:
    rng = np.random.default_rng(0)
    probes = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")
              for h, w in ((37, 53), (211, 173))]
    try:
        expected = backbone.preprocess(probes).float().cpu()
    except Exception:  # noqa: BLE001 - a backbone that cannot take PIL images keeps its own path
        return False
    mine = recipe.normalize(torch.from_numpy(np.stack([recipe.resize(p) for p in probes])))
    return expected.shape == mine.shape and float((expected - mine).abs().max()) <= _PROBE_TOLERANCE


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


@dataclass
class ImageRecord:
    """What the host side produced for one image.

    Attributes:
        position: Index in the input.
        image_id: Row label.
        error: Why the image could not be used (then nothing else is set).
        key: Feature-store key (when a store is used).
        stats: ``(6,)`` pixel statistics (size, luminance, chroma) or ``None``.
        cached: Features read from the store (then no pixels).
        pixels: ``(3, H, W)`` model input: ``uint8`` (see :class:`PixelRecipe`) or float32.
        path_info: ``(path, frame, size, mtime_ns, content_hash)`` to record in the store.
        events: ``(hits, misses, corrupt)`` the store counted in the worker for this image.
    """

    position: int
    image_id: str
    error: str | None = None
    key: str | None = None
    stats: np.ndarray | None = None
    cached: CachedFeatures | None = None
    pixels: Any = None
    path_info: tuple[str, int | None, int, int, str] | None = None
    events: tuple[int, int, int] = (0, 0, 0)


@dataclass
class RecordBatch:
    """One block of records; the pixels of those to encode stacked into one tensor."""

    records: list[ImageRecord]
    pixels: torch.Tensor | None = None
    to_encode: list[int] = field(default_factory=list)

    def pin_memory(self) -> RecordBatch:
        """Page-locked pixels (DataLoader ``pin_memory=True``)."""
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def collate_records(records: list[ImageRecord]) -> RecordBatch:
    """Stack the pixels of a block's records (``collate_fn`` of the DataLoader)."""
    to_encode = [i for i, r in enumerate(records) if r.pixels is not None]
    pixels = None
    if to_encode:
        arrays = [records[i].pixels for i in to_encode]
        if all(isinstance(a, np.ndarray) for a in arrays):
            # one copy into a fresh (writable) batch, also from read-only or strided views
            pixels = torch.from_numpy(np.stack(arrays))
        else:
            pixels = torch.stack([torch.as_tensor(a) for a in arrays])
        for i in to_encode:
            records[i].pixels = True
    return RecordBatch(records=records, pixels=pixels, to_encode=to_encode)


def statistics_row(image: Any) -> np.ndarray:
    """``(6,)`` ``width, height, mean, std, chroma_mean, chroma_p99`` of a PIL image.

    The same numbers as :func:`~conceptlens.vocab.input_checks.image_statistics` (equal
    bit for bit: both read :func:`~conceptlens.vocab.input_checks.statistics_pixels`, and
    the chroma is an integer, so its mean and 99th percentile come exactly from a
    histogram), several times faster, which matters on the host side of the pipeline: the
    chroma is computed on contiguous channel planes and counted by PIL.
    """
    pixels = statistics_pixels(image)
    luminance = pixels.astype(np.float64) @ _LUMA
    red, green, blue = np.ascontiguousarray(pixels.T)  # channel planes: unit-stride arithmetic
    chroma = np.maximum(red, green)
    np.maximum(chroma, blue, out=chroma)
    darkest = np.minimum(red, green)
    np.minimum(darkest, blue, out=darkest)
    chroma -= darkest
    n = int(chroma.shape[0])
    # PIL's histogram of the chroma as a one-row 8-bit image: 3x faster than np.bincount
    counts = np.array(Image.frombuffer("L", (n, 1), chroma, "raw", "L", 0, 1).histogram(), dtype=np.int64)
    rank = 0.99 * (n - 1)
    low = int(np.floor(rank))
    high = min(low + 1, n - 1)
    cumulative = np.cumsum(counts)
    a = float(np.searchsorted(cumulative, low + 1))
    b = float(np.searchsorted(cumulative, high + 1))
    gamma = rank - low
    p99 = b - (b - a) * (1 - gamma) if gamma >= 0.5 else a + (b - a) * gamma  # numpy's lerp
    return np.array([image.size[0], image.size[1], float(luminance.mean()), float(luminance.std()),
                     int(np.dot(counts, np.arange(256))) / n, p99], dtype=np.float64)


def reason(error: BaseException) -> str:
    """One line for a bad image: the message, prefixed by the type unless it names it."""
    message = str(error) or type(error).__name__
    return message if type(error).__name__ in message else f"{type(error).__name__}: {message}"


class ImageStream(IterableDataset):
    """The images of an input as :class:`ImageRecord` items, split into blocks among workers.

    Args:
        images: Anything :func:`~conceptlens.vocab.sources.iter_image_sources` accepts.
        backbone: The backbone (its identity keys the store; its ``preprocess`` is the fallback).
        block: Consecutive images per worker turn (the batch size).
        cache: The feature store, or ``None``.
        need_patches: Cached entries must hold patch tokens to count as hits.
        need_stats: Compute (or read) the pixel statistics.
    """

    def __init__(self, images: Any, backbone: Backbone, *, block: int, cache: FeatureCache | None,
                 need_patches: bool, need_stats: bool) -> None:
        super().__init__()
        self.images = images
        self.backbone = backbone
        self.block = block
        self.cache = cache
        self.need_patches = need_patches
        self.need_stats = need_stats
        self.recipe = pixel_recipe(backbone)
        self.identity = backbone.identity
        self.embed_dim = int(backbone.embed_dim)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """A collated ``uint8`` batch as model input (:meth:`PixelRecipe.normalize`).

        On a CPU the result goes into the memory of an earlier batch for the same backbone
        once nothing holds that any more (every tensor, view or storage made from the NumPy
        buffer keeps a reference to it, so a batch still in use is never overwritten): fresh
        memory is zeroed page by page by the kernel (56 MB for 32 images of 384 px), which
        costs more than the arithmetic. One buffer per backbone, released with it.
        """
        if pixels.device.type != "cpu":
            return self.recipe.normalize(pixels)
        shape = tuple(pixels.shape)
        with _SPARE_LOCK:
            spare, free = _SPARE_BATCHES.get(self.backbone, (None, 0))
            # `free`: the count seen, by this same call, when only the table and `spare` held it
            if spare is None or spare.shape[1:] != shape[1:] or spare.shape[0] < shape[0] \
                    or sys.getrefcount(spare) != free:
                spare = np.empty(shape, dtype=np.float32)
                _SPARE_BATCHES[self.backbone] = (spare, 0)
                free = sys.getrefcount(spare)  # held by the table's entry and `spare`, as above
                _SPARE_BATCHES[self.backbone] = (spare, free)
            out = torch.from_numpy(spare[:shape[0]])  # taken (referenced) before the lock opens
        return self.recipe.normalize(pixels, out=out)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for position, source in enumerate(iter_image_sources(self.images)):
            if (position // self.block) % workers == worker:
                yield self.record(position, source, in_worker=info is not None)

    def record(self, position: int, source: ImageSource, *, in_worker: bool = False) -> ImageRecord:
        """The record of one image (never raises: a bad image becomes an error record)."""
        cache = self.cache
        before = (cache.hits, cache.misses, cache.corrupt) if cache is not None else (0, 0, 0)
        try:
            out = self._record(position, source)
        except Exception as error:  # noqa: BLE001 - any bad item is reported, the run goes on
            out = ImageRecord(position, source.image_id, error=reason(error))
        if cache is not None and in_worker:
            out.events = (cache.hits - before[0], cache.misses - before[1],
                          cache.corrupt - before[2])
        return out

    def _record(self, position: int, source: ImageSource) -> ImageRecord:
        cache = self.cache
        path_info = None
        if cache is not None and source.path is not None:
            st = os.stat(source.path)
            known = cache.content_hash_for(source.path, source.frame, st.st_size, st.st_mtime_ns)
            if known is not None:
                key = FeatureCache.key(known, self.identity)
                hit = self._cached(key, need_stats=self.need_stats)
                if hit is not None:
                    return ImageRecord(position, source.image_id, key=key, stats=hit.stats, cached=hit)
            path_info = (source.path, source.frame, st.st_size, st.st_mtime_ns)
        loaded = source.load()
        image = loaded.image
        stats = statistics_row(image) if self.need_stats else None
        # One copy of the pixels out of PIL, hashed and (at the model size) fed as they are.
        array = np.asarray(image) if image.mode == "RGB" else None
        key = None
        if cache is not None:
            content_hash = image_content_hash(image, pixels=array)
            key = FeatureCache.key(content_hash, self.identity)
            if path_info is not None:
                path_info = (*path_info, content_hash)
            hit = self._cached(key, need_stats=False)
            if hit is not None:
                return ImageRecord(position, source.image_id, key=key, stats=stats, cached=hit,
                                   path_info=path_info)
        if self.recipe is not None:
            pixels: Any = self.recipe.resize(image, array)
        else:
            pixels = self.backbone.preprocess([image])[0].float()
        return ImageRecord(position, source.image_id, key=key, stats=stats, pixels=pixels,
                           path_info=path_info)

    def _cached(self, key: str, *, need_stats: bool) -> CachedFeatures | None:
        info = self.cache.lookup(key)
        if info is None or (self.need_patches and not info["patches"]) or (need_stats and not info["stats"]):
            return None
        return self.cache.get(key, embed_dim=self.embed_dim, need_patches=self.need_patches)


def resolve_workers(num_workers: int | str, count: int | None, batch_size: int) -> int:
    """Worker processes for a run: ``"auto"`` is none for small inputs (at most four batches)
    or where processes cannot be forked, else up to 4, leaving one core to the model."""
    if num_workers != "auto":
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be 'auto' or a non-negative int, got {num_workers!r}")
        return num_workers
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    if count is not None and count <= 4 * batch_size:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))
