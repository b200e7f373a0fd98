"""OBO 1.2 flat files (HPO-style): ``[Term]`` stanzas with ``xref: UMLS:C...`` lines.

Reading maps each term to a :class:`Concept`:

* ``id``: the UMLS CUI when the term has exactly one ``xref: UMLS:`` and no other term in
  the file carries the same CUI; otherwise the ontology id. The ontology id is kept in
  ``attributes["ontology_id"]`` and ``source`` names the file and term (e.g.
  ``"HPO HP:0200034 xref (hp.obo)"``).
* ``name``, ``def`` -> definition, ``EXACT`` synonyms -> synonyms (other scopes go to
  ``attributes["related_synonyms"]``), first ``is_a`` -> parent (translated to the
  parent's concept id when the parent is in the file).
* Obsolete terms and non-``[Term]`` stanzas are skipped; tags this library does not use
  are ignored. conceptlens's own fields travel as ``property_value: conceptlens:<field>``
  lines, so writing and reading back gives the same vocabulary.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conceptlens.vocab.concept import Concept, VocabularyError, is_cui
from conceptlens.vocab.formats._common import (
    VocabularyData,
    VocabularyLike,
    atomic_write_text,
    build_vocabulary,
    concept_from_record,
    read_vocabulary_text,
)

_PREFIX = "conceptlens:"
_OWN_FIELDS = ("group", "modality", "prompt", "source", "attributes")
_ONTOLOGY_LABELS = {"hp": "HPO"}


def escape(text: str) -> str:
    """Escape a string for a quoted OBO value."""
    return (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )


def parse_quoted(value: str) -> tuple[str, str]:
    """Split ``'"text" rest'`` into the unescaped text and the rest.

    Raises:
        ValueError: If ``value`` does not start with a closed quoted string.
    """
    value = value.lstrip()
    if not value.startswith('"'):
        raise ValueError(f"expected a quoted string, got {value[:40]!r}")
    out, i = [], 1
    unescape = {"n": "\n", "t": "\t", "W": " "}
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            out.append(unescape.get(value[i + 1], value[i + 1]))
            i += 2
            continue
        if ch == '"':
            return "".join(out), value[i + 1 :].strip()
        out.append(ch)
        i += 1
    raise ValueError(f"unterminated quoted string {value[:40]!r}")


def _strip_comment(value: str) -> str:
    """Drop a trailing ``! comment`` and ``{modifiers}`` from an unquoted value."""
    value = value.split(" !", 1)[0]
    if value.endswith("}") and "{" in value:
        value = value[: value.rindex("{")]
    return value.strip()


@dataclass
class _Stanza:
    line: int
    tags: list[tuple[str, str, int]] = field(default_factory=list)

    def first(self, tag: str) -> str | None:
        return next((v for t, v, _ in self.tags if t == tag), None)


def _parse(lines: list[str], path: Path) -> tuple[dict[str, list[str]], list[_Stanza]]:
    header: dict[str, list[str]] = {}
    stanzas: list[_Stanza] = []
    current: _Stanza | None = None
    in_term = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("!"):
            continue
        if line.startswith("[") and line.endswith("]"):
            in_term = line == "[Term]"
            current = _Stanza(number) if in_term else None
            if current is not None:
                stanzas.append(current)
            continue
        tag, sep, value = line.partition(":")
        if not sep:
            raise VocabularyError(f"expected 'tag: value', got {line[:60]!r}", path=path, line=number)
        tag, value = tag.strip(), value.strip()
        if current is not None:
            current.tags.append((tag, value, number))
        elif not in_term and not stanzas:
            header.setdefault(tag, []).append(value)
    return header, stanzas


def _own_property(value: str) -> tuple[str, str] | None:
    """``conceptlens:group "text" xsd:string`` -> ("group", "text"); None if not ours."""
    if not value.startswith(_PREFIX):
        return None
    key, _, rest = value[len(_PREFIX) :].partition(" ")
    return key, parse_quoted(rest)[0]


def _header_meta(header: dict[str, list[str]], path: Path) -> dict[str, str]:
    meta: dict[str, str] = {}
    ontology = (header.get("ontology") or [""])[0]
    meta["name"] = ontology[:-4] if ontology.endswith(".obo") else ontology
    for value in header.get("property_value", []):
        try:
            if value.startswith("dc:description "):
                meta["description"] = parse_quoted(value[len("dc:description ") :])[0]
            own = _own_property(value)
            if own and own[0] == "modality":
                meta["modality"] = own[1]
        except ValueError as err:
            raise VocabularyError(f"header property_value: {err}", path=path) from None
    if "description" not in meta and header.get("remark"):
        meta["description"] = header["remark"][0]
    return meta


@dataclass
class _Term:
    stanza: _Stanza
    term_id: str
    record: dict[str, Any]
    cuis: list[str]
    own_source: bool
    own_attributes: bool


def _read_term(stanza: _Stanza, path: Path, strict: bool) -> _Term | None:
    term_id = stanza.first("id")
    if not term_id:
        raise VocabularyError("[Term] stanza without an id", path=path, line=stanza.line)
    if (stanza.first("is_obsolete") or "").lower() == "true":
        return None
    record: dict[str, Any] = {"id": term_id, "name": stanza.first("name") or "", "synonyms": []}
    attributes: dict[str, Any] = {}
    related: list[str] = []
    parents: list[str] = []
    cuis: list[str] = []
    own_source = own_attributes = False
    for tag, value, line in stanza.tags:
        try:
            if tag == "def":
                record["definition"] = parse_quoted(value)[0]
            elif tag == "synonym":
                text, rest = parse_quoted(value)
                scope = rest.split(" ", 1)[0] if rest else "RELATED"
                (record["synonyms"] if scope == "EXACT" else related).append(text)
            elif tag == "is_a":
                parents.append(_strip_comment(value))
            elif tag == "xref" and value.upper().startswith("UMLS:"):
                cui = _strip_comment(value).split(" ", 1)[0][len("UMLS:") :]
                if not is_cui(cui):
                    message = (
                        f"malformed UMLS xref {value!r}: a CUI is 'C' followed by 7 digits"
                    )
                    if strict:
                        raise VocabularyError(
                            message + " (read with strict=False to skip such xrefs)",
                            path=path, line=line, concept=term_id,
                        )
                    warnings.warn(f"{path}, line {line}: term {term_id}: {message}; skipped", stacklevel=4)
                elif cui not in cuis:
                    cuis.append(cui)
            elif tag == "property_value":
                own = _own_property(value)
                if own is None:
                    continue
                key, text = own
                if key not in _OWN_FIELDS:
                    raise VocabularyError(
                        f"unknown field {_PREFIX}{key}; allowed: "
                        + ", ".join(_PREFIX + k for k in _OWN_FIELDS),
                        path=path, line=line, concept=term_id,
                    )
                if key == "group":
                    record["group"] = text
                elif key == "modality":
                    record.setdefault("modalities", []).append(text)
                elif key == "prompt":
                    record.setdefault("prompts", []).append(text)
                elif key == "source":
                    record["source"], own_source = text, True
                else:
                    attributes, own_attributes = json.loads(text), True
        except VocabularyError:
            raise
        except ValueError as err:  # quoting or JSON problems
            raise VocabularyError(f"{tag}: {err}", path=path, line=line, concept=term_id) from None
    if parents:
        record["parent"] = parents[0]
    if not own_attributes:
        if len(parents) > 1:
            attributes["other_parents"] = parents[1:]
        if related:
            attributes["related_synonyms"] = related
    record["attributes"] = attributes
    return _Term(stanza, term_id, record, cuis, own_source, own_attributes)


def read_obo(path: str | Path, *, strict: bool = True) -> VocabularyData:
    """Read an OBO file; see the module docstring for the mapping.

    Args:
        path: The ``.obo`` file.
        strict: If False, malformed ``xref: UMLS:`` lines are skipped with a warning.
    """
    path = Path(path)
    header, stanzas = _parse(read_vocabulary_text(path).splitlines(), path)
    meta = _header_meta(header, path)
    label = _ONTOLOGY_LABELS.get(meta["name"], meta["name"].upper() or path.stem)
    terms = [t for t in (_read_term(s, path, strict) for s in stanzas) if t is not None]
    cui_uses = Counter(c for t in terms if len(t.cuis) == 1 for c in t.cuis)
    concept_ids: dict[str, str] = {}
    for term in terms:
        cui = term.cuis[0] if len(term.cuis) == 1 and cui_uses[term.cuis[0]] == 1 else None
        if term.term_id.startswith("UMLS:") and is_cui(term.term_id[5:]):
            cui = term.term_id[5:]
        record = term.record
        if cui is not None:
            record["id"] = cui
            if not term.own_attributes and cui != term.term_id[5:]:
                record["attributes"]["ontology_id"] = term.term_id
            if not term.own_source:
                record["source"] = f"{label} {term.term_id} xref ({path.name})"
        else:
            if term.cuis and not term.own_attributes:
                record["attributes"]["umls_xrefs"] = term.cuis
            if not term.own_source:
                record["source"] = f"{label} ({path.name})"
        concept_ids[term.term_id] = record["id"]
    located = []
    for position, term in enumerate(terms):
        record = term.record
        if record.get("parent") in concept_ids:
            record["parent"] = concept_ids[record["parent"]]
        concept = concept_from_record(record, path=path, line=term.stanza.line, position=position)
        located.append((concept, term.stanza.line))
    return build_vocabulary(located, path=path, meta=meta)


def _term_id(concept: Concept) -> str:
    ontology_id = concept.attributes.get("ontology_id")
    if isinstance(ontology_id, str) and ontology_id:
        return ontology_id
    return f"UMLS:{concept.id}" if concept.cui else concept.id


def write_obo(vocabulary: VocabularyLike, path: str | Path) -> None:
    """Write ``vocabulary`` as OBO 1.2 that :func:`read_obo` reads back unchanged."""
    term_ids = {c.id: _term_id(c) for c in vocabulary}
    out = ["format-version: 1.2", f"ontology: {vocabulary.name}"]
    if vocabulary.description:
        out.append(f'property_value: dc:description "{escape(vocabulary.description)}" xsd:string')
    if vocabulary.modality:
        out.append(f'property_value: {_PREFIX}modality "{escape(vocabulary.modality)}" xsd:string')
    for concept in vocabulary:
        out += ["", "[Term]", f"id: {term_ids[concept.id]}", f"name: {concept.name}"]
        if concept.definition:
            out.append(f'def: "{escape(concept.definition)}" []')
        out += [f'synonym: "{escape(s)}" EXACT []' for s in concept.synonyms]
        if concept.cui and not term_ids[concept.id].startswith("UMLS:"):
            out.append(f"xref: UMLS:{concept.cui}")
        if concept.parent:
            out.append(f"is_a: {term_ids.get(concept.parent, concept.parent)}")

        def prop(key: str, text: str) -> str:
            return f'property_value: {_PREFIX}{key} "{escape(text)}" xsd:string'

        if concept.group:
            out.append(prop("group", concept.group))
        out += [prop("modality", m) for m in concept.modalities]
        out += [prop("prompt", p) for p in concept.prompts]
        out.append(prop("source", concept.source))
        attributes = concept.to_dict()["attributes"]
        out.append(prop("attributes", json.dumps(attributes, sort_keys=True, ensure_ascii=False)))
    atomic_write_text(Path(path), "\n".join(out) + "\n")
