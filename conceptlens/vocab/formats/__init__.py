"""Reading and writing vocabularies: YAML, JSON, CSV and OBO.

Every reader validates while it reads and raises
:class:`~conceptlens.vocab.concept.VocabularyError` naming the file, the line (YAML, OBO)
or row (CSV) and the concept at fault.
"""

from __future__ import annotations

from pathlib import Path

from conceptlens.vocab.concept import VocabularyError
from conceptlens.vocab.formats._common import VocabularyData, VocabularyLike
from conceptlens.vocab.formats.mapping import read_json, read_yaml, write_json, write_yaml
from conceptlens.vocab.formats.obo import read_obo, write_obo
from conceptlens.vocab.formats.tabular import read_csv, write_csv

__all__ = [
    "FORMATS",
    "VocabularyData",
    "VocabularyLike",
    "format_for_path",
    "read_csv",
    "read_json",
    "read_obo",
    "read_vocabulary",
    "read_yaml",
    "write_csv",
    "write_json",
    "write_obo",
    "write_vocabulary",
    "write_yaml",
]

FORMATS: dict[str, tuple[str, ...]] = {
    "yaml": (".yaml", ".yml"),
    "json": (".json",),
    "csv": (".csv",),
    "obo": (".obo",),
}
"""Format name -> file suffixes that select it."""

_READERS = {"yaml": read_yaml, "json": read_json, "csv": read_csv, "obo": read_obo}
_WRITERS = {"yaml": write_yaml, "json": write_json, "csv": write_csv, "obo": write_obo}


def format_for_path(path: str | Path, format: str | None = None) -> str:
    """The format name for ``path`` (from its suffix), or the validated ``format``.

    Raises:
        ValueError: On an unknown format or suffix.
    """
    if format is not None:
        key = format.lower().lstrip(".")
        key = "yaml" if key == "yml" else key
        if key not in FORMATS:
            raise ValueError(f"unknown vocabulary format {format!r}; use one of {', '.join(FORMATS)}")
        return key
    suffix = Path(path).suffix.lower()
    for key, suffixes in FORMATS.items():
        if suffix in suffixes:
            return key
    known = ", ".join(s for suffixes in FORMATS.values() for s in suffixes)
    raise ValueError(
        f"cannot tell the vocabulary format of {str(path)!r} from its suffix {suffix!r}; "
        f"use one of {known} or pass format="
    )


def read_vocabulary(
    path: str | Path, *, format: str | None = None, strict: bool = True
) -> VocabularyData:
    """Read a vocabulary file in any supported format (chosen by suffix unless given).

    Returns:
        The file's concepts and metadata; ``ConceptVocabulary.from_file`` builds a
        :class:`~conceptlens.vocab.vocabulary.ConceptVocabulary` from them.

    Raises:
        FileNotFoundError: The file does not exist.
        FileAccessError: It cannot be read (permission denied ...).
        VocabularyError: Malformed, too large, a folder, or without any concept.
    """
    path = Path(path)
    key = format_for_path(path, format)
    if path.is_dir():
        raise VocabularyError("is a folder, not a vocabulary file", path=path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {path}")
    if key == "obo":
        vocabulary = read_obo(path, strict=strict)
    else:
        vocabulary = _READERS[key](path)
    if len(vocabulary) == 0:
        raise VocabularyError(
            "holds no concepts; a vocabulary needs at least one to score anything", path=path
        )
    return vocabulary


def write_vocabulary(
    vocabulary: VocabularyLike, path: str | Path, *, format: str | None = None
) -> Path:
    """Write ``vocabulary`` to ``path`` (format by suffix unless given); returns the path."""
    path = Path(path)
    key = format_for_path(path, format)
    path.parent.mkdir(parents=True, exist_ok=True)
    _WRITERS[key](vocabulary, path)
    return path
