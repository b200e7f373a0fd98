"""Concepts learned from example images (concept activation vectors in the joint space).

When no prompt describes a concept well, or the model's text side is weak, a concept can be
*defined by examples*: images that show it (positives) and images that do not (negatives, or
random images). :func:`concept_from_examples` learns two unit vectors in the backbone's joint
image-text space and returns an ordinary :class:`~conceptlens.vocab.Concept` that a
:class:`~conceptlens.vocab.ConceptVocabulary` holds like any other; the
:class:`~conceptlens.vocab.ConceptScorer` then uses the learned vectors in place of the text
vectors for that concept, so text-defined and example-defined concepts mix in one score table,
one bottleneck and one report.

The vectors
-----------
* global ``w``: an L2-regularised logistic regression on the L2-normalised global image
  embeddings (positives 1, negatives 0, balanced class weights); ``w`` is its coefficient
  vector, normalised. The scorer's global cosine ``g.w`` is then the (scaled, shifted)
  decision function of that classifier: a concept activation vector (CAV, Kim et al. 2018)
  in the joint space, as in post-hoc CBMs (Yuksekgonul et al. 2023).
* local ``u``: a multiple-instance version on the patch tokens (which live in the same joint
  space for ConceptCLIP-like models). Start from ``w``; then, a few times, take each positive
  image's top patches along ``u`` (an eighth of the grid) as positive instances against every
  patch of the negative images and refit. The scorer's local score ``max_i p_i.u`` and the
  concept maps ``p_i.u`` follow. Without negative *images* (positives against the random
  reference embeddings) there are no negative patches, and ``u = w``.

Both vectors are cosine-scale directions, not calibrated probabilities: their raw score
ranges differ from text concepts'. Fit a :class:`~conceptlens.vocab.calibration.ConceptCalibrator`
on concept labels to put every column on a probability scale. The scorer's ``cosine``
calibration (its default) is the natural one for them; ``sigmoid`` applies the model's text
scale and bias and ``paired_softmax`` compares with a *text* reference prompt, neither of which
was fitted for a learned direction.

Where the vectors live
----------------------
The :class:`Concept` carries only metadata (``attributes["learned_from"] == "examples"``, the
backbone identity key and a fingerprint of the vectors, so the vocabulary hash changes when
the vectors do). The vectors themselves sit in a :class:`ConceptVectorStore` keyed by
``(backbone identity key, concept id, fingerprint)``: :data:`EXAMPLE_VECTORS` in memory, saved
and loaded as ``.npz`` (``allow_pickle=False``) with :meth:`ConceptVectorStore.save` /
:meth:`ConceptVectorStore.load`, or a ``cache_dir`` that :func:`concept_from_examples` writes
to and the scorer reads from (:func:`use_vector_dir`).

Held-out accuracy
-----------------
Before the final fit on all examples, a stratified split (``holdout`` of each class, at least
one image) is fitted on the rest and scored: ``validation_`` records the held-out ROC AUC and
accuracy of the global and local scores, and :func:`learned_vector` gives them back.
"""

from __future__ import annotations

import hashlib
import html
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conceptlens._html.document import Facts
from conceptlens.errors import ConceptlensError, ConceptlensWarning
from conceptlens.vocab.batching import iter_feature_batches
from conceptlens.vocab.concept import Concept
from conceptlens.vocab.reference import default_reference

__all__ = [
    "EXAMPLE_VECTORS",
    "ConceptVectorStore",
    "ExampleConceptError",
    "ExampleConceptWarning",
    "LearnedConceptVector",
    "apply_learned_vectors",
    "concept_from_examples",
    "is_example_concept",
    "learned_vector",
    "use_vector_dir",
]

LEARNED_FROM = "examples"
_FORMAT = "conceptlens-concept-vectors/1"


class ExampleConceptError(ConceptlensError, ValueError):
    """An example-learned concept cannot be learned or scored (too few examples, vectors
    missing for this backbone, a vector file of the wrong format)."""


class ExampleConceptWarning(ConceptlensWarning):
    """An example-learned concept separates its held-out examples poorly."""


@dataclass
class LearnedConceptVector:
    """The learned vectors of one example-defined concept.

    Attributes:
        concept_id: The concept's id.
        backbone_key: :attr:`BackboneIdentity.key` of the backbone the vectors live in.
        global_vector: ``(D,)`` unit vector ``w`` for the global score.
        local_vector: ``(D,)`` unit vector ``u`` for patch scores.
        n_positives: Positive example images used.
        n_negatives: Negative example images used (0 when the random reference was used).
        negatives: ``"images"`` or ``"reference"`` (random reference embeddings).
        validation: Held-out ``global_auc``, ``global_accuracy``, ``local_auc``,
            ``n_holdout_pos`` and ``n_holdout_neg``.
    """

    concept_id: str
    backbone_key: str
    global_vector: np.ndarray
    local_vector: np.ndarray
    n_positives: int
    n_negatives: int
    negatives: str = "images"
    validation: dict[str, float] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of the backbone key and both vectors (float32)."""
        digest = hashlib.sha256(self.backbone_key.encode())
        digest.update(np.ascontiguousarray(self.global_vector, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.local_vector, dtype=np.float32).tobytes())
        return digest.hexdigest()[:16]

    def __repr__(self) -> str:
        val = ", ".join(f"{k}={v:.3f}" for k, v in self.validation.items() if "auc" in k)
        return (f"LearnedConceptVector({self.concept_id!r}, D={len(self.global_vector)}, "
                f"{self.n_positives} pos / {self.n_negatives} neg ({self.negatives}), {val})")

    def report_sections(self, title: str | None = None) -> list[Any]:
        """Sections for a :class:`~conceptlens.explain.report.Report`: how the concept was
        learned and its held-out accuracy (numbers in the JSON twin)::

            report = Report("Learned concepts")
            report.sections.extend(learned_vector(concept).report_sections())  # or report.add
            report.save("out", "concepts")
        """

        v = self.validation
        caption = (f"Concept learned from {self.n_positives} positive and {self.n_negatives} "
                   f"negative example images ({self.negatives}).")
        if "global_auc" in v:
            caption += (f" On {int(v.get('n_holdout_pos', 0))} + {int(v.get('n_holdout_neg', 0))} "
                        f"held-out examples: AUC {v['global_auc']:.3f}"
                        + (f", accuracy {v['global_accuracy']:.3f}" if "global_accuracy" in v
                           else "") + ".")
        facts: dict[str, Any] = {"concept": self.concept_id, "dimension": len(self.global_vector),
                                 "positives": self.n_positives, "negatives": self.n_negatives,
                                 "negatives from": self.negatives}
        facts.update({f"held-out {k.replace('_', ' ')}": val for k, val in v.items()})
        facts["fingerprint"] = self.fingerprint
        return [Facts(title or f"Concept learned from examples: {self.concept_id}",
                      caption=caption, facts=facts)]

    def _repr_html_(self) -> str:
        rows = [("concept", self.concept_id), ("dimension", str(len(self.global_vector))),
                ("positives", str(self.n_positives)),
                ("negatives", f"{self.n_negatives} ({self.negatives})")]
        rows += [(f"held-out {k.replace('_', ' ')}", f"{v:.3f}" if isinstance(v, float) else str(v))
                 for k, v in self.validation.items()]
        body = "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows)
        return f"<table><caption>Concept learned from examples</caption><tbody>{body}</tbody></table>"


class ConceptVectorStore:
    """Learned concept vectors keyed by ``(backbone identity key, concept id, fingerprint)``.

    Args:
        directory: Optional folder; vectors added are also written there (one ``.npz`` per
            vector) and looked up there when not in memory.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self._vectors: dict[tuple[str, str, str], LearnedConceptVector] = {}
        self.directories: list[Path] = [] if directory is None else [Path(directory)]

    def __len__(self) -> int:
        return len(self._vectors)

    def __iter__(self) -> Any:
        return iter(list(self._vectors.values()))

    def add(self, vector: LearnedConceptVector, directory: str | Path | None = None) -> str:
        """Store a vector (and write it to ``directory``); returns its fingerprint."""
        key = (vector.backbone_key, vector.concept_id, vector.fingerprint)
        self._vectors[key] = vector
        if directory is not None:
            folder = Path(directory)
            folder.mkdir(parents=True, exist_ok=True)
            _write([vector], folder / f"{_safe(vector.concept_id)}-{vector.fingerprint}.npz")
        return vector.fingerprint

    def get(self, backbone_key: str, concept_id: str, fingerprint: str) -> LearnedConceptVector | None:
        """The stored vector, from memory or the store's folders, or ``None``."""
        key = (backbone_key, concept_id, fingerprint)
        if key in self._vectors:
            return self._vectors[key]
        for folder in self.directories:
            path = folder / f"{_safe(concept_id)}-{fingerprint}.npz"
            if path.is_file():
                for vector in _read(path):
                    self._vectors[(vector.backbone_key, vector.concept_id, vector.fingerprint)] = vector
                if key in self._vectors:
                    return self._vectors[key]
        return None

    def save(self, path: str | Path, concepts: Any = None) -> Path:
        """Write vectors (all, or those of the example concepts in ``concepts``) to one ``.npz``."""
        if concepts is None:
            chosen = list(self._vectors.values())
        else:
            chosen = []
            for concept in concepts:
                if is_example_concept(concept):
                    attrs = concept.attributes
                    vector = self.get(attrs["backbone"], concept.id, attrs["vector"])
                    if vector is None:
                        raise ExampleConceptError(f"no stored vector for concept {concept.id!r}")
                    chosen.append(vector)
        path = Path(path)
        _write(chosen, path)
        return path

    def load(self, path: str | Path) -> list[LearnedConceptVector]:
        """Read vectors written by :meth:`save` into the store; returns them."""
        vectors = _read(Path(path))
        for vector in vectors:
            self._vectors[(vector.backbone_key, vector.concept_id, vector.fingerprint)] = vector
        return vectors

    def __repr__(self) -> str:
        return f"ConceptVectorStore({len(self)} vectors, folders={[str(d) for d in self.directories]})"


EXAMPLE_VECTORS = ConceptVectorStore()
"""The process-wide store :func:`concept_from_examples` writes to and the scorer reads from."""


def use_vector_dir(directory: str | Path) -> None:
    """Let :data:`EXAMPLE_VECTORS` look up vectors in ``directory`` too (a ``cache_dir``)."""
    folder = Path(directory)
    if folder not in EXAMPLE_VECTORS.directories:
        EXAMPLE_VECTORS.directories.append(folder)


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80]


def _write(vectors: list[LearnedConceptVector], path: Path) -> None:
    meta = [{"concept_id": v.concept_id, "backbone_key": v.backbone_key, "n_positives": v.n_positives,
             "n_negatives": v.n_negatives, "negatives": v.negatives, "validation": v.validation}
            for v in vectors]
    dim = len(vectors[0].global_vector) if vectors else 0
    arrays = {
        "global": np.stack([v.global_vector for v in vectors]).astype(np.float32) if vectors
        else np.zeros((0, dim), np.float32),
        "local": np.stack([v.local_vector for v in vectors]).astype(np.float32) if vectors
        else np.zeros((0, dim), np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, meta=np.array(json.dumps({"format": _FORMAT, "vectors": meta})), **arrays)


def _read(path: Path) -> list[LearnedConceptVector]:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            glob, loc = np.asarray(data["global"]), np.asarray(data["local"])
    except (OSError, ValueError, KeyError) as error:
        raise ExampleConceptError(f"{path}: not a concept-vector file ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ExampleConceptError(f"{path}: not a concept-vector file (format {meta.get('format')!r})")
    return [
        LearnedConceptVector(
            concept_id=str(m["concept_id"]), backbone_key=str(m["backbone_key"]),
            global_vector=glob[i].astype(np.float32), local_vector=loc[i].astype(np.float32),
            n_positives=int(m["n_positives"]), n_negatives=int(m["n_negatives"]),
            negatives=str(m.get("negatives", "images")),
            validation={k: float(v) for k, v in dict(m.get("validation", {})).items()},
        )
        for i, m in enumerate(meta["vectors"])
    ]


def is_example_concept(concept: Any) -> bool:
    """Whether ``concept`` was learned from example images."""
    attrs = getattr(concept, "attributes", None) or {}
    return attrs.get("learned_from") == LEARNED_FROM and "vector" in attrs and "backbone" in attrs


def learned_vector(concept: Concept, backbone: Any = None,
                   store: ConceptVectorStore | None = None) -> LearnedConceptVector:
    """The learned vectors of an example concept (for ``backbone``, default: the one it was
    learned on).

    Raises:
        ExampleConceptError: Not an example concept, learned on another backbone, or the
            vectors are not in the store (load them with ``EXAMPLE_VECTORS.load(path)``).
    """
    if not is_example_concept(concept):
        raise ExampleConceptError(f"concept {concept.id!r} was not learned from examples")
    store = store if store is not None else EXAMPLE_VECTORS
    attrs = concept.attributes
    key = attrs["backbone"]
    if backbone is not None and backbone.identity.key != key:
        raise ExampleConceptError(
            f"concept {concept.id!r} was learned from examples on another backbone "
            f"(identity {key[:12]}); learn it again with concept_from_examples on this one "
            f"({backbone.identity.key[:12]}, {backbone.identity.model_id})"
        )
    vector = store.get(key, concept.id, attrs["vector"])
    if vector is None:
        raise ExampleConceptError(
            f"the learned vectors of concept {concept.id!r} (fingerprint {attrs['vector']}) are "
            "not loaded; EXAMPLE_VECTORS.load(path) the file saved with EXAMPLE_VECTORS.save, or "
            "use_vector_dir(cache_dir)"
        )
    return vector


def apply_learned_vectors(backbone: Any, vocabulary: Any, bank: Any) -> Any:
    """Replace the text vectors of a scorer's text bank by learned vectors where the
    vocabulary holds example concepts (the :class:`ConceptScorer` hook). Returns the bank."""
    rows = [(i, c) for i, c in enumerate(vocabulary) if is_example_concept(c)]
    if not rows:
        return bank
    glob = bank.concept_global.clone()
    loc = bank.concept_local.clone()
    for i, concept in rows:
        vector = learned_vector(concept, backbone)
        glob[i] = torch.as_tensor(vector.global_vector, dtype=glob.dtype)
        loc[i] = torch.as_tensor(vector.local_vector, dtype=loc.dtype)
    bank.concept_global, bank.concept_local = glob, loc
    return bank


# ----------------------------------------------------------------------------------------------
# Learning
# ----------------------------------------------------------------------------------------------


def _features(backbone: Any, images: Any, batch_size: int, cache: Any) -> tuple[np.ndarray, np.ndarray]:
    glob, patch = [], []
    errors: list[dict[str, str]] = []
    for batch in iter_feature_batches(backbone, images, batch_size=batch_size, cache=cache,
                                      progress=False, errors=errors, desc="example images"):
        glob.append(batch.global_embeds.float().cpu().numpy())
        patch.append(batch.patch_embeds.float().cpu().numpy())
    if errors:
        raise ExampleConceptError(f"{len(errors)} example image(s) could not be read: {errors[0]}")
    if not glob:
        return np.zeros((0, backbone.embed_dim)), np.zeros((0, 1, backbone.embed_dim))
    return np.concatenate(glob), np.concatenate(patch)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _fit_direction(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(x, y)
    coef = model.coef_[0]
    norm = float(np.linalg.norm(coef))
    if norm == 0.0:
        raise ExampleConceptError("the examples could not be separated at all (zero direction)")
    return coef / norm, float(model.intercept_[0]) / norm


def _fit_local(pos_patches: np.ndarray, neg_patches: np.ndarray, start: np.ndarray, c: float,
               rounds: int, rng: np.random.Generator) -> np.ndarray:
    """Multiple-instance direction on patch tokens (see the module docstring)."""
    if len(neg_patches) == 0:
        return start
    n_patches = pos_patches.shape[1]
    k = max(1, n_patches // 8)
    negatives = neg_patches.reshape(-1, neg_patches.shape[-1])
    if len(negatives) > 20000:
        negatives = negatives[rng.choice(len(negatives), 20000, replace=False)]
    u = start
    for _ in range(rounds):
        along = pos_patches @ u
        top = np.argsort(-along, axis=1)[:, :k]
        positives = np.take_along_axis(pos_patches, top[..., None], axis=1).reshape(-1, pos_patches.shape[-1])
        x = np.concatenate([positives, negatives])
        y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
        u, _ = _fit_direction(x, y, c)
    return u


def _learn(pos_g: np.ndarray, neg_g: np.ndarray, pos_p: np.ndarray | None, neg_p: np.ndarray | None,
           c: float, rounds: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([pos_g, neg_g])
    y = np.concatenate([np.ones(len(pos_g)), np.zeros(len(neg_g))])
    w, _ = _fit_direction(x, y, c)
    if pos_p is None or neg_p is None or len(neg_p) == 0:
        return w, w
    return w, _fit_local(pos_p, neg_p, w, c, rounds, rng)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def concept_from_examples(
    backbone: Any,
    concept_id: str,
    positives: Any,
    negatives: Any = None,
    name: str | None = None,
    *,
    synonyms: tuple[str, ...] = (),
    definition: str = "",
    group: str = "",
    regularization: float = 1.0,
    holdout: float = 0.25,
    mil_rounds: int = 3,
    cache_dir: str | Path | None = None,
    store: ConceptVectorStore | None = None,
    batch_size: int = 32,
    random_state: int = 0,
) -> Concept:
    """Learn a concept from example images and return it as a :class:`Concept`.

    Args:
        backbone: The :class:`~conceptlens.models.Backbone` whose joint space the vectors live in.
        concept_id: Id of the new concept (a local id such as ``"mine:sticker"``).
        positives: Images that show the concept (anything
            :meth:`ConceptScorer.score` accepts); at least 4.
        negatives: Images that do not show it. ``None``: positives against the random
            reference embeddings shipped with the backbone (the demo model has them); then
            the local vector equals the global one (no negative patches).
        name: Preferred name (default: the id); used in tables and plots, not for scoring.
        synonyms, definition, group: Passed to :class:`Concept`.
        regularization: Inverse L2 strength ``C`` of the logistic regressions (on unit vectors).
        holdout: Fraction of each class held out to measure accuracy before the final fit.
        mil_rounds: Rounds of the multiple-instance refit of the local vector.
        cache_dir: Folder to write the vectors to (and to read them from, see
            :func:`use_vector_dir`).
        store: Store to add the vectors to (default :data:`EXAMPLE_VECTORS`).
        batch_size: Images per image-tower pass.
        random_state: Seed of the held-out split and of patch subsampling.

    Returns:
        Concept: with ``attributes`` ``learned_from="examples"``, ``backbone`` (identity key),
        ``vector`` (fingerprint), ``n_positives``, ``n_negatives`` and the held-out
        ``heldout_auc`` (global) / ``heldout_local_auc`` / ``heldout_accuracy``; the vectors and
        the full validation via :func:`learned_vector`.

    Raises:
        ExampleConceptError: Fewer than 4 positives or negatives, or unreadable images.

    Warns:
        ExampleConceptWarning: Held-out global AUC below 0.7.
    """
    rng = np.random.default_rng(random_state)
    pos_g, pos_p = _features(backbone, positives, batch_size, None)
    pos_g, pos_p = _unit(pos_g), _unit(pos_p)
    if negatives is None:
        reference = default_reference(backbone)
        if reference is None:
            raise ExampleConceptError(
                f"no negatives given and backbone {backbone.identity.model_id} ships no random "
                "reference images; pass negatives="
            )
        neg_g, neg_p, kind = _unit(np.asarray(reference.embeddings_, dtype=np.float64)), None, "reference"
    else:
        neg_g, neg_p = _features(backbone, negatives, batch_size, None)
        neg_g, neg_p, kind = _unit(neg_g), _unit(neg_p), "images"
    if len(pos_g) < 4 or len(neg_g) < 4:
        raise ExampleConceptError(
            f"concept {concept_id!r}: need at least 4 positive and 4 negative examples; got "
            f"{len(pos_g)} and {len(neg_g)}"
        )

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        order = rng.permutation(n)
        k = max(1, round(holdout * n))
        return order[k:], order[:k]

    validation: dict[str, float] = {}
    if holdout > 0:
        tr_p, te_p = split(len(pos_g))
        tr_n, te_n = split(len(neg_g))
        w, u = _learn(pos_g[tr_p], neg_g[tr_n], pos_p[tr_p],
                      None if neg_p is None else neg_p[tr_n], regularization, mil_rounds, rng)
        sp, sn = pos_g[te_p] @ w, neg_g[te_n] @ w
        _, bias = _fit_direction(np.concatenate([pos_g[tr_p], neg_g[tr_n]]),
                                 np.r_[np.ones(len(tr_p)), np.zeros(len(tr_n))], regularization)
        validation["global_auc"] = _auc(sp, sn)
        validation["global_accuracy"] = float(
            (np.sum(sp + bias > 0) + np.sum(sn + bias <= 0)) / (len(sp) + len(sn)))
        if neg_p is not None:
            lp = (pos_p[te_p] @ u).max(axis=1)
            ln = (neg_p[te_n] @ u).max(axis=1)
            validation["local_auc"] = _auc(lp, ln)
        validation["n_holdout_pos"] = float(len(te_p))
        validation["n_holdout_neg"] = float(len(te_n))
        if validation["global_auc"] < 0.7:
            warnings.warn(ExampleConceptWarning(
                f"concept {concept_id!r} separates its held-out examples poorly "
                f"(AUC {validation['global_auc']:.2f}); add examples or check them"), stacklevel=2)
    w, u = _learn(pos_g, neg_g, pos_p, neg_p, regularization, mil_rounds, rng)
    vector = LearnedConceptVector(
        concept_id=concept_id, backbone_key=backbone.identity.key,
        global_vector=w.astype(np.float32), local_vector=u.astype(np.float32),
        n_positives=len(pos_g), n_negatives=len(neg_g), negatives=kind, validation=validation,
    )
    store = store if store is not None else EXAMPLE_VECTORS
    fingerprint = store.add(vector, cache_dir)
    if store is not EXAMPLE_VECTORS:
        EXAMPLE_VECTORS.add(vector)
    if cache_dir is not None:
        use_vector_dir(cache_dir)
    attributes: dict[str, Any] = {
        "learned_from": LEARNED_FROM, "backbone": backbone.identity.key, "vector": fingerprint,
        "n_positives": len(pos_g), "n_negatives": len(neg_g), "negatives": kind,
    }
    for key, attr in (("global_auc", "heldout_auc"), ("local_auc", "heldout_local_auc"),
                      ("global_accuracy", "heldout_accuracy")):
        if key in validation:
            attributes[attr] = round(validation[key], 4)
    return Concept(
        id=concept_id, name=name or concept_id, synonyms=synonyms, definition=definition,
        group=group, source=f"learned from {len(pos_g)} positive and {len(neg_g)} negative example "
        f"images ({kind}) on {backbone.identity.model_id}", attributes=attributes,
    )
