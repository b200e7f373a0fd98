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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from conceptlens.explain.metrics.perturbation import make_baseline
from conceptlens.explain.targets import (
    ConceptTarget,
    Target,
    TargetError,
    find_concept,
    resolve_target,
)

__all__ = [
    "METHODS",
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


class UnsupportedMethodError(ValueError):
    """The method is unknown, or the backbone / target cannot support it."""


def _method_name(method: str) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {type(method).__name__}")
    key = method.lower().replace("_", "").replace("-", "").replace(" ", "")
    if key not in _ALIASES:
        raise UnsupportedMethodError(f"unknown attribution method {method!r}; choose one of {sorted(METHODS)}")
    return _ALIASES[key]


@dataclass
class Attribution:
    """An attribution of one target for one image.

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
        baselines: The baseline tensor used (``None`` for methods without one).
        convergence_delta: ``sum(attribution) - (f(x) - f(baseline))`` for integrated
            gradients / GradientShap (captum's convergence delta); ``None`` otherwise.
        target_value: ``f(x)``, the explained output at the image.
        params: The method settings used (n_steps, window, layer ...).
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
        delta = "" if self.convergence_delta is None else f", convergence_delta={self.convergence_delta:.3g}"
        return (
            f"Attribution(method={self.method!r}, target={self.target.describe()!r}, "
            f"raw={tuple(self.raw.shape)}, map={tuple(self.map.shape)}{delta})"
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
        if self.target_value is not None:
            rows.append(("target value", f"{self.target_value:.4g}"))
        if self.convergence_delta is not None:
            rows.append(("convergence delta", f"{self.convergence_delta:.4g}"))
        rows += [(k, str(v)) for k, v in self.params.items()]
        table = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                        for k, v in rows)
        return (f"<div><img src='data:image/png;base64,{png}' style='max-width:360px'/>"
                f"<table>{table}</table></div>")


def _load(image: Any) -> Any:
    from conceptlens.models.images import LoadedImage, load_image

    return image if isinstance(image, LoadedImage) else load_image(image)


def _baseline_tensor(baselines: Any, pixels: torch.Tensor, *, allow_many: bool) -> torch.Tensor:
    pixels = pixels.detach()
    if baselines is None:
        return torch.zeros_like(pixels)
    if isinstance(baselines, str):
        return make_baseline(pixels[0], baselines)[None]  # type: ignore[arg-type]
    if isinstance(baselines, (int, float)):
        return torch.full_like(pixels, float(baselines))
    if not isinstance(baselines, torch.Tensor):
        raise TypeError(f"baselines must be None, 'zero'|'mean'|'blur', a number or a tensor; got {type(baselines).__name__}")
    tensor = baselines.to(device=pixels.device, dtype=pixels.dtype)
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tuple(tensor.shape[1:]) != tuple(pixels.shape[1:]):
        raise ValueError(f"baselines must have shape (3, H, W) or (N, 3, H, W) = (N, {', '.join(map(str, pixels.shape[1:]))}); "
                         f"got {tuple(baselines.shape)}")
    if tensor.shape[0] != 1 and not allow_many:
        raise ValueError("this method takes one baseline image; got several (only gradient_shap takes a distribution)")
    return tensor


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
    baselines: Any = None,
    n_steps: int = 50,
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
        baselines: Reference input: ``None`` (zeros in the model's input space: a mid-grey
            image for ConceptCLIP's mean = std = 0.5), ``"zero"``, ``"mean"``, ``"blur"``, a
            number, or a ``(3, H, W)`` / ``(N, 3, H, W)`` tensor (several only for
            ``gradient_shap``, whose default is zeros and the blurred image).
        n_steps: Integration steps (integrated gradients, SmoothGrad over IG).
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
        seed: Seed for the random draws of ``smoothgrad`` / ``gradient_shap`` (``None``: unseeded).

    Returns:
        :class:`Attribution` with ``.map`` on the original image's pixel grid.

    Raises:
        UnsupportedMethodError: Unknown method, or one the backbone / target cannot support.
        UnknownConceptError, UnknownClassError: The target names nothing the scorer /
            bottleneck knows (both are ``KeyError``).
        TargetError: The target needs a scorer or bottleneck that was not given.

    Examples:
        >>> a = attribute(backbone, "lesion.png", target="C0000001", scorer=scorer,
        ...               internal_batch_size=8)                          # doctest: +SKIP
        >>> a.map.shape == (height, width)                                # doctest: +SKIP
    """
    from captum.attr import (
        GradientShap,
        InputXGradient,
        IntegratedGradients,
        LayerGradCam,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    name = _method_name(method)
    if scorer is not None and getattr(scorer, "backbone", backbone) is not backbone:
        raise ValueError("scorer.backbone is not the backbone given: build the scorer on the same backbone")
    resolved = resolve_target(target, scorer=scorer, bottleneck=bottleneck)
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if internal_batch_size is not None and internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be >= 1 or None, got {internal_batch_size}")

    loaded = _load(image)
    pixels = backbone.preprocess([loaded.image]).to(backbone.device).float()
    original_size = tuple(loaded.original_size)

    if name == "concept_map":
        return _concept_map_attribution(backbone, scorer, resolved, loaded, pixels, original_size)

    forward = _float_output(resolved.build(backbone, scorer, bottleneck))
    with torch.no_grad():
        target_value = float(forward(pixels)[0])
    inputs = pixels.clone().requires_grad_(True)
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    params: dict[str, Any] = {}
    delta: float | None = None
    used_baselines: torch.Tensor | None = None
    try:
        if name == "integrated_gradients":
            used_baselines = _baseline_tensor(baselines, pixels, allow_many=False)
            attr, d = IntegratedGradients(forward).attribute(
                inputs, baselines=used_baselines, n_steps=n_steps,
                internal_batch_size=internal_batch_size, return_convergence_delta=True,
            )
            delta = float(d.sum())
            params = {"n_steps": n_steps, "internal_batch_size": internal_batch_size}
        elif name == "gradient_shap":
            if baselines is None:
                used_baselines = torch.cat([torch.zeros_like(pixels), make_baseline(pixels[0], "blur")[None]])
            else:
                used_baselines = _baseline_tensor(baselines, pixels, allow_many=True)
            stdevs = _noise(nt_stdevs, pixels)
            if nt_samples < 1:
                raise ValueError(f"nt_samples must be >= 1, got {nt_samples}")
            chunk = internal_batch_size or nt_samples
            explainer = GradientShap(forward)
            total, deltas = None, []
            for start in range(0, nt_samples, chunk):
                n = min(chunk, nt_samples - start)
                part, d = explainer.attribute(
                    inputs, baselines=used_baselines, n_samples=n, stdevs=stdevs,
                    return_convergence_delta=True,
                )
                total = part * n if total is None else total + part * n
                deltas.append(d.detach())
            attr = total / nt_samples
            delta = float(torch.cat(deltas).mean())
            params = {"n_samples": nt_samples, "stdevs": stdevs, "internal_batch_size": internal_batch_size}
        elif name == "saliency":
            attr = Saliency(forward).attribute(inputs, abs=abs)
            params = {"abs": abs}
        elif name == "input_x_gradient":
            attr = InputXGradient(forward).attribute(inputs)
        elif name == "occlusion":
            used_baselines = _baseline_tensor(baselines, pixels, allow_many=False)
            window = _pair(sliding_window, _patch(backbone), "sliding_window")
            stride = _pair(strides, window, "strides")
            attr = Occlusion(forward).attribute(
                inputs, sliding_window_shapes=(3, *window), strides=(3, *stride),
                baselines=used_baselines, perturbations_per_eval=internal_batch_size or 1,
            )
            params = {"sliding_window": window, "strides": stride}
        elif name == "smoothgrad":
            attr, params = _smoothgrad(
                forward, inputs, baselines, nt_base, nt_samples, nt_stdevs, n_steps, internal_batch_size, abs,
                IntegratedGradients, Saliency, NoiseTunnel,
            )
        elif name == "grad_cam":
            block = _select_layer(backbone, layer)
            view = _TokenGrid()
            handle = block.register_forward_hook(
                _grid_hook(view, int(getattr(backbone, "num_prefix_tokens", 0) or 0), _grid_of(backbone))
            )
            try:
                attr = LayerGradCam(forward, view).attribute(inputs, relu_attributions=relu)
            finally:
                handle.remove()
            params = {"layer": layer if layer is not None else -1, "relu": relu}
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
    return Attribution(
        raw=raw, map=mapped, method=name, target=resolved, image=loaded.image,
        pixel_values=pixels.detach(), forward=forward, baselines=used_baselines,
        convergence_delta=delta, target_value=target_value, params=params,
    )


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


def _smoothgrad(forward, pixels, baselines, nt_base, nt_samples, nt_stdevs, n_steps, internal_batch_size,
                abs_, ig_cls, saliency_cls, tunnel_cls) -> tuple[torch.Tensor, dict[str, Any]]:
    base = _method_name(nt_base)
    stdevs = _noise(nt_stdevs, pixels)
    if base == "saliency":
        tunnel = tunnel_cls(saliency_cls(forward))
        attr = tunnel.attribute(pixels, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdevs,
                                nt_samples_batch_size=internal_batch_size, abs=abs_)
    elif base == "integrated_gradients":
        tunnel = tunnel_cls(ig_cls(forward))
        attr = tunnel.attribute(pixels, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdevs,
                                nt_samples_batch_size=1, baselines=_baseline_tensor(baselines, pixels, allow_many=False),
                                n_steps=n_steps, internal_batch_size=internal_batch_size)
    else:
        raise UnsupportedMethodError(f"smoothgrad averages 'saliency' or 'integrated_gradients', not {nt_base!r}")
    return attr, {"nt_base": base, "nt_samples": nt_samples, "stdevs": stdevs}


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
