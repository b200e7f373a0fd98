"""Faithfulness and sanity metrics for explanation maps.

* perturbation: :func:`deletion_curve`, :func:`insertion_curve` (AUC over the unit interval)
* localization against a mask: :func:`pointing_game`, :func:`energy_pointing_game`, :func:`map_auroc`
* sanity: :func:`completeness_gap` (integrated gradients), :func:`randomization_check`,
  :func:`mprt_cascade` (layer-by-layer MPRT from the top)
* similarity of two maps: :func:`spearman_correlation`, :func:`ssim`
"""

from conceptlens._deprecation import renamed_module_attributes
from conceptlens.explain.metrics.localization import energy_pointing_game, map_auroc, pointing_game
from conceptlens.explain.metrics.perturbation import (
    PerturbationCurve,
    deletion_curve,
    insertion_curve,
    make_baseline,
)
from conceptlens.explain.metrics.sanity import (
    MPRTCascade,
    RandomizationResult,
    completeness_gap,
    mprt_cascade,
    randomization_check,
    randomize_layers,
)
from conceptlens.explain.metrics.similarity import spearman_correlation, ssim

__all__ = [
    "MPRTCascade",
    "PerturbationCurve",
    "RandomizationResult",
    "completeness_gap",
    "deletion_curve",
    "energy_pointing_game",
    "insertion_curve",
    "make_baseline",
    "map_auroc",
    "mprt_cascade",
    "pointing_game",
    "randomization_check",
    "randomize_layers",
    "spearman_correlation",
    "ssim",
]

__getattr__ = renamed_module_attributes(
    __name__,
    {
        "RandomisationResult": "RandomizationResult",
        "randomisation_check": "randomization_check",
        "randomise_layers": "randomize_layers",
    },
)
