"""Matching the rows of a labels / decisions table to the image ids of a score table.

The rule (documented in the README): a row of a table the user gives (labels, decisions,
concept annotations) belongs to the scored image whose id

1. equals the row's image key, else
2. is the same path as the key up to leading folders (``data/imgs/a/x.png`` and
   ``a/x.png``; separators ``/`` and ``\\`` are the same, a leading ``./`` is ignored), else
3. has the same file name (``x.png``).

The first rule that finds a row decides. A key that is empty or appears twice, an image that
two rows match, or a row that two images match is an error naming the file, the line and
the ids involved: nothing is guessed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from conceptlens._io.tables import line_of, read_table, to_numbers
from conceptlens.errors import ConceptlensError

__all__ = [
    "IMAGE_KEY_COLUMNS",
    "ImageKeyError",
    "image_key_column",
    "match_rows",
    "normalize_key",
    "read_aligned_column",
    "read_aligned_frame",
    "typed_values",
]

#: Columns of a labels / decisions / concept-labels table that hold the image key, in order.
IMAGE_KEY_COLUMNS: tuple[str, ...] = ("image", "path", "id", "image_id")

_INTEGER = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"[+-]?(0|[1-9][0-9]*)?\.[0-9]+|[+-]?(0|[1-9][0-9]*)\.")


class ImageKeyError(ConceptlensError, ValueError):
    """Rows of a table cannot be matched one-to-one to scored images; names file and rows."""


def normalize_key(text: str) -> str:
    """A path-like key in one spelling: ``/`` separators, no ``./`` prefix, no blanks around.

    Examples:
        >>> normalize_key(" .\\\\imgs\\\\a.png "), normalize_key("a//b/./c.png")
        ('imgs/a.png', 'a/b/c.png')
    """
    parts = [p for p in text.strip().replace("\\", "/").split("/") if p not in ("", ".")]
    prefix = "/" if text.strip().startswith(("/", "\\")) else ""
    return prefix + "/".join(parts)


def _suffixes(key: str) -> list[str]:
    parts = key.lstrip("/").split("/")
    return ["/".join(parts[i:]) for i in range(1, len(parts))]


def image_key_column(frame: pd.DataFrame) -> str | None:
    """The first of :data:`IMAGE_KEY_COLUMNS` that ``frame`` has, or ``None``."""
    return next((c for c in IMAGE_KEY_COLUMNS if c in frame.columns), None)


def match_rows(keys: Sequence[str], ids: Sequence[str], *, source: str,
               lines: Sequence[str] | None = None, require_all: bool = True) -> list[int | None]:
    """For each image id, the position of its row among ``keys`` (see the module rule).

    Args:
        keys: The image key of each row.
        ids: The scored image ids.
        source: The file, for messages.
        lines: How to call each row in messages (default ``"row N"``).
        require_all: Every id must find a row (else :class:`ImageKeyError`); when False,
            unmatched ids get ``None``.

    Raises:
        ImageKeyError: Empty or duplicate keys, ambiguous matches, or missing rows.
    """
    where = list(lines) if lines is not None else [f"row {i + 1}" for i in range(len(keys))]
    exact: dict[str, int] = {}
    by_suffix: dict[str, list[int]] = defaultdict(list)
    by_name: dict[str, list[int]] = defaultdict(list)
    for position, raw in enumerate(keys):
        key = normalize_key(str(raw))
        if not key:
            raise ImageKeyError(f"{source}, {where[position]}: empty image key")
        if key in exact:
            raise ImageKeyError(f"{source}, {where[position]}: image {str(raw).strip()!r} "
                                f"appears twice (also {where[exact[key]]})")
        exact[key] = position
        for suffix in _suffixes(key):
            by_suffix[suffix].append(position)
        by_name[key.rsplit("/", 1)[-1]].append(position)
    found: list[int | None] = []
    claimed: dict[int, str] = {}
    missing: list[str] = []
    for image_id in ids:
        key = normalize_key(str(image_id))
        candidates = [exact[key]] if key in exact else []
        if not candidates:
            longer = by_suffix.get(key, [])
            shorter = [exact[s] for s in _suffixes(key) if s in exact]
            candidates = sorted(set(longer) | set(shorter))
        if not candidates:
            candidates = by_name.get(key.rsplit("/", 1)[-1], [])
        if len(candidates) > 1:
            rows = ", ".join(f"{where[c]} ({keys[c]!r})" for c in candidates[:4])
            raise ImageKeyError(f"{source}: scored image {image_id!r} matches several rows: "
                                f"{rows}; write its id as in the score table")
        if not candidates:
            missing.append(str(image_id))
            found.append(None)
            continue
        row = candidates[0]
        if row in claimed:
            raise ImageKeyError(
                f"{source}, {where[row]}: image {keys[row]!r} matches several scored images "
                f"({claimed[row]!r}, {image_id!r}); write the id as in the score table"
            )
        claimed[row] = str(image_id)
        found.append(row)
    if missing and require_all:
        raise ImageKeyError(f"{source}: {len(missing)} scored image(s) have no row, e.g. "
                            f"{missing[:3]} (rows are matched by id, relative path or file name)")
    return found


def typed_values(values: Sequence[str]) -> np.ndarray:
    """Text cells as ``int64`` if all are integers written plainly, ``float64`` if all are
    plain decimals, else as text (so ``"001"`` and ``"1"`` stay different labels).

    Examples:
        >>> typed_values(["0", "1"]).dtype, typed_values(["0.5", "1"]).dtype
        (dtype('int64'), dtype('float64'))
        >>> typed_values(["001", "1"]).tolist()
        ['001', '1']
    """
    cells = [str(v).strip() for v in values]
    if cells and all(_INTEGER.fullmatch(c) for c in cells):
        return np.array([int(c) for c in cells], dtype=np.int64)
    if cells and all(_INTEGER.fullmatch(c) or _DECIMAL.fullmatch(c) for c in cells):
        return np.array([float(c) for c in cells], dtype=np.float64)
    return np.array(cells, dtype=object)


def _lines(frame: pd.DataFrame) -> list[str]:
    return [line_of(frame, i) for i in range(len(frame))]


def read_aligned_column(path: str | Path, column: str, ids: Sequence[str], *,
                        what: str) -> np.ndarray:
    """One column of a labels / decisions table, in the order of the scored ``ids``.

    The table is matched to ``ids`` by its image column (:data:`IMAGE_KEY_COLUMNS`) with the
    module's rule; a table without one must have exactly one row per image, in order.
    Values are typed by :func:`typed_values`.

    Raises:
        FileAccessError / TableFormatError: The file cannot be read.
        ImageKeyError: Missing column, empty value, or rows not matching the images.
    """
    frame = read_table(path, what=what)
    source = str(path)
    if column not in frame.columns:
        raise ImageKeyError(f"{source}: no column {column!r} (columns: "
                            f"{', '.join(map(str, frame.columns))})")
    key = image_key_column(frame)
    lines = _lines(frame)
    if key is None:
        if len(frame) != len(ids):
            raise ImageKeyError(f"{source}: has no image column ({', '.join(IMAGE_KEY_COLUMNS)}) "
                                f"and {len(frame)} rows for {len(ids)} scored images")
        rows: list[int | None] = list(range(len(frame)))
    else:
        rows = match_rows(list(frame[key]), ids, source=source, lines=lines)
    values = []
    for image_id, row in zip(ids, rows, strict=True):
        cell = str(frame[column].iat[row]).strip()
        if not cell:
            raise ImageKeyError(f"{source}, {lines[row]}: empty {column!r} for image {image_id!r}")
        values.append(cell)
    return typed_values(values)


def read_aligned_frame(path: str | Path, ids: Sequence[str], *, what: str) -> pd.DataFrame:
    """A table of numbers (e.g. 0/1 concept annotations) indexed by the scored ``ids``.

    Rows are matched by the module's rule; images without a row are left out; empty cells
    become NaN (not annotated); other cells must be numbers.

    Raises:
        ImageKeyError: No image column, or rows not matching the images one-to-one.
        TableFormatError: A cell that is not a number (names file, line and column).
    """
    frame = read_table(path, what=what)
    key = image_key_column(frame)
    source = str(path)
    if key is None:
        raise ImageKeyError(f"{source}: needs an image column ({', '.join(IMAGE_KEY_COLUMNS)})")
    rows = match_rows(list(frame[key]), ids, source=source, lines=_lines(frame),
                      require_all=False)
    values = frame.drop(columns=[key]).replace("", "nan")
    values = to_numbers(values, what=what)
    picked = [(image_id, row) for image_id, row in zip(ids, rows, strict=True) if row is not None]
    out = values.iloc[[row for _, row in picked]].copy()
    out.index = pd.Index([image_id for image_id, _ in picked], dtype=object)
    return out
