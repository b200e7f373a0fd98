"""On-disk cache of image features, so that re-scoring never re-runs the image tower.

One entry per (image content, backbone identity): the global embedding ``(D,)`` and the
patch embeddings ``(P, D)`` an image produced, in the backbone's own dtype (``bfloat16`` is
stored bit-exactly as ``uint16``), in a NumPy ``.npz`` file read with ``allow_pickle=False``.

* **Key**: SHA-256 over the decoded RGB pixels and size of the loaded image (so the same
  picture saved under two names, or re-encoded losslessly, hits the same entry) and the
  backbone's :attr:`~conceptlens.models.BackboneIdentity.key`, which covers model id,
  revision, weights hash, dtype and the preprocessing description.
* **Atomic writes**: each entry is written to a temporary file in the same folder and moved
  into place with :func:`os.replace`; a reader never sees half an entry, and a run killed
  mid-way leaves every finished entry usable.
* **Integrity**: each entry stores a SHA-256 of its arrays; an entry that fails to load,
  whose checksum does not match, whose arrays disagree with each other (global ``(D,)`` vs
  patch ``(P, D)`` vs grid) or with the shape the caller expects (``embed_dim=``) is
  deleted and reported as a miss (it is then recomputed). The checksum proves that an entry
  is intact, not which image it belongs to: anyone who can write to the cache folder can
  plant features under any key, so keep the folder as private as the images.
* **Bounded size**: with ``max_bytes``, the least recently used entries (by file
  modification time, refreshed on every hit) are evicted after each write.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conceptlens.models.base import BackboneIdentity

__all__ = ["CachedFeatures", "FeatureCache", "image_content_hash"]

_SUFFIX = ".npz"
_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
_FORMAT_VERSION = 1


@dataclass
class CachedFeatures:
    """Features of one image as stored in the cache.

    Attributes:
        global_embed: ``(D,)`` L2-normalised global embedding, in the backbone's dtype.
        patch_embeds: ``(P, D)`` patch embeddings, not normalised, in the backbone's dtype.
        grid_size: ``(grid_h, grid_w)`` with ``grid_h * grid_w == P``.
    """

    global_embed: torch.Tensor
    patch_embeds: torch.Tensor
    grid_size: tuple[int, int]


def image_content_hash(image: Image.Image) -> str:
    """SHA-256 hex digest of an image's decoded pixels, mode and size.

    Args:
        image: A PIL image (typically the RGB image of a
            :class:`~conceptlens.models.images.LoadedImage`).

    Returns:
        64 hex characters; equal for pixel-identical images whatever their file name or format.
    """
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class FeatureCache:
    """A folder of cached image features (see the module docstring for the guarantees).

    Args:
        directory: Folder to keep entries in (created on first write).
        max_bytes: Upper bound on the total size of the entries; ``None`` for no bound.

    Attributes:
        hits: Entries found and valid since creation.
        misses: Lookups that found nothing (including corrupt entries).
        corrupt: Entries that failed to load or verify and were deleted.

    Examples:
        >>> import tempfile, torch
        >>> from conceptlens.models.base import BackboneIdentity
        >>> cache = FeatureCache(tempfile.mkdtemp())
        >>> key = cache.key("0" * 64, BackboneIdentity("demo", "demo"))
        >>> cache.put(key, torch.ones(4), torch.zeros(9, 4), (3, 3))
        >>> cache.get(key).grid_size
        (3, 3)
    """

    def __init__(self, directory: str | os.PathLike, max_bytes: int | None = None) -> None:
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes <= 0):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"feature cache directory is a file: {self.directory}")
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    # -- keys -------------------------------------------------------------------------------

    @staticmethod
    def key(content_hash: str, identity: BackboneIdentity) -> str:
        """Entry key for an image (by :func:`image_content_hash`) under a backbone identity."""
        payload = f"v{_FORMAT_VERSION}|{content_hash}|{identity.key}|{identity.preprocessing}"
        return hashlib.sha256(payload.encode()).hexdigest()

    def path_for(self, key: str) -> Path:
        """File that holds (or would hold) entry ``key``.

        Raises:
            ValueError: ``key`` is not 64 lower-case hex digits (as :meth:`key` returns), so
                that no key can name a file outside the cache folder.
        """
        if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
            raise ValueError(f"cache key must be 64 lower-case hex digits (from FeatureCache.key), got {key!r}")
        return self.directory / key[:2] / f"{key}{_SUFFIX}"

    # -- access -----------------------------------------------------------------------------

    def get(self, key: str, *, embed_dim: int | None = None) -> CachedFeatures | None:
        """The entry for ``key``, or ``None`` if absent or corrupt (corrupt ones are deleted).

        Args:
            key: From :meth:`key`.
            embed_dim: The embedding width the caller's backbone produces; an entry of
                another width (intact but not from this model) counts as corrupt.
        """
        path = self.path_for(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            features = _read_entry(path)
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile):
            features = None
        if (features is not None and embed_dim is not None
                and features.global_embed.shape[0] != embed_dim):
            features = None
        if features is None:
            self.corrupt += 1
            self.misses += 1
            _remove(path)
            return None
        self.hits += 1
        try:
            os.utime(path)
        except OSError:
            pass
        return features

    def put(
        self,
        key: str,
        global_embed: torch.Tensor,
        patch_embeds: torch.Tensor,
        grid_size: tuple[int, int],
    ) -> None:
        """Store one image's features atomically, then evict old entries if over budget.

        Args:
            key: From :meth:`key`.
            global_embed: ``(D,)`` tensor.
            patch_embeds: ``(P, D)`` tensor.
            grid_size: ``(grid_h, grid_w)``.
        """
        if global_embed.ndim != 1 or patch_embeds.ndim != 2:
            raise ValueError(
                f"expected global (D,) and patch (P, D) features, got {tuple(global_embed.shape)} "
                f"and {tuple(patch_embeds.shape)}"
            )
        dtype_name = str(global_embed.dtype).removeprefix("torch.")
        arrays = {
            "global": _to_numpy(global_embed),
            "patch": _to_numpy(patch_embeds),
        }
        meta = {
            "grid": np.asarray(grid_size, dtype=np.int64),
            "dtype": np.asarray(dtype_name),
            "version": np.asarray(_FORMAT_VERSION, dtype=np.int64),
            "checksum": np.frombuffer(_checksum(arrays["global"], arrays["patch"]), dtype=np.uint8),
        }
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", suffix=_SUFFIX, delete=False)
        try:
            with handle:
                np.savez(handle, **arrays, **meta)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(handle.name, path)
        except BaseException:
            _remove(Path(handle.name))
            raise
        if self.max_bytes is not None:
            self.evict(self.max_bytes)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(_KEY_PATTERN.fullmatch(key)) and self.path_for(key).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self._entries())

    @property
    def size_bytes(self) -> int:
        """Total size of the entries on disk."""
        return sum(size for _, size, _ in self._entries())

    def evict(self, max_bytes: int) -> int:
        """Delete least recently used entries until the total size is at most ``max_bytes``.

        Returns:
            Number of entries deleted.
        """
        entries = sorted(self._entries(), key=lambda e: e[2])
        total = sum(size for _, size, _ in entries)
        removed = 0
        for path, size, _ in entries:
            if total <= max_bytes:
                break
            _remove(path)
            total -= size
            removed += 1
        return removed

    def clear(self) -> int:
        """Delete every entry (and stray temporary files). Returns the number of entries deleted."""
        removed = 0
        if not self.directory.is_dir():
            return 0
        for path in self.directory.glob(f"*/*{_SUFFIX}"):
            removed += not path.name.startswith(".tmp-")
            _remove(path)
        for sub in self.directory.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                try:
                    sub.rmdir()
                except OSError:
                    pass
        return removed

    def _entries(self) -> Iterator[tuple[Path, int, float]]:
        if not self.directory.is_dir():
            return
        for path in self.directory.glob(f"*/*{_SUFFIX}"):
            if path.name.startswith(".tmp-"):
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            yield path, stat.st_size, stat.st_mtime

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r}, max_bytes={self.max_bytes})"


# ----------------------------------------------------------------------------------------------
# Entry encoding
# ----------------------------------------------------------------------------------------------


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def _from_numpy(array: np.ndarray, dtype_name: str) -> torch.Tensor:
    if dtype_name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    tensor = torch.from_numpy(array.copy())
    expected = getattr(torch, dtype_name, None)
    if not isinstance(expected, torch.dtype) or tensor.dtype != expected:
        raise ValueError(f"stored dtype {tensor.dtype} does not match recorded {dtype_name!r}")
    return tensor


def _checksum(global_array: np.ndarray, patch_array: np.ndarray) -> bytes:
    digest = hashlib.sha256()
    for array in (global_array, patch_array):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


def _read_entry(path: Path) -> CachedFeatures | None:
    with np.load(path, allow_pickle=False) as data:
        if int(data["version"]) != _FORMAT_VERSION:
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
    return CachedFeatures(
        global_embed=_from_numpy(global_array, dtype_name),
        patch_embeds=_from_numpy(patch_array, dtype_name),
        grid_size=(grid[0], grid[1]),
    )


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
