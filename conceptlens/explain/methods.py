"""The registry of attribution methods behind :func:`conceptlens.explain.attribute`.

Each method is one small function registered by name with :func:`register_method`. It
receives a :class:`MethodInputs` (the target function at one image, its value there, the
baseline rule and the shared settings) plus its own keyword options, and returns a
:class:`MethodOutput` (the captum attributions and the evidence to trust them by).
:func:`~conceptlens.explain.attribute` does everything around it once for every method:
loading the image, binding the target, seeding, drawing the result back onto the original
image and judging it.

=======================  ================================================================
method                   options (defaults)
=======================  ================================================================
``integrated_gradients`` ``n_steps="auto"``, ``tolerance=0.05``, ``max_steps=1024``
``gradient_shap``        ``nt_samples=10``, ``nt_stdevs=None``, ``tolerance=0.05``
``saliency``             ``abs=True``
``input_x_gradient``     (none)
``occlusion``            ``sliding_window=None`` (one patch), ``strides=None`` (the window)
``smoothgrad``           ``nt_base="saliency"``, ``nt_samples=10``, ``nt_stdevs=None``,
                         ``n_steps="auto"`` (50 over integrated gradients), ``abs=True``
``grad_cam``             ``layer=None`` (the last block), ``relu=True``
``concept_map``          (none)
=======================  ================================================================

Every method also gets ``baselines``, ``internal_batch_size`` and ``seed`` from
:func:`~conceptlens.explain.attribute`, through :class:`MethodInputs`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import (
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from conceptlens.errors import ConceptlensError
from conceptlens.explain.baselines import (
    BASELINES,
    BaselineChoice,
    choose_baseline,
    scored_baseline,
)
from conceptlens.explain.completeness import adaptive_integrated_gradients, judge_completeness
from conceptlens.explain.targets import BoundTarget, ConceptTarget, TargetError, find_concept
from conceptlens.vocab.geometry import patch_size_of

__all__ = [
    "METHODS",
    "AttributionMethod",
    "MethodInputs",
    "MethodOutput",
    "UnsupportedMethodError",
    "get_method",
    "list_methods",
    "register_method",
]

TargetFunction = Callable[[torch.Tensor], torch.Tensor]


class UnsupportedMethodError(ConceptlensError, ValueError):
    """The method is unknown, or the backbone / target cannot support it."""


@dataclass(frozen=True)
class AttributionMethod:
    """One registered attribution method.

    Attributes
    ----------
    name : str
        Canonical name (a key of :data:`METHODS`).
    description : str
        What it computes, one line.
    function : callable
        ``function(run: MethodInputs, **options) -> MethodOutput``.
    options : dict
        The method's own keyword options and their defaults (read from ``function``).
    aliases : tuple of str
        Other names accepted for it (compared without case, ``_``, ``-`` and spaces).
    gradients : bool
        Whether it differentiates the target (``False``: it reads the model directly, and
        :func:`~conceptlens.explain.attribute` evaluates no target function for it).
    """

    name: str
    description: str
    function: Callable[..., MethodOutput]
    options: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    gradients: bool = True


_REGISTRY: dict[str, AttributionMethod] = {}
_ALIASES: dict[str, str] = {}
_OPTION_DEFAULTS: dict[str, Any] = {}

METHODS: dict[str, str] = {}
"""Supported ``method`` names and what they compute (filled by :func:`register_method`)."""


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def register_method(
    name: str, description: str, *, aliases: tuple[str, ...] = (), gradients: bool = True,
) -> Callable[[Callable[..., MethodOutput]], Callable[..., MethodOutput]]:
    """Register a function as the attribution method ``name`` (a decorator).

    The function takes a :class:`MethodInputs` and its own keyword-only options, and returns
    a :class:`MethodOutput`; its options become keywords of
    :func:`~conceptlens.explain.attribute`. An option another method has too must have the
    same default there.

    Parameters
    ----------
    name : str
        Canonical name.
    description : str
        One line for :data:`METHODS`.
    aliases : tuple of str
        Other accepted names (e.g. captum's class name).
    gradients : bool, default True
        ``False`` for methods that read the model without differentiating the target.

    Returns
    -------
    callable
        The decorator (it returns the function unchanged).

    Raises
    ------
    ValueError
        The name or an alias is taken, or an option's default differs from another
        method's.
    """

    def decorate(function: Callable[..., MethodOutput]) -> Callable[..., MethodOutput]:
        options = {
            p.name: p.default for p in inspect.signature(function).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        keys = {_key(name), *(_key(a) for a in aliases)}
        taken = sorted(k for k in keys if k in _ALIASES)
        if taken:
            raise ValueError(f"attribution method name(s) {taken} are already registered")
        for option, default in options.items():
            if option in _OPTION_DEFAULTS and _OPTION_DEFAULTS[option] != default:
                raise ValueError(f"option {option!r} of {name!r} defaults to {default!r}, other methods "
                                 f"to {_OPTION_DEFAULTS[option]!r}")
        _OPTION_DEFAULTS.update(options)
        _REGISTRY[name] = AttributionMethod(name, description, function, options, tuple(aliases), gradients)
        _ALIASES.update(dict.fromkeys(keys, name))
        METHODS[name] = description
        return function

    return decorate


def list_methods() -> list[str]:
    """Names accepted by ``attribute(method=...)``, sorted; what each computes is in
    :data:`METHODS`, its options in :func:`get_method`."""
    return sorted(_REGISTRY)


def get_method(method: str) -> AttributionMethod:
    """The registered method for a name or alias (``"IntegratedGradients"``, ``"ig"`` ...).

    Raises
    ------
    UnsupportedMethodError
        No method has this name.
    TypeError
        ``method`` is not a string.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {type(method).__name__}")
    key = _key(method)
    if key not in _ALIASES:
        raise UnsupportedMethodError(f"unknown attribution method {method!r}; choose one of {sorted(METHODS)}")
    return _REGISTRY[_ALIASES[key]]


def option_defaults() -> dict[str, Any]:
    """Every method option and its default (what ``attribute(**options)`` may pass)."""
    return dict(_OPTION_DEFAULTS)


# ----------------------------------------------------------------------------------------------
# What a method gets and gives
# ----------------------------------------------------------------------------------------------


class MethodInputs:
    """What every registered method gets: the bound target at one image and shared settings.

    Attributes
    ----------
    target : BoundTarget
        The target with its backbone, scorer and bottleneck.
    backbone : Backbone
        The backbone the target runs through.
    pixels : torch.Tensor
        ``(1, 3, H, W)`` model input of the image (no gradient).
    inputs : torch.Tensor or None
        A copy of ``pixels`` that requires grad (what captum attributes); ``None`` for
        methods without gradients.
    input_value : float or None
        ``f(x)``, the target at the image; ``None`` for methods without gradients.
    internal_batch_size : int or None
        Bound on inputs per forward/backward pass.
    original_size : tuple of int
        ``(width, height)`` of the original image (for baselines built from it).
    seed : int or None
        Seed of random baselines.
    """

    def __init__(self, target: BoundTarget, pixels: torch.Tensor, *, baselines: Any,
                 internal_batch_size: int | None, original_size: tuple[int, int],
                 seed: int | None) -> None:
        self.target = target
        self.backbone = target.backbone
        self.pixels = pixels
        self.inputs: torch.Tensor | None = None
        self.input_value: float | None = None
        self.internal_batch_size = internal_batch_size
        self.original_size = original_size
        self.seed = seed
        self._baselines = baselines
        self._forward: TargetFunction | None = None

    @property
    def forward(self) -> TargetFunction:
        """The target function ``(B, 3, H, W) -> (B,)`` in float32 (built once)."""
        if self._forward is None:
            self._forward = float_output(self.target.function)
        return self._forward

    @property
    def margin(self) -> TargetFunction | None:
        """The signed distance to the target's decision boundary in float32, or ``None``."""
        margin = self.target.margin
        return None if margin is None else float_output(margin)

    def baseline(self, default: str, *, allow_many: bool) -> BaselineChoice:
        """The baseline(s) of this call: the user's ``baselines`` or the method's ``default``,
        scored (see :mod:`conceptlens.explain.baselines`).

        Parameters
        ----------
        default : str
            The method's default baseline name, used when the user gave none.
        allow_many : bool
            Whether the method takes several baselines (``"expected"``, ``(N, 3, H, W)``).
        """
        baselines = default if self._baselines is None else self._baselines
        pixels, forward, margin = self.pixels, self.forward, self.margin
        if isinstance(baselines, str):
            if baselines not in BASELINES:
                raise ValueError(f"unknown baseline {baselines!r}; choose one of {sorted(BASELINES)}")
            if baselines == "expected" and not allow_many:
                raise ValueError("baselines='expected' averages over several baselines; this method takes one")
            return choose_baseline(baselines, pixels, forward, margin, backbone=self.backbone,
                                   original_size=self.original_size,
                                   seed=0 if self.seed is None else self.seed)
        tensor = _user_baseline(baselines, pixels, allow_many=allow_many)
        name = "tensor" if isinstance(baselines, torch.Tensor) else "number"
        return scored_baseline(name, tensor, pixels, forward, margin)


@dataclass
class MethodOutput:
    """What a registered method returns.

    Attributes
    ----------
    attributions : torch.Tensor
        ``(1, 3, H, W)`` over the model's input pixels, or ``(1, 1, h, w)`` over the patch
        grid (``on_grid``).
    on_grid : bool
        Whether ``attributions`` lie on the backbone's patch grid.
    baseline : BaselineChoice or None
        The baseline(s) used.
    evidence : dict
        :class:`~conceptlens.explain.Attribution` evidence fields (``n_steps``,
        ``convergence_delta``, ``completeness_gap``, ``converged``, ``tolerance``).
    params : dict
        The settings used, shown with the result.
    input_value : float or None
        ``f(x)`` when the method computed it itself (methods without gradients).
    """

    attributions: torch.Tensor
    on_grid: bool = False
    baseline: BaselineChoice | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    input_value: float | None = None


# ----------------------------------------------------------------------------------------------
# The methods
# ----------------------------------------------------------------------------------------------


@register_method("integrated_gradients", "captum IntegratedGradients (Sundararajan et al., 2017)",
                 aliases=("ig",))
def integrated_gradients(run: MethodInputs, *, n_steps: int | str = "auto", tolerance: float = 0.05,
                         max_steps: int = 1024) -> MethodOutput:
    """Integrated gradients from the baseline, doubling ``n_steps="auto"`` until complete."""
    choice = run.baseline("auto", allow_many=True)
    attr, steps, check = adaptive_integrated_gradients(
        run.forward, run.inputs, choice.tensor, input_value=run.input_value,
        baseline_values=choice.values, n_steps=n_steps, tolerance=tolerance, max_steps=max_steps,
        internal_batch_size=run.internal_batch_size,
    )
    return MethodOutput(
        attr, baseline=choice,
        evidence={"n_steps": steps, "convergence_delta": check.delta, "completeness_gap": check.gap,
                  "converged": check.converged, "tolerance": tolerance},
        params={"n_steps": steps, "internal_batch_size": run.internal_batch_size},
    )


@register_method("gradient_shap", "captum GradientShap: expected gradients over baselines + noise",
                 aliases=("shap",))
def gradient_shap(run: MethodInputs, *, nt_samples: int = 10, nt_stdevs: float | None = None,
                  tolerance: float = 0.05) -> MethodOutput:
    """Expected gradients over the baselines (``"expected"``: all candidates) plus noise."""
    choice = run.baseline("expected", allow_many=True)
    stdevs = _noise(nt_stdevs, run.pixels)
    attr, delta = _gradient_shap(run.forward, run.inputs, choice.tensor, nt_samples, stdevs,
                                 run.internal_batch_size)
    check = judge_completeness(float(attr.detach().double().sum()), run.input_value, choice.value,
                               tolerance)
    return MethodOutput(
        attr, baseline=choice,
        evidence={"convergence_delta": delta, "completeness_gap": check.gap, "tolerance": tolerance},
        params={"n_samples": nt_samples, "stdevs": stdevs, "internal_batch_size": run.internal_batch_size},
    )


@register_method("saliency", "captum Saliency: |d target / d pixel| (Simonyan et al., 2014)")
def saliency(run: MethodInputs, *, abs: bool = True) -> MethodOutput:  # noqa: A002 - captum's name
    """The gradient of the target (absolute by default)."""
    return MethodOutput(Saliency(run.forward).attribute(run.inputs, abs=abs), params={"abs": abs})


@register_method("input_x_gradient", "captum InputXGradient: pixel * gradient")
def input_x_gradient(run: MethodInputs) -> MethodOutput:
    """Each pixel times the target's gradient there."""
    return MethodOutput(InputXGradient(run.forward).attribute(run.inputs))


@register_method("occlusion",
                 "captum Occlusion: score drop when a sliding window is replaced by the baseline")
def occlusion(run: MethodInputs, *, sliding_window: int | tuple[int, int] | None = None,
              strides: int | tuple[int, int] | None = None) -> MethodOutput:
    """The target's drop when a window (default: one patch) shows the baseline instead."""
    choice = run.baseline("auto", allow_many=False)
    window = _pair(sliding_window, _patch(run.backbone), "sliding_window")
    stride = _pair(strides, window, "strides")
    attr = Occlusion(run.forward).attribute(
        run.inputs, sliding_window_shapes=(3, *window), strides=(3, *stride),
        baselines=choice.tensor, perturbations_per_eval=run.internal_batch_size or 1,
    )
    return MethodOutput(attr, baseline=choice, params={"sliding_window": window, "strides": stride})


@register_method("smoothgrad", "captum NoiseTunnel (SmoothGrad) over saliency or integrated gradients",
                 aliases=("noisetunnel",))
def smoothgrad(run: MethodInputs, *, nt_base: str = "saliency", nt_samples: int = 10,
               nt_stdevs: float | None = None, n_steps: int | str = "auto",
               abs: bool = True) -> MethodOutput:  # noqa: A002 - captum's name
    """Saliency or integrated gradients averaged over noisy copies of the image."""
    choice = None
    if nt_base != "saliency" and get_method(nt_base).name == "integrated_gradients":
        choice = run.baseline("auto", allow_many=False)
    base = get_method(nt_base).name
    stdevs = _noise(nt_stdevs, run.inputs)
    steps = 50 if n_steps == "auto" else n_steps
    if base == "saliency":
        tunnel = NoiseTunnel(Saliency(run.forward))
        attr = tunnel.attribute(run.inputs, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdevs,
                                nt_samples_batch_size=run.internal_batch_size, abs=abs)
    elif base == "integrated_gradients":
        tunnel = NoiseTunnel(IntegratedGradients(run.forward))
        attr = tunnel.attribute(run.inputs, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdevs,
                                nt_samples_batch_size=1, baselines=choice.tensor, n_steps=steps,
                                internal_batch_size=run.internal_batch_size)
    else:
        raise UnsupportedMethodError(f"smoothgrad averages 'saliency' or 'integrated_gradients', not {nt_base!r}")
    return MethodOutput(attr, baseline=choice,
                        params={"nt_base": base, "nt_samples": nt_samples, "stdevs": stdevs, "n_steps": steps})


@register_method("grad_cam",
                 "captum LayerGradCam on a vision-transformer block, tokens reshaped to the patch grid",
                 aliases=("layergradcam",))
def grad_cam(run: MethodInputs, *, layer: int | nn.Module | None = None, relu: bool = True) -> MethodOutput:
    """Grad-CAM on a transformer block's patch tokens (default: the last block)."""
    backbone = run.backbone
    block = _select_layer(backbone, layer)
    view = _TokenGrid()
    handle = block.register_forward_hook(
        _grid_hook(view, int(getattr(backbone, "num_prefix_tokens", 0) or 0), grid_of(backbone))
    )
    try:
        attr = LayerGradCam(run.forward, view).attribute(run.inputs, relu_attributions=relu)
    finally:
        handle.remove()
    return MethodOutput(attr, on_grid=True, params={"layer": layer if layer is not None else -1, "relu": relu})


@register_method("concept_map",
                 "the scorer's patch-level map of one concept (no gradients, one forward pass)",
                 aliases=("patchmap",), gradients=False)
def concept_map(run: MethodInputs) -> MethodOutput:
    """The scorer's patch scores of one concept, read from one forward pass."""
    target, scorer = run.target.target, run.target.scorer
    if not isinstance(target, ConceptTarget):
        raise UnsupportedMethodError("method 'concept_map' explains a ConceptTarget only")
    if scorer is None:
        raise TargetError("method 'concept_map' needs scorer=...")
    index, _ = find_concept(scorer, target.concept)
    with torch.no_grad():
        patch = scorer.patch_scores_tensor(run.pixels)[0, index]
        value = float(scorer.score_tensor(run.pixels)[0, index])
    return MethodOutput(
        patch.reshape(grid_of(run.backbone))[None, None], on_grid=True, input_value=value,
        params={"calibration": getattr(getattr(scorer, "config", None), "calibration", None)},
    )


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def float_output(fn: TargetFunction) -> TargetFunction:
    """``fn`` checked to return ``(B,)`` and cast to float32."""

    def forward(pixel_values: torch.Tensor) -> torch.Tensor:
        out = fn(pixel_values)
        if out.ndim != 1:
            raise TargetError(f"target function must return shape (B,), got {tuple(out.shape)}")
        return out.float()

    return forward


def grid_of(backbone: Any) -> tuple[int, int]:
    """``(grid_h, grid_w)`` of the backbone's patch grid."""
    return int(backbone.grid_size[0]), int(backbone.grid_size[1])


def _user_baseline(baselines: Any, pixels: torch.Tensor, *, allow_many: bool) -> torch.Tensor:
    """A user-given number or tensor as an ``(N, 3, H, W)`` baseline batch."""
    if isinstance(baselines, bool) or not isinstance(baselines, (int, float, torch.Tensor)):
        raise TypeError(
            f"baselines must be one of {sorted(BASELINES)}, a number or a tensor; "
            f"got {type(baselines).__name__}"
        )
    if not isinstance(baselines, torch.Tensor):
        return torch.full_like(pixels.detach(), float(baselines))
    tensor = baselines.to(device=pixels.device, dtype=pixels.dtype)
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tuple(tensor.shape[1:]) != tuple(pixels.shape[1:]):
        raise ValueError(f"baselines must have shape (3, H, W) or (N, 3, H, W) = (N, {', '.join(map(str, pixels.shape[1:]))}); "
                         f"got {tuple(baselines.shape)}")
    if tensor.shape[0] != 1 and not allow_many:
        raise ValueError("this method takes one baseline image; got several "
                         "(integrated_gradients and gradient_shap take several)")
    return tensor


class _TokenGrid(nn.Module):
    """Identity on a ``(B, W, h, w)`` token grid: the layer captum's Grad-CAM hooks."""

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid.view_as(grid)


def _grid_hook(view: _TokenGrid, prefix: int, grid: tuple[int, int]) -> Callable[..., Any]:
    """A forward hook that routes a block's patch tokens through ``view`` as a grid and back."""

    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        tokens = output[0] if isinstance(output, tuple) else output
        b, n, width = tokens.shape
        if n - prefix != grid[0] * grid[1]:
            raise UnsupportedMethodError(
                f"grad_cam: block output has {n} tokens, expected {prefix} prefix + "
                f"{grid[0]} x {grid[1]} patch tokens"
            )
        patches = tokens[:, prefix:].transpose(1, 2).reshape(b, width, *grid)
        patches = view(patches).flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens[:, :prefix], patches], dim=1)
        return (tokens, *output[1:]) if isinstance(output, tuple) else tokens

    return hook


def _select_layer(backbone: Any, layer: Any) -> nn.Module:
    try:
        layers = list(backbone.token_layers())
    except (NotImplementedError, AttributeError) as err:
        raise UnsupportedMethodError(
            f"grad_cam needs a vision transformer's token layers, which {type(backbone).__name__} "
            f"does not expose: {err}"
        ) from err
    except Exception as err:  # adapters raise their own errors for unknown layouts
        raise UnsupportedMethodError(f"grad_cam is not supported for {type(backbone).__name__}: {err}") from err
    if not layers:
        raise UnsupportedMethodError(f"{type(backbone).__name__} has no token layers")
    if layer is None:
        return layers[-1]
    if isinstance(layer, int):
        try:
            return layers[layer]
        except IndexError:
            raise ValueError(f"layer index {layer} out of range for {len(layers)} token layers") from None
    if isinstance(layer, nn.Module):
        if not any(layer is m for m in layers):
            raise ValueError("layer must be one of backbone.token_layers()")
        return layer
    raise TypeError(f"layer must be None, an int index or a module, got {type(layer).__name__}")


def _gradient_shap(forward: TargetFunction, inputs: torch.Tensor, baselines: torch.Tensor, nt_samples: int,
                   stdevs: float, internal_batch_size: int | None) -> tuple[torch.Tensor, float]:
    explainer = GradientShap(forward)
    chunk = internal_batch_size or nt_samples
    total, deltas = None, []
    for start in range(0, nt_samples, chunk):
        n = min(chunk, nt_samples - start)
        part, d = explainer.attribute(inputs, baselines=baselines, n_samples=n, stdevs=stdevs,
                                      return_convergence_delta=True)
        total = part * n if total is None else total + part * n
        deltas.append(d.detach())
    assert total is not None
    return total / nt_samples, float(torch.cat(deltas).mean())


def _noise(nt_stdevs: float | None, pixels: torch.Tensor) -> float:
    if nt_stdevs is None:
        return 0.15 * float(pixels.detach().max() - pixels.detach().min())
    if nt_stdevs < 0:
        raise ValueError(f"nt_stdevs must be >= 0, got {nt_stdevs}")
    return float(nt_stdevs)


def _patch(backbone: Any) -> int:
    return max(1, patch_size_of(backbone, grid_of(backbone))[0])


def _pair(value: Any, default: Any, what: str) -> tuple[int, int]:
    if value is None:
        value = default
    if isinstance(value, int):
        value = (value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 2 or min(out) < 1:
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    return out  # type: ignore[return-value]
