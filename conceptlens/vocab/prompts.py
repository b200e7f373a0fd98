"""Prompt building: templates per modality, expanded over a concept's name and synonyms.

The scorer embeds every prompt of a concept and averages the L2-normalised text
embeddings (prompt ensembling). Each prompt carries the character span of the concept
mention (for local, token-level alignment) and a reference prompt, the same sentence
without the concept, for the authors' paired-softmax calibration.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Union

from conceptlens.vocab.concept import Concept, VocabularyError

__all__ = [
    "DERM7PT_TEMPLATE",
    "TEMPLATES",
    "ConceptPrompt",
    "PromptTemplate",
    "build_prompts",
    "modality_key",
    "resolve_templates",
]

PLACEHOLDER = "{concept}"
_DANGLING = re.compile(r"\s+(?:of|with|showing|shows|for|a|an|the|in|containing|demonstrating)$", re.I)


def _tidy(text: str) -> str:
    """Collapse blanks and drop blanks before punctuation."""
    text = " ".join(text.split())
    return re.sub(r"\s+([.,;:!?])", r"\1", text)


def reference_from(text: str, start: int, end: int) -> str:
    """The sentence ``text`` with ``text[start:end]`` and a dangling connective removed.

    Examples:
        >>> reference_from("This is dermatoscopy of streaks.", 24, 31)
        'This is dermatoscopy.'
    """
    head = _DANGLING.sub("", text[:start].rstrip())
    return _tidy(head + " " + text[end:].lstrip()) if text[end:].strip() else _tidy(head)


@dataclass(frozen=True)
class PromptTemplate:
    """A sentence with one ``{concept}`` slot, and its reference (concept-free) sentence.

    Args:
        text: The template, containing ``"{concept}"`` exactly once; other braces are
            literal (no ``str.format``).
        reference: The same sentence without the concept, e.g. ``"This is dermatoscopy."``;
            if empty, derived by deleting the slot and a dangling ``of`` / ``with`` /
            ``showing``.

    Examples:
        >>> t = PromptTemplate("This is dermatoscopy of {concept}.", "This is dermatoscopy.")
        >>> t.fill("streaks")
        ('This is dermatoscopy of streaks.', (24, 31))
        >>> PromptTemplate("a chest x-ray showing {concept}").reference
        'a chest x-ray'
    """

    text: str
    reference: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or self.text.count(PLACEHOLDER) != 1:
            raise ValueError(
                f"a prompt template must contain {PLACEHOLDER!r} exactly once, got {self.text!r}"
            )
        if not isinstance(self.reference, str) or PLACEHOLDER in self.reference:
            raise ValueError(
                f"a reference prompt is the sentence without the concept, got {self.reference!r}"
            )
        if not self.reference.strip():
            start = self.text.index(PLACEHOLDER)
            derived = reference_from(self.text, start, start + len(PLACEHOLDER))
            if not derived:
                raise ValueError(f"cannot derive a reference prompt from {self.text!r}; pass one")
            object.__setattr__(self, "reference", derived)

    def fill(self, term: str) -> tuple[str, tuple[int, int]]:
        """The prompt for ``term`` and the ``[start, end)`` character span of ``term`` in it."""
        start = self.text.index(PLACEHOLDER)
        return self.text.replace(PLACEHOLDER, term), (start, start + len(term))

    @classmethod
    def coerce(cls, value: TemplateLike) -> PromptTemplate:
        """Accept a :class:`PromptTemplate`, a template string, or a ``(text, reference)`` pair."""
        if isinstance(value, PromptTemplate):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, str) for v in value):
            return cls(value[0], value[1])
        raise TypeError(
            "a template must be a PromptTemplate, a string with '{concept}' or a "
            f"(text, reference) pair, got {value!r}"
        )


TemplateLike = Union[PromptTemplate, str, "tuple[str, str]"]

DERM7PT_TEMPLATE = PromptTemplate("This is dermatoscopy of {concept}.", "This is dermatoscopy.")
"""The positive / reference prompt pair of the ConceptCLIP authors' Derm7pt annotation recipe."""


def _pairs(*texts: str) -> tuple[PromptTemplate, ...]:
    return tuple(PromptTemplate(t) for t in texts)


_PATHOLOGY = _pairs(
    "This is a histopathology image of {concept}.",
    "A pathology slide showing {concept}.",
    "An H&E stained tissue section with {concept}.",
)
_BLOOD = _pairs(
    "This is a microscopy image of a white blood cell with {concept}.",
    "A peripheral blood smear showing {concept}.",
    "A leukocyte with {concept}.",
)

TEMPLATES: dict[str, tuple[PromptTemplate, ...]] = {
    "dermoscopy": (
        DERM7PT_TEMPLATE,
        PromptTemplate("A dermoscopic image showing {concept}.", "A dermoscopic image."),
        PromptTemplate("A dermoscopy image of a skin lesion with {concept}.",
                       "A dermoscopy image of a skin lesion."),
    ),
    "clinical dermatology": (
        PromptTemplate("This is a clinical photograph of skin with {concept}.",
                       "This is a clinical photograph of skin."),
        PromptTemplate("A photo of a skin lesion showing {concept}.", "A photo of a skin lesion."),
        PromptTemplate("A skin condition presenting with {concept}.", "A skin condition."),
    ),
    "chest x-ray": (
        PromptTemplate("This is a chest X-ray showing {concept}.", "This is a chest X-ray."),
        PromptTemplate("A chest radiograph with {concept}.", "A chest radiograph."),
        PromptTemplate("Findings suggestive of {concept}.", "Findings."),
    ),
    "pathology": _PATHOLOGY,
    "histopathology": _PATHOLOGY,
    "blood cell": _BLOOD,
    "microscopy": (
        PromptTemplate("This is a microscopy image of {concept}.", "This is a microscopy image."),
        PromptTemplate("A microscopic image showing {concept}.", "A microscopic image."),
    ),
    "fundus": (
        PromptTemplate("This is a fundus photograph of {concept}.", "This is a fundus photograph."),
        PromptTemplate("A retinal fundus image showing {concept}.", "A retinal fundus image."),
        PromptTemplate("A color fundus photo with {concept}.", "A color fundus photo."),
    ),
    "default": (
        PromptTemplate("This is a medical image of {concept}.", "This is a medical image."),
        PromptTemplate("A medical image showing {concept}.", "A medical image."),
        PromptTemplate("{concept}.", "A medical image."),
    ),
}
"""Prompt templates per modality (keys lower-case; ``"default"`` when the modality is unknown)."""

_MODALITY_ALIASES = {
    "dermatoscopy": "dermoscopy",
    "dermoscopic": "dermoscopy",
    "clinical": "clinical dermatology",
    "dermatology": "clinical dermatology",
    "chest xray": "chest x-ray",
    "chest x ray": "chest x-ray",
    "cxr": "chest x-ray",
    "x-ray": "chest x-ray",
    "xray": "chest x-ray",
    "radiograph": "chest x-ray",
    "histology": "histopathology",
    "blood": "blood cell",
    "blood smear": "blood cell",
    "hematology": "blood cell",
    "haematology": "blood cell",
    "white blood cell": "blood cell",
    "retina": "fundus",
    "retinal fundus": "fundus",
}


def modality_key(modality: str) -> str | None:
    """The key of :data:`TEMPLATES` for ``modality`` (case, spaces, underscores and known
    aliases forgiven), or ``None`` when conceptlens has no templates for it."""
    key = " ".join(modality.strip().casefold().replace("_", " ").split())
    if key in TEMPLATES:
        return key
    return _MODALITY_ALIASES.get(key)


def resolve_templates(
    templates: TemplateLike | Iterable[TemplateLike] | None = None, modality: str | None = None
) -> tuple[PromptTemplate, ...]:
    """The templates to use: the given ones, else those of ``modality``, else the default.

    An unknown modality falls back to ``TEMPLATES["default"]`` with a warning.
    """
    if templates is not None:
        if isinstance(templates, (PromptTemplate, str)):
            templates = [templates]
        resolved = tuple(PromptTemplate.coerce(t) for t in templates)
        if not resolved:
            raise ValueError("templates is empty; pass at least one template or None")
        return resolved
    if not modality:
        return TEMPLATES["default"]
    key = modality_key(modality)
    if key is None:
        warnings.warn(
            f"no prompt templates for modality {modality!r}; using the default ones "
            f"(known: {', '.join(sorted(TEMPLATES))})",
            stacklevel=3,
        )
        return TEMPLATES["default"]
    return TEMPLATES[key]


@dataclass(frozen=True)
class ConceptPrompt:
    """One prompt of a concept.

    Attributes:
        concept_id: The concept this prompt describes.
        text: The full prompt.
        span: ``[start, end)`` character offsets of the concept mention in ``text``.
        reference: The same sentence without the concept (for paired calibration); empty
            when nothing is left (an override prompt that is just the term), in which case
            ``calibration="paired_softmax"`` refuses the concept.
        template: ``text`` with the mention replaced by ``{concept}``.
    """

    concept_id: str
    text: str
    span: tuple[int, int]
    reference: str
    template: str

    @property
    def term(self) -> str:
        """The concept mention: ``text[span[0]:span[1]]``."""
        return self.text[self.span[0] : self.span[1]]


def _find_term(text: str, terms: Sequence[str]) -> tuple[int, int] | None:
    """Span of the longest term occurring in ``text`` (case-insensitive, word-bounded first)."""
    folded = text.casefold()
    for term in sorted(terms, key=len, reverse=True):
        needle = term.casefold()
        bounded = re.search(r"(?<!\w)" + re.escape(needle) + r"(?!\w)", folded)
        if bounded:
            return bounded.start(), bounded.end()
    for term in sorted(terms, key=len, reverse=True):
        start = folded.find(term.casefold())
        if start >= 0:
            return start, start + len(term)
    return None


def _override_prompts(concept: Concept, terms: Sequence[str]) -> list[ConceptPrompt]:
    prompts = []
    for text in concept.prompts:
        span = _find_term(text, terms)
        if span is None:
            raise VocabularyError(
                f"prompt {text!r} mentions none of the concept's terms {list(terms)!r}; "
                "a prompt override must contain the name or a synonym",
                concept=concept.id,
            )
        start, end = span
        prompts.append(
            ConceptPrompt(
                concept_id=concept.id,
                text=text,
                span=span,
                reference=reference_from(text, start, end),
                template=text[:start] + PLACEHOLDER + text[end:],
            )
        )
    return prompts


def build_prompts(
    vocabulary: Iterable[Concept],
    templates: TemplateLike | Iterable[TemplateLike] | None = None,
    *,
    modality: str | None = None,
    synonyms: bool = True,
) -> dict[str, list[ConceptPrompt]]:
    """All prompts per concept, in vocabulary order.

    Each concept gets ``templates x terms`` prompts (template-major), where the terms are
    its name and, if ``synonyms``, its synonyms (case-insensitive duplicates dropped).
    A concept with its own ``prompts`` uses those instead; the span is where its name or a
    synonym occurs in each (the longest match, case-insensitive).

    Args:
        vocabulary: A :class:`~conceptlens.vocab.vocabulary.ConceptVocabulary` (or any
            iterable of concepts; its ``modality`` attribute, if any, picks the templates).
        templates: Templates to use for every concept (``PromptTemplate``, strings with
            ``{concept}``, or ``(text, reference)`` pairs). Default:
            ``TEMPLATES[modality or vocabulary.modality or "default"]``.
        modality: Picks the default templates; ignored when ``templates`` is given.
        synonyms: Expand over synonyms too (False: the preferred name only).

    Returns:
        ``{concept_id: [ConceptPrompt, ...]}``, ordered like the vocabulary.

    Raises:
        VocabularyError: If a prompt override mentions none of the concept's terms.

    Examples:
        >>> from conceptlens.vocab.vocabulary import ConceptVocabulary
        >>> vocab = ConceptVocabulary([Concept("d:veil", "blue-whitish veil")], modality="dermoscopy")
        >>> p = build_prompts(vocab, [DERM7PT_TEMPLATE])["d:veil"][0]
        >>> p.text, p.term, p.reference
        ('This is dermatoscopy of blue-whitish veil.', 'blue-whitish veil', 'This is dermatoscopy.')
    """
    default_modality = modality or getattr(vocabulary, "modality", "") or None
    resolved = resolve_templates(templates, default_modality)
    out: dict[str, list[ConceptPrompt]] = {}
    for concept in vocabulary:
        if not isinstance(concept, Concept):
            raise TypeError(f"expected Concept objects, got {type(concept).__name__}")
        terms = concept.terms if synonyms else (concept.name,)
        if concept.prompts:
            out[concept.id] = _override_prompts(concept, concept.terms)
            continue
        prompts, seen = [], set()
        for template in resolved:
            for term in terms:
                text, span = template.fill(term)
                if text in seen:
                    continue
                seen.add(text)
                prompts.append(
                    ConceptPrompt(concept.id, text, span, template.reference, template.text)
                )
        out[concept.id] = prompts
    return out
