"""YAML and JSON: a mapping with ``name``, ``description``, ``modality`` and ``concepts``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from conceptlens._io.safe_yaml import YamlError, load_yaml
from conceptlens.vocab.concept import VocabularyError
from conceptlens.vocab.formats._common import (
    VOCABULARY_FIELDS,
    VocabularyData,
    VocabularyLike,
    atomic_write_text,
    build_vocabulary,
    concept_from_record,
    read_vocabulary_text,
)


def vocabulary_to_dict(vocabulary: VocabularyLike) -> dict[str, Any]:
    """The schema mapping for ``vocabulary`` (plain dicts and lists)."""
    return {
        "name": vocabulary.name,
        "description": vocabulary.description,
        "modality": vocabulary.modality,
        "concepts": [c.to_dict() for c in vocabulary],
    }


def _from_mapping(
    data: Any, path: Path, lines: list[int | None] | None
) -> VocabularyData:
    label = "line"
    if not isinstance(data, dict):
        raise VocabularyError(
            f"expected a mapping with keys {', '.join(VOCABULARY_FIELDS)}, "
            f"got {type(data).__name__}",
            path=path,
        )
    unknown = [str(k) for k in data if k not in VOCABULARY_FIELDS]
    if unknown:
        raise VocabularyError(
            f"unknown top-level field(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(VOCABULARY_FIELDS)}",
            path=path,
        )
    records = data.get("concepts")
    if records is None:
        records = []
    if not isinstance(records, list):
        raise VocabularyError("'concepts' must be a list", path=path)
    located = []
    for position, record in enumerate(records):
        line = lines[position] if lines and position < len(lines) else None
        concept = concept_from_record(record, path=path, line=line, line_label=label, position=position)
        located.append((concept, line))
    return build_vocabulary(located, path=path, meta=data, line_label=label)


def _concept_lines(root: yaml.Node | None) -> list[int | None]:
    """1-based start line of each item of the top-level ``concepts`` list (YAML marks)."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "concepts" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def read_yaml(path: str | Path) -> VocabularyData:
    """Read a YAML vocabulary (safe loader with alias and depth limits; errors carry lines)."""
    path = Path(path)
    text = read_vocabulary_text(path)
    try:
        data, root = load_yaml(text, source=str(path))
    except YamlError as err:
        raise VocabularyError(err.problem, path=path, line=err.line) from None
    return _from_mapping(data, path, _concept_lines(root))


def read_json(path: str | Path) -> VocabularyData:
    """Read a JSON vocabulary (errors name the concept by id or position)."""
    path = Path(path)
    text = read_vocabulary_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise VocabularyError(f"invalid JSON: {err.msg}", path=path, line=err.lineno) from None
    except RecursionError:
        raise VocabularyError("JSON nested too deeply", path=path) from None
    return _from_mapping(data, path, None)


class _Dumper(yaml.SafeDumper):
    """Safe dumper that writes short lists of scalars inline (``synonyms: [a, b]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    inline = all(isinstance(v, (str, int, float, bool)) for v in data) and len(str(data)) < 90
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


_Dumper.add_representer(list, _represent_list)


def write_yaml(vocabulary: VocabularyLike, path: str | Path) -> None:
    """Write ``vocabulary`` as YAML (UTF-8, keys in schema order, short lists inline)."""
    text = yaml.dump(
        vocabulary_to_dict(vocabulary), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
        width=100,
    )
    atomic_write_text(Path(path), text)


def write_json(vocabulary: VocabularyLike, path: str | Path) -> None:
    """Write ``vocabulary`` as indented JSON (UTF-8)."""
    text = json.dumps(vocabulary_to_dict(vocabulary), indent=2, ensure_ascii=False) + "\n"
    atomic_write_text(Path(path), text)
