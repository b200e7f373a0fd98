"""An ordered, immutable collection of concepts with unique ids."""

from __future__ import annotations

import difflib
import hashlib
import html
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from conceptlens._deprecation import warn_renamed
from conceptlens.vocab.concept import Concept, VocabularyError
from conceptlens.vocab.formats import read_vocabulary, write_vocabulary
from conceptlens.vocab.prompts import modality_key

__all__ = ["ConceptVocabulary", "list_vocabularies"]

_BUILTIN_PACKAGE = "conceptlens.vocab"
_BUILTIN_FOLDER = "data"


def _normalise_modality(value: str) -> str:
    return " ".join(value.strip().casefold().replace("_", " ").split())


class ConceptVocabulary:
    """An ordered set of :class:`Concept` objects with unique ids.

    The order is the column order of concept score tables. Vocabularies are immutable:
    :meth:`subset`, :meth:`filter` and :meth:`merge` return new ones.

    Args:
        concepts: The concepts, in order (``Concept`` objects or mappings with the
            schema's fields).
        name: Short name of the vocabulary.
        description: Free text.
        modality: Default imaging modality of the concepts (e.g. ``"dermoscopy"``); used
            to pick prompt templates and for concepts whose ``modalities`` is empty.

    Raises:
        VocabularyError: On duplicate ids or malformed concepts.
        TypeError: If ``concepts`` is not an iterable of concepts.

    Examples:
        >>> vocab = ConceptVocabulary(
        ...     [Concept("demo:streaks", "streaks"), Concept("demo:veil", "blue-whitish veil")],
        ...     name="demo", modality="dermoscopy")
        >>> vocab.ids, len(vocab), "demo:veil" in vocab
        (['demo:streaks', 'demo:veil'], 2, True)
        >>> vocab["demo:veil"].name, vocab[0].id
        ('blue-whitish veil', 'demo:streaks')
    """

    __slots__ = ("_name", "_description", "_modality", "_concepts", "_index", "_hash")

    def __init__(
        self,
        concepts: Iterable[Concept | Mapping[str, Any]] = (),
        *,
        name: str = "custom",
        description: str = "",
        modality: str = "",
    ) -> None:
        if isinstance(concepts, (str, bytes)) or not isinstance(concepts, Iterable):
            raise TypeError(
                "concepts must be an iterable of Concept objects, got "
                f"{type(concepts).__name__} (pass name=..., modality=... as keywords)"
            )
        for label, value in (("name", name), ("description", description), ("modality", modality)):
            if not isinstance(value, str):
                raise TypeError(f"vocabulary {label} must be a string, got {value!r}")
        items: list[Concept] = []
        index: dict[str, int] = {}
        for position, item in enumerate(concepts):
            if isinstance(item, Mapping):
                item = Concept.from_dict(item)
            if not isinstance(item, Concept):
                raise TypeError(
                    f"concept #{position} must be a Concept or a mapping, got {type(item).__name__}"
                )
            if item.id in index:
                raise VocabularyError(
                    f"duplicate id (also concept #{index[item.id]})", concept=item.id
                )
            index[item.id] = position
            items.append(item)
        self._name = name.strip() or "custom"
        self._description = description.strip()
        self._modality = modality.strip()
        self._concepts = tuple(items)
        self._index = index
        self._hash: str | None = None

    # -- basic container protocol -------------------------------------------------------
    @property
    def name(self) -> str:
        """Short name of the vocabulary."""
        return self._name

    @property
    def description(self) -> str:
        """Free-text description."""
        return self._description

    @property
    def modality(self) -> str:
        """Default imaging modality ('' if unspecified)."""
        return self._modality

    @property
    def has_prompt_templates(self) -> bool:
        """Whether conceptlens has prompt templates for :attr:`modality` (an empty modality
        uses the general medical templates on purpose and counts as ``True``).

        An unknown modality silently gets the general templates in the Python API (with a
        warning); the command line refuses it unless templates are given.
        """
        if not self._modality:
            return True
        return modality_key(self._modality) is not None

    @property
    def concepts(self) -> tuple[Concept, ...]:
        """The concepts, in order."""
        return self._concepts

    @property
    def ids(self) -> list[str]:
        """Concept ids, in order."""
        return [c.id for c in self._concepts]

    @property
    def names(self) -> dict[str, str]:
        """Concept id -> preferred name, in order."""
        return {c.id: c.name for c in self._concepts}

    def __len__(self) -> int:
        return len(self._concepts)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self._concepts)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Concept):
            return self._index.get(item.id) is not None and self[item.id] == item
        return isinstance(item, str) and item in self._index

    def __getitem__(self, key: str | int | slice) -> Any:
        """A concept by id or position; a slice gives a new vocabulary."""
        if isinstance(key, str):
            return self._concepts[self.index(key)]
        if isinstance(key, slice):
            return self._replace(self._concepts[key])
        if isinstance(key, int) and not isinstance(key, bool):
            return self._concepts[key]
        raise TypeError(f"index a vocabulary with a concept id, an int or a slice, not {key!r}")

    def index(self, concept_id: str) -> int:
        """Position of ``concept_id``.

        Raises:
            KeyError: If the id is unknown (close matches by id or name are suggested).
        """
        position = self._index.get(concept_id)
        if position is None:
            raise KeyError(self._unknown_message(concept_id))
        return position

    def resolve(self, key: str | Concept) -> Concept:
        """The concept a user means by ``key``: its id, preferred name or a synonym.

        The one lookup every public function that takes a concept by key uses
        (``scorer.concept_maps(image, "Pigment network")``, ``attribute(target=...)``,
        bottleneck interventions, audits). Matching is tried in this order, the first tier
        with a match wins: the exact id; the id, the preferred name, then a synonym, each
        case-insensitively and with runs of whitespace collapsed.

        Parameters
        ----------
        key : str or Concept
            A concept id, preferred name or synonym (a :class:`Concept` stands for its id).

        Returns
        -------
        Concept
            The concept; ``vocabulary.index(concept.id)`` is its column.

        Raises
        ------
        UnknownConceptError
            ``key`` matches no concept, or a name or synonym shared by several concepts (a
            ``KeyError``); the message suggests close matches.

        Examples
        --------
        >>> vocab = ConceptVocabulary([Concept("demo:veil", "blue-whitish veil",
        ...                                    synonyms=("blue-white veil",))], name="demo")
        >>> vocab.resolve("Blue-Whitish Veil").id, vocab.resolve("blue-white veil").id
        ('demo:veil', 'demo:veil')
        """
        if isinstance(key, Concept):
            key = key.id
        position = match_concept(
            key, self.ids, self.names, {c.id: c.synonyms for c in self._concepts},
            where=f"vocabulary {self.name!r}",
        )
        return self._concepts[position]

    def _unknown_message(self, concept_id: object) -> str:
        hints = difflib.get_close_matches(str(concept_id), self.ids, n=3)
        by_name = [c.id for c in self._concepts if c.name.casefold() == str(concept_id).casefold()]
        hints = list(dict.fromkeys(by_name + hints))
        hint = f"; did you mean {', '.join(map(repr, hints))}?" if hints else ""
        return f"concept {concept_id!r} is not in vocabulary {self.name!r}{hint}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConceptVocabulary):
            return NotImplemented
        return (self.name, self.description, self.modality, self._concepts) == (
            other.name,
            other.description,
            other.modality,
            other._concepts,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.modality, self.hash))

    def __repr__(self) -> str:
        return (
            f"ConceptVocabulary(name={self.name!r}, modality={self.modality!r}, "
            f"{len(self)} concepts, hash={self.hash!r})"
        )

    # -- identity -------------------------------------------------------------------------
    @property
    def hash(self) -> str:
        """Stable content hash: the first 16 hex digits of the SHA-256 of the concepts' canonical JSON.

        Depends on the concepts and their order only (not on the vocabulary's name,
        description or modality), so it identifies the columns of a score table.
        """
        if self._hash is None:
            digest = hashlib.sha256()
            digest.update(b"[")
            for position, concept in enumerate(self._concepts):
                if position:
                    digest.update(b",")
                digest.update(concept.canonical_json().encode("utf-8"))
            digest.update(b"]")
            self._hash = digest.hexdigest()[:16]
        return self._hash

    # -- derived vocabularies -------------------------------------------------------------
    def _replace(self, concepts: Iterable[Concept], **meta: str) -> ConceptVocabulary:
        return ConceptVocabulary(
            concepts,
            name=meta.get("name", self.name),
            description=meta.get("description", self.description),
            modality=meta.get("modality", self.modality),
        )

    def subset(self, ids: Iterable[str]) -> ConceptVocabulary:
        """A vocabulary with only ``ids``, in the order given.

        Raises:
            KeyError: If an id is unknown.
            VocabularyError: If an id is repeated.
        """
        if isinstance(ids, str):
            ids = [ids]
        return self._replace(self[i] for i in ids)

    def applies_to(self, concept: Concept, modality: str) -> bool:
        """Whether ``concept`` applies to ``modality`` (its own list, else the vocabulary's default)."""
        wanted = _normalise_modality(modality)
        own = concept.modalities or ((self.modality,) if self.modality else ())
        return any(_normalise_modality(m) == wanted for m in own)

    def filter(
        self,
        group: str | Iterable[str] | None = None,
        modality: str | None = None,
        predicate: Callable[[Concept], bool] | None = None,
    ) -> ConceptVocabulary:
        """Concepts that match every given criterion, in vocabulary order.

        Args:
            group: A group name or several (exact match).
            modality: Keep concepts that apply to this modality (case-insensitive; a
                concept without ``modalities`` has the vocabulary's default one).
            predicate: Any test on a :class:`Concept`.

        Examples:
            >>> vocab = ConceptVocabulary.builtin("dermoscopy")
            >>> [c.name for c in vocab.filter(group="major criterion")][:2]
            ['typical pigment network', 'atypical pigment network']
        """
        groups = None
        if group is not None:
            groups = {group} if isinstance(group, str) else set(group)
        if predicate is not None and not callable(predicate):
            raise TypeError(f"predicate must be callable, got {predicate!r}")
        kept = [
            c
            for c in self._concepts
            if (groups is None or c.group in groups)
            and (modality is None or self.applies_to(c, modality))
            and (predicate is None or predicate(c))
        ]
        return self._replace(kept)

    def merge(
        self,
        other: ConceptVocabulary,
        *,
        on_conflict: Literal["error", "keep_first"] = "error",
        name: str | None = None,
    ) -> ConceptVocabulary:
        """This vocabulary followed by the concepts of ``other`` that it lacks.

        An id present in both with identical content is kept once. If the two default
        modalities differ, concepts without ``modalities`` get their vocabulary's
        default written in, so no concept loses its modality.

        Args:
            other: The vocabulary to append.
            on_conflict: ``"error"`` raises on an id whose content differs between the
                two; ``"keep_first"`` keeps this vocabulary's version.
            name: Name of the result (default ``"<self>+<other>"``).

        Raises:
            VocabularyError: On a conflicting id with ``on_conflict="error"``.
        """
        if not isinstance(other, ConceptVocabulary):
            raise TypeError(f"can only merge a ConceptVocabulary, got {type(other).__name__}")
        if on_conflict not in ("error", "keep_first"):
            raise ValueError(f"on_conflict must be 'error' or 'keep_first', got {on_conflict!r}")
        same_modality = _normalise_modality(self.modality) == _normalise_modality(other.modality)

        def stamped(vocab: ConceptVocabulary, concept: Concept) -> Concept:
            if same_modality or concept.modalities or not vocab.modality:
                return concept
            data = concept.to_dict()
            data["modalities"] = [vocab.modality]
            return Concept.from_dict(data)

        merged = [stamped(self, c) for c in self._concepts]
        for concept in other:
            if concept.id in self._index:
                mine = self[concept.id]
                if mine != concept and on_conflict == "error":
                    raise VocabularyError(
                        f"defined differently in {self.name!r} and {other.name!r} "
                        "(use on_conflict='keep_first' to keep the first)",
                        concept=concept.id,
                    )
                continue
            merged.append(stamped(other, concept))
        return ConceptVocabulary(
            merged,
            name=name or f"{self.name}+{other.name}",
            description=self.description,
            modality=self.modality if same_modality else "",
        )

    @classmethod
    def from_names(
        cls,
        names: Iterable[str],
        *,
        name: str = "custom",
        modality: str = "",
        source: str = "user",
    ) -> ConceptVocabulary:
        """A quick vocabulary from plain names, with local ids ``<name>:<snake_case>``.

        Examples:
            >>> ConceptVocabulary.from_names(["Blue-whitish veil"], name="mine").ids
            ['mine:blue_whitish_veil']
        """
        concepts = [
            Concept(f"{name}:{_snake(term)}", term, source=source) for term in names
        ]
        return cls(concepts, name=name, modality=modality)

    # -- presentation ---------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per concept, indexed by id; list fields as tuples, attributes as dicts."""
        rows = [c.to_dict() for c in self._concepts]
        for row in rows:
            for key in ("synonyms", "modalities", "prompts"):
                row[key] = tuple(row[key])
        frame = pd.DataFrame(
            rows,
            columns=[
                "id", "name", "synonyms", "definition", "group", "parent",
                "modalities", "prompts", "source", "attributes",
            ],
        )
        return frame.set_index("id")

    def _repr_html_(self) -> str:
        esc = html.escape
        head = esc(
            f"ConceptVocabulary {self.name!r}: {len(self)} concepts, "
            f"modality {self.modality or '-'}, hash {self.hash}"
        )
        rows = []
        for c in self._concepts[:200]:
            cells = (c.id, c.name, ", ".join(c.synonyms), c.group, c.parent or "", c.source)
            rows.append("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in cells) + "</tr>")
        more = f"<p>... {len(self) - 200} more</p>" if len(self) > 200 else ""
        header = "".join(
            f"<th>{h}</th>" for h in ("id", "name", "synonyms", "group", "parent", "source")
        )
        desc = f"<p>{esc(self.description)}</p>" if self.description else ""
        return (
            f"<div><p><b>{head}</b></p>{desc}<table><thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{more}</div>"
        )

    # -- files ----------------------------------------------------------------------------
    @classmethod
    def from_file(
        cls, path: str | Path, *, format: str | None = None, strict: bool = True
    ) -> ConceptVocabulary:
        """Read a vocabulary from ``.yaml`` / ``.yml`` / ``.json`` / ``.csv`` / ``.obo``.

        Args:
            path: The file.
            format: ``"yaml"``, ``"json"``, ``"csv"`` or ``"obo"``; default from the suffix.
            strict: OBO only: if False, a malformed ``xref: UMLS:`` line is skipped with a
                warning instead of raising (real ontologies contain a few).

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            VocabularyError: On malformed content (message names file, line/row, concept).
        """
        data = read_vocabulary(path, format=format, strict=strict)
        return cls(data.concepts, name=data.name, description=data.description,
                   modality=data.modality)

    def to_file(self, path: str | Path, *, format: str | None = None) -> Path:
        """Write the vocabulary; the format follows the suffix unless ``format`` is given."""
        return write_vocabulary(self, path, format=format)

    @classmethod
    def builtin_names(cls) -> list[str]:
        """Deprecated: use :func:`list_vocabularies` (removed in 0.3)."""
        warn_renamed("ConceptVocabulary.builtin_names()", "conceptlens.vocab.list_vocabularies()")
        return list_vocabularies()

    @classmethod
    def builtin(cls, name: str) -> ConceptVocabulary:
        """Load a shipped vocabulary by name (see :func:`list_vocabularies`).

        Raises:
            KeyError: If there is no such vocabulary (the message lists the names).
        """
        names = list_vocabularies()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"no built-in vocabulary {name!r}; available: {', '.join(names)}.{hint}")
        return _load_builtin(name)


def list_vocabularies() -> list[str]:
    """Names of the vocabularies shipped with conceptlens, sorted.

    Each loads with :meth:`ConceptVocabulary.builtin`.

    Examples:
        >>> "dermoscopy" in list_vocabularies()
        True
    """
    folder = resources.files(_BUILTIN_PACKAGE).joinpath(_BUILTIN_FOLDER)
    return sorted(
        entry.name[: -len(".yaml")]
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml") and not entry.name.startswith("_")
    )


@cache
def _load_builtin(name: str) -> ConceptVocabulary:
    folder = resources.files(_BUILTIN_PACKAGE).joinpath(_BUILTIN_FOLDER)
    with resources.as_file(folder.joinpath(f"{name}.yaml")) as path:
        return ConceptVocabulary.from_file(path)


def _snake(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in text.casefold())
    return "_".join(part for part in out.split("_") if part) or "concept"


def _folded(text: Any) -> str:
    return " ".join(str(text).casefold().split())


def match_concept(
    key: Any,
    ids: list[str],
    names: Mapping[str, str] | None = None,
    synonyms: Mapping[str, Iterable[str]] | None = None,
    *,
    what: str = "concept",
    where: str = "this model/table",
) -> int:
    """Position in ``ids`` of the concept ``key`` names (the rule of
    :meth:`ConceptVocabulary.resolve`, for concept columns that come without a vocabulary).

    Parameters
    ----------
    key : object
        A concept id, preferred name or synonym (compared as ``str(key)``).
    ids : list of str
        The concept ids, in column order.
    names : mapping of str to str, optional
        Concept id -> preferred name.
    synonyms : mapping of str to iterable of str, optional
        Concept id -> synonyms.
    what : str, default "concept"
        How the message calls the key (e.g. ``"irrelevant concept"``).
    where : str
        What the message says the concepts belong to.

    Returns
    -------
    int
        The position of the concept in ``ids``.

    Raises
    ------
    UnknownConceptError
        No match, or an ambiguous name or synonym; the message suggests close matches.
    """
    from conceptlens.errors import UnknownConceptError

    text = str(key)
    if text in ids:
        return ids.index(text)
    names = names or {}
    synonyms = synonyms or {}
    wanted = _folded(text)
    tiers = (
        ("id", [(i, cid) for i, cid in enumerate(ids)]),
        ("name", [(i, names.get(cid, "")) for i, cid in enumerate(ids)]),
        ("synonym", [(i, s) for i, cid in enumerate(ids) for s in synonyms.get(cid, ())]),
    )
    for tier, entries in tiers:
        hits = sorted({i for i, value in entries if value and _folded(value) == wanted})
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise UnknownConceptError(
                f"{what} {text!r} is ambiguous: it is the {tier} of concepts "
                f"{[ids[i] for i in hits]}; use the concept id"
            )
    candidates = {_folded(value): value for _, entries in reversed(tiers) for _, value in entries if value}
    close = difflib.get_close_matches(wanted, list(candidates), n=3)
    hint = f"; did you mean {', '.join(repr(candidates[c]) for c in close)}?" if close else ""
    raise UnknownConceptError(
        f"unknown {what} {text!r}: not an id, name or synonym of the {len(ids)} concepts of "
        f"{where}{hint}"
    )
