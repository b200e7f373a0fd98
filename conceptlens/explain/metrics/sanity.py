"""Sanity checks: the integrated-gradients completeness gap and model randomisation."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from conceptlens.explain._spatial import to_numpy_2d
from conceptlens.explain.metrics.similarity import spearman_correlation, ssim

__all__ = ["RandomisationResult", "completeness_gap", "randomisation_check", "randomise_layers"]


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def completeness_gap(attributions: Any, f_x: Any, f_baseline: Any) -> float | np.ndarray:
    """Relative completeness gap of an integrated-gradients attribution.

    IG satisfies ``sum(attr) = f(x) - f(baseline)`` exactly in the limit of infinitely
    many steps; the gap ``|sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|`` measures how far
    the Riemann approximation is from that.

    Args:
        attributions: Attribution for one input (any shape) or a batch ``(B, ...)`` when
            ``f_x`` is a ``(B,)`` vector.
        f_x: Model output at the input: scalar or ``(B,)``.
        f_baseline: Model output at the baseline, same shape as ``f_x``.

    Returns:
        The relative gap (float), or a ``(B,)`` array for a batch.

    Raises:
        ValueError: ``f(x) == f(baseline)`` (the relative gap is undefined) or shapes disagree.
    """
    fx, fb = _as_array(f_x), _as_array(f_baseline)
    if fx.shape != fb.shape or fx.ndim > 1:
        raise ValueError(f"f_x and f_baseline must be scalars or equal (B,) vectors, got {fx.shape}, {fb.shape}")
    attr = _as_array(attributions)
    if fx.ndim == 0:
        total = attr.sum()
    else:
        if attr.shape[0] != fx.shape[0]:
            raise ValueError(f"attributions have batch size {attr.shape[0]}, f_x has {fx.shape[0]}")
        total = attr.reshape(attr.shape[0], -1).sum(axis=1)
    delta = fx - fb
    if np.any(delta == 0):
        raise ValueError("f(x) equals f(baseline): the relative completeness gap is undefined")
    gap = np.abs(total - delta) / np.abs(delta)
    return float(gap) if gap.ndim == 0 else gap


@dataclass
class RandomisationResult:
    """Outcome of :func:`randomisation_check`.

    Attributes:
        spearman: Spearman rank correlation between the original and randomised maps
            (of absolute values by default). Near 1 means the explanation ignores the model.
        ssim: Structural similarity of the two maps (each min-max scaled).
        original: ``(H, W)`` map from the original model.
        randomised: ``(H, W)`` map from the randomised copy.
        layers: Qualified names of the modules whose parameters were randomised.
    """

    spearman: float
    ssim: float
    original: np.ndarray = field(repr=False)
    randomised: np.ndarray = field(repr=False)
    layers: list[str] = field(default_factory=list)


def _module_root(model: Any) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise TypeError(
        f"model must be an nn.Module or hold one as .model (a Backbone), got {type(model).__name__}"
    )


def _resolve_layer_names(model: Any, layers: int | Sequence[str | nn.Module]) -> list[str]:
    root = _module_root(model)
    if isinstance(layers, int):
        if layers < 1:
            raise ValueError(f"number of layers to randomise must be >= 1, got {layers}")
        blocks: list[nn.Module]
        try:
            blocks = list(model.token_layers())  # a Backbone's transformer blocks
        except (AttributeError, NotImplementedError):
            blocks = [m for m in root.children() if any(True for _ in m.parameters())]
        if not blocks:
            raise ValueError("model has no layers with parameters to randomise")
        chosen: list[str | nn.Module] = list(blocks[-layers:])
    else:
        chosen = list(layers)
        if not chosen:
            raise ValueError("layers_to_randomise is empty")
    ids = {id(m): name for name, m in root.named_modules()}
    names = []
    for layer in chosen:
        if isinstance(layer, nn.Module):
            if id(layer) not in ids:
                raise ValueError(f"module {type(layer).__name__} is not part of the model")
            names.append(ids[id(layer)])
        else:
            try:
                root.get_submodule(str(layer))
            except AttributeError as err:
                raise KeyError(f"model has no submodule named {layer!r}") from err
            names.append(str(layer))
    return names


def randomise_layers(model: Any, layer_names: Sequence[str], *, seed: int = 0) -> None:
    """Overwrite, in place, every parameter under the named modules with Gaussian noise.

    Each parameter becomes ``N(0, s^2)`` where ``s`` is the parameter's own standard
    deviation, or ``1 / sqrt(fan_in)`` when that is zero (e.g. a LayerNorm's unit weights),
    so activations keep a sensible scale while all learned structure is gone.

    Args:
        model: An ``nn.Module`` or an object holding one as ``.model`` (a Backbone).
        layer_names: Qualified module names relative to that module.
        seed: Seed of the noise.
    """
    root = _module_root(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in layer_names:
            for param in root.get_submodule(name).parameters():
                std = float(param.detach().float().std()) if param.numel() > 1 else 0.0
                if not math.isfinite(std) or std == 0.0:
                    fan_in = param.shape[-1] if param.ndim > 1 else param.numel()
                    std = 1.0 / math.sqrt(max(fan_in, 1))
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std
                param.copy_(noise.to(param))


def randomisation_check(
    explain_fn: Callable[[Any], Any],
    model: Any,
    layers_to_randomise: int | Sequence[str | nn.Module],
    *,
    seed: int = 0,
    absolute: bool = True,
) -> RandomisationResult:
    """Model-parameter randomisation test (Adebayo et al., 2018).

    Runs ``explain_fn`` on the model and on a deep copy whose top layers have random
    parameters, and compares the two maps. A faithful explanation changes: low rank
    correlation and SSIM. The original model is never modified.

    Args:
        explain_fn: ``model -> (H, W) map``; called once with ``model`` and once with the
            randomised copy (for a Backbone, build the scorer inside it from the given
            backbone, without a feature cache: the copy keeps the original's identity, so a
            cache keyed on it would serve the original model's features).
        model: An ``nn.Module`` or a Backbone (an object holding the module as ``.model``).
        layers_to_randomise: Either an int ``n`` (the last ``n`` of ``model.token_layers()``,
            or of the module's top-level children), or module names / modules of ``model``.
        seed: Seed of the random parameters.
        absolute: Compare ``|map|`` (importance irrespective of sign), the usual protocol.

    Returns:
        :class:`RandomisationResult`.
    """
    names = _resolve_layer_names(model, layers_to_randomise)
    original = to_numpy_2d(explain_fn(model), name="explanation of the original model")
    randomised_model = copy.deepcopy(model)
    randomise_layers(randomised_model, names, seed=seed)
    randomised = to_numpy_2d(explain_fn(randomised_model), name="explanation of the randomised model")
    if original.shape != randomised.shape:
        raise ValueError(f"explanations differ in shape: {original.shape} vs {randomised.shape}")
    a, b = (np.abs(original), np.abs(randomised)) if absolute else (original, randomised)
    return RandomisationResult(
        spearman=spearman_correlation(a, b),
        ssim=ssim(a, b),
        original=original,
        randomised=randomised,
        layers=names,
    )
