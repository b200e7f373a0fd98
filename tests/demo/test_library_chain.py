"""The demo model's quality bars, measured through the library's own public chain.

``load_backbone("demo")`` -> ``ConceptScorer`` (combined global + local) ->
``evaluate_annotation`` / ``concept_maps`` + ``pointing_game`` -> ``SparseLinearBottleneck``,
on a fresh sample drawn with a seed that training never used (training uses seed 0).
"""

import numpy as np
import pandas as pd
import pytest

from conceptlens.concepts import SparseLinearBottleneck
from conceptlens.demo import CRITERIA_IDS, generate
from conceptlens.explain.metrics import pointing_game
from conceptlens.models import load_backbone
from conceptlens.vocab import ConceptScorer, ConceptVocabulary, evaluate_annotation

MAJOR = {"derm7pt:atypical_pigment_network", "derm7pt:blue_whitish_veil",
         "derm7pt:atypical_vascular_pattern"}


@pytest.fixture(scope="module")
def chain():
    backbone = load_backbone("demo", device="cpu")
    vocabulary = ConceptVocabulary.builtin("demo")
    data = generate(400, seed=31337, size=backbone.image_size[0])
    ids = [f"fresh_{i:03d}" for i in range(len(data))]
    scorer = ConceptScorer(backbone, vocabulary, mode="combined", alpha=0.5, calibration="sigmoid",
                           progress=False)
    scores = scorer.score(dict(zip(ids, data.images, strict=True)))
    return scorer, scores, data, ids


def test_zero_shot_annotation_auc_of_every_criterion(chain):
    _, scores, data, ids = chain
    labels = pd.DataFrame(data.concepts, index=ids, columns=data.concept_ids)
    result = evaluate_annotation(scores, labels, n_bootstrap=0)
    aucs = result.loc[list(CRITERIA_IDS), "roc_auc"]
    assert aucs.min() >= 0.90, aucs.to_dict()


def test_concept_maps_point_into_the_concept_mask(chain):
    scorer, _, data, _ = chain
    # a patch-level map resolves positions to a patch: a hit within half a patch counts (thin
    # structures such as vessels fall between the bilinear peak's pixels otherwise)
    tolerance = data.images.shape[1] / scorer.backbone.grid_size[0] / 2
    for c, concept in enumerate(CRITERIA_IDS):
        positives = np.flatnonzero(data.concepts[:, c])[:25]
        hits = [pointing_game(scorer.concept_maps(data.images[i], concepts=[concept]).upsampled(concept),
                              data.masks[i, c], tolerance=tolerance) for i in positives]
        assert np.mean(hits) >= 0.80, (concept, np.mean(hits))


def test_sparse_bottleneck_recovers_the_seven_point_rule(chain):
    _, scores, data, _ = chain
    criteria = scores.table[list(CRITERIA_IDS)]
    # the sigmoid-calibrated scores saturate; their log-odds are the linear scale of the rule
    logits = np.log(criteria.clip(1e-6, 1 - 1e-6) / (1 - criteria.clip(1e-6, 1 - 1e-6)))
    diagnosis = np.where(data.diagnoses == 1, "melanoma", "benign")
    half = len(diagnosis) // 2
    model = SparseLinearBottleneck(cv=3).fit(logits.iloc[:half], diagnosis[:half])
    accuracy = float(np.mean(model.predict(logits.iloc[half:]) == diagnosis[half:]))
    assert accuracy >= 0.90
    weights = model.coef_frame(standardized=True).loc["melanoma"]
    assert set(weights.abs().sort_values(ascending=False).index[:3]) == MAJOR, weights.to_dict()
