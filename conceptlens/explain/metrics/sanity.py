"""Sanity checks: the integrated-gradients completeness gap and model randomization.

:func:`randomization_check` randomizes a set of layers once; :func:`mprt_cascade` is the
cascading model-parameter randomization test (MPRT) of Adebayo et al. (2018), as Quantus
runs it: starting from the top layer, layers are randomized one more at a time
(cumulatively) and after each step the explanation of the partly random model is compared
with the original one (Spearman rank correlation and SSIM of the absolute maps). An
explanation that depends on the learned parameters falls off quickly; one that stays near 1
all the way down ignores the model.
"""

from __future__ import annotations

import copy
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from conceptlens._deprecation import (
    deprecated_alias,
    deprecated_property,
    renamed_module_attributes,
    renamed_parameters,
)
from conceptlens.explain._spatial import to_numpy_2d
from conceptlens.explain.metrics.similarity import spearman_correlation, ssim

__all__ = [
    "MPRTCascade",
    "RandomizationResult",
    "completeness_gap",
    "mprt_cascade",
    "randomization_check",
    "randomize_layers",
]


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
class RandomizationResult:
    """Outcome of :func:`randomization_check`.

    Attributes:
        spearman: Spearman rank correlation between the original and randomized maps
            (of absolute values by default). Near 1 means the explanation ignores the model.
        ssim: Structural similarity of the two maps (each min-max scaled).
        original: ``(H, W)`` map from the original model.
        randomized: ``(H, W)`` map from the randomized copy.
        layers: Qualified names of the modules whose parameters were randomized.
    """

    spearman: float
    ssim: float
    original: np.ndarray = field(repr=False)
    randomized: np.ndarray = field(repr=False)
    layers: list[str] = field(default_factory=list)

    randomised = deprecated_property("randomized", "randomised")


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
            raise ValueError(f"number of layers to randomize must be >= 1, got {layers}")
        blocks: list[nn.Module]
        try:
            blocks = list(model.token_layers())  # a Backbone's transformer blocks
        except (AttributeError, NotImplementedError):
            blocks = [m for m in root.children() if any(True for _ in m.parameters())]
        if not blocks:
            raise ValueError("model has no layers with parameters to randomize")
        chosen: list[str | nn.Module] = list(blocks[-layers:])
    else:
        chosen = list(layers)
        if not chosen:
            raise ValueError("layers_to_randomize is empty")
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


def randomize_layers(model: Any, layer_names: Sequence[str], *, seed: int = 0) -> None:
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


@renamed_parameters(layers_to_randomise="layers_to_randomize")
def randomization_check(
    explain_fn: Callable[[Any], Any],
    model: Any,
    layers_to_randomize: int | Sequence[str | nn.Module],
    *,
    seed: int = 0,
    absolute: bool = True,
) -> RandomizationResult:
    """Model-parameter randomization test (Adebayo et al., 2018).

    Runs ``explain_fn`` on the model and on a deep copy whose top layers have random
    parameters, and compares the two maps. A faithful explanation changes: low rank
    correlation and SSIM. The original model is never modified.

    Args:
        explain_fn: ``model -> (H, W) map``; called once with ``model`` and once with the
            randomized copy (for a Backbone, build the scorer inside it from the given
            backbone, without a feature cache: the copy keeps the original's identity, so a
            cache keyed on it would serve the original model's features).
        model: An ``nn.Module`` or a Backbone (an object holding the module as ``.model``).
        layers_to_randomize: Either an int ``n`` (the last ``n`` of ``model.token_layers()``,
            or of the module's top-level children), or module names / modules of ``model``.
        seed: Seed of the random parameters.
        absolute: Compare ``|map|`` (importance irrespective of sign), the usual protocol.

    Returns:
        :class:`RandomizationResult`.
    """
    names = _resolve_layer_names(model, layers_to_randomize)
    original = to_numpy_2d(explain_fn(model), name="explanation of the original model")
    randomized_model = copy.deepcopy(model)
    randomize_layers(randomized_model, names, seed=seed)
    randomized = to_numpy_2d(explain_fn(randomized_model), name="explanation of the randomized model")
    if original.shape != randomized.shape:
        raise ValueError(f"explanations differ in shape: {original.shape} vs {randomized.shape}")
    a, b = (np.abs(original), np.abs(randomized)) if absolute else (original, randomized)
    return RandomizationResult(
        spearman=spearman_correlation(a, b),
        ssim=ssim(a, b),
        original=original,
        randomized=randomized,
        layers=names,
    )


# ----------------------------------------------------------------------------------------------
# MPRT: the cascade
# ----------------------------------------------------------------------------------------------


@dataclass
class MPRTCascade:
    """Outcome of :func:`mprt_cascade`.

    Attributes:
        table: One row per step: ``step`` (0 = the original model), ``layer`` (the layer
            randomized at that step, ``""`` for step 0), ``spearman`` and ``ssim`` against
            the original explanation (means over the maps when there are several).
        original: ``(H, W)`` or ``(N, H, W)`` explanation of the original model.
        maps: The explanation after each step (``maps[k]`` after step ``k + 1``).
        absolute: Whether ``|map|`` was compared.
    """

    table: pd.DataFrame
    original: np.ndarray = field(repr=False)
    maps: list[np.ndarray] = field(repr=False, default_factory=list)
    absolute: bool = True

    @property
    def layers(self) -> list[str]:
        """Layers in the order they were randomized (top first)."""
        return list(self.table["layer"].iloc[1:])

    def plot(self, ax: Any = None) -> Any:
        """Line plot of Spearman and SSIM against the cascade (top layer first). Returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(self.table) + 2), 3.6))
        steps = self.table["step"].to_numpy()
        ax.plot(steps, self.table["spearman"], "o-", label="Spearman rank correlation")
        ax.plot(steps, self.table["ssim"], "s--", label="SSIM")
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_xticks(steps)
        ax.set_xticklabels(["original", *[_short(name) for name in self.layers]], rotation=35,
                           ha="right", fontsize="small")
        ax.set_ylim(min(-0.1, float(np.nanmin(self.table[["spearman", "ssim"]].to_numpy())) - 0.05), 1.05)
        ax.set_ylabel("similarity to the original explanation")
        ax.set_title("Cascading model-parameter randomization (top layer first)")
        ax.legend(loc="lower left", fontsize="small")
        ax.figure.tight_layout()
        return ax

    def report_sections(self, title: str = "Model randomization cascade (MPRT)") -> list[Any]:
        """Sections for a :class:`~conceptlens.explain.report.Report`: the step table and the
        cascade plot (its numbers are in the report's JSON twin)::

            report = Report("Sanity checks")
            report.sections.extend(cascade.report_sections())   # or: for s in ...: report.add(s)
            report.save("out", "sanity")
        """
        from conceptlens.explain.report.document import Figures, Table

        last = self.table.iloc[-1]
        caption = (f"Layers are randomized one more at a time from the top; after each step the "
                   f"explanation is compared with the original one "
                   f"({'absolute values' if self.absolute else 'signed values'}). An explanation "
                   f"that depends on the model falls towards 0. After all "
                   f"{len(self.table) - 1} layers: Spearman {float(last.spearman):.3f}, SSIM "
                   f"{float(last.ssim):.3f}.")
        frame = self.table[["step", "layer", "spearman", "ssim"]].copy()
        frame["layer"] = [str(name) or "original" for name in frame["layer"]]
        ax = self.plot()
        data = {"steps": [int(s) for s in self.table["step"]],
                "layers": ["original", *self.layers],
                "spearman": self.table["spearman"].tolist(), "ssim": self.table["ssim"].tolist()}
        return [
            Table(title, caption=caption, frame=frame),
            Figures.from_matplotlib(f"{title}: plot", ax.figure, data=data,
                                    caption="Similarity to the original explanation after each "
                                            "step (top layer first).",
                                    alts=["MPRT cascade: Spearman and SSIM per step"]),
        ]

    def __repr__(self) -> str:
        last = self.table.iloc[-1]
        return (f"MPRTCascade({len(self.table) - 1} layers, after all: spearman {last.spearman:.3f}, "
                f"ssim {last.ssim:.3f})")

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{int(r.step)}</td><td>{html.escape(str(r.layer) or 'original')}</td>"
            f"<td>{r.spearman:.3f}</td><td>{r.ssim:.3f}</td></tr>"
            for r in self.table.itertuples()
        )
        return ("<table><caption>MPRT cascade (cumulative randomization from the top)</caption>"
                "<thead><tr><th>step</th><th>layer randomized</th><th>Spearman</th><th>SSIM</th>"
                f"</tr></thead><tbody>{rows}</tbody></table>")


def _short(name: str) -> str:
    return name if len(name) <= 28 else "..." + name[-25:]


def _as_maps(x: Any, name: str) -> np.ndarray:
    array = _as_array(x)
    if array.ndim == 2:
        return to_numpy_2d(array, name=name)[None]
    if array.ndim == 3:
        return array
    raise ValueError(f"{name} must be an (H, W) map or an (N, H, W) stack, got shape {array.shape}")


def _similarities(a: np.ndarray, b: np.ndarray, absolute: bool) -> tuple[float, float]:
    if a.shape != b.shape:
        raise ValueError(f"explanations differ in shape: {a.shape} vs {b.shape}")
    if absolute:
        a, b = np.abs(a), np.abs(b)
    rho = [spearman_correlation(x, y) for x, y in zip(a, b, strict=True)]
    sim = [ssim(x, y) for x, y in zip(a, b, strict=True)]
    return float(np.nanmean(rho)) if not np.all(np.isnan(rho)) else float("nan"), float(np.mean(sim))


def mprt_cascade(
    explain_fn: Callable[[Any], Any],
    model: Any,
    layers: Sequence[str | nn.Module] | None = None,
    *,
    seed: int = 0,
    absolute: bool = True,
) -> MPRTCascade:
    """Cascading model-parameter randomization test (Adebayo et al. 2018; Quantus' MPRT).

    Args:
        explain_fn: ``model -> (H, W) map`` or ``(N, H, W)`` maps of several inputs; called
            once on ``model`` and once after each step on a deep copy (for a Backbone, build
            the scorer inside it from the given backbone and without a feature cache, as for
            :func:`randomization_check`).
        model: An ``nn.Module`` or a Backbone (an object holding the module as ``.model``).
        layers: Modules (or their qualified names) **top first**; each step randomizes one
            more of them, cumulatively. Default: the backbone's transformer blocks
            (``token_layers()``) from the last to the first, or the module's top-level
            children with parameters from the last to the first.
        seed: Seed of the random parameters (step ``k`` uses ``seed + k``).
        absolute: Compare ``|map|``, the usual protocol.

    Returns:
        :class:`MPRTCascade` with one row per step (the original model is never modified).
    """
    if layers is None:
        try:
            blocks = list(model.token_layers())
        except (AttributeError, NotImplementedError):
            root = _module_root(model)
            blocks = [m for m in root.children() if any(True for _ in m.parameters())]
        names = _resolve_layer_names(model, list(reversed(blocks)))
    else:
        names = _resolve_layer_names(model, layers)
    original = _as_maps(explain_fn(model), "explanation of the original model")
    rows = [{"step": 0, "layer": "", "spearman": 1.0, "ssim": 1.0}]
    maps: list[np.ndarray] = []
    randomized = copy.deepcopy(model)
    for step, name in enumerate(names, start=1):
        randomize_layers(randomized, [name], seed=seed + step)
        current = _as_maps(explain_fn(randomized), f"explanation after randomizing {name}")
        rho, sim = _similarities(original, current, absolute)
        rows.append({"step": step, "layer": name, "spearman": rho, "ssim": sim})
        maps.append(current[0] if current.shape[0] == 1 else current)
    first = original[0] if original.shape[0] == 1 else original
    return MPRTCascade(table=pd.DataFrame(rows), original=first, maps=maps, absolute=absolute)


randomise_layers = deprecated_alias(randomize_layers, "randomise_layers")
randomisation_check = deprecated_alias(randomization_check, "randomisation_check")
__getattr__ = renamed_module_attributes(__name__, {"RandomisationResult": "RandomizationResult"})
