"""The score space a bottleneck lives in: the input transform and the scorer settings.

A linear bottleneck's weights mean something only for scores made the way its training
scores were made: the same scorer settings (mode, alpha, aggregation, calibration, prompts)
and the same transform of the scores before the linear read-out (probabilities or their
log-odds). A fitted bottleneck records both (``input_transform`` and ``score_space_``), and
everything that feeds it scores checks them with :func:`check_score_space`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from conceptlens.errors import ScoreSpaceMismatchError

__all__ = [
    "INPUT_TRANSFORMS",
    "SCORE_SPACE_KEYS",
    "check_input_transform",
    "check_score_space",
    "score_space_of",
    "transform_scores",
    "transform_scores_tensor",
]

INPUT_TRANSFORMS: dict[str, str] = {
    "identity": "the scores as they come (e.g. probabilities of a sigmoid calibration)",
    "logit": "log-odds log(p / (1 - p)) of scores in [0, 1], clipped to [1e-6, 1 - 1e-6]",
}
"""Transforms a bottleneck may apply to its input scores, and what each computes."""

SCORE_SPACE_KEYS = ("mode", "alpha", "aggregation", "top_k", "calibration", "text_token",
                    "synonyms", "templates", "reference_word")
"""Scorer settings that change the numbers a bottleneck reads (``batch_size``, ``preset``
name and the like do not)."""

_EPS = 1e-6


def check_input_transform(name: Any) -> str:
    """Return ``name`` if it is a key of :data:`INPUT_TRANSFORMS`, else raise ``ValueError``."""
    if not isinstance(name, str) or name not in INPUT_TRANSFORMS:
        raise ValueError(
            f"input_transform must be one of {sorted(INPUT_TRANSFORMS)}, got {name!r}"
        )
    return name


def _check_unit_interval(low: float, high: float) -> None:
    if low < 0.0 or high > 1.0:
        raise ValueError(
            "input_transform='logit' needs scores in [0, 1] (probabilities, e.g. from "
            f"calibration='sigmoid'); got values in [{low:.4g}, {high:.4g}]"
        )


def transform_scores(X: np.ndarray, how: str) -> np.ndarray:
    """Apply an input transform to an ``(n_samples, n_concepts)`` score matrix.

    Args:
        X: Scores, float.
        how: A key of :data:`INPUT_TRANSFORMS`.

    Returns:
        ``(n_samples, n_concepts)`` transformed scores (a new array for ``"logit"``).

    Raises:
        ValueError: ``"logit"`` of scores outside ``[0, 1]``.

    Examples:
        >>> transform_scores(np.array([[0.5, 0.9]]), "logit").round(3).tolist()
        [[0.0, 2.197]]
    """
    check_input_transform(how)
    if how == "identity":
        return X
    if X.size:
        _check_unit_interval(float(np.min(X)), float(np.max(X)))
    p = np.clip(X, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def transform_scores_tensor(X: torch.Tensor, how: str) -> torch.Tensor:
    """Differentiable twin of :func:`transform_scores` for ``(B, K)`` tensors."""
    check_input_transform(how)
    if how == "identity":
        return X
    if X.numel():
        _check_unit_interval(float(X.detach().min()), float(X.detach().max()))
    p = X.clamp(_EPS, 1.0 - _EPS)
    return torch.log(p) - torch.log1p(-p)


def score_space_of(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The number-changing part of a scorer configuration (``None`` if unknown or empty).

    Args:
        config: ``ConceptScores.config`` or ``ScoringConfig.to_dict()``.
    """
    if not config:
        return None
    space = {k: _plain(config[k]) for k in SCORE_SPACE_KEYS if k in config}
    if space.get("aggregation") != "topk":
        space.pop("top_k", None)
    return space or None


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _backbone_differs(fitted: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> str | None:
    if not fitted or not current:
        return None
    for key in ("weights_hash", "model_id"):
        a, b = fitted.get(key), current.get(key)
        if a and b:
            return None if a == b else f"backbone {key} {a!r} (fitted) vs {b!r} (now)"
    return None


def check_score_space(
    bottleneck: Any,
    *,
    config: Mapping[str, Any] | None = None,
    vocabulary_hash: str | None = None,
    backbone: Mapping[str, Any] | None = None,
    where: str = "scores",
) -> None:
    """Raise if scores made with these settings are not what ``bottleneck`` was fitted on.

    Args:
        bottleneck: A fitted bottleneck (reads ``score_space_``, ``vocabulary_hash_``,
            ``backbone_``; what it lacks is not checked).
        config: The scoring configuration of the scores about to be fed to it.
        vocabulary_hash: Their vocabulary's content hash.
        backbone: Their backbone identity dict.
        where: What the scores come from, for the message (e.g. ``"the scorer"``).

    Raises:
        ScoreSpaceMismatchError: A setting, the vocabulary or the backbone differs; the
            message lists every difference.
    """
    problems: list[str] = []
    fitted = getattr(bottleneck, "score_space_", None)
    current = score_space_of(config)
    if fitted and current:
        for key in sorted(set(fitted) | set(current)):
            if key in fitted and key in current and fitted[key] != current[key]:
                problems.append(f"{key}={fitted[key]!r} (fitted) vs {current[key]!r} (now)")
    fitted_hash = getattr(bottleneck, "vocabulary_hash_", None)
    if fitted_hash and vocabulary_hash and fitted_hash != vocabulary_hash:
        problems.append(f"vocabulary {fitted_hash} (fitted) vs {vocabulary_hash} (now)")
    backbone_problem = _backbone_differs(getattr(bottleneck, "backbone_", None), backbone)
    if backbone_problem:
        problems.append(backbone_problem)
    if problems:
        raise ScoreSpaceMismatchError(
            f"{type(bottleneck).__name__} was fitted on scores made differently from {where}: "
            + "; ".join(problems)
            + ". Score with the settings it was fitted with (e.g. scorer.with_config(...)) or refit it."
        )
