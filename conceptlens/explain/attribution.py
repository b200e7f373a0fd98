"""Pixel attributions through the concept chain with captum, in original-image coordinates.

One entry point, :func:`attribute`, in captum's vocabulary (``method``, ``target``,
``baselines``, ``n_steps``, ``internal_batch_size``). The target (a concept score, a
bottleneck class, a prompt; see :mod:`conceptlens.explain.targets`) is bound once to the
scorer and bottleneck and becomes a differentiable ``pixels -> (B,)`` function; the method,
one function of the registry in :mod:`conceptlens.explain.methods` (:func:`list_methods`),
attributes it; and the result is drawn back through the squash resize onto the original
image with its evidence.
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

from conceptlens.errors import BaselineWarning, ConvergenceWarning, DeprecatedNameWarning
from conceptlens.explain.baselines import BaselineChoice
from conceptlens.explain.methods import (
    METHODS,
    MethodInputs,
    UnsupportedMethodError,
    get_method,
    grid_of,
    list_methods,
    option_defaults,
)
from conceptlens.explain.targets import BoundTarget, Target, resolve_target
from conceptlens.models.images import LoadedImage, load_image, resize_map_to_original
from conceptlens.vocab.geometry import covered_fraction

__all__ = [
    "METHODS",
    "VERDICTS",
    "Attribution",
    "UnsupportedMethodError",
    "attribute",
    "concept_maps",
    "list_methods",
]


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
        >>> a = attribute(scorer, "lesion.png", ClassTarget("melanoma"),
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


def _load(image: Any) -> LoadedImage:
    return image if isinstance(image, LoadedImage) else load_image(image)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _covered(backbone: Any) -> tuple[float, float]:
    return covered_fraction(backbone, grid_of(backbone))


def _to_original(values: np.ndarray, original_size: tuple[int, int], covered: tuple[float, float]) -> np.ndarray:
    return resize_map_to_original(values.astype(np.float64), original_size, covered_fraction=covered)


def _models(model: Any, scorer: Any) -> tuple[Any, Any]:
    """``(scorer or None, backbone)`` from ``attribute``'s first argument and the deprecated
    ``scorer=`` keyword."""
    is_scorer = hasattr(model, "backbone") and hasattr(model, "vocabulary")
    if scorer is None:
        return (model, model.backbone) if is_scorer else (None, model)
    if is_scorer:
        raise TypeError("attribute() got a scorer twice: pass it once, as the first argument")
    warnings.warn(
        "attribute(backbone, image, ..., scorer=scorer) is deprecated: pass the scorer first, "
        "attribute(scorer, image, ...); the backbone is taken from it",
        DeprecatedNameWarning, stacklevel=3,
    )
    if getattr(scorer, "backbone", model) is not model:
        raise ValueError("scorer.backbone is not the backbone given: build the scorer on the same backbone")
    return scorer, model


def _model_input(backbone: Any, loaded: LoadedImage, pixels: torch.Tensor | None) -> torch.Tensor:
    """``(1, 3, H, W)`` float32 model input on the backbone's device."""
    if pixels is None:
        return backbone.preprocess([loaded.image]).to(backbone.device).float()
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[:2] != (1, 3):
        raise ValueError(f"pixels must be the (1, 3, H, W) model input of the image from backbone.preprocess; "
                         f"got {type(pixels).__name__} with shape {tuple(getattr(pixels, 'shape', ()))}")
    return pixels.detach().to(backbone.device).float()


def _method_options(method: Any, options: dict[str, Any], internal_batch_size: int | None) -> dict[str, Any]:
    """The options ``method`` takes, after checking every given option as before."""
    defaults = option_defaults()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"attribute() got an unexpected keyword argument {unknown[0]!r}; method options "
                        f"are {sorted(defaults)} (see conceptlens.explain.methods)")
    given = {**defaults, **options}
    _check_settings(given["n_steps"], given["tolerance"], given["max_steps"], internal_batch_size,
                    given["nt_samples"])
    return {name: options[name] for name in method.options if name in options}


def attribute(
    model: Any,
    image: Any,
    target: Any = None,
    method: str = "integrated_gradients",
    *,
    bottleneck: Any = None,
    baselines: Any = "auto",
    internal_batch_size: int | None = None,
    seed: int | None = 0,
    pixels: torch.Tensor | None = None,
    scorer: Any = None,
    **options: Any,
) -> Attribution:
    """Attribute a concept score, a class logit or a prompt similarity to the image's pixels.

    Path methods return converged attributions by default and carry their evidence: the
    baseline and ``f(baseline)``, ``f(x)``, the steps used, the convergence delta, the
    relative completeness gap and a :attr:`Attribution.verdict`. A call that stays
    unconverged warns (:class:`~conceptlens.errors.ConvergenceWarning`), and so does a
    baseline the model scores on the input's side of the decision
    (:class:`~conceptlens.errors.BaselineWarning`).

    Args:
        model: The :class:`~conceptlens.vocab.ConceptScorer` (its backbone is the one
            explained; concept and class targets need it), or a bare
            :class:`~conceptlens.models.Backbone` for prompt targets.
        image: One image: path, PIL, array, tensor or a
            :class:`~conceptlens.models.images.LoadedImage` (used as is, never reloaded).
        target: What to explain: a :class:`~conceptlens.explain.ConceptTarget`,
            :class:`~conceptlens.explain.ClassTarget`, :class:`~conceptlens.explain.PromptTarget`
            or a shorthand string / label (rules in :mod:`conceptlens.explain.targets`;
            concepts by id, name or synonym, see
            :meth:`~conceptlens.vocab.ConceptVocabulary.resolve`).
        method: One of :func:`list_methods` (:data:`METHODS` says what each computes;
            captum class names such as ``"IntegratedGradients"`` and ``"ig"`` are accepted too).
        bottleneck: A fitted linear concept bottleneck; needed for class targets.
        baselines: Reference input of integrated gradients, occlusion and GradientShap: a
            name from :data:`~conceptlens.explain.baselines.BASELINES` (default ``"auto"``:
            the candidate nearest the decision boundary and not on the input's side, see
            :mod:`conceptlens.explain.baselines`; ``"expected"`` averages over all candidates,
            GradientShap's default), a number, or a ``(3, H, W)`` / ``(N, 3, H, W)`` tensor.
        internal_batch_size: Bound on the inputs per forward/backward pass (IG steps,
            GradientShap and SmoothGrad samples, occlusion windows); ``None`` runs all at once.
        seed: Seed for random draws (noise baseline, ``smoothgrad``, ``gradient_shap``;
            ``None``: unseeded).
        pixels: The ``(1, 3, H, W)`` model input of ``image`` when already computed
            (``backbone.preprocess([loaded.image])``); skips preprocessing.
        scorer: Deprecated: pass the scorer as ``model``. ``attribute(backbone, image, ...,
            scorer=scorer)`` still works, with a
            :class:`~conceptlens.errors.DeprecatedNameWarning`.
        **options: The method's own options (table in :mod:`conceptlens.explain.methods`);
            those of other methods are accepted and ignored, so one set of keywords can
            serve several methods:

            * ``n_steps``: integration steps of integrated gradients: ``"auto"`` (start at
              32, double until the completeness gap is at most ``tolerance`` or
              ``max_steps`` is reached) or a fixed positive int. SmoothGrad over IG uses 50
              for ``"auto"``.
            * ``tolerance``: relative completeness gap accepted as converged (default 0.05,
              Sundararajan et al.'s 5 %); ``max_steps``: step budget of ``"auto"`` (1024).
            * ``nt_samples`` (10), ``nt_stdevs`` (15 % of the input range): noise samples and
              standard deviation of ``smoothgrad`` and ``gradient_shap``; ``nt_base``: what
              ``smoothgrad`` averages, ``"saliency"`` or ``"integrated_gradients"``.
            * ``sliding_window`` (one patch), ``strides`` (the window): occlusion window and
              strides in input pixels.
            * ``layer``: Grad-CAM block, an index into ``backbone.token_layers()`` or the
              module (default: last); ``relu``: keep positive evidence only (as in the paper).
            * ``abs``: saliency of absolute gradients (captum's default).

    Returns:
        :class:`Attribution` with ``.map`` on the original image's pixel grid and its evidence.

    Raises:
        UnsupportedMethodError: Unknown method, or one the backbone / target cannot support.
        UnknownConceptError, UnknownClassError: The target names nothing the scorer /
            bottleneck knows (both are ``KeyError``).
        TargetError: The target needs a scorer or bottleneck that was not given.
        ScoreSpaceMismatchError: The bottleneck was fitted on scores made differently from
            the scorer's.
        TypeError: An option no method takes.

    References:
        Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.
        Sturmfels, Lundberg and Lee, "Visualizing the Impact of Feature Attribution
        Baselines", Distill 2020.

    Examples:
        >>> a = attribute(scorer, "lesion.png", target="Blue-whitish veil",
        ...               internal_batch_size=8)                          # doctest: +SKIP
        >>> a.map.shape == (height, width), a.verdict                     # doctest: +SKIP
        (True, 'converged')
    """
    spec = get_method(method)
    scorer, backbone = _models(model, scorer)
    resolved = resolve_target(target, scorer=scorer, bottleneck=bottleneck)
    chosen = _method_options(spec, options, internal_batch_size)

    loaded = _load(image)
    pixels = _model_input(backbone, loaded, pixels)
    original_size = tuple(loaded.original_size)
    run = MethodInputs(BoundTarget(resolved, backbone, scorer, bottleneck), pixels, baselines=baselines,
                       internal_batch_size=internal_batch_size, original_size=original_size, seed=seed)

    if not spec.gradients:
        output = spec.function(run, **chosen)
    else:
        forward = run.forward
        run.margin  # noqa: B018 - built before f(x), as the target's checks expect
        with torch.no_grad():
            run.input_value = float(forward(pixels)[0])
        run.inputs = pixels.clone().requires_grad_(True)
        generator_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        try:
            output = spec.function(run, **chosen)
        finally:
            if seed is not None:
                torch.random.set_rng_state(generator_state)

    if output.on_grid:
        raw = output.attributions[0, 0].detach().cpu().double().numpy()
        mapped = _to_original(raw, original_size, _covered(backbone))
    else:
        raw = output.attributions[0].detach().cpu().double().numpy()
        mapped = _to_original(raw.sum(axis=0), original_size, (1.0, 1.0))
    choice = output.baseline
    result = Attribution(
        raw=raw, map=mapped, method=spec.name, target=resolved, image=loaded.image,
        pixel_values=pixels.detach(), forward=run.forward,
        baselines=None if choice is None else choice.tensor,
        target_value=output.input_value if output.input_value is not None else run.input_value,
        params=output.params, **output.evidence, **_baseline_evidence(choice),
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


def concept_maps(scorer: Any, image: Any, concepts: Any = None, *, features: Any = None) -> Any:
    """Patch-level maps of many concepts from ONE forward pass of the image tower.

    A thin front door to :meth:`conceptlens.vocab.ConceptScorer.concept_maps`, listed here
    because the maps are an explanation in their own right, next to :func:`attribute`
    (which needs one backward pass per concept and method).

    Args:
        scorer: The :class:`~conceptlens.vocab.ConceptScorer`.
        image: One image, or its :class:`~conceptlens.models.images.LoadedImage`.
        concepts: Concept ids, names or synonyms (default: the whole vocabulary).
        features: The image's :class:`~conceptlens.models.ImageFeatures` when already
            computed (then no forward pass runs).

    Returns:
        :class:`~conceptlens.vocab.maps.ConceptMaps` (plot with
        :func:`~conceptlens.explain.plot_concept_maps`).
    """
    return scorer.concept_maps(image, concepts, features=features)
