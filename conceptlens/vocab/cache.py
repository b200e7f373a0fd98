"""The feature store: image features on disk, so that re-scoring never re-runs the image tower.

One entry per (image content, backbone identity) holds the global embedding ``(D,)``, the
patch tokens ``(P, D)`` (unless the store keeps globals only), the **mean of the
L2-normalised patch tokens** ``(D,)`` and the image's pixel statistics (size, luminance, chroma:
what the input checks need), so that rescoring with a new vocabulary, ``"mean"`` aggregation
or the global score alone is a matrix product that reads no patch token and opens no image.

Layout (format 2)
-----------------
``<folder>/shards/<name>.shard``
    Entries are appended to a shard, thousands of images each (``shard_rows``, default 1024,
    or ``shard_bytes``): one file per shard, so a million images are about a thousand files.
    A shard is raw arrays followed by a JSON footer (offsets, dtypes, shapes, the entry keys
    and two SHA-256 checksums); reads memory-map it. No pickle anywhere.
``<folder>/index.sqlite``
    The index: entry key -> (shard, row), the shards with their sizes and last use, and a
    ``(path, frame, size, mtime) -> content hash`` table so that a warm run does not decode
    and hash image files it has seen. The index is derived data: shards missing from it are
    indexed from their footers when a store is opened, and a damaged index is rebuilt.
``<folder>/text/``
    Text banks (:class:`~conceptlens.vocab.textbank.TextBankStore`).

Precision: patch tokens of 16-bit models are stored in their own dtype (bit-exact). Those
of float32 models are stored as ``float16`` unit vectors plus a float32 norm per token
(``precision="half"``, the default): every component is within ``2**-11`` relative of the
original and nothing overflows; the local cosine scores read back from it differ from the
float32 ones by at most ``2e-3`` (``8e-5`` measured on the demo model, 256 images, ``"max"``
aggregation; ``"mean"`` aggregation and global scores use float32 vectors and are unchanged;
see ``benchmarks/bench_scale.py``). ``precision="exact"`` keeps float32.

Guarantees
----------
* **Atomic shard commits**: a shard is written to a temporary file, fsynced once, moved into
  place with :func:`os.replace` and only then indexed. A run killed mid-shard loses that
  shard's entries only (they are recomputed); nothing half-written is ever served, and the
  killed writer's temporary file is removed by the next store opened on the folder.
* **Integrity**: a shard's footer and small arrays are checked (checksum, offsets, shapes,
  dtypes) when it is first opened, its patch block when patches are first read from it,
  once per process: per shard, not per read. A shard that fails is deleted and its entries
  count as misses; an entry whose width differs from the caller's ``embed_dim`` too. The
  checksums prove that a shard is intact, not which images it belongs to: anyone who can
  write to the folder can plant features, so keep it as private as the images.
* **Two processes may write at once**: each writes its own shards; the index is SQLite.
* **Bounded size**: with ``max_bytes``, least recently used shards are deleted after each
  commit; the total is kept in the index, so a put costs O(1) however full the store is.
* **Format 1** folders (one ``.npz`` per entry) keep working read-only; :meth:`FeatureCache.migrate`
  moves their entries into shards.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
import sqlite3
import struct
import threading
import time
import uuid
import weakref
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from conceptlens.errors import ConceptlensError
from conceptlens.models.base import BackboneIdentity

__all__ = ["CachedFeatures", "FeatureCache", "FeatureStoreError", "image_content_hash",
           "patch_mean_of"]

_KEY_LENGTH = 64
_HEX = frozenset("0123456789abcdef")
_V1_SUFFIX = ".npz"
_V1_VERSION = 1
_SHARD_SUFFIX = ".shard"
_MAGIC = b"CLSHARD2"
_TRAILER = struct.Struct("<Q8s")
_MAX_FOOTER = 64 * 1024 * 1024
_STATS_WIDTH = 6
_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}
_PATCH_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
_OPEN_SHARDS = 32
_USED_REFRESH_S = 30.0


class FeatureStoreError(ConceptlensError, ValueError):
    """A shard or index that cannot be used (handled inside the store as a miss)."""


@dataclass
class CachedFeatures:
    """Features of one image as stored.

    Attributes:
        global_embed: ``(D,)`` L2-normalised global embedding, in the backbone's dtype.
        patch_embeds: ``(P, D)`` patch tokens, not normalised, in the backbone's dtype (for
            float32 backbones with ``precision="half"``: within ``2**-11`` relative), or
            ``None`` when not requested or not stored (globals-only store).
        grid_size: ``(grid_h, grid_w)`` with ``grid_h * grid_w == P``.
        patch_mean: ``(D,)`` float32 mean of the L2-normalised patch tokens, or ``None``
            (entries of format 1).
        stats: ``(6,)`` float64 ``width, height, mean, std, chroma_mean, chroma_p99`` of the
            loaded image (:func:`~conceptlens.vocab.input_checks.image_statistics`), or
            ``None`` when unknown.
    """

    global_embed: torch.Tensor
    patch_embeds: torch.Tensor | None
    grid_size: tuple[int, int]
    patch_mean: torch.Tensor | None = None
    stats: np.ndarray | None = None


def image_content_hash(image: Image.Image, *, pixels: np.ndarray | None = None) -> str:
    """SHA-256 hex digest of an image's decoded pixels, mode and size.

    Args:
        image: A PIL image (typically the RGB image of a
            :class:`~conceptlens.models.images.LoadedImage`).
        pixels: ``np.asarray(image)`` if the caller already made it: for an RGB image its
            bytes are ``image.tobytes()``, hashed then without another copy of the pixels.

    Returns:
        64 hex characters; equal for pixel-identical images whatever their file name or format.
    """
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    if (pixels is not None and image.mode == "RGB" and pixels.dtype == np.uint8
            and pixels.shape == (image.size[1], image.size[0], 3) and pixels.flags.c_contiguous):
        digest.update(memoryview(pixels).cast("B"))
    else:
        digest.update(image.tobytes())
    return digest.hexdigest()


def _identity_part(identity: BackboneIdentity) -> str:
    """``"<identity key>|<preprocessing>"``, computed once per (frozen, hashable) identity:
    :meth:`FeatureCache.key` runs for every image."""
    try:
        return _identity_part_memo(identity)
    except TypeError:  # an unhashable stand-in
        return f"{identity.key}|{identity.preprocessing}"


@functools.lru_cache(maxsize=64)
def _identity_part_memo(identity: BackboneIdentity) -> str:
    return f"{identity.key}|{identity.preprocessing}"


def patch_mean_of(patch_embeds: torch.Tensor) -> torch.Tensor:
    """Mean over the patch axis of the L2-normalised patch tokens, float32.

    For ``aggregation="mean"`` the local cosine is exactly this vector dotted with the
    concept token vector, so rescoring needs no patch token.

    Args:
        patch_embeds: ``(..., P, D)``.

    Returns:
        ``(..., D)`` float32.
    """
    return F.normalize(patch_embeds.float(), dim=-1).mean(dim=-2)


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or len(key) != _KEY_LENGTH or not set(key) <= _HEX:
        raise ValueError(f"cache key must be 64 lower-case hex digits (from FeatureCache.key), got {key!r}")
    return key


# ----------------------------------------------------------------------------------------------
# The store
# ----------------------------------------------------------------------------------------------


class FeatureCache:
    """A sharded, memory-mapped store of image features (see the module docstring).

    Args:
        directory: Folder of the store (created on first write).
        max_bytes: Upper bound on the committed shards' total size; ``None`` for no bound.
        patches: Keep patch tokens (``False``: globals, patch means and statistics only; then
            only ``"global"`` scores and ``"mean"`` aggregation can be served from it).
        precision: ``"half"`` (float32 patch tokens stored as float16 unit vectors and norms)
            or ``"exact"``. 16-bit models' tokens are always stored bit-exactly.
        shard_rows: Entries per shard before it is committed.
        shard_bytes: Bytes per shard before it is committed (with ``max_bytes``, at most an
            eighth of it, so that eviction stays fine-grained).

    Attributes:
        hits: Entries found and valid since creation.
        misses: Lookups that found nothing (including corrupt entries).
        corrupt: Shards (or format-1 entries) that failed to verify and were deleted.
        shards_committed: Shards this object committed.

    Entries written by :meth:`put` become durable when their shard is committed: when it is
    full, on :meth:`flush` / :meth:`close`, and when the object is garbage-collected or the
    interpreter exits normally. Until then this object serves them itself.

    Examples:
        >>> import tempfile, torch
        >>> from conceptlens.models.base import BackboneIdentity
        >>> cache = FeatureCache(tempfile.mkdtemp())
        >>> key = cache.key("0" * 64, BackboneIdentity("demo", "demo"))
        >>> cache.put(key, torch.ones(4), torch.zeros(9, 4), (3, 3))
        >>> cache.flush()
        >>> FeatureCache(cache.directory).get(key).grid_size
        (3, 3)
    """

    def __init__(self, directory: str | os.PathLike, max_bytes: int | None = None, *,
                 patches: bool = True, precision: str = "half", shard_rows: int = 1024,
                 shard_bytes: int = 2 * 1024 ** 3) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                      or max_bytes <= 0):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        if precision not in ("half", "exact"):
            raise ValueError(f"precision must be 'half' or 'exact', got {precision!r}")
        for name, value in (("shard_rows", shard_rows), ("shard_bytes", shard_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.directory = Path(directory)
        self._directory_str = str(self.directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"feature cache directory is a file: {self.directory}")
        self.max_bytes = max_bytes
        self.patches = bool(patches)
        self.precision = precision
        self.shard_rows = shard_rows
        self._shard_bytes = shard_bytes
        self.shard_bytes = min(shard_bytes, max(1, max_bytes // 8)) if max_bytes else shard_bytes
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.shards_committed = 0
        self._lock = threading.RLock()
        self._state = _State()
        self._finalizer = weakref.finalize(self, _State.commit_quietly, self._state)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (e.g. to a Ray actor) as its settings: the copy opens the folder afresh."""
        return (_reopen, (str(self.directory), self.max_bytes, self.patches, self.precision,
                          self.shard_rows, self._shard_bytes))

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def key(content_hash: str, identity: BackboneIdentity) -> str:
        """Entry key for an image (by :func:`image_content_hash`) under a backbone identity."""
        payload = f"v{_V1_VERSION}|{content_hash}|{_identity_part(identity)}"
        return hashlib.sha256(payload.encode()).hexdigest()

    # -- paths --------------------------------------------------------------------------------

    @property
    def shard_dir(self) -> Path:
        """Folder of the shards."""
        return self.directory / "shards"

    @property
    def text_dir(self) -> Path:
        """Folder of the text banks kept beside the features."""
        return self.directory / "text"

    def _v1_path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}{_V1_SUFFIX}"

    def _has_v1(self, key: str) -> bool:
        """Whether a format-1 entry exists (one ``stat``, no path objects: asked on every miss)."""
        return os.path.isfile(os.path.join(self._directory_str, key[:2], key + _V1_SUFFIX))

    # -- index --------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        state = self._state
        if state.db is not None and state.pid == os.getpid():
            return state.db
        state.reset_after_fork()
        self.directory.mkdir(parents=True, exist_ok=True)
        state.db = _open_index(self.directory / "index.sqlite")
        state.pid = os.getpid()
        self._reconcile()
        return state.db

    def _reconcile(self) -> None:
        """Index shards missing from the index, forget vanished ones, remove dead writers' files."""
        db = self._db()
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        on_disk = {p.name: p for p in self.shard_dir.glob(f"*{_SHARD_SUFFIX}")
                   if not p.name.startswith(".")}
        known = {row[0] for row in db.execute("SELECT name FROM shards")}
        for name in known - set(on_disk):
            with db:
                db.execute("DELETE FROM entries WHERE shard = ?", (name,))
                db.execute("DELETE FROM shards WHERE name = ?", (name,))
        for name in sorted(set(on_disk) - known):
            try:
                footer = _read_footer(on_disk[name])
            except (OSError, FeatureStoreError):
                self.corrupt += 1
                _remove(on_disk[name])
                continue
            self._index_shard(name, footer, on_disk[name].stat().st_size)
        for tmp in self.shard_dir.glob(".tmp-*"):
            if _writer_is_dead(tmp.name):
                _remove(tmp)

    def _index_shard(self, name: str, footer: dict[str, Any], size: int) -> None:
        _index_shard_rows(self._db(), name, footer, size)

    def _index_get(self, key: str) -> tuple[str, int, bool, bool] | None:
        try:
            row = self._db().execute(
                "SELECT shard, row, patches, stats FROM entries WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError:
            self._rebuild_index()
            return None
        return None if row is None else (row[0], int(row[1]), bool(row[2]), bool(row[3]))

    def _rebuild_index(self) -> None:
        """Replace a damaged index by one built from the shard footers."""
        state = self._state
        if state.db is not None:
            with contextlib.suppress(sqlite3.Error):
                state.db.close()
        state.db = None
        for suffix in ("", "-wal", "-shm", "-journal"):
            _remove(self.directory / f"index.sqlite{suffix}")
        self._db()

    # -- access -------------------------------------------------------------------------------

    def lookup(self, key: str) -> dict[str, bool] | None:
        """What the store holds for ``key`` without reading it: ``{"patches": .., "stats": ..}``
        or ``None``."""
        _check_key(key)
        with self._lock:
            pending = self._state.writer.find(key) if self._state.writer is not None else None
            if pending is not None:
                return {"patches": self._state.writer.has_patches,
                        "stats": bool(np.isfinite(self._state.writer.stats[pending]).all())}
            found = self._index_get(key)
            if found is not None:
                return {"patches": found[2], "stats": found[3]}
            if self._has_v1(key):
                return {"patches": True, "stats": False}
            return None

    def get(self, key: str, *, embed_dim: int | None = None,
            need_patches: bool = True) -> CachedFeatures | None:
        """The entry for ``key``, or ``None`` if absent or corrupt (corrupt shards are deleted).

        Args:
            key: From :meth:`key`.
            embed_dim: The embedding width the caller's backbone produces; an entry of
                another width (intact but not from this model) counts as corrupt.
            need_patches: Read the patch tokens; an entry without them is then a miss.
                ``False`` reads the global embedding, patch mean and statistics only.
        """
        _check_key(key)
        with self._lock:
            features = self._get(key, need_patches)
            if features is not None and embed_dim is not None and features.global_embed.shape[0] != embed_dim:
                self._drop_entry(key)
                features = None
            if features is None:
                self.misses += 1
                return None
            self.hits += 1
            return features

    def _get(self, key: str, need_patches: bool) -> CachedFeatures | None:
        writer = self._state.writer
        if writer is not None and (row := writer.find(key)) is not None:
            if need_patches and not writer.has_patches:
                return None
            return writer.read(row, need_patches)
        found = self._index_get(key)
        if found is None:
            return self._get_v1(key) if self._has_v1(key) else None
        shard, row, has_patches, _ = found
        if need_patches and not has_patches:
            return None
        reader = self._reader(shard)
        if reader is None:
            return None
        try:
            if row >= reader.rows or reader.keys[row] != key:
                raise FeatureStoreError(f"index row {row} of shard {shard} does not hold {key}")
            features = reader.read(row, need_patches)
        except (OSError, ValueError):
            self._drop_shard(shard)
            return None
        self._touch(shard)
        return features

    def _reader(self, shard: str) -> _ShardReader | None:
        readers = self._state.readers
        reader = readers.get(shard)
        if reader is not None:
            readers.move_to_end(shard)
            return reader
        path = self.shard_dir / shard
        try:
            reader = _ShardReader(path)
        except FileNotFoundError:
            with self._db():
                self._db().execute("DELETE FROM entries WHERE shard = ?", (shard,))
                self._db().execute("DELETE FROM shards WHERE name = ?", (shard,))
            return None
        except (OSError, FeatureStoreError):
            self._drop_shard(shard)
            return None
        readers[shard] = reader
        while len(readers) > _OPEN_SHARDS:
            readers.popitem(last=False)
        return reader

    def _drop_shard(self, shard: str) -> None:
        self.corrupt += 1
        self._state.readers.pop(shard, None)
        db = self._db()
        with db:
            db.execute("DELETE FROM entries WHERE shard = ?", (shard,))
            db.execute("DELETE FROM shards WHERE name = ?", (shard,))
        _remove(self.shard_dir / shard)

    def _drop_entry(self, key: str) -> None:
        found = self._index_get(key)
        if found is not None:
            self._drop_shard(found[0])
        else:
            self.corrupt += 1
            _remove(self._v1_path(key))

    def _touch(self, shard: str) -> None:
        now = time.time()
        last = self._state.touched.get(shard)
        if last is not None and now - last < _USED_REFRESH_S:
            return
        self._state.touched[shard] = now
        db = self._db()
        with db:
            db.execute("UPDATE shards SET used = ? WHERE name = ?", (now, shard))

    def _get_v1(self, key: str) -> CachedFeatures | None:
        path = self._v1_path(key)
        try:
            features = _read_v1_entry(path)
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile):
            features = None
        if features is None:
            self.corrupt += 1
            _remove(path)
        return features

    def put(
        self,
        key: str,
        global_embed: torch.Tensor,
        patch_embeds: torch.Tensor,
        grid_size: tuple[int, int],
        *,
        patch_mean: torch.Tensor | None = None,
        stats: Any = None,
    ) -> None:
        """Append one image's features to the open shard (committed when full or on :meth:`flush`).

        An entry already in the store is not written again.

        Args:
            key: From :meth:`key`.
            global_embed: ``(D,)`` tensor.
            patch_embeds: ``(P, D)`` tensor.
            grid_size: ``(grid_h, grid_w)``.
            patch_mean: ``(D,)`` from :func:`patch_mean_of` (computed when not given).
            stats: ``(6,)`` pixel statistics (see :class:`CachedFeatures`), or ``None``.
        """
        if global_embed.ndim != 1 or patch_embeds.ndim != 2:
            raise ValueError(
                f"expected global (D,) and patch (P, D) features, got {tuple(global_embed.shape)} "
                f"and {tuple(patch_embeds.shape)}"
            )
        _check_key(key)
        grid = (int(grid_size[0]), int(grid_size[1]))
        if grid[0] * grid[1] != patch_embeds.shape[0] or patch_embeds.shape[1] != global_embed.shape[0]:
            raise ValueError(f"patch tokens {tuple(patch_embeds.shape)} do not match grid {grid} "
                             f"and global width {global_embed.shape[0]}")
        if patch_mean is None:
            patch_mean = patch_mean_of(patch_embeds)
        row_stats = np.full(_STATS_WIDTH, np.nan)
        if stats is not None:
            row_stats[:] = np.asarray(stats, dtype=np.float64).reshape(_STATS_WIDTH)
        with self._lock:
            writer = self._state.writer
            if (writer is not None and writer.find(key) is not None) or self._index_get(key) is not None:
                return
            layout = _Layout.of(global_embed, patch_embeds, grid, self.patches, self.precision)
            if writer is not None and writer.layout != layout:
                self._commit()
            if self._state.writer is None:
                self.shard_dir.mkdir(parents=True, exist_ok=True)
                self._state.writer = _ShardWriter(self.shard_dir, layout)
            writer = self._state.writer
            writer.append(key, global_embed, patch_embeds, patch_mean, row_stats)
            if writer.rows >= self.shard_rows or writer.bytes >= self.shard_bytes:
                self._commit()

    def remember_path(self, path: str, frame: int | None, size: int, mtime_ns: int,
                      content_hash: str) -> None:
        """Record that the file ``path`` (at this size and modification time) holds the image
        of ``content_hash`` (written with the next shard commit)."""
        with self._lock:
            self._state.paths.append((str(path), -1 if frame is None else int(frame), int(size),
                                      int(mtime_ns), content_hash))
            if len(self._state.paths) >= 4096:
                self._write_paths()

    def content_hash_for(self, path: str, frame: int | None, size: int, mtime_ns: int) -> str | None:
        """The content hash recorded for this file at this size and mtime, else ``None``."""
        with self._lock:
            try:
                row = self._db().execute(
                    "SELECT size, mtime_ns, hash FROM paths WHERE path = ? AND frame = ?",
                    (str(path), -1 if frame is None else int(frame))).fetchone()
            except sqlite3.DatabaseError:
                return None
        if row is None or int(row[0]) != int(size) or int(row[1]) != int(mtime_ns):
            return None
        return str(row[2])

    def _write_paths(self) -> None:
        rows, self._state.paths = self._state.paths, []
        if not rows:
            return
        db = self._db()
        with db:
            db.executemany("INSERT OR REPLACE INTO paths(path, frame, size, mtime_ns, hash) "
                           "VALUES (?, ?, ?, ?, ?)", rows)

    def flush(self) -> None:
        """Commit the open shard and the path records (durable on return)."""
        with self._lock:
            self._commit()
            self._write_paths()

    def close(self) -> None:
        """:meth:`flush` and release open files."""
        with self._lock:
            self.flush()
            self._state.readers.clear()
            if self._state.db is not None and self._state.pid == os.getpid():
                self._state.db.close()
            self._state.db = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _commit(self) -> None:
        writer = self._state.writer
        if writer is None:
            return
        self._state.writer = None
        if writer.rows == 0:
            writer.abort()
            return
        name, size, footer = writer.commit()
        self._index_shard(name, footer, size)
        self.shards_committed += 1
        if self.max_bytes is not None:
            self.evict(self.max_bytes)

    # -- size ---------------------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        try:
            _check_key(key)
        except ValueError:
            return False
        return self.lookup(key) is not None

    def __len__(self) -> int:
        with self._lock:
            pending = self._state.writer.rows if self._state.writer is not None else 0
            count = self._db().execute("SELECT COUNT(*) FROM entries").fetchone()[0]
            return int(count) + pending + sum(1 for _ in self._v1_entries())

    def keys(self) -> list[str]:
        """Keys of the committed entries."""
        with self._lock:
            return [row[0] for row in self._db().execute("SELECT key FROM entries ORDER BY key")]

    @property
    def size_bytes(self) -> int:
        """Total size of the committed shards (and format-1 entries) on disk."""
        with self._lock:
            total = self._db().execute("SELECT COALESCE(SUM(bytes), 0) FROM shards").fetchone()[0]
            return int(total) + sum(size for _, size in self._v1_entries())

    def shard_files(self) -> list[Path]:
        """The committed shard files."""
        return sorted(p for p in self.shard_dir.glob(f"*{_SHARD_SUFFIX}") if not p.name.startswith("."))

    def evict(self, max_bytes: int) -> int:
        """Delete least recently used shards until the committed total is at most ``max_bytes``.

        Returns:
            Number of entries deleted.
        """
        with self._lock:
            db = self._db()
            total = int(db.execute("SELECT COALESCE(SUM(bytes), 0) FROM shards").fetchone()[0])
            removed = 0
            if total <= max_bytes:
                return 0
            for name, size, rows in db.execute(
                    "SELECT name, bytes, rows FROM shards ORDER BY used").fetchall():
                if total <= max_bytes:
                    break
                with db:
                    db.execute("DELETE FROM entries WHERE shard = ?", (name,))
                    db.execute("DELETE FROM shards WHERE name = ?", (name,))
                self._state.readers.pop(name, None)
                _remove(self.shard_dir / name)
                total -= int(size)
                removed += int(rows)
            return removed

    def clear(self) -> int:
        """Delete every entry (shards, format-1 entries, the index). Returns the number deleted."""
        with self._lock:
            if not self.directory.is_dir():
                return 0
            if self._state.writer is not None:
                self._state.writer.abort()
                self._state.writer = None
            removed = len(self)
            self._state.readers.clear()
            db = self._db()
            with db:
                db.execute("DELETE FROM entries")
                db.execute("DELETE FROM shards")
                db.execute("DELETE FROM paths")
            for path in self.shard_dir.glob("*"):
                _remove(path)
            self._remove_v1_entries()
            return removed

    # -- format 1 -------------------------------------------------------------------------------

    def _v1_entries(self) -> Iterator[tuple[Path, int]]:
        if not self.directory.is_dir():
            return
        for path in self.directory.glob(f"??/*{_V1_SUFFIX}"):
            if path.name.startswith(".tmp-"):
                continue
            with contextlib.suppress(OSError):
                yield path, path.stat().st_size

    def _remove_v1_entries(self) -> None:
        """Delete every format-1 entry file and the two-letter folders they leave empty."""
        for path, _ in list(self._v1_entries()):
            _remove(path)
        for sub in self.directory.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                with contextlib.suppress(OSError):
                    sub.rmdir()

    def migrate(self) -> int:
        """Move format-1 entries (one ``.npz`` each) into shards; unreadable ones are deleted.

        Returns:
            Number of entries migrated.
        """
        moved = 0
        with self._lock:
            for path, _ in list(self._v1_entries()):
                key = path.stem
                try:
                    _check_key(key)
                    features = _read_v1_entry(path)
                except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile):
                    features = None
                if features is not None:
                    self.put(key, features.global_embed, features.patch_embeds, features.grid_size)
                    moved += 1
            self.flush()
            self._remove_v1_entries()
        return moved

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r}, max_bytes={self.max_bytes})"


# ----------------------------------------------------------------------------------------------
# Per-process state
# ----------------------------------------------------------------------------------------------


class _State:
    """What a :class:`FeatureCache` holds open; reset in a forked child (never shared)."""

    def __init__(self) -> None:
        self.db: sqlite3.Connection | None = None
        self.pid = os.getpid()
        self.writer: _ShardWriter | None = None
        self.readers: OrderedDict[str, _ShardReader] = OrderedDict()
        self.touched: dict[str, float] = {}
        self.paths: list[tuple[str, int, int, int, str]] = []

    def reset_after_fork(self) -> None:
        if self.pid != os.getpid():
            self.db = None
            self.writer = None
            self.readers = OrderedDict()
            self.touched = {}
            self.paths = []

    @staticmethod
    def commit_quietly(state: _State) -> None:
        """Commit what a store left open when it is collected or the interpreter exits."""
        if state.pid != os.getpid():
            return
        writer, state.writer = state.writer, None
        if writer is None or writer.rows == 0:
            if writer is not None:
                writer.abort()
            return
        try:
            name, size, footer = writer.commit()
            db = state.db or _open_index(writer.directory.parent / "index.sqlite")
            _index_shard_rows(db, name, footer, size)
        except Exception:  # noqa: BLE001 - at exit nothing may raise; the next open reindexes
            pass


def _reopen(directory: str, max_bytes: int | None, patches: bool, precision: str, shard_rows: int,
            shard_bytes: int) -> FeatureCache:
    return FeatureCache(directory, max_bytes, patches=patches, precision=precision,
                        shard_rows=shard_rows, shard_bytes=shard_bytes)


def _index_shard_rows(db: sqlite3.Connection, name: str, footer: dict[str, Any], size: int) -> None:
    """Record a committed shard and one index row per image it holds (one transaction)."""
    has_patches = int(footer["patches"] > 0)
    has_stats = int(footer["arrays"].get("stats") is not None)
    with db:
        db.execute("INSERT OR REPLACE INTO shards(name, bytes, rows, used) VALUES (?, ?, ?, ?)",
                   (name, size, footer["rows"], time.time()))
        db.executemany(
            "INSERT OR REPLACE INTO entries(key, shard, row, patches, stats) VALUES (?, ?, ?, ?, ?)",
            [(key, name, row, has_patches, has_stats) for row, key in enumerate(footer["keys"])],
        )


def _open_index(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(str(path), timeout=60.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        _create_tables(db)
    except sqlite3.DatabaseError:
        for suffix in ("", "-wal", "-shm", "-journal"):
            _remove(Path(f"{path}{suffix}"))
        db = sqlite3.connect(str(path), timeout=60.0, check_same_thread=False)
        _create_tables(db)
    return db


def _create_tables(db: sqlite3.Connection) -> None:
    with db:
        _create(db)


def _create(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS shards(name TEXT PRIMARY KEY, bytes INTEGER, "
               "rows INTEGER, used REAL)")
    db.execute("CREATE TABLE IF NOT EXISTS entries(key TEXT PRIMARY KEY, shard TEXT, row INTEGER, "
               "patches INTEGER, stats INTEGER)")
    db.execute("CREATE INDEX IF NOT EXISTS entries_by_shard ON entries(shard)")
    db.execute("CREATE TABLE IF NOT EXISTS paths(path TEXT, frame INTEGER, size INTEGER, "
               "mtime_ns INTEGER, hash TEXT, PRIMARY KEY(path, frame))")


def _writer_is_dead(name: str) -> bool:
    """Whether the temporary shard ``.tmp-<host>-<pid>-<id>.shard`` belongs to a dead process
    of this host (files of other hosts are left alone)."""
    parts = name.split("-")
    if len(parts) < 4:
        return False
    host, pid = "-".join(parts[1:-2]), parts[-2]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# ----------------------------------------------------------------------------------------------
# Shards
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """What every row of a shard shares."""

    dim: int
    patches: int
    grid: tuple[int, int]
    global_dtype: str
    patch_dtype: str | None
    unit_patches: bool

    @classmethod
    def of(cls, global_embed: torch.Tensor, patch_embeds: torch.Tensor, grid: tuple[int, int],
           keep_patches: bool, precision: str) -> _Layout:
        global_dtype = _dtype_name(global_embed.dtype)
        patch_dtype: str | None = None
        unit = False
        if keep_patches:
            if patch_embeds.dtype in _PATCH_DTYPES:
                patch_dtype = _PATCH_DTYPES[patch_embeds.dtype]
            elif precision == "half":
                patch_dtype, unit = "float16", True
            else:
                patch_dtype = "float32"
        return cls(int(global_embed.shape[0]), int(patch_embeds.shape[0]) if keep_patches else 0,
                   grid, global_dtype, patch_dtype, unit)


def _dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"features of dtype {name} cannot be stored (float32, float16, bfloat16)")
    return name


def _as_numpy(tensor: torch.Tensor, dtype_name: str) -> np.ndarray:
    tensor = tensor.detach().to("cpu")
    if dtype_name == "bfloat16":
        return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)
    return tensor.to(getattr(torch, dtype_name)).contiguous().numpy()


def _as_tensor(array: np.ndarray, dtype_name: str) -> torch.Tensor:
    array = np.array(array, copy=True)
    if dtype_name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


class _ShardWriter:
    """An open shard: patch rows streamed to a temporary file, the small arrays in memory."""

    def __init__(self, directory: Path, layout: _Layout) -> None:
        self.directory = directory
        self.layout = layout
        self.name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:16]}{_SHARD_SUFFIX}"
        self.tmp = directory / f".tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{_SHARD_SUFFIX}"
        self.handle = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit / abort
        self.patch_digest = hashlib.sha256()
        self.index: dict[str, int] = {}
        self.keys: list[str] = []
        self.globals: list[np.ndarray] = []
        self.means: list[np.ndarray] = []
        self.stats: list[np.ndarray] = []
        self.norms: list[np.ndarray] = []
        self.bytes = 0
        self.dirty = False

    @property
    def rows(self) -> int:
        return len(self.keys)

    @property
    def has_patches(self) -> bool:
        return self.layout.patches > 0

    def find(self, key: str) -> int | None:
        return self.index.get(key)

    def append(self, key: str, global_embed: torch.Tensor, patch_embeds: torch.Tensor,
               patch_mean: torch.Tensor, stats: np.ndarray) -> None:
        layout = self.layout
        if layout.patch_dtype is not None:
            patches = patch_embeds.detach().to("cpu")
            if layout.unit_patches:
                patches = patches.float()
                norms = patches.norm(dim=-1)
                self.norms.append(norms.numpy().astype(np.float32))
                patches = patches / norms.clamp_min(1e-30)[:, None]
            data = _as_numpy(patches, layout.patch_dtype).tobytes()
            self.handle.write(data)
            self.patch_digest.update(data)
            self.bytes += len(data)
            self.dirty = True
        self.index[key] = len(self.keys)
        self.keys.append(key)
        self.globals.append(_as_numpy(global_embed, layout.global_dtype))
        self.means.append(patch_mean.detach().to("cpu", torch.float32).numpy())
        self.stats.append(stats)
        self.bytes += 8 * layout.dim + 8 * _STATS_WIDTH + 64

    def read(self, row: int, need_patches: bool) -> CachedFeatures:
        layout = self.layout
        patches = None
        if need_patches and layout.patch_dtype is not None:
            if self.dirty:
                self.handle.flush()
                self.dirty = False
            itemsize = np.dtype(_DTYPES[layout.patch_dtype]).itemsize
            count = layout.patches * layout.dim
            array = np.fromfile(self.tmp, dtype=_DTYPES[layout.patch_dtype], count=count,
                                offset=row * count * itemsize).reshape(layout.patches, layout.dim)
            patches = _patches_from(array, layout, self.norms[row] if layout.unit_patches else None)
        stats = self.stats[row]
        return CachedFeatures(
            global_embed=_as_tensor(self.globals[row], layout.global_dtype),
            patch_embeds=patches, grid_size=layout.grid,
            patch_mean=torch.from_numpy(self.means[row].copy()),
            stats=stats.copy() if np.isfinite(stats).all() else None,
        )

    def commit(self) -> tuple[str, int, dict[str, Any]]:
        """Write the small arrays and the footer, fsync once, move into place."""
        layout = self.layout
        arrays: dict[str, dict[str, Any] | None] = {}
        offset = 0
        if layout.patch_dtype is not None:
            arrays["patch"] = {"offset": 0, "dtype": layout.patch_dtype,
                               "shape": [self.rows, layout.patches, layout.dim]}
            offset = self.rows * layout.patches * layout.dim * np.dtype(_DTYPES[layout.patch_dtype]).itemsize
        blocks = [("global", np.stack(self.globals), layout.global_dtype),
                  ("mean", np.stack(self.means).astype(np.float32), "float32")]
        stats = np.stack(self.stats).astype(np.float64)
        blocks.append(("stats", stats, "float64"))
        if layout.unit_patches:
            blocks.append(("norm", np.stack(self.norms).astype(np.float32), "float32"))
        small = hashlib.sha256()
        for name, array, dtype in blocks:
            data = np.ascontiguousarray(array).tobytes()
            self.handle.write(data)
            small.update(data)
            arrays[name] = {"offset": offset, "dtype": dtype, "shape": list(array.shape)}
            offset += len(data)
        footer = {
            "format": "conceptlens-feature-shard", "version": 2, "rows": self.rows,
            "dim": layout.dim, "patches": layout.patches, "grid": list(layout.grid),
            "unit_patches": layout.unit_patches, "arrays": arrays, "keys": self.keys,
            "checksum": {"small": small.hexdigest(), "patch": self.patch_digest.hexdigest()},
        }
        raw = json.dumps(footer, sort_keys=True).encode()
        self.handle.write(raw)
        self.handle.write(_TRAILER.pack(len(raw), _MAGIC))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        final = self.directory / self.name
        os.replace(self.tmp, final)
        return self.name, final.stat().st_size, _checked_footer(footer, final.stat().st_size)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        _remove(self.tmp)


def _patches_from(array: np.ndarray, layout: _Layout, norms: np.ndarray | None) -> torch.Tensor:
    tensor = _as_tensor(array, layout.patch_dtype)
    if norms is not None:
        tensor = tensor.float() * torch.from_numpy(np.array(norms, dtype=np.float32))[:, None]
    return tensor


def _read_footer(path: Path) -> dict[str, Any]:
    """The verified footer of a shard file (offsets, shapes, dtypes, keys; small checksum
    not yet checked)."""
    size = path.stat().st_size
    if size < _TRAILER.size:
        raise FeatureStoreError(f"{path.name}: too short to be a shard")
    with open(path, "rb") as handle:
        handle.seek(size - _TRAILER.size)
        length, magic = _TRAILER.unpack(handle.read(_TRAILER.size))
        if magic != _MAGIC or length > min(_MAX_FOOTER, size - _TRAILER.size):
            raise FeatureStoreError(f"{path.name}: no shard footer")
        handle.seek(size - _TRAILER.size - length)
        raw = handle.read(length)
    try:
        footer = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FeatureStoreError(f"{path.name}: unreadable footer") from error
    return _checked_footer(footer, size - _TRAILER.size - length)


def _checked_footer(footer: Any, data_end: int) -> dict[str, Any]:
    """``footer`` if every field is consistent, else :class:`FeatureStoreError`."""
    try:
        rows, dim, n_patches = int(footer["rows"]), int(footer["dim"]), int(footer["patches"])
        grid = tuple(int(v) for v in footer["grid"])
        arrays, keys = footer["arrays"], footer["keys"]
        ok = (footer["format"] == "conceptlens-feature-shard" and footer["version"] == 2
              and rows >= 1 and dim >= 1 and len(grid) == 2 and min(grid) >= 1
              and (n_patches == 0 or grid[0] * grid[1] == n_patches)
              and isinstance(keys, list) and len(keys) == rows and len(set(keys)) == rows
              and isinstance(footer["checksum"]["small"], str)
              and isinstance(footer["checksum"]["patch"], str))
        if ok:
            for key in keys:
                _check_key(key)
        expected = {"global": [rows, dim], "mean": [rows, dim], "stats": [rows, _STATS_WIDTH]}
        if n_patches:
            expected["patch"] = [rows, n_patches, dim]
        if footer.get("unit_patches"):
            expected["norm"] = [rows, n_patches]
        ok = ok and set(arrays) == set(expected)
        spans = []
        for name, shape in expected.items():
            if not ok:
                break
            entry = arrays[name]
            dtype = entry["dtype"]
            allowed = {"mean": ("float32",), "stats": ("float64",), "norm": ("float32",)}.get(
                name, tuple(_DTYPES))
            ok = dtype in allowed and [int(v) for v in entry["shape"]] == shape
            if ok:
                start = int(entry["offset"])
                nbytes = int(np.prod(shape)) * np.dtype(_DTYPES.get(dtype, np.float64)).itemsize
                ok = 0 <= start and start + nbytes <= data_end
                spans.append((start, start + nbytes))
        spans.sort()
        ok = ok and all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise FeatureStoreError(f"malformed shard footer: {error}") from error
    if not ok:
        raise FeatureStoreError("inconsistent shard footer")
    return footer


class _ShardReader:
    """A committed shard, memory-mapped; small arrays verified on open, patches on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        footer = _read_footer(path)
        self.footer = footer
        self.rows = int(footer["rows"])
        self.keys: list[str] = footer["keys"]
        self.layout = _Layout(
            dim=int(footer["dim"]), patches=int(footer["patches"]),
            grid=(int(footer["grid"][0]), int(footer["grid"][1])),
            global_dtype=footer["arrays"]["global"]["dtype"],
            patch_dtype=footer["arrays"]["patch"]["dtype"] if "patch" in footer["arrays"] else None,
            unit_patches=bool(footer.get("unit_patches")),
        )
        small = hashlib.sha256()
        loaded = {}
        for name in ("global", "mean", "stats", "norm"):
            entry = footer["arrays"].get(name)
            if entry is None:
                continue
            array = self._map(entry)
            loaded[name] = np.array(array)
            small.update(loaded[name].tobytes())
        if small.hexdigest() != footer["checksum"]["small"]:
            raise FeatureStoreError(f"{path.name}: checksum mismatch")
        self.globals, self.means = loaded["global"], loaded["mean"]
        self.stats, self.norms = loaded["stats"], loaded.get("norm")
        if not (np.isfinite(self.means).all()):
            raise FeatureStoreError(f"{path.name}: non-finite values")
        self._patches: np.ndarray | None = None

    def _map(self, entry: dict[str, Any]) -> np.ndarray:
        return np.memmap(self.path, dtype=_DTYPES.get(entry["dtype"], np.float64), mode="r",
                         offset=int(entry["offset"]), shape=tuple(int(v) for v in entry["shape"]))

    def patches(self) -> np.ndarray:
        if self._patches is None:
            mapped = self._map(self.footer["arrays"]["patch"])
            digest = hashlib.sha256()
            flat = mapped.reshape(-1).view(np.uint8)
            step = 1 << 26
            for start in range(0, flat.shape[0], step):
                digest.update(flat[start:start + step])
            if digest.hexdigest() != self.footer["checksum"]["patch"]:
                raise FeatureStoreError(f"{self.path.name}: patch checksum mismatch")
            self._patches = mapped
        return self._patches

    def read(self, row: int, need_patches: bool) -> CachedFeatures:
        layout = self.layout
        patches = None
        if need_patches and layout.patch_dtype is not None:
            norms = self.norms[row] if self.norms is not None else None
            patches = _patches_from(self.patches()[row], layout, norms)
        stats = self.stats[row]
        return CachedFeatures(
            global_embed=_as_tensor(self.globals[row], layout.global_dtype),
            patch_embeds=patches, grid_size=layout.grid,
            patch_mean=torch.from_numpy(np.array(self.means[row])),
            stats=np.array(stats) if np.isfinite(stats).all() else None,
        )


# ----------------------------------------------------------------------------------------------
# Format 1 entries (read-only)
# ----------------------------------------------------------------------------------------------


def _from_numpy_v1(array: np.ndarray, dtype_name: str) -> torch.Tensor:
    if dtype_name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    tensor = torch.from_numpy(array.copy())
    expected = getattr(torch, dtype_name, None)
    if not isinstance(expected, torch.dtype) or tensor.dtype != expected:
        raise ValueError(f"stored dtype {tensor.dtype} does not match recorded {dtype_name!r}")
    return tensor


def _checksum(global_array: np.ndarray, patch_array: np.ndarray) -> bytes:
    """SHA-256 of a format-1 entry's arrays."""
    digest = hashlib.sha256()
    for array in (global_array, patch_array):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


def _read_v1_entry(path: Path) -> CachedFeatures | None:
    with np.load(path, allow_pickle=False) as data:
        if int(data["version"]) != _V1_VERSION:
            return None
        global_array, patch_array = data["global"], data["patch"]
        if bytes(data["checksum"].tobytes()) != _checksum(global_array, patch_array):
            return None
        grid = tuple(int(v) for v in data["grid"])
        dtype_name = str(data["dtype"])
    if (global_array.ndim != 1 or patch_array.ndim != 2 or len(grid) != 2
            or min(grid) < 1 or grid[0] * grid[1] != patch_array.shape[0]
            or patch_array.shape[1] != global_array.shape[0] or global_array.shape[0] == 0):
        return None
    patches = _from_numpy_v1(patch_array, dtype_name)
    return CachedFeatures(
        global_embed=_from_numpy_v1(global_array, dtype_name),
        patch_embeds=patches,
        grid_size=(grid[0], grid[1]),
        patch_mean=patch_mean_of(patches),
    )


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        path.unlink()
