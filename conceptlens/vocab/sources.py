"""Image sources: turn whatever a user has (paths, a folder, a CSV manifest, PIL images,
arrays, a torch ``Dataset``, any iterable) into a stream of named, lazily loaded images.

Every item is an :class:`ImageSource`: an image id (the row label of a score table) and a
zero-argument ``load`` callable returning a :class:`~conceptlens.models.images.LoadedImage`.
Loading is deferred so that a folder of a hundred thousand files costs nothing until a batch
needs its pixels, and so that one unreadable file fails alone (the scorer reports it in
``ConceptScores.errors`` and carries on).

Image ids
---------
* a path (given directly, found in a folder, or listed in a manifest): the path as a string;
* an item of a mapping ``{id: image}``: its key;
* a ``dict`` item with an ``"id"`` / ``"image_id"`` key (e.g. from a dataset): that value;
* anything else: ``"image_<position>"``.

Repeated ids get a ``"#2"``, ``"#3"`` ... suffix so that the rows of a table stay unique.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from conceptlens.models.images import LoadedImage, is_image_file, load_image

__all__ = ["ImageSource", "MANIFEST_PATH_COLUMNS", "count_images", "iter_image_sources"]

#: Column names tried, in order, for the image path of a CSV manifest.
MANIFEST_PATH_COLUMNS: tuple[str, ...] = ("path", "image_path", "image", "file", "filename")
_MANIFEST_ID_COLUMNS: tuple[str, ...] = ("image_id", "id")
_DICT_IMAGE_KEYS: tuple[str, ...] = ("image", "img", "pixel_values", "path", "file")


@dataclass(frozen=True)
class ImageSource:
    """One image to score: its id and how to load it.

    Attributes:
        image_id: Row label for the image in score tables.
        load: Zero-argument callable returning a
            :class:`~conceptlens.models.images.LoadedImage`; raises
            :class:`~conceptlens.models.images.ImageLoadError` (or another exception) when the
            image cannot be read.
    """

    image_id: str
    load: Callable[[], LoadedImage]


def iter_image_sources(
    images: Any,
    *,
    path_column: str | None = None,
    id_column: str | None = None,
) -> Iterator[ImageSource]:
    """Expand an image collection into :class:`ImageSource` items, lazily.

    Args:
        images: One of

            * a path to an image file, to a folder (image files found recursively, sorted),
              or to a ``.csv`` manifest whose path column lists image files (relative paths
              resolve against the manifest's folder);
            * a single PIL image, a NumPy array ``(H, W[, C])`` or a torch tensor
              ``([C,] H, W)``; a 4-D array or tensor is a batch of images;
            * a mapping ``{image_id: image}``;
            * a sequence, iterable or torch ``Dataset`` (``__len__`` + ``__getitem__``) whose
              items are any of the single-image types above, tuples ``(image, label, ...)``
              (the first element is the image) or dicts with an ``"image"`` / ``"path"`` key.
        path_column: Manifest column holding the paths (default: the first of
            :data:`MANIFEST_PATH_COLUMNS` present).
        id_column: Manifest column holding image ids (default: ``"image_id"`` or ``"id"`` if
            present, else the path as written).

    Yields:
        ImageSource: in input order, ids made unique.

    Raises:
        FileNotFoundError: ``images`` is a path that does not exist.
        ValueError: A manifest without a usable path column, or an empty folder.
        TypeError: ``images`` is of a type that holds no images (e.g. an int).

    Examples:
        >>> import numpy as np
        >>> [s.image_id for s in iter_image_sources([np.zeros((4, 4, 3), np.uint8)] * 2)]
        ['image_0', 'image_1']
    """
    seen: dict[str, int] = {}
    for source in _expand(images, path_column=path_column, id_column=id_column):
        count = seen.get(source.image_id, 0) + 1
        seen[source.image_id] = count
        if count > 1:
            source = ImageSource(f"{source.image_id}#{count}", source.load)
        yield source


def count_images(images: Any) -> int | None:
    """Number of images :func:`iter_image_sources` will yield, if known without loading.

    Used for progress-bar totals; returns ``None`` for one-shot iterators and folders
    (which would have to be walked twice).
    """
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        return 1 if path.is_file() and path.suffix.lower() != ".csv" else None
    if isinstance(images, (Image.Image,)):
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


def _expand(images: Any, *, path_column: str | None, id_column: str | None) -> Iterator[ImageSource]:
    if isinstance(images, (str, os.PathLike)):
        yield from _expand_path(Path(images), path_column=path_column, id_column=id_column)
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
            yield _item_source(f"image_{index}", item, infer_id=True)
        return
    raise TypeError(
        f"images must be a path, a folder, a CSV manifest, a PIL image, an array, a tensor, a "
        f"mapping, a sequence or a torch Dataset; got {type(images).__name__}"
    )


def _expand_path(path: Path, *, path_column: str | None, id_column: str | None) -> Iterator[ImageSource]:
    if not path.exists():
        raise FileNotFoundError(f"image source not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if is_image_file(p))
        if not files:
            raise ValueError(f"no image files found in folder {path}")
        for file in files:
            yield _single(str(file), file)
        return
    if path.suffix.lower() == ".csv":
        yield from _expand_manifest(path, path_column=path_column, id_column=id_column)
        return
    yield _single(str(path), path)


def _expand_manifest(path: Path, *, path_column: str | None, id_column: str | None) -> Iterator[ImageSource]:
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    column = path_column or next((c for c in MANIFEST_PATH_COLUMNS if c in frame.columns), None)
    if column is None or column not in frame.columns:
        wanted = repr(path_column) if path_column else " or ".join(map(repr, MANIFEST_PATH_COLUMNS))
        raise ValueError(
            f"manifest {path} has no path column {wanted}; columns are {list(frame.columns)} "
            "(pass path_column=...)"
        )
    if id_column is not None and id_column not in frame.columns:
        raise ValueError(f"manifest {path} has no id column {id_column!r}; columns are {list(frame.columns)}")
    ids = id_column or next((c for c in _MANIFEST_ID_COLUMNS if c in frame.columns), None)
    base = path.parent
    for row_number, (written, image_id) in enumerate(
        zip(frame[column], frame[ids] if ids else frame[column], strict=True), start=2
    ):
        if not written.strip():
            yield ImageSource(image_id or f"{path.name}:row{row_number}",
                              _raiser(ValueError(f"manifest {path} row {row_number}: empty path")))
            continue
        file = Path(written)
        if not file.is_absolute():
            file = base / file
        yield _single(image_id or written, file)


def _dataset_source(dataset: Any, index: int) -> ImageSource:
    def load() -> LoadedImage:
        return _load_item(dataset[index], f"{type(dataset).__name__}[{index}]")

    return ImageSource(f"image_{index}", load)


def _item_source(default_id: str, item: Any, *, infer_id: bool = False) -> ImageSource:
    image_id = default_id
    if infer_id:
        if isinstance(item, (str, os.PathLike)):
            image_id = str(item)
        elif isinstance(item, Mapping):
            image_id = next((str(item[k]) for k in _MANIFEST_ID_COLUMNS if k in item), default_id)
            if image_id == default_id and isinstance(item.get("path"), (str, os.PathLike)):
                image_id = str(item["path"])
    return ImageSource(image_id, lambda: _load_item(item, image_id))


def _single(image_id: str, source: Any) -> ImageSource:
    return ImageSource(image_id, lambda: load_image(source))


def _load_item(item: Any, where: str) -> LoadedImage:
    if isinstance(item, Mapping):
        key = next((k for k in _DICT_IMAGE_KEYS if k in item), None)
        if key is None:
            raise TypeError(f"{where}: a dict item needs one of the keys {list(_DICT_IMAGE_KEYS)}")
        item = item[key]
    elif isinstance(item, (tuple, list)) and item:
        item = item[0]
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
