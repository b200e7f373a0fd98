"""Shared validation for the readers: records -> concepts, with their locations."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from conceptlens._io.files import FileContentError, read_text_limited
from conceptlens.vocab.concept import Concept, VocabularyError
from conceptlens.vocab.vocabulary import ConceptVocabulary

VOCABULARY_FIELDS = ("name", "description", "modality", "concepts")


def concept_from_record(
    record: Any, *, path: Path, line: int | None, line_label: str = "line", position: int
) -> Concept:
    """Validate one record into a :class:`Concept`, locating any error."""
    fallback = f"#{position + 1}"
    if isinstance(record, Mapping) and isinstance(record.get("id"), str):
        fallback = record["id"]
    try:
        return Concept.from_dict(record)
    except VocabularyError as err:
        raise err.located(path=path, line=line, concept=fallback, line_label=line_label) from None
    except TypeError as err:  # wrong value types reaching the dataclass
        raise VocabularyError(
            str(err), path=path, line=line, concept=fallback, line_label=line_label
        ) from None


def build_vocabulary(
    located: Iterable[tuple[Concept, int | None]],
    *,
    path: Path,
    meta: Mapping[str, Any],
    line_label: str = "line",
) -> ConceptVocabulary:
    """Check ids are unique (naming both locations) and assemble the vocabulary."""
    seen: dict[str, int | None] = {}
    concepts = []
    for concept, line in located:
        if concept.id in seen:
            first = seen[concept.id]
            where = f" (first defined at {line_label} {first})" if first is not None else ""
            raise VocabularyError(
                f"duplicate id{where}", path=path, line=line, concept=concept.id,
                line_label=line_label,
            )
        seen[concept.id] = line
        concepts.append(concept)
    for key in ("name", "description", "modality"):
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise VocabularyError(f"vocabulary {key!r} must be a string, got {value!r}", path=path)
    return ConceptVocabulary(
        concepts,
        name=meta.get("name") or path.stem,
        description=meta.get("description") or "",
        modality=meta.get("modality") or "",
    )


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_vocabulary_text(path: Path, *, encoding: str = "utf-8") -> str:
    """A vocabulary file's text (size-limited, UTF-8); unusable content -> VocabularyError.

    Raises:
        FileAccessError: Missing, a folder, or unreadable (names the file).
        VocabularyError: Too large or not UTF-8 text (names the file).
    """
    try:
        return read_text_limited(path, what="vocabulary file", encoding=encoding)
    except FileContentError as err:
        raise VocabularyError(err.reason, path=path) from None
