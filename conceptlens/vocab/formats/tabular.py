"""CSV: one row per concept; list fields ``|``-separated; attributes as JSON text.

Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``,
tab or carriage return) are written with a leading apostrophe, which the reader removes
(see :mod:`conceptlens._io.tables`).

Vocabulary metadata sits in leading comment lines (``# name: "demo"``), which spreadsheet
tools and ``pandas.read_csv(comment="#")`` skip.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from conceptlens._io.tables import neutralise_cell, restore_cell
from conceptlens.vocab.concept import CONCEPT_FIELDS, VocabularyError
from conceptlens.vocab.formats._common import (
    VocabularyData,
    VocabularyLike,
    atomic_write_text,
    build_vocabulary,
    concept_from_record,
    read_vocabulary_text,
)

LIST_FIELDS = ("synonyms", "modalities", "prompts")
_META_KEYS = ("name", "description", "modality")


def join_list(items: tuple[str, ...] | list[str]) -> str:
    """``|``-join, escaping ``\\`` and ``|`` inside items."""
    return "|".join(item.replace("\\", "\\\\").replace("|", "\\|") for item in items)


def split_list(text: str) -> list[str]:
    """Inverse of :func:`join_list`; surrounding blanks of each item are stripped."""
    if not text.strip():
        return []
    items, current, chars = [], [], iter(text)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, "\\"))
        elif ch == "|":
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    items.append("".join(current).strip())
    return items


def _record(row: dict[str, str], path: Path, line: int) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in row.items():
        value = restore_cell(value or "")
        if key in LIST_FIELDS:
            record[key] = split_list(value)
        elif key == "attributes":
            try:
                record[key] = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as err:
                raise VocabularyError(
                    f"attributes must be JSON text ({err.msg})",
                    path=path, line=line, concept=row.get("id") or None, line_label="row",
                ) from None
        elif key == "parent":
            record[key] = value.strip() or None
        else:
            record[key] = value
    return record


def read_csv(path: str | Path) -> VocabularyData:
    """Read a CSV vocabulary; errors name the file, the row (physical line) and concept."""
    path = Path(path)
    lines = read_vocabulary_text(path, encoding="utf-8-sig").splitlines(keepends=True)
    meta: dict[str, str] = {}
    skip = 0
    for skip, line in enumerate(lines):  # noqa: B007 - skip is used after the loop
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        key, _, value = stripped[1:].partition(":")
        key, value = key.strip(), value.strip()
        if key in _META_KEYS:
            meta[key] = json.loads(value) if value.startswith('"') else value
    else:
        skip = len(lines)
    reader = csv.DictReader(io.StringIO("".join(lines[skip:])))
    header = reader.fieldnames or []
    header_row = skip + 1
    unknown = [h for h in header if h not in CONCEPT_FIELDS]
    if unknown:
        raise VocabularyError(
            f"unknown column(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(CONCEPT_FIELDS)}",
            path=path, line=header_row, line_label="row",
        )
    missing = [h for h in ("id", "name") if h not in header]
    if missing and header:
        raise VocabularyError(
            f"missing required column(s) {', '.join(map(repr, missing))}",
            path=path, line=header_row, line_label="row",
        )
    located = []
    position = 0
    while True:
        start = skip + reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise VocabularyError(f"malformed CSV: {err}", path=path, line=start, line_label="row") from None
        if None in row:
            raise VocabularyError(
                "more cells than header columns", path=path, line=start,
                concept=row.get("id") or None, line_label="row",
            )
        if not any((v or "").strip() for v in row.values()):
            continue
        record = _record(row, path, start)
        concept = concept_from_record(record, path=path, line=start, line_label="row", position=position)
        located.append((concept, start))
        position += 1
    return build_vocabulary(located, path=path, meta=meta, line_label="row")


def write_csv(vocabulary: VocabularyLike, path: str | Path) -> None:
    """Write ``vocabulary`` as CSV with metadata comment lines."""
    buffer = io.StringIO()
    for key in _META_KEYS:
        buffer.write(f"# {key}: {json.dumps(getattr(vocabulary, key), ensure_ascii=False)}\n")
    rows = []
    for concept in vocabulary:
        row = concept.to_dict()
        for key in LIST_FIELDS:
            row[key] = join_list(row[key])
        row["parent"] = row["parent"] or ""
        row["attributes"] = (
            json.dumps(row["attributes"], ensure_ascii=False, sort_keys=True) if row["attributes"] else ""
        )
        rows.append({key: neutralise_cell(value) for key, value in row.items()})
    # csv leaves a lone "\r" unquoted with "\n" line ends: then quote every cell
    lone_cr = any("\r" in str(value) for row in rows for value in row.values())
    writer = csv.DictWriter(buffer, fieldnames=list(CONCEPT_FIELDS), lineterminator="\n",
                            quoting=csv.QUOTE_ALL if lone_cr else csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(path), buffer.getvalue())
