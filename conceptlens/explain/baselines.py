"""Reference images for path and perturbation attributions, and how the default one is chosen.

Integrated gradients explains ``f(x) - f(baseline)``, so the baseline decides the question
being answered (Sturmfels, Lundberg and Lee, "Visualizing the Impact of Feature Attribution
Baselines", Distill 2020). A baseline is only neutral if the model scores it near the
decision boundary; one that the model itself scores on the input's side of the decision
turns "why melanoma?" into "why more melanoma than this grey square?".

``baselines="auto"`` (the default of :func:`~conceptlens.explain.attribute`) therefore scores
every candidate of :data:`CANDIDATES` and picks, for targets with a decision boundary (a
bottleneck class, a probability-calibrated concept), the candidate nearest the boundary
among those not on the input's side; when every candidate lies on the input's side it takes
the one nearest the boundary and the attribution says so (verdict and
:class:`~conceptlens.errors.BaselineWarning`). For targets without a boundary (cosine concept
scores, prompt similarities) it picks the candidate with the least evidence (lowest ``f``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from conceptlens.explain.metrics.perturbation import make_baseline

__all__ = ["BASELINES", "CANDIDATES", "BaselineChoice", "baseline_images", "choose_baseline",
           "list_baselines", "scored_baseline"]

BASELINES: dict[str, str] = {
    "auto": "the candidate nearest the decision boundary and not on the input's side (see module)",
    "black": "a black image of the input's size, through the backbone's own preprocessing",
    "white": "a white image of the input's size, through the backbone's own preprocessing",
    "mean": "a flat image of the input's per-channel mean colour",
    "blur": "the input blurred with a Gaussian of sigma = max(H, W) / 20 pixels",
    "noise": "uniform random pixels (seeded), through the backbone's own preprocessing",
    "zero": "zeros in the model's input space (the normalisation mean: mid-grey for mean = 0.5)",
    "expected": "every candidate at once; attributions averaged (expected-gradients style)",
}
"""Named baselines accepted by ``attribute(baselines=...)``, and what each is."""

CANDIDATES = ("black", "white", "mean", "blur", "noise", "zero")
"""The single baselines ``"auto"`` chooses from, and ``"expected"`` averages over."""


def list_baselines() -> list[str]:
    """Names accepted by ``attribute(baselines=...)``, sorted (:data:`BASELINES` says what each is).

    Examples:
        >>> list_baselines()[:3]
        ['auto', 'black', 'blur']
    """
    return sorted(BASELINES)


@dataclass(frozen=True)
class BaselineChoice:
    """The baseline(s) an attribution uses and how they score.

    Attributes:
        name: What the baseline is (a key of :data:`BASELINES`, ``"tensor"`` for a user
            tensor, ``"number"`` for a constant).
        tensor: ``(N, 3, H, W)`` baseline image(s) in the model's input space.
        values: ``(N,)`` target value ``f`` at each baseline.
        margins: ``(N,)`` signed distance to the decision boundary at each baseline
            (positive: the target's decision holds), or ``None`` without a boundary.
        candidates: For ``"auto"``: candidate name -> ``f`` value, as scored when choosing.
        input_margin: The input's own margin to the decision boundary, or ``None``.
    """

    name: str
    tensor: torch.Tensor
    values: np.ndarray
    margins: np.ndarray | None = None
    candidates: dict[str, float] | None = None
    input_margin: float | None = None

    @property
    def value(self) -> float:
        """``f(baseline)``; the mean over baselines when there are several."""
        return float(np.mean(self.values))

    @property
    def margin(self) -> float | None:
        """Mean margin of the baseline(s) to the decision boundary (``None`` without one)."""
        return None if self.margins is None else float(np.mean(self.margins))

    @property
    def same_side(self) -> bool | None:
        """Whether the baseline lies on the input's side of the decision boundary (``None``
        without a boundary; ``False`` for an input exactly on it)."""
        if self.margin is None or self.input_margin is None:
            return None
        return bool(self.input_margin != 0 and np.sign(self.margin) == np.sign(self.input_margin))


def _through_preprocessing(backbone: Any, image: Image.Image, like: torch.Tensor) -> torch.Tensor:
    pixels = backbone.preprocess([image])
    return pixels.to(device=like.device, dtype=like.dtype)


def baseline_images(
    kind: str, pixels: torch.Tensor, *, backbone: Any, original_size: tuple[int, int], seed: int | None = 0
) -> torch.Tensor:
    """One named baseline (a key of :data:`BASELINES` other than ``auto`` / ``expected``).

    Args:
        kind: The baseline's name.
        pixels: ``(1, 3, H, W)`` the input in the model's input space.
        backbone: The backbone whose ``preprocess`` turns PIL images into model inputs.
        original_size: ``(width, height)`` of the original image (so that black, white and
            noise images go through exactly the same resize as the input).
        seed: Seed of the ``"noise"`` image.

    Returns:
        ``(1, 3, H, W)`` tensor.
    """
    if kind in ("zero", "mean", "blur"):
        return make_baseline(pixels[0].detach(), kind)[None]  # type: ignore[arg-type]
    width, height = int(original_size[0]), int(original_size[1])
    if kind == "black":
        return _through_preprocessing(backbone, Image.new("RGB", (width, height)), pixels)
    if kind == "white":
        return _through_preprocessing(backbone, Image.new("RGB", (width, height), (255, 255, 255)), pixels)
    if kind == "noise":
        rng = np.random.default_rng(seed)
        noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        return _through_preprocessing(backbone, Image.fromarray(noise, mode="RGB"), pixels)
    raise ValueError(f"unknown baseline {kind!r}; choose one of {sorted(BASELINES)}")


def _evaluate(fn: Callable[[torch.Tensor], torch.Tensor] | None, batch: torch.Tensor) -> np.ndarray | None:
    if fn is None:
        return None
    with torch.no_grad():
        return fn(batch).detach().double().cpu().numpy()


def scored_baseline(
    name: str,
    tensor: torch.Tensor,
    pixels: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    margin: Callable[[torch.Tensor], torch.Tensor] | None,
    candidates: dict[str, float] | None = None,
) -> BaselineChoice:
    """A :class:`BaselineChoice` for given baseline image(s) ``(N, 3, H, W)``: ``f`` and the
    margins at each, and the input's own margin."""
    values = _evaluate(forward, tensor)
    assert values is not None
    input_margins = _evaluate(margin, pixels)
    return BaselineChoice(name, tensor, values, _evaluate(margin, tensor), candidates,
                          None if input_margins is None else float(input_margins[0]))


def choose_baseline(
    kind: str,
    pixels: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    margin: Callable[[torch.Tensor], torch.Tensor] | None,
    *,
    backbone: Any,
    original_size: tuple[int, int],
    seed: int | None = 0,
) -> BaselineChoice:
    """Build a named baseline, or choose one (``"auto"``), and score it.

    Args:
        kind: A key of :data:`BASELINES`.
        pixels: ``(1, 3, H, W)`` input.
        forward: The target function ``(B, 3, H, W) -> (B,)``.
        margin: The target's signed distance to its decision boundary, or ``None``.
        backbone, original_size, seed: As in :func:`baseline_images`.

    Returns:
        :class:`BaselineChoice`.
    """
    names = CANDIDATES if kind in ("auto", "expected") else (kind,)
    batch = torch.cat([
        baseline_images(n, pixels, backbone=backbone, original_size=original_size, seed=seed) for n in names
    ])
    scored = scored_baseline(kind, batch, pixels, forward, margin)
    values, margins, input_margin = scored.values, scored.margins, scored.input_margin
    candidates = dict(zip(names, values.tolist(), strict=True))
    if kind != "auto":
        return replace(scored, candidates=candidates if kind == "expected" else None)
    if margins is None or input_margin is None:
        best = int(np.argmin(values))
    else:
        side = np.sign(input_margin)
        admissible = np.sign(margins) != side if side != 0 else np.ones(len(margins), dtype=bool)
        distance = np.abs(margins)
        pool = np.flatnonzero(admissible) if admissible.any() else np.arange(len(margins))
        best = int(pool[np.argmin(distance[pool])])
    return BaselineChoice(
        name=names[best],
        tensor=batch[best : best + 1],
        values=values[best : best + 1],
        margins=None if margins is None else margins[best : best + 1],
        candidates=candidates,
        input_margin=input_margin,
    )
