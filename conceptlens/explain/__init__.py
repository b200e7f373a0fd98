"""Explanations: pixel attributions through the concept chain, concept maps, metrics, plots.

* :func:`attribute` -- captum attributions (integrated gradients, GradientShap, saliency,
  input x gradient, occlusion, SmoothGrad, Grad-CAM on ViT tokens) of a concept score, a
  bottleneck class or a prompt similarity, returned as an :class:`Attribution` whose
  ``.map`` lies on the original image's pixel grid, converged by default and carrying its
  evidence (baseline, ``f(baseline)``, steps, completeness gap, verdict); the methods are a
  registry (:func:`list_methods`, :mod:`conceptlens.explain.methods`), one function each;
* :func:`faithfulness_card` -- that evidence plus a deletion check against random maps;
* :func:`tcav` -- class sensitivity to concepts learned from example images (TCAV, with
  random-concept runs and a significance test);
* :func:`concept_maps` -- the scorer's patch maps for many concepts from one forward pass;
* :mod:`conceptlens.explain.metrics` -- deletion / insertion, pointing games, map AUROC,
  IG completeness, the model-randomisation sanity check;
* plots -- :func:`plot_concept_bars`, :func:`plot_overlay`, :func:`plot_concept_maps`,
  :func:`plot_weights`, :func:`plot_roc_curves`, :func:`plot_intervention_curves`,
  :func:`plot_deletion_insertion`, :func:`save_figure` (matplotlib is imported on first use).
"""

from typing import Any

from conceptlens.explain import metrics
from conceptlens.explain.attribution import (
    METHODS,
    VERDICTS,
    Attribution,
    UnsupportedMethodError,
    attribute,
    concept_maps,
    list_methods,
)
from conceptlens.explain.baselines import BASELINES, list_baselines
from conceptlens.explain.faithfulness import faithfulness_card
from conceptlens.explain.targets import (
    BoundTarget,
    ClassTarget,
    ConceptTarget,
    PromptTarget,
    Target,
    TargetError,
    UnknownClassError,
    UnknownConceptError,
    resolve_target,
)
from conceptlens.explain.tcav import TCAVResult, tcav

_PLOTS = (
    "plot_concept_bars",
    "plot_concept_maps",
    "plot_deletion_insertion",
    "plot_intervention_curves",
    "plot_overlay",
    "plot_roc_curves",
    "plot_weights",
    "save_figure",
)

__all__ = [
    "BASELINES",
    "METHODS",
    "VERDICTS",
    "Attribution",
    "BoundTarget",
    "ClassTarget",
    "ConceptTarget",
    "PromptTarget",
    "TCAVResult",
    "Target",
    "TargetError",
    "UnknownClassError",
    "UnknownConceptError",
    "UnsupportedMethodError",
    "attribute",
    "concept_maps",
    "faithfulness_card",
    "list_baselines",
    "list_methods",
    "metrics",
    "resolve_target",
    "tcav",
    *_PLOTS,
]


def __getattr__(name: str) -> Any:
    if name in _PLOTS:
        from conceptlens.explain import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'conceptlens.explain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
