"""The text side of concept scoring: ensembled text vectors, memoised and kept on disk.

A :class:`TextBank` holds, per concept of a vocabulary, the normalised global text vector
``t`` and the normalised concept token vector ``u`` (and the reference prompts' ``r`` / ``v``),
see :mod:`conceptlens.vocab.scorer` for the formulas. Building one runs the backbone's text
tower over every prompt (about 9 per concept); on the full-size ConceptCLIP architecture a
26-concept vocabulary took 80-90 s of text encoding. So banks are

* memoised per backbone object in memory (:func:`clear_text_memo` forgets them), and
* kept on disk by a :class:`TextBankStore` (one ``.safetensors`` file per bank, no pickle),
  keyed by the backbone identity, the vocabulary hash and modality, and the prompt settings:
  a second process scoring the same vocabulary runs the text tower zero times.

Padding: a backbone whose ``forward_texts`` takes ``padding=`` (the ConceptCLIP adapter pads
to 77 tokens by default, like the authors) is asked for ``padding="longest"`` when the result
does not depend on the padded length (``text_token="span"``: the span mean and the class-token
global embedding only see real tokens, the attention mask hides the rest) and keeps its fixed
length for ``text_token="last"``, whose vector *is* a padding position.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from conceptlens.models.base import Backbone, TextFeatures

__all__ = [
    "TextBank",
    "TextBankStore",
    "bank_key",
    "build_text_bank",
    "clear_text_memo",
    "encode_text_vectors",
    "token_vector",
]

_FORMAT_VERSION = 1
_FIELDS = ("concept_global", "concept_local", "reference_global", "reference_local",
           "reference_index")


@dataclass
class TextBank:
    """Ensembled text vectors of a vocabulary, float32, one row per concept.

    Attributes:
        concept_global: ``(K, D)`` normalised global text vectors ``t``.
        concept_local: ``(K, D)`` normalised concept token vectors ``u``.
        reference_global: ``(R, D)`` distinct normalised reference global vectors, or ``None``
            when the templates have no reference prompt.
        reference_local: ``(R, D)`` distinct normalised reference token vectors, or ``None``.
        reference_index: ``(K,)`` row of each concept's reference in the two tables above.
    """

    concept_global: torch.Tensor
    concept_local: torch.Tensor
    reference_global: torch.Tensor | None = None
    reference_local: torch.Tensor | None = None
    reference_index: torch.Tensor | None = None

    def to(self, device: torch.device) -> TextBank:
        """A copy on ``device``."""
        return TextBank(*(t.to(device) if t is not None else None for t in (
            self.concept_global, self.concept_local, self.reference_global,
            self.reference_local, self.reference_index)))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The bank's tensors by field name (absent references left out)."""
        return {name: getattr(self, name) for name in _FIELDS if getattr(self, name) is not None}


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------


def token_vector(features: TextFeatures, row: int, span: tuple[int, int] | None, mode: str) -> torch.Tensor:
    """Token vector of one encoded text (not normalised).

    Args:
        features: Output of :meth:`Backbone.encode_texts`.
        row: Which text of the batch.
        span: Character ``[start, end)`` of the concept in the text; ``None`` for all
            non-special tokens of the text.
        mode: ``"span"`` (mean over the selected tokens) or ``"last"`` (last position).

    Raises:
        ValueError: No token of the text falls inside ``span`` (e.g. truncated away).
    """
    tokens = features.token_embeds[row].float()
    if mode == "last":
        return tokens[-1]
    offsets = features.offsets[row]
    real = features.attention_mask[row].bool() & (offsets[:, 1] > offsets[:, 0])
    if span is not None:
        start, end = int(span[0]), int(span[1])
        real = real & (offsets[:, 0] < end) & (offsets[:, 1] > start)
    if not bool(real.any()):
        text = features.texts[row] if row < len(features.texts) else f"text #{row}"
        where = f"characters {span[0]}-{span[1]}" if span is not None else "any token"
        raise ValueError(f"no token of prompt {text!r} covers {where} (truncated or empty?)")
    return tokens[real].mean(dim=0)


def _accepts_padding(backbone: Backbone) -> bool:
    try:
        return "padding" in inspect.signature(backbone.forward_texts).parameters
    except (TypeError, ValueError):
        return False


def _encode(backbone: Backbone, texts: list[str], text_token: str) -> TextFeatures:
    if text_token == "span" and _accepts_padding(backbone):
        with torch.no_grad():
            return backbone.forward_texts(texts, padding="longest")
    return backbone.encode_texts(texts)


def encode_text_vectors(
    backbone: Backbone,
    texts: Sequence[str],
    spans: Sequence[tuple[int, int] | None],
    *,
    text_token: str = "span",
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode texts and pick each one's token vector.

    Args:
        backbone: The backbone.
        texts: ``N`` texts (duplicates are encoded once).
        spans: Per text, the concept's character span, or ``None`` for the whole sentence.
        text_token: ``"span"`` or ``"last"`` (see :func:`token_vector`).
        batch_size: Texts per call of the text tower.

    Returns:
        ``(global, local)``: ``(N, D)`` normalised global embeddings (float32, CPU) and
        ``(N, D)`` token vectors (float32, CPU, not normalised).
    """
    unique: dict[tuple[str, tuple[int, int] | None], int] = {}
    for text, span in zip(texts, spans, strict=True):
        unique.setdefault((text, None if span is None else (int(span[0]), int(span[1]))), len(unique))
    keys = list(unique)
    distinct_texts = list(dict.fromkeys(text for text, _ in keys))
    by_text: dict[str, list[int]] = {}
    for index, (text, _) in enumerate(keys):
        by_text.setdefault(text, []).append(index)
    globals_: list[torch.Tensor | None] = [None] * len(keys)
    locals_: list[torch.Tensor | None] = [None] * len(keys)
    lengths: set[int] = set()
    for start in range(0, len(distinct_texts), batch_size):
        chunk = distinct_texts[start:start + batch_size]
        features = _encode(backbone, chunk, text_token)
        lengths.add(int(features.token_embeds.shape[1]))
        if text_token == "last" and len(lengths) > 1:
            raise ValueError(
                f"text_token='last' needs a backbone that pads every text to one fixed length "
                f"(ConceptCLIP pads to 77); {type(backbone).__name__} returned lengths {sorted(lengths)}"
            )
        if not features.texts:
            features.texts = list(chunk)
        for row, text in enumerate(chunk):
            g = features.global_embeds[row].float().cpu()
            for index in by_text[text]:
                globals_[index] = g
                locals_[index] = token_vector(features, row, keys[index][1], text_token).cpu()
    order = [unique[(t, None if s is None else (int(s[0]), int(s[1])))] for t, s in zip(texts, spans, strict=True)]
    return torch.stack([globals_[i] for i in order]), torch.stack([locals_[i] for i in order])


def _ensemble(vectors: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per group: mean of the L2-normalised rows, renormalised."""
    normed = F.normalize(vectors, dim=-1)
    return F.normalize(torch.stack([normed[list(g)].mean(dim=0) for g in groups]), dim=-1)


def _word_span(text: str, word: str | None) -> tuple[int, int] | None:
    """Character span of ``word`` in ``text`` (``None`` for no word)."""
    if word is None:
        return None
    start = text.find(word)
    if start < 0:
        raise ValueError(f"reference_word {word!r} is not in the reference prompt {text!r}")
    return start, start + len(word)


def build_text_bank(
    backbone: Backbone,
    vocabulary: Any,
    *,
    templates: Sequence[Any] | None,
    synonyms: bool,
    text_token: str,
    need_reference: bool,
    batch_size: int = 32,
    reference_word: str | None = None,
) -> TextBank:
    """Encode a vocabulary's prompts and ensemble them per concept.

    Args:
        backbone: The backbone.
        vocabulary: A :class:`~conceptlens.vocab.ConceptVocabulary`.
        templates: Prompt templates (``None`` for the modality's defaults).
        synonyms: Ensemble over synonyms too.
        text_token: ``"span"`` or ``"last"``.
        need_reference: Raise when a prompt has no reference (``paired_softmax``).
        batch_size: Texts per call of the text tower.
        reference_word: Word of each reference prompt whose tokens make its token vector
            (``None``: the whole sentence).

    Raises:
        ValueError: A concept without prompts, a missing reference when one is needed, or a
            reference prompt without ``reference_word``.
    """
    from conceptlens.vocab.prompts import build_prompts

    prompts = build_prompts(vocabulary, list(templates) if templates is not None else None,
                            synonyms=synonyms)
    texts: list[str] = []
    spans: list[tuple[int, int] | None] = []
    concept_rows: list[list[int]] = []
    reference_rows: list[list[int]] = []
    missing_reference: str | None = None
    for concept in vocabulary:
        own = prompts.get(concept.id) or []
        if not own:
            raise ValueError(f"no prompt was built for concept {concept.id!r} ({concept.name!r})")
        rows, refs = [], []
        for prompt in own:
            rows.append(len(texts))
            texts.append(prompt.text)
            spans.append(tuple(prompt.span))
            if prompt.reference:
                refs.append(len(texts))
                texts.append(prompt.reference)
                spans.append(_word_span(prompt.reference, reference_word))
            elif missing_reference is None:
                missing_reference = f"concept {concept.id!r}, prompt {prompt.text!r}"
        concept_rows.append(rows)
        reference_rows.append(refs)
    if need_reference and missing_reference is not None:
        raise ValueError(
            f"calibration='paired_softmax' needs a reference prompt for every template; "
            f"none for {missing_reference}"
        )
    global_vecs, local_vecs = encode_text_vectors(
        backbone, texts, spans, text_token=text_token, batch_size=batch_size
    )
    bank = TextBank(
        concept_global=_ensemble(global_vecs, concept_rows),
        concept_local=_ensemble(local_vecs, concept_rows),
    )
    if missing_reference is None:
        ref_global = _ensemble(global_vecs, reference_rows)
        ref_local = _ensemble(local_vecs, reference_rows)
        both = torch.cat([ref_global, ref_local], dim=1)
        distinct, inverse = torch.unique(both, dim=0, return_inverse=True)
        dim = ref_global.shape[1]
        bank.reference_global = distinct[:, :dim].contiguous()
        bank.reference_local = distinct[:, dim:].contiguous()
        bank.reference_index = inverse
    return bank


# ----------------------------------------------------------------------------------------------
# Memo and disk store
# ----------------------------------------------------------------------------------------------


def bank_key(backbone: Backbone, vocabulary: Any, prompt_key: str) -> str:
    """What determines a text bank: backbone identity, vocabulary (hash and modality, which
    picks the default templates) and the prompt settings."""
    modality = getattr(vocabulary, "modality", "")
    return f"{backbone.identity.key}|{vocabulary.hash}|{modality}|{prompt_key}"


# Text banks memoised per backbone object (weakly) and per bank key.
_TEXT_MEMO: weakref.WeakKeyDictionary[Backbone, dict[str, TextBank]] = weakref.WeakKeyDictionary()


def clear_text_memo() -> None:
    """Forget every memoised text bank (e.g. after changing a model's weights in place).

    Banks kept on disk by a :class:`TextBankStore` are not touched; they are keyed by the
    backbone identity, which covers the weights hash where the backbone knows it.
    """
    _TEXT_MEMO.clear()


def memo_for(backbone: Backbone) -> dict[str, TextBank]:
    """The in-memory banks of one backbone object."""
    return _TEXT_MEMO.setdefault(backbone, {})


class TextBankStore:
    """A folder of text banks, one ``.safetensors`` file per bank key.

    Files are written to a temporary name and moved into place (a reader never sees half a
    file); a file that fails to load or does not match the key, the number of concepts or the
    embedding width is ignored and rewritten.

    Args:
        directory: The folder (created on first write).

    Attributes:
        hits, misses: Lookups served from disk / not.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.hits = 0
        self.misses = 0

    def path_for(self, key: str) -> Path:
        """File of the bank for ``key``."""
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()}.safetensors"

    def get(self, key: str, *, n_concepts: int, embed_dim: int) -> TextBank | None:
        """The stored bank for ``key``, or ``None``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.path_for(key)
        bank = None
        if path.is_file():
            try:
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as handle:
                    meta = handle.metadata() or {}
                tensors = load_file(str(path))
                if meta.get("key") == key and meta.get("version") == str(_FORMAT_VERSION):
                    bank = _bank_from(tensors, n_concepts, embed_dim)
            except (OSError, ValueError, SafetensorError, RuntimeError):
                bank = None
        if bank is None:
            self.misses += 1
        else:
            self.hits += 1
        return bank

    def put(self, key: str, bank: TextBank) -> None:
        """Store ``bank`` under ``key`` atomically; a failure to write is not an error."""
        from safetensors.torch import save_file

        path = self.path_for(key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False)
            tmp = Path(handle.name)
            handle.close()
            tensors = {name: t.detach().cpu().contiguous() for name, t in bank.tensors().items()}
            save_file(tensors, str(tmp), metadata={"key": key, "version": str(_FORMAT_VERSION)})
            os.replace(tmp, path)
            tmp = None
        except OSError:
            pass
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"TextBankStore({str(self.directory)!r})"


def _bank_from(tensors: dict[str, torch.Tensor], n_concepts: int, embed_dim: int) -> TextBank | None:
    if not {"concept_global", "concept_local"} <= set(tensors) or not set(tensors) <= set(_FIELDS):
        return None
    for name in ("concept_global", "concept_local"):
        t = tensors[name]
        if t.dtype != torch.float32 or tuple(t.shape) != (n_concepts, embed_dim):
            return None
    refs = [tensors.get(n) for n in _FIELDS[2:]]
    if any(r is not None for r in refs):
        if any(r is None for r in refs):
            return None
        ref_g, ref_l, index = refs
        if (ref_g.ndim != 2 or ref_g.shape != ref_l.shape or ref_g.shape[1] != embed_dim
                or index.dtype != torch.int64 or tuple(index.shape) != (n_concepts,)
                or int(index.min()) < 0 or int(index.max()) >= ref_g.shape[0]):
            return None
    if not all(bool(torch.isfinite(t.float()).all()) for t in tensors.values()):
        return None
    return TextBank(**tensors)

