"""Completeness of path attributions, and integrated gradients run until it holds.

Integrated gradients satisfies ``sum(attributions) = f(x) - f(baseline)`` in the limit of
infinitely many steps (Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks",
ICML 2017, who suggest checking it within 5 %). With finitely many steps the sum misses by
the *convergence delta* ``sum(a) - (f(x) - f(b))``; the *relative completeness gap* is
``|delta| / |f(x) - f(b)|``. The gap is meaningless when ``f(x)`` and ``f(b)`` are nearly
equal, so then only the absolute delta is judged, against the size of the outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Completeness", "adaptive_integrated_gradients", "judge_completeness"]

ILL_CONDITIONED = 0.01
"""``|f(x) - f(b)|`` below this fraction of ``max(|f(x)|, |f(b)|)`` makes the relative gap
ill-conditioned: it is reported as ``None`` and the absolute delta is judged instead."""


@dataclass(frozen=True)
class Completeness:
    """How far a path attribution is from summing to ``f(x) - f(b)``.

    Attributes:
        delta: ``sum(attributions) - (f(x) - f(b))`` (absolute, signed).
        gap: ``|delta| / |f(x) - f(b)|``, or ``None`` when ill-conditioned.
        ill_conditioned: ``f(x)`` and ``f(b)`` are too close for a relative gap.
        converged: ``gap <= tolerance``; when ill-conditioned, ``|delta| <= tolerance *
            max(|f(x)|, |f(b)|)``.
    """

    delta: float
    gap: float | None
    ill_conditioned: bool
    converged: bool


def judge_completeness(total: float, input_value: float, baseline_value: float,
                       tolerance: float = 0.05) -> Completeness:
    """Judge the completeness of attributions summing to ``total``.

    Args:
        total: Sum of the attributions.
        input_value: ``f(x)``.
        baseline_value: ``f(b)`` (the mean over baselines for several).
        tolerance: Largest relative gap accepted as converged.

    Examples:
        >>> judge_completeness(-9.6, 12.7, 22.8).converged
        True
        >>> judge_completeness(28.9, 12.7, 22.8).gap > 1
        True
    """
    difference = input_value - baseline_value
    delta = total - difference
    scale = max(abs(input_value), abs(baseline_value), 1e-12)
    if abs(difference) < ILL_CONDITIONED * scale:
        return Completeness(delta, None, True, abs(delta) <= tolerance * scale)
    gap = abs(delta) / abs(difference)
    return Completeness(delta, gap, False, gap <= tolerance)


def adaptive_integrated_gradients(
    forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    baselines: torch.Tensor,
    *,
    input_value: float,
    baseline_values: Any,
    n_steps: int | str = "auto",
    tolerance: float = 0.05,
    max_steps: int = 1024,
    start_steps: int = 32,
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, int, Completeness]:
    """Integrated gradients of ``forward`` at ``inputs``, averaged over ``baselines``.

    With ``n_steps="auto"`` the number of steps starts at ``start_steps`` and doubles until
    the completeness gap is at most ``tolerance`` or ``max_steps`` is reached (captum's
    Gauss-Legendre rule; each round is computed afresh). With several baselines the
    attributions are averaged (an expected-gradients style estimate) and completeness is
    judged against the mean baseline value.

    Args:
        forward: ``(B, 3, H, W) -> (B,)``.
        inputs: ``(1, 3, H, W)``.
        baselines: ``(N, 3, H, W)``.
        input_value: ``f(inputs)``.
        baseline_values: ``(N,)`` ``f`` at each baseline.
        n_steps: A fixed number of steps, or ``"auto"``.
        tolerance: Relative completeness gap accepted as converged.
        max_steps: Step budget of ``"auto"``.
        start_steps: First number of steps of ``"auto"``.
        internal_batch_size: captum's bound on inputs per forward/backward pass.

    Returns:
        ``(attributions (1, 3, H, W), steps used, Completeness)``.
    """
    from captum.attr import IntegratedGradients

    if n_steps == "auto":
        steps, budget = min(int(start_steps), int(max_steps)), int(max_steps)
    elif isinstance(n_steps, int) and not isinstance(n_steps, bool):
        steps = budget = n_steps
    else:
        raise ValueError(f"n_steps must be a positive int or 'auto', got {n_steps!r}")
    explainer = IntegratedGradients(forward)
    baseline_value = float(torch.as_tensor(baseline_values, dtype=torch.float64).mean())
    while True:
        total_attr = None
        for i in range(baselines.shape[0]):
            attr = explainer.attribute(inputs, baselines=baselines[i : i + 1], n_steps=steps,
                                       internal_batch_size=internal_batch_size)
            total_attr = attr if total_attr is None else total_attr + attr
        assert total_attr is not None
        attributions = total_attr / baselines.shape[0]
        verdict = judge_completeness(float(attributions.detach().double().sum()), input_value,
                                     baseline_value, tolerance)
        if verdict.converged or steps >= budget:
            return attributions, steps, verdict
        steps = min(steps * 2, budget)
