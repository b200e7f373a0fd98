"""Image sources: turn whatever a user has (paths, a folder, a CSV manifest, PIL images,
arrays, a torch ``Dataset``, any iterable) into a stream of named, lazily loaded images.

Every item is an :class:`ImageSource`: an image id (the row label of a score table) and a
zero-argument ``load`` callable returning a :class:`~conceptlens.models.images.LoadedImage`.
Loading is deferred so that a folder of a hundred thousand files costs nothing until a batch
needs its pixels, and so that one unreadable file fails alone (the scorer reports it in
``ConceptScores.errors`` and carries on).

Image ids
---------
One rule, so that a labels file written by hand matches the score table:

* a folder: the file's path *relative to that folder*, with ``/`` separators
  (``benign/robot_28949.png``); the folder's own location never enters the id, so a score
  table made on one machine matches labels made on another;
* a CSV manifest: its id column (``image_id`` / ``id``) if present, else the path cell as
  written in the manifest (relative paths resolve against the manifest's folder);
* a path given directly: the path as given;
* a :class:`~conceptlens.models.images.LoadedImage` read from a file: that path;
* an item of a mapping ``{id: image}``: its key;
* a ``dict`` item with an ``"id"`` / ``"image_id"`` key (e.g. from a dataset): that value;
* an :class:`ImageSource` (e.g. built by the CLI): its own id;
* anything else: ``"image_<position>"``.

Repeated ids get a ``"#2"``, ``"#3"`` ... suffix so that the rows of a table stay unique.
Tables of labels or decisions are matched to these ids by id, relative path or file name
(:mod:`conceptlens._io.image_keys`).

What a folder skips, and says so
--------------------------------
Folders are walked recursively in sorted order. Hidden entries (names starting with ``.``)
are ignored. Everything else that is not an image is *reported*, not dropped: it becomes an
item whose ``load`` raises :class:`SkippedFileError` with the reason (a file with another
suffix, a broken symbolic link, a symbolic-link loop, a folder that cannot be listed), so
it shows up in ``ConceptScores.errors`` and in the CLI's "skipped" lines while every image
is scored. Symbolic links to folders are followed once (a link back into a folder already
walked is reported as a loop).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from conceptlens._io.files import os_error_reason
from conceptlens._io.tables import line_of, read_table
from conceptlens.errors import ConceptlensError
from conceptlens.models.images import IMAGE_SUFFIXES, LoadedImage, has_dicom_magic, load_image

__all__ = [
    "ImageSource",
    "MANIFEST_PATH_COLUMNS",
    "SkippedFileError",
    "count_images",
    "iter_image_sources",
]

#: Column names tried, in order, for the image path of a CSV manifest.
MANIFEST_PATH_COLUMNS: tuple[str, ...] = ("path", "image_path", "image", "file", "filename")
_MANIFEST_ID_COLUMNS: tuple[str, ...] = ("image_id", "id")
_DICT_IMAGE_KEYS: tuple[str, ...] = ("image", "img", "pixel_values", "path", "file")


class SkippedFileError(ConceptlensError, ValueError):
    """A folder entry that is not scored, with the reason (see the module docstring)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"skipped {path!r}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ImageSource:
    """One image to score: its id and how to load it.

    Attributes:
        image_id: Row label for the image in score tables.
        load: Zero-argument callable returning a
            :class:`~conceptlens.models.images.LoadedImage`; raises
            :class:`~conceptlens.models.images.ImageLoadError` (or another exception) when the
            image cannot be read.
        path: The image file, when the image comes from one (lets a feature store recognise
            a file it has seen by its size and modification time, without opening it).
        frame: The ``frame`` option the file is read with.
    """

    image_id: str
    load: Callable[[], LoadedImage]
    path: str | None = None
    frame: int | None = None


def iter_image_sources(
    images: Any,
    *,
    path_column: str | None = None,
    id_column: str | None = None,
    frame: int | None = None,
) -> Iterator[ImageSource]:
    """Expand an image collection into :class:`ImageSource` items, lazily.

    Args:
        images: One of

            * a path to an image file, to a folder (image files found recursively, sorted),
              or to a ``.csv`` manifest whose path column lists image files (relative paths
              resolve against the manifest's folder);
            * a single PIL image, a NumPy array ``(H, W[, C])`` or a torch tensor
              ``([C,] H, W)``; a 4-D array or tensor is a batch of images;
            * a :class:`~conceptlens.models.images.LoadedImage`, used as it is (never
              loaded again; its id is its path, else ``"image_<position>"``);
            * a mapping ``{image_id: image}``;
            * a sequence, iterable or torch ``Dataset`` (``__len__`` + ``__getitem__``) whose
              items are any of the single-image types above, tuples ``(image, label, ...)``
              (the first element is the image) or dicts with an ``"image"`` / ``"path"`` key.
        path_column: Manifest column holding the paths (default: the first of
            :data:`MANIFEST_PATH_COLUMNS` present).
        id_column: Manifest column holding image ids (default: ``"image_id"`` or ``"id"`` if
            present, else the path as written).
        frame: Frame to read from multi-frame files (multi-frame DICOM, multi-page TIFF,
            animated GIF) found by path; single-frame files ignore it. Without it, a
            multi-frame file fails alone with a message saying so.

    Yields:
        ImageSource: in input order, ids made unique.

    Raises:
        FileNotFoundError: ``images`` is a path that does not exist.
        ValueError: A manifest without a usable path column, a folder without any image
            file, or a negative ``frame``.
        TypeError: ``images`` is of a type that holds no images (e.g. an int).

    Examples:
        >>> import numpy as np
        >>> [s.image_id for s in iter_image_sources([np.zeros((4, 4, 3), np.uint8)] * 2)]
        ['image_0', 'image_1']
    """
    seen: dict[str, int] = {}
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int) or frame < 0):
        raise ValueError(f"frame must be a non-negative int or None, got {frame!r}")
    for source in _expand(images, path_column=path_column, id_column=id_column, frame=frame):
        count = seen.get(source.image_id, 0) + 1
        seen[source.image_id] = count
        if count > 1:
            source = replace(source, image_id=f"{source.image_id}#{count}")
        yield source


def count_images(images: Any) -> int | None:
    """Number of images :func:`iter_image_sources` will yield, if known without loading.

    Used for progress-bar totals; returns ``None`` for one-shot iterators and folders
    (which would have to be walked twice).
    """
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        return 1 if path.is_file() and path.suffix.lower() != ".csv" else None
    if isinstance(images, (Image.Image, LoadedImage)):
        return 1
    if isinstance(images, np.ndarray) or _is_tensor(images):
        return int(images.shape[0]) if images.ndim == 4 else 1
    if isinstance(images, Mapping) or hasattr(images, "__len__"):
        try:
            return len(images)
        except TypeError:
            return None
    return None


# ----------------------------------------------------------------------------------------------
# Expansion
# ----------------------------------------------------------------------------------------------


def _expand(images: Any, *, path_column: str | None, id_column: str | None,
            frame: int | None) -> Iterator[ImageSource]:
    if isinstance(images, ImageSource):
        yield images
        return
    if isinstance(images, LoadedImage):
        yield _item_source("image_0", images, infer_id=True)
        return
    if isinstance(images, (str, os.PathLike)):
        yield from _expand_path(Path(images), path_column=path_column, id_column=id_column,
                                frame=frame)
        return
    if isinstance(images, (Image.Image, bytes, bytearray)):
        yield _single("image_0", images)
        return
    if isinstance(images, np.ndarray) or _is_tensor(images):
        if images.ndim == 4:
            for index in range(images.shape[0]):
                yield _single(f"image_{index}", images[index])
        else:
            yield _single("image_0", images)
        return
    if isinstance(images, Mapping):
        for key, item in images.items():
            yield _item_source(str(key), item)
        return
    if _is_dataset(images):
        for index in range(len(images)):
            yield _dataset_source(images, index)
        return
    if isinstance(images, Iterable):
        for index, item in enumerate(images):
            if isinstance(item, ImageSource):
                yield item
            else:
                yield _item_source(f"image_{index}", item, infer_id=True, frame=frame)
        return
    raise TypeError(
        f"images must be a path, a folder, a CSV manifest, a PIL image, an array, a tensor, a "
        f"mapping, a sequence or a torch Dataset; got {type(images).__name__}"
    )


def _expand_path(path: Path, *, path_column: str | None, id_column: str | None,
                 frame: int | None) -> Iterator[ImageSource]:
    if not path.exists():
        if path.is_symlink():
            raise FileNotFoundError(f"image source {path} is a broken symbolic link")
        raise FileNotFoundError(f"image source not found: {path}")
    if path.is_dir():
        entries = list(_walk_folder(path))
        if not any(reason is None for _, _, reason in entries):
            skipped = f" ({len(entries)} other file(s) skipped)" if entries else ""
            raise ValueError(f"no image files found in folder {path}{skipped}")
        for image_id, file, reason in entries:
            if reason is None:
                yield _single(image_id, file, frame=frame)
            else:
                yield ImageSource(image_id, _raiser(SkippedFileError(str(file), reason)))
        return
    if path.suffix.lower() == ".csv":
        yield from _expand_manifest(path, path_column=path_column, id_column=id_column,
                                    frame=frame)
        return
    yield _single(str(path), path, frame=frame)


def _walk_folder(root: Path) -> Iterator[tuple[str, Path, str | None]]:
    """``(id, path, skip reason or None)`` for every non-hidden entry under ``root``, sorted
    by id; symbolic links to folders are followed once (loops reported)."""
    found: list[tuple[str, Path, str | None]] = []
    visited: set[str] = set()

    def report(error: OSError) -> None:
        where = Path(error.filename) if error.filename else root
        found.append((_relative(where, root), where,
                      "folder cannot be listed: " + os_error_reason(error)))

    for folder, dirs, files in os.walk(root, followlinks=True, onerror=report):
        real = os.path.realpath(folder)
        if real in visited:
            found.append((_relative(Path(folder), root), Path(folder),
                          "symbolic link loop (folder already walked); not followed"))
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            file = Path(folder) / name
            found.append((_relative(file, root), file, _skip_reason(file)))
        for name in list(dirs):
            sub = Path(folder) / name
            if sub.is_symlink() and os.path.realpath(sub) in visited | {real}:
                found.append((_relative(sub, root), sub,
                              "symbolic link loop (points to a folder above it); not followed"))
                dirs.remove(name)
    # os.walk reports a looping symlink to a folder as a *file* entry; broken links too
    found.sort(key=lambda item: item[0])
    yield from found


def _skip_reason(file: Path) -> str | None:
    """``None`` for an image file; otherwise why it is not scored."""
    try:
        file.stat()
    except OSError as error:
        if file.is_symlink():
            if error.errno == errno.ELOOP:
                return "symbolic link loop"
            return "broken symbolic link (its target does not exist)"
        return "cannot be read: " + os_error_reason(error)
    if file.suffix.lower() in IMAGE_SUFFIXES or has_dicom_magic(file):
        return None
    suffix = file.suffix.lower() or "no suffix"
    return (f"not an image file ({suffix}; images are "
            f"{', '.join(sorted(IMAGE_SUFFIXES))} or DICOM without a suffix)")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _expand_manifest(path: Path, *, path_column: str | None, id_column: str | None,
                     frame: int | None) -> Iterator[ImageSource]:
    table = read_table(path, what="manifest")
    column = path_column or next((c for c in MANIFEST_PATH_COLUMNS if c in table.columns), None)
    if column is None or column not in table.columns:
        wanted = repr(path_column) if path_column else " or ".join(map(repr, MANIFEST_PATH_COLUMNS))
        raise ValueError(
            f"manifest {path} has no path column {wanted}; columns are {list(table.columns)} "
            "(pass path_column=...)"
        )
    if id_column is not None and id_column not in table.columns:
        raise ValueError(f"manifest {path} has no id column {id_column!r}; columns are {list(table.columns)}")
    ids = id_column or next((c for c in _MANIFEST_ID_COLUMNS if c in table.columns), None)
    base = path.parent
    for position, (written, image_id) in enumerate(
        zip(table[column], table[ids] if ids else table[column], strict=True)
    ):
        if not written.strip():
            where = line_of(table, position)
            yield ImageSource(image_id or f"{path.name}:{where.replace(' ', '')}",
                              _raiser(ValueError(f"manifest {path}, {where}: empty path")))
            continue
        file = Path(written)
        if not file.is_absolute():
            file = base / file
        yield _single(image_id or written, file, frame=frame)


def _dataset_source(dataset: Any, index: int) -> ImageSource:
    def load() -> LoadedImage:
        return _load_item(dataset[index], f"{type(dataset).__name__}[{index}]")

    return ImageSource(f"image_{index}", load)


def _item_source(default_id: str, item: Any, *, infer_id: bool = False,
                 frame: int | None = None) -> ImageSource:
    image_id = default_id
    if infer_id:
        if isinstance(item, (str, os.PathLike)):
            image_id = str(item)
        elif isinstance(item, LoadedImage):
            image_id = default_id if item.source.startswith("<") else item.source
        elif isinstance(item, Mapping):
            image_id = next((str(item[k]) for k in _MANIFEST_ID_COLUMNS if k in item), default_id)
            if image_id == default_id and isinstance(item.get("path"), (str, os.PathLike)):
                image_id = str(item["path"])
    path = os.path.abspath(item) if isinstance(item, (str, os.PathLike)) else None
    return ImageSource(image_id, lambda: _load_item(item, image_id, frame=frame), path=path,
                       frame=frame if path is not None else None)


def _single(image_id: str, source: Any, *, frame: int | None = None) -> ImageSource:
    path = os.path.abspath(source) if isinstance(source, (str, os.PathLike)) else None
    if frame is None:
        return ImageSource(image_id, lambda: load_image(source), path=path)
    return ImageSource(image_id, lambda: load_image(source, default_frame=frame), path=path,
                       frame=frame)


def _load_item(item: Any, where: str, *, frame: int | None = None) -> LoadedImage:
    if isinstance(item, LoadedImage):
        return item  # already loaded: used as it is
    if isinstance(item, Mapping):
        key = next((k for k in _DICT_IMAGE_KEYS if k in item), None)
        if key is None:
            raise TypeError(f"{where}: a dict item needs one of the keys {list(_DICT_IMAGE_KEYS)}")
        item = item[key]
    elif isinstance(item, (tuple, list)) and item:
        item = item[0]
    if frame is not None and isinstance(item, (str, os.PathLike)):
        return load_image(item, default_frame=frame)
    return load_image(item)


def _raiser(error: Exception) -> Callable[[], LoadedImage]:
    def load() -> LoadedImage:
        raise error

    return load


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "ndim") and hasattr(value, "shape")


def _is_dataset(value: Any) -> bool:
    if isinstance(value, (Sequence, Mapping, str, bytes)):
        return False
    return hasattr(value, "__getitem__") and hasattr(value, "__len__")
