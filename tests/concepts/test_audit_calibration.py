"""Calibration of the audit's spurious-concept flags, by simulation through the library chain.

Synthetic dermoscopy images (``conceptlens.demo.generate``, the ink marking drawn
independently of the diagnosis) are scored by the shipped demo model (``ConceptScorer``,
combined, sigmoid-calibrated). The demo model's ink *score* leaks lesion content, so the
marginal association of ink with any diagnosis-driven decision is strong; the conditional
tests must not flag it for decision-makers that ignore the marking, and must flag it for
decision-makers that use it.
"""

import warnings

import numpy as np
import pytest

from conceptlens.concepts import audit
from conceptlens.demo import ARTIFACT_ID, generate
from conceptlens.errors import InputQualityWarning
from conceptlens.models import load_backbone
from conceptlens.vocab import ConceptScorer, ConceptVocabulary

SEEDS = (11, 12, 13, 14, 15)
N = 400
ALPHA = 0.05


@pytest.fixture(scope="module")
def samples():
    backbone = load_backbone("demo", device="cpu")
    scorer = ConceptScorer(backbone, ConceptVocabulary.builtin("demo"), mode="combined",
                           calibration="sigmoid", progress=False)
    out = []
    for seed in SEEDS:
        data = generate(N, seed=seed, size=backbone.image_size[0], masks=False,
                        artifact_correlation=0.0)
        ids = [f"s{seed}_{i:03d}" for i in range(N)]
        with warnings.catch_warnings():  # a few images may be flagged out of distribution
            warnings.simplefilter("ignore", InputQualityWarning)
            scores = scorer.score(dict(zip(ids, data.images, strict=True)))
        flips = np.random.default_rng(seed).random(N) < 0.1
        out.append((scores, data.diagnoses, data.concepts[:, -1], flips))
    return out


def _decision_makers(diagnosis, ink, flips):
    """name -> (decisions, labels, uses_ink)."""
    noisy = np.where(flips, 1 - diagnosis, diagnosis)
    return {
        "7-point rule": (diagnosis, diagnosis, False),
        "7-point rule, 10 % decisions flipped": (noisy, diagnosis, False),
        "7-point rule, 10 % labels flipped": (diagnosis, noisy, False),
        "7-point rule, no labels": (diagnosis, None, False),
        "ink alone": (ink, diagnosis, True),
        "7-point rule OR ink": (np.maximum(diagnosis, ink), diagnosis, True),
        "7-point rule OR ink, no labels": (np.maximum(diagnosis, ink), None, True),
    }


def _flag(scores, decisions, labels):
    result = audit(scores, decisions, labels, irrelevant_concepts=[ARTIFACT_ID], alpha=ALPHA)
    row = result.spurious.set_index("concept").loc[ARTIFACT_ID]
    assert row["test"] == ("beyond_labels" if labels is not None else "conditional")
    assert bool(row["flagged"]) == (row["q_value"] < ALPHA)
    return bool(row["flagged"]), float(row["min_q_value"])


@pytest.mark.slow
def test_flags_keep_the_nominal_rate_and_find_planted_shortcuts(samples):
    flags: dict[str, list[bool]] = {}
    marginal: list[float] = []
    uses: dict[str, bool] = {}
    for scores, diagnosis, ink, flips in samples:
        assert abs(np.corrcoef(diagnosis, ink)[0, 1]) < 0.2  # the marking is independent
        for name, (decisions, labels, uses_ink) in _decision_makers(diagnosis, ink, flips).items():
            flagged, marginal_q = _flag(scores, decisions, labels)
            flags.setdefault(name, []).append(flagged)
            uses[name] = uses_ink
            if name == "7-point rule":
                marginal.append(marginal_q)
    # the premise: marginally, the ink score is associated with the rule's decisions
    assert np.mean(np.array(marginal) < ALPHA) >= 0.4, marginal
    for name, got in flags.items():
        if uses[name]:
            assert all(got), (name, got)  # planted reliance is found every time
        else:
            assert sum(got) <= 1, (name, got)  # at most 1 of 5 at a nominal 5 %
