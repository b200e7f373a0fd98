"""Pixel attributions through the concept chain with captum, in original-image coordinates.

One entry point, :func:`attribute`, in captum's vocabulary (``method``, ``target``,
``baselines``, ``n_steps``, ``internal_batch_size``). The target (a concept score, a
bottleneck class, a prompt; see :mod:`conceptlens.explain.targets`) becomes a differentiable
``pixels -> (B,)`` function, captum attributes it, and the result is drawn back through the
squash resize onto the original image.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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

from conceptlens.errors import BaselineWarning, ConceptlensError, ConvergenceWarning
from conceptlens.explain.baselines import (
    BASELINES,
    BaselineChoice,
    choose_baseline,
    scored_baseline,
)
from conceptlens.explain.completeness import adaptive_integrated_gradients, judge_completeness
from conceptlens.explain.targets import (
    ConceptTarget,
    Target,
    TargetError,
    find_concept,
    resolve_target,
)

__all__ = [
    "METHODS",
    "VERDICTS",
    "Attribution",
    "UnsupportedMethodError",
    "attribute",
    "concept_maps",
]

METHODS: dict[str, str] = {
    "integrated_gradients": "captum IntegratedGradients (Sundararajan et al., 2017)",
    "gradient_shap": "captum GradientShap: expected gradients over baselines + noise",
    "saliency": "captum Saliency: |d target / d pixel| (Simonyan et al., 2014)",
    "input_x_gradient": "captum InputXGradient: pixel * gradient",
    "occlusion": "captum Occlusion: score drop when a sliding window is replaced by the baseline",
    "smoothgrad": "captum NoiseTunnel (SmoothGrad) over saliency or integrated gradients",
    "grad_cam": "captum LayerGradCam on a vision-transformer block, tokens reshaped to the patch grid",
    "concept_map": "the scorer's patch-level map of one concept (no gradients, one forward pass)",
}
"""Supported ``method`` names and what they compute."""

_ALIASES = {
    "ig": "integrated_gradients",
    "integratedgradients": "integrated_gradients",
    "gradientshap": "gradient_shap",
    "shap": "gradient_shap",
    "saliency": "saliency",
    "inputxgradient": "input_x_gradient",
    "occlusion": "occlusion",
    "smoothgrad": "smoothgrad",
    "noisetunnel": "smoothgrad",
    "gradcam": "grad_cam",
    "layergradcam": "grad_cam",
    "conceptmap": "concept_map",
    "patchmap": "concept_map",
}


class UnsupportedMethodError(ConceptlensError, ValueError):
    """The method is unknown, or the backbone / target cannot support it."""


def _method_name(method: str) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {type(method).__name__}")
    key = method.lower().replace("_", "").replace("-", "").replace(" ", "")
    if key not in _ALIASES:
        raise UnsupportedMethodError(f"unknown attribution method {method!r}; choose one of {sorted(METHODS)}")
    return _ALIASES[key]


VERDICTS: dict[str, str] = {
    "converged": "the attributions sum to f(x) - f(baseline) within the tolerance",
    "not converged": "the attributions miss f(x) - f(baseline) by more than the tolerance",
    "baseline on the same side of the decision": (
        "the model scores the baseline like the input: the map explains 'more than the "
        "baseline', not 'why'"
    ),
    "baseline scored like the input": (
        "f(x) and f(baseline) are nearly equal: the relative gap is undefined and the map "
        "explains almost nothing"
    ),
    "no completeness check": "the method has no path from a baseline whose sum could be checked",
}
"""Plain verdicts an :class:`Attribution` gives about itself, and what each means."""


@dataclass
class Attribution:
    """An attribution of one target for one image, with the evidence for trusting it.

    Attributes:
        raw: The attribution as the method returned it: ``(3, H, W)`` over the model's input
            pixels (gradient and perturbation methods) or ``(h, w)`` over the patch grid
            (``grad_cam``, ``concept_map``).
        map: ``(H_orig, W_orig)`` map on the ORIGINAL image's pixel grid (the squash resize
            undone); pixel methods are summed over colour channels first.
        method: Canonical method name (a key of :data:`METHODS`).
        target: The :class:`~conceptlens.explain.targets.Target` explained.
        image: The original image (PIL, RGB).
        pixel_values: ``(1, 3, H, W)`` model input the attribution was computed on.
        forward: The differentiable ``(B, 3, H, W) -> (B,)`` target function, e.g. for
            :func:`~conceptlens.explain.metrics.deletion_curve`.
        baselines: ``(N, 3, H, W)`` baseline tensor(s) used (``None`` for methods without one).
        baseline: Name of the baseline (a key of
            :data:`~conceptlens.explain.baselines.BASELINES`, ``"tensor"`` or ``"number"``),
            or ``None``.
        baseline_value: ``f(baseline)`` (mean over several baselines), or ``None``.
        input_value: ``f(x)``, the explained output at the image (``target_value`` is the
            same number, kept for older code).
        n_steps: Integration steps used by a path method (after ``n_steps="auto"``), else ``None``.
        convergence_delta: ``sum(attribution) - (f(x) - f(baseline))`` for integrated
            gradients / GradientShap (absolute, signed); ``None`` otherwise.
        completeness_gap: ``|convergence_delta| / |f(x) - f(baseline)|``; ``None`` for
            methods without completeness or when ``f(x)`` and ``f(baseline)`` are nearly equal
            (see :data:`conceptlens.explain.completeness.ILL_CONDITIONED`).
        converged: Whether completeness holds within ``tolerance`` (``None``: not checkable).
        tolerance: The relative gap accepted as converged.
        baseline_same_side: Whether the model scores the baseline on the same side of the
            target's decision boundary as the input (``None``: no boundary or no baseline).
        baseline_candidates: For ``baselines="auto"`` / ``"expected"``: candidate -> ``f``.
        params: The method settings used (window, layer, samples ...).

    Examples:
        >>> a = attribute(backbone, "lesion.png", ClassTarget("melanoma"), scorer=scorer,
        ...               bottleneck=model)                                # doctest: +SKIP
        >>> a.verdict, a.n_steps, a.completeness_gap                       # doctest: +SKIP
        ('converged', 64, 0.003)
    """

    raw: np.ndarray
    map: np.ndarray
    method: str
    target: Target
    image: Any = field(repr=False)
    pixel_values: torch.Tensor = field(repr=False)
    forward: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    baselines: torch.Tensor | None = field(default=None, repr=False)
    convergence_delta: float | None = None
    target_value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    baseline_value: float | None = None
    n_steps: int | None = None
    completeness_gap: float | None = None
    converged: bool | None = None
    tolerance: float | None = None
    baseline_same_side: bool | None = None
    baseline_candidates: dict[str, float] | None = None

    @property
    def input_value(self) -> float | None:
        """``f(x)``: the explained output at the image."""
        return self.target_value

    @property
    def verdict(self) -> str:
        """A plain verdict on this attribution (a key of :data:`VERDICTS`)."""
        if self.converged is False:
            return "not converged"
        if self.convergence_delta is not None and self.completeness_gap is None and self.converged:
            return "baseline scored like the input"
        if self.baseline_same_side:
            return "baseline on the same side of the decision"
        if self.converged:
            return "converged"
        return "no completeness check"

    def evidence(self) -> dict[str, Any]:
        """Everything needed to judge this attribution, JSON-ready (the faithfulness card
        without the deletion check; see :func:`faithfulness_card`)."""
        return {
            "method": self.method,
            "target": self.target.describe(),
            "baseline": self.baseline,
            "baseline_value": self.baseline_value,
            "input_value": self.input_value,
            "n_steps": self.n_steps,
            "convergence_delta": self.convergence_delta,
            "completeness_gap": self.completeness_gap,
            "tolerance": self.tolerance,
            "converged": self.converged,
            "baseline_same_side": self.baseline_same_side,
            "baseline_candidates": self.baseline_candidates,
            "verdict": self.verdict,
        }

    @property
    def original_size(self) -> tuple[int, int]:
        """``(width, height)`` of the original image."""
        return int(self.map.shape[1]), int(self.map.shape[0])

    def plot(self, ax: Any = None, *, alpha: float = 0.5, cmap: str | None = None, mask: Any = None,
             title: str | None = None) -> Any:
        """Overlay :attr:`map` on the original image (see :func:`~conceptlens.explain.plot_overlay`).

        Returns:
            The matplotlib Figure.
        """
        from conceptlens.explain.plots import plot_overlay

        return plot_overlay(self.image, self.map, alpha=alpha, cmap=cmap, mask=mask, ax=ax,
                            title=title if title is not None else self._title())

    def _title(self) -> str:
        return f"{self.method}: {self.target.describe()}"

    def __repr__(self) -> str:
        extra = ""
        if self.baseline is not None:
            extra += f", baseline={self.baseline!r}"
        if self.n_steps is not None:
            extra += f", n_steps={self.n_steps}"
        if self.completeness_gap is not None:
            extra += f", completeness_gap={self.completeness_gap:.3g}"
        elif self.convergence_delta is not None:
            extra += f", convergence_delta={self.convergence_delta:.3g}"
        return (
            f"Attribution(method={self.method!r}, target={self.target.describe()!r}, "
            f"raw={tuple(self.raw.shape)}, map={tuple(self.map.shape)}{extra}, "
            f"verdict={self.verdict!r})"
        )

    def _repr_html_(self) -> str:
        import matplotlib.pyplot as plt

        fig = self.plot()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        png = base64.b64encode(buffer.getvalue()).decode("ascii")
        rows = [("method", self.method), ("target", self.target.describe()),
                ("map", f"{self.map.shape[0]} x {self.map.shape[1]} (original image)"),
                ("raw", " x ".join(map(str, self.raw.shape)))]
        rows += [(k.replace("_", " "), _shown(v)) for k, v in self.evidence().items()
                 if k not in ("method", "target", "baseline_candidates") and v is not None]
        rows += [(k, str(v)) for k, v in self.params.items()]
        table = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                        for k, v in rows)
        return (f"<div><img src='data:image/png;base64,{png}' style='max-width:360px'/>"
                f"<table>{table}</table></div>")


def _load(image: Any) -> Any:
    from conceptlens.models.images import LoadedImage, load_image

    return image if isinstance(image, LoadedImage) else load_image(image)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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


def _resolve_baselines(baselines: Any, default: str, *, allow_many: bool, pixels: torch.Tensor,
                       forward: Callable[[torch.Tensor], torch.Tensor],
                       margin: Callable[[torch.Tensor], torch.Tensor] | None,
                       backbone: Any, original_size: tuple[int, int], seed: int | None) -> BaselineChoice:
    if baselines is None:
        baselines = default
    if isinstance(baselines, str):
        if baselines not in BASELINES:
            raise ValueError(f"unknown baseline {baselines!r}; choose one of {sorted(BASELINES)}")
        if baselines == "expected" and not allow_many:
            raise ValueError("baselines='expected' averages over several baselines; this method takes one")
        return choose_baseline(baselines, pixels, forward, margin, backbone=backbone,
                               original_size=original_size, seed=0 if seed is None else seed)
    tensor = _user_baseline(baselines, pixels, allow_many=allow_many)
    name = "tensor" if isinstance(baselines, torch.Tensor) else "number"
    return scored_baseline(name, tensor, pixels, forward, margin)


def _grid_of(backbone: Any) -> tuple[int, int]:
    return int(backbone.grid_size[0]), int(backbone.grid_size[1])


def _covered(backbone: Any) -> tuple[float, float]:
    from conceptlens.vocab.scorer import covered_fraction

    return covered_fraction(backbone, _grid_of(backbone))


def _to_original(values: np.ndarray, original_size: tuple[int, int], covered: tuple[float, float]) -> np.ndarray:
    from conceptlens.models.images import resize_map_to_original

    return resize_map_to_original(values.astype(np.float64), original_size, covered_fraction=covered)


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


def _float_output(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(pixel_values: torch.Tensor) -> torch.Tensor:
        out = fn(pixel_values)
        if out.ndim != 1:
            raise TargetError(f"target function must return shape (B,), got {tuple(out.shape)}")
        return out.float()

    return forward


def attribute(
    backbone: Any,
    image: Any,
    target: Any = None,
    method: str = "integrated_gradients",
    *,
    scorer: Any = None,
    bottleneck: Any = None,
    baselines: Any = "auto",
    n_steps: int | str = "auto",
    tolerance: float = 0.05,
    max_steps: int = 1024,
    internal_batch_size: int | None = None,
    nt_samples: int = 10,
    nt_stdevs: float | None = None,
    nt_base: str = "saliency",
    sliding_window: int | tuple[int, int] | None = None,
    strides: int | tuple[int, int] | None = None,
    layer: int | nn.Module | None = None,
    relu: bool = True,
    abs: bool = True,  # noqa: A002 - captum's name
    seed: int | None = 0,
) -> Attribution:
    """Attribute a concept score, a class logit or a prompt similarity to the image's pixels.

    Path methods return converged attributions by default and carry their evidence: the
    baseline and ``f(baseline)``, ``f(x)``, the steps used, the convergence delta, the
    relative completeness gap and a :attr:`Attribution.verdict`. A call that stays
    unconverged warns (:class:`~conceptlens.errors.ConvergenceWarning`), and so does a
    baseline the model scores on the input's side of the decision
    (:class:`~conceptlens.errors.BaselineWarning`).

    Args:
        backbone: The :class:`~conceptlens.models.Backbone` (must match ``scorer.backbone``).
        image: One image: path, PIL, array, tensor or ``LoadedImage``.
        target: What to explain: a :class:`~conceptlens.explain.ConceptTarget`,
            :class:`~conceptlens.explain.ClassTarget`, :class:`~conceptlens.explain.PromptTarget`
            or a shorthand string / label (rules in :mod:`conceptlens.explain.targets`).
        method: One of :data:`METHODS` (captum class names such as ``"IntegratedGradients"``
            and ``"ig"`` are accepted too).
        scorer: :class:`~conceptlens.vocab.ConceptScorer`; needed for concept and class targets.
        bottleneck: A fitted linear concept bottleneck; needed for class targets.
        baselines: Reference input of integrated gradients, occlusion and GradientShap: a
            name from :data:`~conceptlens.explain.baselines.BASELINES` (default ``"auto"``:
            the candidate nearest the decision boundary and not on the input's side, see
            :mod:`conceptlens.explain.baselines`; ``"expected"`` averages over all candidates,
            GradientShap's default), a number, or a ``(3, H, W)`` / ``(N, 3, H, W)`` tensor.
        n_steps: Integration steps of integrated gradients: ``"auto"`` (start at 32, double
            until the completeness gap is at most ``tolerance`` or ``max_steps`` is reached)
            or a fixed positive int. SmoothGrad over IG uses 50 for ``"auto"``.
        tolerance: Relative completeness gap accepted as converged (Sundararajan et al. 5 %).
        max_steps: Step budget of ``n_steps="auto"``.
        internal_batch_size: Bound on the inputs per forward/backward pass (IG steps,
            GradientShap and SmoothGrad samples, occlusion windows); ``None`` runs all at once.
        nt_samples: Noise samples for ``smoothgrad`` and ``gradient_shap``.
        nt_stdevs: Noise standard deviation (input units); default 15 % of the input range.
        nt_base: What ``smoothgrad`` averages: ``"saliency"`` or ``"integrated_gradients"``.
        sliding_window: Occlusion window edge(s) in input pixels (default: one patch).
        strides: Occlusion strides (default: the window, i.e. non-overlapping).
        layer: Grad-CAM block: index into ``backbone.token_layers()`` or the module (default: last).
        relu: Grad-CAM: keep positive evidence only (as in the paper).
        abs: Saliency: absolute gradients (captum's default).
        seed: Seed for random draws (noise baseline, ``smoothgrad``, ``gradient_shap``;
            ``None``: unseeded).

    Returns:
        :class:`Attribution` with ``.map`` on the original image's pixel grid and its evidence.

    Raises:
        UnsupportedMethodError: Unknown method, or one the backbone / target cannot support.
        UnknownConceptError, UnknownClassError: The target names nothing the scorer /
            bottleneck knows (both are ``KeyError``).
        TargetError: The target needs a scorer or bottleneck that was not given.
        ScoreSpaceMismatchError: The bottleneck was fitted on scores made differently from
            the scorer's.

    References:
        Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.
        Sturmfels, Lundberg and Lee, "Visualizing the Impact of Feature Attribution
        Baselines", Distill 2020.

    Examples:
        >>> a = attribute(backbone, "lesion.png", target="C0000001", scorer=scorer,
        ...               internal_batch_size=8)                          # doctest: +SKIP
        >>> a.map.shape == (height, width), a.verdict                     # doctest: +SKIP
        (True, 'converged')
    """
    name = _method_name(method)
    if scorer is not None and getattr(scorer, "backbone", backbone) is not backbone:
        raise ValueError("scorer.backbone is not the backbone given: build the scorer on the same backbone")
    resolved = resolve_target(target, scorer=scorer, bottleneck=bottleneck)
    _check_settings(n_steps, tolerance, max_steps, internal_batch_size, nt_samples)

    loaded = _load(image)
    pixels = backbone.preprocess([loaded.image]).to(backbone.device).float()
    original_size = tuple(loaded.original_size)

    if name == "concept_map":
        return _concept_map_attribution(backbone, scorer, resolved, loaded, pixels, original_size)

    forward = _float_output(resolved.build(backbone, scorer, bottleneck))
    built_margin = resolved.build_margin(backbone, scorer, bottleneck)
    margin = None if built_margin is None else _float_output(built_margin)
    with torch.no_grad():
        target_value = float(forward(pixels)[0])
    inputs = pixels.clone().requires_grad_(True)
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    evidence: dict[str, Any] = {}
    params: dict[str, Any] = {}
    choice: BaselineChoice | None = None

    def baseline_for(default: str, allow_many: bool) -> BaselineChoice:
        return _resolve_baselines(baselines, default, allow_many=allow_many, pixels=pixels,
                                  forward=forward, margin=margin, backbone=backbone,
                                  original_size=original_size, seed=seed)

    try:
        if name == "integrated_gradients":
            choice = baseline_for("auto", allow_many=True)
            attr, steps, check = adaptive_integrated_gradients(
                forward, inputs, choice.tensor, input_value=target_value, baseline_values=choice.values,
                n_steps=n_steps, tolerance=tolerance, max_steps=max_steps,
                internal_batch_size=internal_batch_size,
            )
            evidence = {"n_steps": steps, "convergence_delta": check.delta,
                        "completeness_gap": check.gap, "converged": check.converged, "tolerance": tolerance}
            params = {"n_steps": steps, "internal_batch_size": internal_batch_size}
        elif name == "gradient_shap":
            choice = baseline_for("expected", allow_many=True)
            attr, delta = _gradient_shap(forward, inputs, choice.tensor, nt_samples, _noise(nt_stdevs, pixels),
                                         internal_batch_size)
            check = judge_completeness(float(attr.detach().double().sum()), target_value, choice.value, tolerance)
            evidence = {"convergence_delta": delta, "completeness_gap": check.gap, "tolerance": tolerance}
            params = {"n_samples": nt_samples, "stdevs": _noise(nt_stdevs, pixels),
                      "internal_batch_size": internal_batch_size}
        elif name == "saliency":
            attr = Saliency(forward).attribute(inputs, abs=abs)
            params = {"abs": abs}
        elif name == "input_x_gradient":
            attr = InputXGradient(forward).attribute(inputs)
        elif name == "occlusion":
            choice = baseline_for("auto", allow_many=False)
            window = _pair(sliding_window, _patch(backbone), "sliding_window")
            stride = _pair(strides, window, "strides")
            attr = Occlusion(forward).attribute(
                inputs, sliding_window_shapes=(3, *window), strides=(3, *stride),
                baselines=choice.tensor, perturbations_per_eval=internal_batch_size or 1,
            )
            params = {"sliding_window": window, "strides": stride}
        elif name == "smoothgrad":
            if nt_base != "saliency" and _method_name(nt_base) == "integrated_gradients":
                choice = baseline_for("auto", allow_many=False)
            attr, params = _smoothgrad(
                forward, inputs, choice, nt_base, nt_samples, nt_stdevs,
                50 if n_steps == "auto" else n_steps, internal_batch_size, abs,
            )
        elif name == "grad_cam":
            attr, params = _grad_cam(forward, inputs, backbone, layer, relu)
        else:  # pragma: no cover - _method_name guards this
            raise UnsupportedMethodError(name)
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)

    if name == "grad_cam":
        raw = attr[0, 0].detach().cpu().double().numpy()
        mapped = _to_original(raw, original_size, _covered(backbone))
    else:
        raw = attr[0].detach().cpu().double().numpy()
        mapped = _to_original(raw.sum(axis=0), original_size, (1.0, 1.0))
    result = Attribution(
        raw=raw, map=mapped, method=name, target=resolved, image=loaded.image,
        pixel_values=pixels.detach(), forward=forward,
        baselines=None if choice is None else choice.tensor,
        target_value=target_value, params=params, **evidence, **_baseline_evidence(choice),
    )
    _warn_about(result)
    return result


def _check_settings(n_steps: Any, tolerance: float, max_steps: int, internal_batch_size: int | None,
                    nt_samples: int) -> None:
    if n_steps != "auto" and (isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1):
        raise ValueError(f"n_steps must be 'auto' or an int >= 1, got {n_steps!r}")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise ValueError(f"tolerance must be a number in (0, 1), got {tolerance!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    if internal_batch_size is not None and internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")
    if nt_samples < 1:
        raise ValueError(f"nt_samples must be >= 1, got {nt_samples}")


def _baseline_evidence(choice: BaselineChoice | None) -> dict[str, Any]:
    if choice is None:
        return {}
    return {"baseline": choice.name, "baseline_value": choice.value, "baseline_same_side": choice.same_side,
            "baseline_candidates": choice.candidates}


def _warn_about(result: Attribution) -> None:
    where = f"{result.method} of {result.target.describe()}"
    if result.converged is False:
        gap = "undefined" if result.completeness_gap is None else f"{result.completeness_gap:.3g}"
        warnings.warn(
            f"{where} did not converge: completeness gap {gap} (tolerance {result.tolerance}) after "
            f"{result.n_steps} steps, convergence delta {result.convergence_delta:.4g}; raise "
            "max_steps (or n_steps), or choose another baseline",
            ConvergenceWarning, stacklevel=3,
        )
    if result.verdict == "baseline scored like the input":
        warnings.warn(
            f"{where}: f(x) = {result.input_value:.4g} and f(baseline) = {result.baseline_value:.4g} "
            f"({result.baseline}) are nearly equal, so the attributions explain almost nothing and "
            "their relative completeness gap is undefined; choose another baseline",
            BaselineWarning, stacklevel=3,
        )
    elif result.baseline_same_side:
        warnings.warn(
            f"{where}: the baseline ({result.baseline}, f = {result.baseline_value:.4g}) is scored on "
            f"the same side of the decision as the input (f = {result.input_value:.4g}); the map "
            "explains 'more than the baseline', not 'why'",
            BaselineWarning, stacklevel=3,
        )


def _gradient_shap(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                   baselines: torch.Tensor, nt_samples: int, stdevs: float,
                   internal_batch_size: int | None) -> tuple[torch.Tensor, float]:
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


def _grad_cam(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, backbone: Any,
              layer: Any, relu: bool) -> tuple[torch.Tensor, dict[str, Any]]:
    block = _select_layer(backbone, layer)
    view = _TokenGrid()
    handle = block.register_forward_hook(
        _grid_hook(view, int(getattr(backbone, "num_prefix_tokens", 0) or 0), _grid_of(backbone))
    )
    try:
        attr = LayerGradCam(forward, view).attribute(inputs, relu_attributions=relu)
    finally:
        handle.remove()
    return attr, {"layer": layer if layer is not None else -1, "relu": relu}


def _noise(nt_stdevs: float | None, pixels: torch.Tensor) -> float:
    if nt_stdevs is None:
        return 0.15 * float(pixels.detach().max() - pixels.detach().min())
    if nt_stdevs < 0:
        raise ValueError(f"nt_stdevs must be >= 0, got {nt_stdevs}")
    return float(nt_stdevs)


def _patch(backbone: Any) -> int:
    from conceptlens.vocab.scorer import patch_size_of

    return max(1, patch_size_of(backbone, _grid_of(backbone))[0])


def _pair(value: Any, default: Any, what: str) -> tuple[int, int]:
    if value is None:
        value = default
    if isinstance(value, int):
        value = (value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 2 or min(out) < 1:
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    return out  # type: ignore[return-value]


def _smoothgrad(forward, pixels, choice, nt_base, nt_samples, nt_stdevs, n_steps, internal_batch_size,
                abs_) -> tuple[torch.Tensor, dict[str, Any]]:
    base = _method_name(nt_base)
    stdevs = _noise(nt_stdevs, pixels)
    if base == "saliency":
        tunnel = NoiseTunnel(Saliency(forward))
        attr = tunnel.attribute(pixels, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdevs,
                                nt_samples_batch_size=internal_batch_size, abs=abs_)
    elif base == "integrated_gradients":
        tunnel = NoiseTunnel(IntegratedGradients(forward))
        attr = tunnel.attribute(pixels, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdevs,
                                nt_samples_batch_size=1, baselines=choice.tensor,
                                n_steps=n_steps, internal_batch_size=internal_batch_size)
    else:
        raise UnsupportedMethodError(f"smoothgrad averages 'saliency' or 'integrated_gradients', not {nt_base!r}")
    return attr, {"nt_base": base, "nt_samples": nt_samples, "stdevs": stdevs, "n_steps": n_steps}


def _concept_map_attribution(backbone, scorer, target, loaded, pixels, original_size) -> Attribution:
    if not isinstance(target, ConceptTarget):
        raise UnsupportedMethodError("method 'concept_map' explains a ConceptTarget only")
    if scorer is None:
        raise TargetError("method 'concept_map' needs scorer=...")
    index, concept_id = find_concept(scorer, target.concept)
    with torch.no_grad():
        patch = scorer.patch_scores_tensor(pixels)[0, index]
        value = float(scorer.score_tensor(pixels)[0, index])
    raw = patch.reshape(_grid_of(backbone)).detach().cpu().double().numpy()
    return Attribution(
        raw=raw, map=_to_original(raw, original_size, _covered(backbone)), method="concept_map",
        target=target, image=loaded.image, pixel_values=pixels.detach(),
        forward=_float_output(target.build(backbone, scorer)), target_value=value,
        params={"calibration": getattr(getattr(scorer, "config", None), "calibration", None)},
    )


def concept_maps(scorer: Any, image: Any, concepts: Any = None) -> Any:
    """Patch-level maps of many concepts from ONE forward pass of the image tower.

    A thin front door to :meth:`conceptlens.vocab.ConceptScorer.concept_maps`, listed here
    because the maps are an explanation in their own right, next to :func:`attribute`
    (which needs one backward pass per concept and method).

    Args:
        scorer: The :class:`~conceptlens.vocab.ConceptScorer`.
        image: One image.
        concepts: Concept ids or names (default: the whole vocabulary).

    Returns:
        :class:`~conceptlens.vocab.maps.ConceptMaps` (plot with
        :func:`~conceptlens.explain.plot_concept_maps`).
    """
    return scorer.concept_maps(image, concepts)
