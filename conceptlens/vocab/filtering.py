"""Concept-set filtering, after Label-free CBM (Oikarinen et al. 2023).

:func:`filter_concepts` drops, in this order:

1. **never active** concepts: the mean of a concept's ``top_k`` highest scores on a reference
   set of images (Label-free CBM's "not present in the data" filter, which uses the top-5 mean)
   is below ``min_activation``. Scores are on the scorer's scale, so an absolute cut-off is
   backbone-specific (Label-free CBM's 0.25 is for CLIP cosines); ``min_activation="auto"``
   instead drops concepts whose top-``k`` mean lies more than ``n_mads`` median absolute
   deviations below the median of all concepts' top-``k`` means (an outlier rule that needs
   most concepts to be active);
2. concepts **too similar to a class name**: cosine of the concept's global text vector to a
   class prompt's above ``max_class_similarity`` (Label-free CBM: 0.85), since such a concept
   restates the label instead of explaining it;
3. **near-duplicates**: cosine between two kept concepts' global vectors above
   ``max_duplicate_similarity`` (Label-free CBM: 0.9); the later concept in vocabulary order
   is dropped.

The text vectors are the scorer's own (ensembled over its prompt templates and synonyms);
for concepts learned from examples they are the learned vectors. Class names are encoded
through the same templates.

Measured on the demo model (a reference set of 200 images without regression structures,
the demo vocabulary plus a planted duplicate "blue-white veil"): the top-5 mean of the absent
criterion is 0.08 against 0.49-0.59 for the others, the duplicate's cosine to the
blue-whitish veil is 1.00 (every other pair <= 0.38 in the demo vocabulary), and exactly those
two are dropped.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from conceptlens._html.document import Facts, Table, Text
from conceptlens.errors import ConceptlensError

__all__ = ["ConceptFilterResult", "filter_concepts", "filtering_of"]

FILTERS = ("never_active", "class_similarity", "duplicate")

# The most recent filter results, keyed by the filtered vocabulary's content hash, so that a
# report built from a scorer on a filtered vocabulary can show what was dropped and why.
_RECENT: OrderedDict[str, ConceptFilterResult] = OrderedDict()
_MAX_RECENT = 32


def filtering_of(vocabulary: Any) -> ConceptFilterResult | None:
    """The :func:`filter_concepts` result that produced ``vocabulary`` in this session, if any.

    Reports use it to include the filtering table automatically when the scorer's vocabulary
    was filtered. Matched by content (:attr:`ConceptVocabulary.hash`); the last
    ``32`` results are remembered. A vocabulary loaded from disk or built by hand with the same
    concepts matches too (it holds the same concepts the filter kept).

    Args:
        vocabulary: A :class:`~conceptlens.vocab.ConceptVocabulary`.

    Returns:
        The :class:`ConceptFilterResult`, or ``None`` when no filtering in this session
        produced these concepts.
    """
    key = getattr(vocabulary, "hash", None)
    return _RECENT.get(key) if isinstance(key, str) else None


def _remember(result: ConceptFilterResult) -> None:
    key = result.vocabulary.hash
    _RECENT.pop(key, None)
    _RECENT[key] = result
    while len(_RECENT) > _MAX_RECENT:
        _RECENT.popitem(last=False)


@dataclass
class ConceptFilterResult:
    """What :func:`filter_concepts` kept and dropped.

    Attributes:
        vocabulary: The filtered :class:`~conceptlens.vocab.ConceptVocabulary`.
        dropped: One row per dropped concept: ``concept_id``, ``name``, ``filter`` (one of
            ``never_active``, ``class_similarity``, ``duplicate``), ``reason`` (a sentence),
            ``value`` (the statistic), ``threshold`` and ``other`` (the class or concept it
            was too similar to).
        activation: ``(K,)`` top-``k`` mean score per concept on the reference set (NaN
            without a reference set).
        similarity: ``(K, K)`` cosine of the concepts' global vectors.
        class_similarity: ``(K, C)`` cosine to each class prompt (empty without classes).
        settings: The thresholds used (with ``min_activation`` resolved).
    """

    vocabulary: Any
    dropped: pd.DataFrame
    activation: pd.Series
    similarity: pd.DataFrame
    class_similarity: pd.DataFrame
    settings: dict[str, Any]

    @property
    def kept(self) -> list[str]:
        """Ids of the kept concepts."""
        return list(self.vocabulary.ids)

    def __repr__(self) -> str:
        counts = self.dropped["filter"].value_counts().to_dict() if len(self.dropped) else {}
        return f"ConceptFilterResult(kept {len(self.kept)}, dropped {len(self.dropped)} {counts})"

    def report_sections(self, title: str = "Concept-set filtering") -> list[Any]:
        """Sections for a :class:`~conceptlens.explain.report.Report`: what was dropped and why
        (one row per concept, with the statistic and its threshold) and the thresholds used::

            report = Report("Vocabulary")
            report.sections.extend(result.report_sections())   # or: for s in ...: report.add(s)
            report.save("out", "vocabulary")
        """

        counts = self.dropped["filter"].value_counts().to_dict() if len(self.dropped) else {}
        caption = (f"Kept {len(self.kept)} concepts, dropped {len(self.dropped)}: concepts never "
                   "active on the reference images, too similar to a class name, or "
                   "near-duplicates of an earlier concept.")
        facts = {"kept": len(self.kept), "dropped": len(self.dropped),
                 **{f"dropped ({name})": int(counts.get(name, 0)) for name in FILTERS},
                 **{k: v for k, v in self.settings.items()}}
        sections: list[Any] = [Facts(title, caption=caption, facts=facts)]
        if len(self.dropped):
            sections.append(Table(f"{title}: dropped concepts", caption="Each dropped concept, "
                                  "the filter that dropped it and why.", frame=self.dropped.copy()))
        else:
            sections.append(Text(f"{title}: dropped concepts", text="No concept was dropped."))
        return sections

    def _repr_html_(self) -> str:
        head = (f"<p>Concept-set filtering: kept <b>{len(self.kept)}</b>, dropped "
                f"<b>{len(self.dropped)}</b>.</p>")
        if not len(self.dropped):
            return head
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(row[c]))}</td>"
                             for c in ("concept_id", "name", "filter", "reason")) + "</tr>"
            for _, row in self.dropped.iterrows()
        )
        return (head + "<table><thead><tr><th>concept</th><th>name</th><th>filter</th><th>reason"
                "</th></tr></thead><tbody>" + rows + "</tbody></table>")


def _class_vectors(scorer: Any, class_names: list[str]) -> np.ndarray:
    from conceptlens.vocab.concept import Concept
    from conceptlens.vocab.vocabulary import ConceptVocabulary

    modality = getattr(scorer.vocabulary, "modality", "")
    concepts = [Concept(f"class:{i}", name) for i, name in enumerate(class_names)]
    vocabulary = ConceptVocabulary(concepts, name="classes", modality=modality)
    return scorer.with_vocabulary(vocabulary).text_bank().concept_global.float().cpu().numpy()


def filter_concepts(
    scorer: Any,
    reference: Any = None,
    class_names: list[str] | None = None,
    *,
    min_activation: float | str | None = "auto",
    top_k: int = 5,
    n_mads: float = 5.0,
    max_class_similarity: float | None = 0.85,
    max_duplicate_similarity: float | None = 0.9,
) -> ConceptFilterResult:
    """Filter a scorer's vocabulary with Label-free CBM's filters (module docstring).

    Args:
        scorer: A :class:`~conceptlens.vocab.ConceptScorer` on the vocabulary to filter.
        reference: Reference images (anything the scorer scores) or their
            :class:`~conceptlens.vocab.ConceptScores`; ``None`` skips the activation filter.
        class_names: Class names for the class-similarity filter (``None`` skips it).
        min_activation: Cut-off on the top-``k`` mean score; ``"auto"`` for the outlier rule;
            ``None`` skips the filter.
        top_k: Images averaged per concept (clipped to the reference size).
        n_mads: Width of the ``"auto"`` rule, in median absolute deviations (floored at 0.01).
        max_class_similarity: Largest allowed cosine to a class prompt (``None``: skip).
        max_duplicate_similarity: Largest allowed cosine between two concepts (``None``: skip).

    Returns:
        ConceptFilterResult: the filtered vocabulary and what was dropped, and why.

    Raises:
        ConceptlensError: Reference scores from another vocabulary (a ``ValueError`` too).
    """
    vocabulary = scorer.vocabulary
    ids = list(vocabulary.ids)
    names = {c.id: c.name for c in vocabulary}
    dropped: list[dict[str, Any]] = []
    gone: set[str] = set()
    settings: dict[str, Any] = {"top_k": top_k, "max_class_similarity": max_class_similarity,
                                "max_duplicate_similarity": max_duplicate_similarity}

    activation = pd.Series(np.nan, index=pd.Index(ids, dtype=object), name="top_k_mean")
    if reference is not None and min_activation is not None:
        table = reference.table if hasattr(reference, "table") else scorer.score(reference).table
        missing = [cid for cid in ids if cid not in table.columns]
        if missing:
            raise _FilterError(f"reference scores lack concept(s) {missing[:5]} of the vocabulary")
        values = table[ids].to_numpy(dtype=np.float64)
        k = max(1, min(int(top_k), len(values)))
        activation[:] = np.sort(values, axis=0)[-k:].mean(axis=0)
        if min_activation == "auto":
            median = float(np.median(activation))
            mad = max(float(np.median(np.abs(activation - median))), 0.01)
            cut = median - n_mads * mad
        elif isinstance(min_activation, (int, float)):
            cut = float(min_activation)
        else:
            raise ValueError(f"min_activation must be a number, 'auto' or None; got {min_activation!r}")
        settings["min_activation"] = cut
        for cid in ids:
            if activation[cid] < cut:
                gone.add(cid)
                dropped.append({"concept_id": cid, "name": names[cid], "filter": "never_active",
                                "reason": f"top-{k} mean score {activation[cid]:.3g} on the reference "
                                          f"set is below {cut:.3g}", "value": float(activation[cid]),
                                "threshold": cut, "other": ""})

    bank = scorer.text_bank().concept_global.float().cpu().numpy()
    bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
    similarity = pd.DataFrame(bank @ bank.T, index=ids, columns=ids)
    class_sim = pd.DataFrame(index=ids)
    if class_names:
        vectors = _class_vectors(scorer, list(class_names))
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        class_sim = pd.DataFrame(bank @ vectors.T, index=ids, columns=list(class_names))
        if max_class_similarity is not None:
            for cid in ids:
                if cid in gone:
                    continue
                best = class_sim.loc[cid].idxmax()
                value = float(class_sim.loc[cid, best])
                if value > max_class_similarity:
                    gone.add(cid)
                    dropped.append({"concept_id": cid, "name": names[cid], "filter": "class_similarity",
                                    "reason": f"cosine {value:.3f} to class {best!r} exceeds "
                                              f"{max_class_similarity}", "value": value,
                                    "threshold": max_class_similarity, "other": str(best)})
    if max_duplicate_similarity is not None:
        kept: list[str] = []
        for cid in ids:
            if cid in gone:
                continue
            twins = [(float(similarity.loc[cid, other]), other) for other in kept
                     if similarity.loc[cid, other] > max_duplicate_similarity]
            if twins:
                value, other = max(twins)
                gone.add(cid)
                dropped.append({"concept_id": cid, "name": names[cid], "filter": "duplicate",
                                "reason": f"near-duplicate of {other!r} ({names[other]}), cosine "
                                          f"{value:.3f} > {max_duplicate_similarity}", "value": value,
                                "threshold": max_duplicate_similarity, "other": other})
            else:
                kept.append(cid)
    frame = pd.DataFrame(dropped, columns=["concept_id", "name", "filter", "reason", "value",
                                           "threshold", "other"])
    result = ConceptFilterResult(
        vocabulary=vocabulary.subset([cid for cid in ids if cid not in gone]),
        dropped=frame, activation=activation, similarity=similarity,
        class_similarity=class_sim, settings=settings,
    )
    _remember(result)
    return result


class _FilterError(ConceptlensError, ValueError):
    """Reference scores do not match the vocabulary being filtered."""
