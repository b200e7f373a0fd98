"""A clinical concept: an identifier, the words for it and where it comes from."""

from __future__ import annotations

import html
import json
import math
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from conceptlens.errors import ConceptlensError

__all__ = ["CONCEPT_FIELDS", "CUI_PATTERN", "Concept", "VocabularyError", "is_cui"]

CUI_PATTERN = re.compile(r"C\d{7}")
"""A UMLS Concept Unique Identifier: upper-case ``C`` followed by exactly seven digits."""

_CUI_ATTEMPT = re.compile(r"^(?:UMLS:)?[Cc]\d")


class VocabularyError(ConceptlensError, ValueError):
    """A concept or vocabulary is malformed.

    The message names the culprit: the file, the line (or CSV row) and the concept id,
    whichever are known. They are also available as attributes.

    Attributes:
        problem: What is wrong, without the location prefix.
        path: The file at fault, if any.
        line: 1-based line number (YAML / OBO) or CSV row number, if known.
        concept: The id (or position) of the concept at fault, if known.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: Any = None,
        line: int | None = None,
        concept: str | None = None,
        line_label: str = "line",
    ) -> None:
        self.problem = problem
        self.path = path
        self.line = line
        self.concept = concept
        self.line_label = line_label
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"{line_label} {line}")
        prefix = ", ".join(where)
        if concept is not None:
            prefix = f"{prefix}: concept {concept!r}" if prefix else f"concept {concept!r}"
        super().__init__(f"{prefix}: {problem}" if prefix else problem)

    def located(
        self,
        *,
        path: Any = None,
        line: int | None = None,
        concept: str | None = None,
        line_label: str | None = None,
    ) -> VocabularyError:
        """A copy with the missing location details filled in."""
        return VocabularyError(
            self.problem,
            path=self.path if self.path is not None else path,
            line=self.line if self.line is not None else line,
            concept=self.concept if self.concept is not None else concept,
            line_label=line_label or self.line_label,
        )


def is_cui(value: object) -> bool:
    """Whether ``value`` is a well-formed UMLS CUI (``C`` + 7 digits).

    Examples:
        >>> is_cui("C0332563"), is_cui("C123"), is_cui("derm7pt:streaks")
        (True, False, False)
    """
    return isinstance(value, str) and CUI_PATTERN.fullmatch(value) is not None


def check_cui_like(value: str, *, what: str = "id") -> None:
    """Raise :class:`VocabularyError` if ``value`` looks like a CUI attempt but is malformed."""
    if is_cui(value):
        return
    if value.startswith("UMLS:") and is_cui(value[5:]):
        raise VocabularyError(f"{what} {value!r}: write the bare CUI {value[5:]!r} without 'UMLS:'")
    if _CUI_ATTEMPT.match(value):
        raise VocabularyError(
            f"malformed CUI {what} {value!r}: a UMLS CUI is 'C' followed by exactly 7 digits "
            "(e.g. 'C0332563'); use a local id such as 'myvocab:name' if no CUI is known"
        )


#: Most values (counted with shared containers expanded) one concept's ``attributes`` may hold.
MAX_ATTRIBUTE_VALUES = 100_000
#: Deepest nesting of containers in ``attributes``.
MAX_ATTRIBUTE_DEPTH = 50


def _freeze(value: Any, where: str) -> Any:
    """Deep-copy JSON-like data into read-only containers (dict -> mappingproxy, list -> tuple).

    A container shared several times (YAML aliases, or the same Python list reused) is frozen
    once and shared in the result; the data's *expanded* size is bounded by
    :data:`MAX_ATTRIBUTE_VALUES` and its depth by :data:`MAX_ATTRIBUTE_DEPTH`, so a "billion
    laughs" structure is refused at once instead of being expanded (by hashing or printing).
    """
    _check_size(value, where)
    return _freeze_shared(value, where, {})


def _check_size(value: Any, where: str) -> None:
    """Expanded size and depth of nested containers, without expanding them (iterative)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    while stack:
        item, depth, finished = stack.pop()
        children = _container_items(item)
        if children is None:
            continue
        key = id(item)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes.get(id(c), 1) for c in children)
            if sizes[key] > MAX_ATTRIBUTE_VALUES:
                raise VocabularyError(
                    f"{where}: more than {MAX_ATTRIBUTE_VALUES:,} values once shared parts "
                    "(YAML aliases) are expanded; attributes are meant for small extras"
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise VocabularyError(f"{where}: a value contains itself (recursive data)")
        if depth >= MAX_ATTRIBUTE_DEPTH:
            raise VocabularyError(f"{where}: nested deeper than {MAX_ATTRIBUTE_DEPTH} levels")
        on_path.add(key)
        stack.append((item, depth, True))
        stack.extend((child, depth + 1, False) for child in children
                     if id(child) not in sizes)


def _container_items(value: Any) -> list[Any] | None:
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _freeze_shared(value: Any, where: str, memo: dict[int, Any]) -> Any:
    if isinstance(value, (Mapping, list, tuple)) and id(value) in memo:
        return memo[id(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise VocabularyError(
                    f"{where}: attribute keys must be strings, got {reprlib.repr(key)}"
                )
            out[key] = _freeze_shared(item, f"{where}.{key}", memo)
        frozen: Any = MappingProxyType(out)
        memo[id(value)] = frozen
        return frozen
    if isinstance(value, (list, tuple)):
        frozen = tuple(_freeze_shared(item, where, memo) for item in value)
        memo[id(value)] = frozen
        return frozen
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise VocabularyError(f"{where}: attribute values must be finite numbers, got {value!r}")
        return value
    raise VocabularyError(
        f"{where}: attribute values must be JSON-like (str, number, bool, None, list, dict), "
        f"got {type(value).__name__}"
    )


def thaw(value: Any) -> Any:
    """Turn frozen attribute data back into plain ``dict`` / ``list`` (JSON / YAML ready)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


def _as_text_tuple(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise VocabularyError(f"{name} must be a list of strings, got {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, str):
            raise VocabularyError(
                f"{name} must be a list of strings, got item {reprlib.repr(item)}"
            )
        item = item.strip()
        if not item:
            raise VocabularyError(f"{name} contains an empty string")
        out.append(item)
    return tuple(out)


def _as_text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise VocabularyError(
            f"{name} must be a string, got {type(value).__name__} {reprlib.repr(value)}"
        )
    return value.strip()


@dataclass(frozen=True)
class Concept:
    """One clinical concept.

    Args:
        id: A UMLS CUI (``C`` + 7 digits) where one is known from a nameable source,
            else a stable local id such as ``"derm7pt:blue_whitish_veil"``.
        name: Preferred name, used in prompts and labels.
        synonyms: Other names; prompts are ensembled over ``(name, *synonyms)``.
        definition: A one-sentence definition (free text).
        group: Semantic group (e.g. ``"major criterion"``, ``"colour"``).
        parent: Id of a broader concept, if any.
        modalities: Imaging modalities the concept applies to; empty means the
            vocabulary's default modality.
        prompts: Full prompt texts that replace the template expansion; each must
            mention the name or a synonym.
        source: Where the id (and the concept) comes from; required when ``id`` is a CUI.
        attributes: Free JSON-like extras (``{"points": 2}``); stored read-only and
            excluded from ``hash()`` (but not from equality).

    Raises:
        VocabularyError: On an empty id or name, a malformed CUI, a CUI without a
            source, or fields of the wrong type.

    Examples:
        >>> c = Concept("C0332563", "papule", synonyms=("papules",), source="HPO HP:0200034 xref")
        >>> c.cui, c.terms
        ('C0332563', ('papule', 'papules'))
    """

    id: str
    name: str
    synonyms: tuple[str, ...] = ()
    definition: str = ""
    group: str = ""
    parent: str | None = None
    modalities: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    source: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise VocabularyError(
                f"concept id must be a non-empty string, got {reprlib.repr(self.id)}"
            )
        cid = self.id.strip()
        try:
            check_cui_like(cid)
            if not isinstance(self.name, str) or not self.name.strip():
                raise VocabularyError(f"empty name (got {reprlib.repr(self.name)})")
            values = {
                "id": cid,
                "name": self.name.strip(),
                "synonyms": _as_text_tuple(self.synonyms, "synonyms"),
                "definition": _as_text(self.definition, "definition"),
                "group": _as_text(self.group, "group"),
                "parent": _as_text(self.parent, "parent") or None,
                "modalities": _as_text_tuple(self.modalities, "modalities"),
                "prompts": _as_text_tuple(self.prompts, "prompts"),
                "source": _as_text(self.source, "source"),
            }
            if values["parent"] is not None:
                check_cui_like(values["parent"], what="parent")
                if values["parent"] == cid:
                    raise VocabularyError("a concept cannot be its own parent")
            if is_cui(cid) and not values["source"]:
                raise VocabularyError(
                    "a CUI id needs a `source` naming where the CUI comes from "
                    "(e.g. 'HPO HP:0200034 xref'); never invent one"
                )
            attributes = self.attributes if self.attributes is not None else {}
            if not isinstance(attributes, Mapping):
                raise VocabularyError(
                    f"attributes must be a mapping, got {type(attributes).__name__}"
                )
            values["attributes"] = _freeze(attributes, "attributes")
        except VocabularyError as err:
            raise err.located(concept=cid) from None
        for key, value in values.items():
            object.__setattr__(self, key, value)

    @property
    def cui(self) -> str | None:
        """The id if it is a UMLS CUI, else ``None``."""
        return self.id if is_cui(self.id) else None

    @property
    def terms(self) -> tuple[str, ...]:
        """``(name, *synonyms)`` with case-insensitive duplicates removed, name first."""
        seen: set[str] = set()
        out = []
        for term in (self.name, *self.synonyms):
            key = term.casefold()
            if key not in seen:
                seen.add(key)
                out.append(term)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON / YAML-ready data (lists, dicts), in schema order."""
        return {
            "id": self.id,
            "name": self.name,
            "synonyms": list(self.synonyms),
            "definition": self.definition,
            "group": self.group,
            "parent": self.parent,
            "modalities": list(self.modalities),
            "prompts": list(self.prompts),
            "source": self.source,
            "attributes": thaw(self.attributes),
        }

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th>{html.escape(key)}</th><td>{html.escape(_html_value(value))}</td></tr>"
            for key, value in self.to_dict().items()
            if value not in (None, "", [], {})
        )
        return f"<table><tbody>{rows}</tbody></table>"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Concept:
        """Build a concept from a mapping with the schema's field names.

        Raises:
            VocabularyError: On unknown or missing fields (the message names them).
        """
        if not isinstance(data, Mapping):
            raise VocabularyError(f"a concept must be a mapping, got {type(data).__name__}")
        concept = data.get("id")
        label = concept if isinstance(concept, str) else (
            reprlib.repr(concept) if concept is not None else None
        )
        unknown = sorted(str(k) for k in data if k not in CONCEPT_FIELDS)
        if unknown:
            raise VocabularyError(
                f"unknown field(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(CONCEPT_FIELDS)}",
                concept=label,
            )
        for required in ("id", "name"):
            if data.get(required) in (None, ""):
                raise VocabularyError(
                    f"missing or empty {required!r}",
                    concept=label,
                )
        if not isinstance(concept, str):
            raise VocabularyError(f"concept id must be a string, got {reprlib.repr(concept)}")
        return cls(**{k: v for k, v in data.items() if v is not None or k == "parent"})

    def canonical_json(self) -> str:
        """A canonical JSON text of all fields (sorted keys, no spaces), for hashing."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


CONCEPT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Concept))
"""The schema's concept fields, in order."""


def _html_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
