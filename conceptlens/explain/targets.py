"""What an attribution explains: a concept's score, a bottleneck class, or a free-text prompt.

Each target turns into a differentiable function ``pixels (B, 3, H, W) -> (B,)`` through
:meth:`Target.build`, which is what captum attributes.

String shorthand accepted by :func:`resolve_target` (and ``attribute(target=...)``):

* ``"concept:<id or name>"``, ``"class:<label>"``, ``"prompt:<text>"`` say what they are;
* any other string is a class of ``bottleneck`` when it is one, else a concept of the
  scorer's vocabulary (id or preferred name) when a scorer is given; otherwise, with neither
  a scorer nor a bottleneck, it is a prompt. A string that matches nothing while a scorer or
  bottleneck is given raises ``KeyError`` (a mistyped concept id never silently turns into
  a prompt);
* a non-string (e.g. an integer class label) is a class of ``bottleneck``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from conceptlens.errors import ConceptlensError, UnknownClassError, UnknownConceptError
from conceptlens.vocab.vocabulary import match_concept

__all__ = [
    "BoundTarget",
    "ClassTarget",
    "ConceptTarget",
    "PromptTarget",
    "Target",
    "TargetError",
    "UnknownClassError",
    "UnknownConceptError",
    "resolve_target",
]

TargetFunction = Callable[[torch.Tensor], torch.Tensor]


class TargetError(ConceptlensError, ValueError):
    """A target cannot be built with the given scorer / bottleneck."""


def _vocabulary_ids(scorer: Any) -> list[str]:
    vocabulary = getattr(scorer, "vocabulary", None)
    ids = getattr(vocabulary, "ids", None)
    if ids is None:
        raise TypeError(f"scorer {type(scorer).__name__} has no vocabulary with .ids")
    return [str(i) for i in ids]


def _concept_names(scorer: Any) -> dict[str, str]:
    names = getattr(scorer.vocabulary, "names", None)
    if isinstance(names, dict):
        return {str(k): str(v) for k, v in names.items()}
    return {}


def find_concept(scorer: Any, concept: str) -> tuple[int, str]:
    """Index and id of a concept (id, preferred name or synonym) in the scorer's vocabulary.

    The lookup is :meth:`conceptlens.vocab.ConceptVocabulary.resolve` (case-insensitive,
    close matches suggested); a vocabulary without it is matched by id and name by the same
    rule (:func:`conceptlens.vocab.vocabulary.match_concept`).

    Raises:
        UnknownConceptError: The concept is not there (the message names it).
    """
    vocabulary = getattr(scorer, "vocabulary", None)
    ids = _vocabulary_ids(scorer)
    if callable(getattr(vocabulary, "resolve", None)):
        concept_id = vocabulary.resolve(concept).id
        return ids.index(concept_id), concept_id
    index = match_concept(concept, ids, _concept_names(scorer), where="the scorer's vocabulary")
    return index, ids[index]


def _plain(label: Any) -> Any:
    return label.item() if hasattr(label, "item") else label


def class_weights(bottleneck: Any, label: Any) -> tuple[np.ndarray, float]:
    """``(weights, intercept)`` of one class of a fitted linear bottleneck.

    Reads :meth:`conceptlens.concepts.base.ConceptBottleneckBase.class_weights`, which holds
    the binary sign convention; any other linear classifier with scikit-learn's ``coef_``,
    ``intercept_`` and ``classes_`` is read by the same rule.

    Parameters
    ----------
    bottleneck : object
        A fitted bottleneck (or scikit-learn-style linear classifier).
    label : object
        An element of ``bottleneck.classes_``.

    Returns
    -------
    weights : numpy.ndarray
        ``(n_concepts,)`` float64.
    intercept : float
    """
    from conceptlens.concepts.base import ConceptBottleneckBase

    read_out = getattr(bottleneck, "class_weights", None)
    if callable(read_out):
        return read_out(label)
    return ConceptBottleneckBase.class_weights(bottleneck, label)


class Target(ABC):
    """Something scalar per image to attribute to the pixels."""

    needs_scorer: bool = False
    needs_bottleneck: bool = False

    @abstractmethod
    def build(self, backbone: Any, scorer: Any = None, bottleneck: Any = None) -> TargetFunction:
        """The differentiable ``(B, 3, H, W) -> (B,)`` function this target stands for."""

    @abstractmethod
    def describe(self) -> str:
        """A short human-readable label, e.g. ``"concept C0000000 (pigment network)"``."""

    def build_margin(self, backbone: Any, scorer: Any = None, bottleneck: Any = None) -> TargetFunction | None:
        """The signed distance ``(B, 3, H, W) -> (B,)`` to this target's decision boundary
        (positive where the decision holds), or ``None`` when the target has no boundary.

        Attributions use it to check that their baseline is not scored on the input's side
        of the decision (see :mod:`conceptlens.explain.baselines`).
        """
        return None

    def bind(self, backbone: Any, scorer: Any = None, bottleneck: Any = None) -> BoundTarget:
        """This target tied, once, to the models it is computed with.

        Parameters
        ----------
        backbone : Backbone
            The backbone (``scorer.backbone`` when there is a scorer).
        scorer : ConceptScorer, optional
            Needed by concept and class targets.
        bottleneck : object, optional
            A fitted bottleneck, needed by class targets.

        Returns
        -------
        BoundTarget
            Builds the target function and its margin once, on first use.

        Raises
        ------
        TargetError
            The target needs a scorer or bottleneck that was not given.
        """
        self._require(scorer, bottleneck)
        return BoundTarget(self, backbone, scorer, bottleneck)

    def _require(self, scorer: Any, bottleneck: Any) -> None:
        what = type(self).__name__
        if self.needs_scorer and scorer is None:
            raise TargetError(f"{what} needs a ConceptScorer: pass scorer=...")
        if self.needs_bottleneck and bottleneck is None:
            raise TargetError(f"{what} needs a fitted bottleneck: pass bottleneck=...")


class BoundTarget:
    """A :class:`Target` bound to its backbone, scorer and bottleneck (see :meth:`Target.bind`).

    Attributes
    ----------
    target : Target
        What is explained.
    backbone, scorer, bottleneck
        The models it is computed with.
    """

    def __init__(self, target: Target, backbone: Any, scorer: Any = None, bottleneck: Any = None) -> None:
        self.target = target
        self.backbone = backbone
        self.scorer = scorer
        self.bottleneck = bottleneck
        self._function: TargetFunction | None = None
        self._margin: tuple[TargetFunction | None] | None = None

    @property
    def function(self) -> TargetFunction:
        """The differentiable ``(B, 3, H, W) -> (B,)`` target function (built once)."""
        if self._function is None:
            self._function = self.target.build(self.backbone, self.scorer, self.bottleneck)
        return self._function

    @property
    def margin(self) -> TargetFunction | None:
        """The signed distance to the target's decision boundary, or ``None`` (built once;
        see :meth:`Target.build_margin`)."""
        if self._margin is None:
            self._margin = (self.target.build_margin(self.backbone, self.scorer, self.bottleneck),)
        return self._margin[0]

    def describe(self) -> str:
        """The target's label (:meth:`Target.describe`)."""
        return self.target.describe()

    def __repr__(self) -> str:
        return f"BoundTarget({self.target!r})"


@dataclass(frozen=True)
class ConceptTarget(Target):
    """One concept's score, exactly as the scorer defines it (mode, alpha, calibration).

    Args:
        concept: Concept id (or preferred name) in the scorer's vocabulary.
    """

    concept: str
    needs_scorer = True

    def build(self, backbone: Any, scorer: Any = None, bottleneck: Any = None) -> TargetFunction:
        self._require(scorer, bottleneck)
        index, _ = find_concept(scorer, self.concept)

        def concept_score(pixel_values: torch.Tensor) -> torch.Tensor:
            return scorer.score_tensor(pixel_values)[:, index]

        return concept_score

    def build_margin(self, backbone: Any, scorer: Any = None, bottleneck: Any = None) -> TargetFunction | None:
        """``score - 0.5`` for probability calibrations (``sigmoid``, ``paired_softmax``);
        ``None`` for cosine scores, which have no decision threshold."""
        calibration = getattr(getattr(scorer, "config", None), "calibration", None)
        if calibration not in ("sigmoid", "paired_softmax"):
            return None
        score = self.build(backbone, scorer, bottleneck)

        def concept_margin(pixel_values: torch.Tensor) -> torch.Tensor:
            return score(pixel_values) - 0.5

        return concept_margin

    def describe(self) -> str:
        return f"concept {self.concept}"


@dataclass(frozen=True)
class ClassTarget(Target):
    """The decision value (logit) of one class of a fitted linear concept bottleneck.

    The chain is pixels -> the scorer's concept scores -> the bottleneck's ``input_transform``
    (e.g. log-odds) -> ``scores @ weights + intercept`` with the class's
    :meth:`~conceptlens.concepts.base.ConceptBottleneckBase.class_weights` (in original score
    units, any standardisation folded in; a binary bottleneck's ``classes_[0]`` gets the
    negated decision of ``classes_[1]``), differentiable end to end, so the target value
    equals the bottleneck's own ``decision_function`` on the scorer's output. Building it
    raises :class:`~conceptlens.errors.ScoreSpaceMismatchError` when the scorer's settings,
    vocabulary or backbone differ from those of the bottleneck's training scores.

    Args:
        label: A class label from ``bottleneck.classes_``.
    """

    label: Any
    needs_scorer = True
    needs_bottleneck = True

    def linear_map(self, scorer: Any, bottleneck: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """``(indices, weights, intercept)``: the class logit is
        ``scores[:, indices] @ weights + intercept`` over the scorer's concept columns.

        Raises:
            UnknownClassError: The class is not among ``bottleneck.classes_``.
            TargetError: The bottleneck is not fitted, or uses a concept the scorer lacks.
            ScoreSpaceMismatchError: The scorer makes scores differently from the
                bottleneck's training scores.
        """
        self._require(scorer, bottleneck)
        for attribute in ("coef_", "intercept_", "classes_"):
            if not hasattr(bottleneck, attribute):
                raise TargetError(f"bottleneck {type(bottleneck).__name__} is not fitted (no {attribute})")
        classes = [_plain(c) for c in bottleneck.classes_]
        label = _plain(self.label)
        if label not in classes and isinstance(label, str):
            # "class:1" shorthand for integer labels: match the label's text exactly once
            same_text = [c for c in classes if str(c) == label]
            label = same_text[0] if len(same_text) == 1 else label
        if label not in classes:
            raise UnknownClassError(f"class {self.label!r} is not known to the bottleneck; classes are {classes}")
        weights, bias = class_weights(bottleneck, classes[classes.index(label)])
        ids = _vocabulary_ids(scorer)
        check_bottleneck_matches_scorer(bottleneck, scorer)
        features = getattr(bottleneck, "feature_names_in_", None)
        if features is None:
            if weights.shape[0] != len(ids):
                raise TargetError(
                    f"bottleneck has {weights.shape[0]} concept inputs but the scorer's vocabulary has "
                    f"{len(ids)}; fit the bottleneck on a labelled score table (feature_names_in_)"
                )
            return np.arange(len(ids)), weights, bias
        features = [str(f) for f in features]
        missing = [f for f in features if f not in ids]
        if missing:
            raise TargetError(f"bottleneck uses concepts the scorer's vocabulary lacks: {missing[:10]}")
        return np.array([ids.index(f) for f in features]), weights, bias

    def build(self, backbone: Any, scorer: Any = None, bottleneck: Any = None) -> TargetFunction:
        logit_from = self._logit_from_pass(scorer, bottleneck)
        needs_features = _needs_features(bottleneck)

        def class_logit(pixel_values: torch.Tensor) -> torch.Tensor:
            return logit_from(*_image_pass(scorer, pixel_values, needs_features))

        return class_logit

    def _logit_from_pass(self, scorer: Any, bottleneck: Any) -> Callable[[Any, torch.Tensor], torch.Tensor]:
        """``(features, scores) -> (B,)`` class logit from one image-tower pass: the
        scorer's features and its scores of them (a hybrid's residual reads the features'
        global embeddings, so it needs no second pass)."""
        from conceptlens.concepts.score_space import transform_scores_tensor

        indices, weights, bias = self.linear_map(scorer, bottleneck)
        index_t = torch.as_tensor(indices, dtype=torch.long)
        weight_t = torch.as_tensor(weights)
        how = getattr(bottleneck, "input_transform", "identity")
        residual = self._residual_map(bottleneck)

        def logit_from(features: Any, scores: torch.Tensor) -> torch.Tensor:
            chosen = transform_scores_tensor(scores[:, index_t.to(scores.device)], how)
            out = chosen @ weight_t.to(device=scores.device, dtype=scores.dtype) + bias
            if residual is not None:  # hybrid (PCBM-h): + residual on the embedding
                w_r, mean_r, on_embeddings = residual
                inputs = features.global_embeds.to(scores.dtype) if on_embeddings else chosen
                w_r, mean_r = (t.to(device=scores.device, dtype=scores.dtype) for t in (w_r, mean_r))
                out = out + (inputs - mean_r) @ w_r
            return out

        return logit_from

    def _residual_map(self, bottleneck: Any) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
        """``(weights, mean, on_embeddings)`` of a hybrid bottleneck's residual for this
        class (``residual_coef_`` / ``embedding_mean_``), or ``None`` for a plain one."""
        coef = getattr(bottleneck, "residual_coef_", None)
        if coef is None:
            return None
        classes = [_plain(c) for c in bottleneck.classes_]
        label = _plain(self.label)
        if label not in classes:
            label = next(c for c in classes if str(c) == str(label))
        # the residual's rows follow the same per-output convention as coef_
        outputs = SimpleNamespace(coef_=coef, intercept_=np.zeros(np.atleast_2d(coef).shape[0]),
                                  classes_=bottleneck.classes_)
        w, _ = class_weights(outputs, classes[classes.index(label)])
        mean = np.asarray(bottleneck.embedding_mean_, dtype=np.float64)
        return torch.as_tensor(w), torch.as_tensor(mean), bool(getattr(bottleneck, "uses_embeddings_", True))

    def build_margin(self, backbone: Any, scorer: Any = None, bottleneck: Any = None) -> TargetFunction | None:
        """Binary: the class's decision value; multiclass: its logit minus the largest other
        class logit (positive where the bottleneck predicts this class)."""
        classes = _bottleneck_classes(bottleneck)
        if len(classes) <= 2:
            return self.build(backbone, scorer, bottleneck)
        logits = [ClassTarget(c)._logit_from_pass(scorer, bottleneck) for c in classes]
        label = _plain(self.label)
        row = classes.index(label) if label in classes else [str(c) for c in classes].index(str(label))

        needs_features = _needs_features(bottleneck)

        def class_margin(pixel_values: torch.Tensor) -> torch.Tensor:
            # one image-tower pass serves every class
            features, scores = _image_pass(scorer, pixel_values, needs_features)
            values = torch.stack([fn(features, scores) for fn in logits], dim=1)
            others = torch.cat([values[:, :row], values[:, row + 1:]], dim=1)
            return values[:, row] - others.max(dim=1).values

        return class_margin

    def describe(self) -> str:
        return f"class {self.label!r}"


def _needs_features(bottleneck: Any) -> bool:
    """Whether a class logit reads the image embedding (a hybrid's residual on embeddings)."""
    return (getattr(bottleneck, "residual_coef_", None) is not None
            and bool(getattr(bottleneck, "uses_embeddings_", True)))


def _image_pass(scorer: Any, pixel_values: torch.Tensor, needs_features: bool) -> tuple[Any, torch.Tensor]:
    """``(features or None, scores)`` from one image-tower pass; the features only when a
    class logit needs them (any scorer with ``score_tensor`` serves the rest)."""
    if not needs_features:
        return None, scorer.score_tensor(pixel_values)
    features = scorer._forward(pixel_values)
    return features, scorer._score_features(features)


def check_bottleneck_matches_scorer(bottleneck: Any, scorer: Any) -> None:
    """Raise unless ``scorer`` makes scores the way ``bottleneck``'s training scores were made.

    Compares the bottleneck's recorded scorer settings (``score_space_``), vocabulary hash and
    backbone identity with the scorer's; see
    :func:`conceptlens.concepts.score_space.check_score_space`.

    Raises:
        ScoreSpaceMismatchError: Any of them differs (the message lists each difference).
    """
    from conceptlens.concepts.score_space import check_score_space

    config = getattr(scorer, "config", None)
    backbone = getattr(scorer, "backbone", None)
    identity = getattr(backbone, "identity", None)
    check_score_space(
        bottleneck,
        config=config.to_dict() if hasattr(config, "to_dict") else None,
        vocabulary_hash=getattr(getattr(scorer, "vocabulary", None), "hash", None),
        backbone=identity.to_dict() if hasattr(identity, "to_dict") else None,
        where="the scorer",
    )


@dataclass(frozen=True)
class PromptTarget(Target):
    """Cosine similarity between the global image embedding and a free-text prompt's.

    Args:
        text: The prompt, e.g. ``"a dermoscopy image of melanoma"``.
    """

    text: str

    def build(self, backbone: Any, scorer: Any = None, bottleneck: Any = None) -> TargetFunction:
        if not self.text.strip():
            raise TargetError("the prompt is empty")
        text_embed = backbone.encode_texts([self.text]).global_embeds[0].detach()

        def prompt_similarity(pixel_values: torch.Tensor) -> torch.Tensor:
            image_embeds = backbone.forward_images(pixel_values).global_embeds
            return image_embeds @ text_embed.to(device=image_embeds.device, dtype=image_embeds.dtype)

        return prompt_similarity

    def describe(self) -> str:
        return f"prompt {self.text!r}"


def _bottleneck_classes(bottleneck: Any) -> Sequence[Any]:
    return [_plain(c) for c in getattr(bottleneck, "classes_", [])]


def resolve_target(target: Any, *, scorer: Any = None, bottleneck: Any = None) -> Target:
    """Turn a target or its shorthand into a :class:`Target` (rules in the module docstring).

    Raises:
        UnknownConceptError / UnknownClassError: A string or label that matches nothing.
        TypeError: An unsupported target type.
    """
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        kind, sep, rest = target.partition(":")
        if sep and kind in {"concept", "class", "prompt"}:
            return {"concept": ConceptTarget, "class": ClassTarget, "prompt": PromptTarget}[kind](rest)
        if bottleneck is not None and target in _bottleneck_classes(bottleneck):
            return ClassTarget(target)
        if scorer is not None:
            find_concept(scorer, target)  # raises UnknownConceptError naming the string
            return ConceptTarget(target)
        if bottleneck is not None:
            raise UnknownClassError(
                f"{target!r} is not a class of the bottleneck ({list(_bottleneck_classes(bottleneck))}); "
                "pass scorer=... for concepts, or 'prompt:...' for free text"
            )
        return PromptTarget(target)
    if target is None:
        raise TypeError("target is required: a concept id, a class label, a prompt or a Target")
    if bottleneck is not None:
        return ClassTarget(target)
    raise TypeError(
        f"cannot interpret target {target!r} ({type(target).__name__}) without a bottleneck; "
        "use ConceptTarget, ClassTarget or PromptTarget"
    )
