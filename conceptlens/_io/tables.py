"""The one CSV writer and the one table reader of conceptlens.

Writing
    :func:`write_csv` neutralises spreadsheet formulas: a *text* cell (value, column header
    or row label) that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
    written with a leading apostrophe, which spreadsheet programs show as text instead of
    running it (``=HYPERLINK(...)`` stays visible and inert). Numbers are never touched: ``-1.5``
    stays a negative number, and so does the text ``"-1.5"`` (it is a number to a spreadsheet
    too). A text cell that itself starts with an apostrophe followed by one of those characters
    (or by another apostrophe) gets one more apostrophe, so :func:`restore_cell` undoes the
    escaping exactly.

Reading
    :func:`read_table` reads ``.csv``, ``.tsv`` or ``.parquet`` with *every* cell as text:
    ``001``, ``NA`` and ``1e3`` come back as written (never ``1``, ``NaN`` or ``1000.0``), the
    escaping above is undone, a header with duplicate or empty column names is an error naming
    the file, and so is a malformed row. Callers convert the columns that are numbers with
    :func:`to_numbers`, which names the file, row and column of a bad cell.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from conceptlens._io.files import atomic_write_text, file_errors
from conceptlens.errors import ConceptlensError

__all__ = [
    "FORMULA_PREFIXES",
    "TableFormatError",
    "line_of",
    "neutralise_cell",
    "read_table",
    "restore_cell",
    "to_numbers",
    "write_csv",
]

#: First characters that make a spreadsheet program evaluate a cell.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_ESCAPE = "'"
_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")


class TableFormatError(ConceptlensError, ValueError):
    """A table file is malformed or a cell is unusable; the message names file, row, column."""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def neutralise_cell(value: object) -> object:
    """A text cell made safe for spreadsheets; other values unchanged.

    Examples:
        >>> neutralise_cell("=1+1"), neutralise_cell("-1.5"), neutralise_cell(-2.0)
        ("'=1+1", '-1.5', -2.0)
        >>> neutralise_cell("'=x"), neutralise_cell("it's")
        ("''=x", "it's")
    """
    if not isinstance(value, str) or not value:
        return value
    first = value[0]
    if first in FORMULA_PREFIXES and not (first in "+-" and _is_number(value)):
        return _ESCAPE + value
    if first == _ESCAPE and len(value) > 1 and value[1] in (*FORMULA_PREFIXES, _ESCAPE):
        return _ESCAPE + value
    return value


def restore_cell(text: str) -> str:
    """Undo :func:`neutralise_cell` on a cell read back as text."""
    if len(text) > 1 and text[0] == _ESCAPE and text[1] in (*FORMULA_PREFIXES, _ESCAPE):
        return text[1:]
    return text


def _neutralise_index(index: pd.Index) -> pd.Index:
    if isinstance(index, pd.MultiIndex):
        return index
    return pd.Index([neutralise_cell(v) for v in index], name=neutralise_cell(index.name),
                    dtype=object if index.dtype == object else None)


def has_carriage_return(frame: pd.DataFrame) -> bool:
    """Whether any text cell, column name or row label holds a ``"\\r"`` (which Python's
    csv module leaves unquoted with ``"\\n"`` line ends, splitting the row on reading)."""
    labels = [*map(str, frame.columns), *map(str, frame.index)]
    cells = (v for c in frame.columns if frame[c].dtype == object for v in frame[c])
    return any("\r" in text for text in labels) or any(
        isinstance(v, str) and "\r" in v for v in cells)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike, *, index: bool = True,
              index_label: str | None = None, what: str = "table") -> Path:
    """Write ``frame`` as UTF-8 CSV with formulas neutralised, atomically.

    Args:
        frame: The table; text cells, column names and row labels are neutralised.
        path: Target file; its folder is created. Written through a temporary file in the
            same folder and moved into place, so a crash never leaves half a file.
        index: Write the row labels as the first column.
        index_label: Header of that column (default: the index name).
        what: How to call the file in error messages (``"score file"``).

    Raises:
        FileAccessError: The file or its folder cannot be written (names the path).
    """
    path = Path(path)
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = [neutralise_cell(v) for v in safe[column]]
    safe.columns = _neutralise_index(safe.columns)
    safe.index = _neutralise_index(safe.index)
    label = neutralise_cell(index_label) if index_label is not None else None
    # csv quotes a cell holding "\n" but not one holding a lone "\r": quote all text then
    quoting = csv.QUOTE_NONNUMERIC if has_carriage_return(safe) else csv.QUOTE_MINIMAL
    text = safe.to_csv(index=index, index_label=label, lineterminator="\n", quoting=quoting)
    with file_errors(path, f"write {what}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def read_table(path: str | os.PathLike, *, what: str = "table") -> pd.DataFrame:
    """Read a ``.csv`` / ``.tsv`` / ``.parquet`` table with every cell as text.

    Returns:
        A DataFrame of ``str`` (missing cells are ``""``) with a default ``RangeIndex``;
        ``frame.attrs["path"]`` is the file and, for CSV / TSV, ``frame.attrs["lines"]`` the
        line number of each row (blank lines are skipped).

    Raises:
        FileAccessError: The file is missing, a folder or unreadable.
        TableFormatError: Unknown suffix, empty file, not UTF-8, a malformed row, or
            duplicate / empty column names. The message names the file (and line).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise TableFormatError(f"{what} file {str(path)!r} must be .csv, .tsv or .parquet")
    with file_errors(path, f"read {what} file"):
        if suffix == ".parquet":
            frame = _read_parquet(path, what)
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
            frame = _parse_text(raw, path, what, "\t" if suffix == ".tsv" else ",")
    frame.attrs["path"] = str(path)
    return frame


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except (ValueError, TypeError, OSError) as error:
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise TableFormatError(f"{what} file {str(path)!r} is not a readable Parquet table "
                               f"({' '.join(str(error).split())[:200]})") from None
    if frame.index.name is not None or not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    _check_header([str(c) for c in frame.columns], path, what)
    return pd.DataFrame({str(c): [_text(v) for v in frame[c]] for c in frame.columns},
                        dtype=object)


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _parse_text(raw: bytes, path: Path, what: str, sep: str) -> pd.DataFrame:
    if not raw.strip():
        raise TableFormatError(f"{what} file {str(path)!r} is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TableFormatError(f"{what} file {str(path)!r} is not UTF-8 text "
                               f"(bad byte at offset {error.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        header = next(reader)
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise TableFormatError(
                    f"{what} file {str(path)!r}, line {reader.line_num}: {len(row)} cells for "
                    f"{len(header)} columns"
                )
            rows.append([restore_cell(cell) for cell in row])
            lines.append(reader.line_num)
    except csv.Error as error:
        raise TableFormatError(f"{what} file {str(path)!r}, line {reader.line_num}: "
                               f"malformed CSV ({error})") from None
    header = [restore_cell(name.strip()) for name in header]
    _check_header(header, path, what)
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    if not rows:
        frame = pd.DataFrame({name: pd.Series(dtype=object) for name in header})
    frame.attrs["lines"] = lines
    return frame


def _check_header(header: Sequence[str], path: Path, what: str) -> None:
    empty = [i + 1 for i, name in enumerate(header) if not name]
    if empty:
        raise TableFormatError(f"{what} file {str(path)!r}: column {empty[0]} of the header "
                               "has no name")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise TableFormatError(f"{what} file {str(path)!r}: column {name!r} appears twice "
                                   "in the header")
        seen.add(name)


def line_of(frame: pd.DataFrame, position: int) -> str:
    """``"line N"`` of row ``position`` of a frame from :func:`read_table` (``"row N"`` if
    the file had no lines, e.g. Parquet)."""
    lines = frame.attrs.get("lines")
    if lines is not None and position < len(lines):
        return f"line {lines[position]}"
    return f"row {position + 1}"


def to_numbers(frame: pd.DataFrame, columns: Sequence[str] | None = None, *,
               what: str = "table") -> pd.DataFrame:
    """``frame`` with ``columns`` (default: all) converted from text to ``float64``.

    An empty cell or a text that is not a number is an error naming the file (from
    ``frame.attrs["path"]``), the line and the column; ``nan`` / ``inf`` written out are kept
    as numbers (callers that need finite values check them).

    Raises:
        TableFormatError: A cell that is not a number.
    """
    out = frame.copy()
    where = frame.attrs.get("path", what)
    for column in (columns if columns is not None else list(frame.columns)):
        values = np.empty(len(frame), dtype=np.float64)
        for position, cell in enumerate(frame[column]):
            try:
                values[position] = float(cell)
            except (TypeError, ValueError):
                raise TableFormatError(
                    f"{what} file {str(where)!r}, {line_of(frame, position)}, column "
                    f"{str(column)!r}: {cell!r} is not a number"
                ) from None
        out[column] = values
    return out
