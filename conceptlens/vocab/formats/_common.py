"""Shared validation for the readers: records -> concepts, with their locations.

The readers return :class:`VocabularyData`, plain data that
:class:`~conceptlens.vocab.vocabulary.ConceptVocabulary` is built from, and the writers take
any :class:`VocabularyLike`; so the formats never import the vocabulary class.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from conceptlens._io.files import FileContentError, atomic_write_text, read_text_limited
from conceptlens.vocab.concept import Concept, VocabularyError

__all__ = [
    "VOCABULARY_FIELDS",
    "VocabularyData",
    "VocabularyLike",
    "atomic_write_text",
    "build_vocabulary",
    "concept_from_record",
    "read_vocabulary_text",
]

VOCABULARY_FIELDS = ("name", "description", "modality", "concepts")


@dataclass(frozen=True)
class VocabularyData:
    """A vocabulary as a file holds it: validated concepts and metadata, nothing more.

    ``ConceptVocabulary.from_file`` builds a
    :class:`~conceptlens.vocab.vocabulary.ConceptVocabulary` from it.

    Attributes:
        concepts: The concepts in file order (ids unique).
        name: The vocabulary's name (the file's stem when the file names none).
        description: Its description, or ``""``.
        modality: Its modality, or ``""``.
    """

    concepts: tuple[Concept, ...]
    name: str
    description: str = ""
    modality: str = ""

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts)


class VocabularyLike(Protocol):
    """What a writer needs: metadata and the concepts in order (a ``ConceptVocabulary``,
    a :class:`VocabularyData`)."""

    @property
    def name(self) -> str:
        """Short name."""
        ...  # pragma: no cover - a protocol

    @property
    def description(self) -> str:
        """Free-text description."""
        ...  # pragma: no cover - a protocol

    @property
    def modality(self) -> str:
        """Imaging modality."""
        ...  # pragma: no cover - a protocol

    def __iter__(self) -> Iterator[Concept]:
        """The concepts in order."""
        ...  # pragma: no cover - a protocol


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
) -> VocabularyData:
    """Check ids are unique (naming both locations) and assemble the vocabulary's data."""
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
    return VocabularyData(
        tuple(concepts),
        name=meta.get("name") or path.stem,
        description=meta.get("description") or "",
        modality=meta.get("modality") or "",
    )


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
