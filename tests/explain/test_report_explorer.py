"""The explorer's state through its Python API (the widgets call the same methods)."""

import numpy as np
import pytest

from conceptlens.concepts import SparseLinearBottleneck
from conceptlens.demo import generate
from conceptlens.explain.explorer import Explorer
from conceptlens.models import load_backbone
from conceptlens.vocab import ConceptScorer, ConceptVocabulary


@pytest.fixture(scope="module")
def explorer():
    backbone = load_backbone("demo", device="cpu")
    base = ConceptVocabulary.builtin("demo")
    vocabulary = base.subset([c.id for c in base if not c.id.startswith("artifact:")])
    scorer = ConceptScorer(backbone, vocabulary, mode="combined", calibration="sigmoid", progress=False)
    data = generate(50, seed=3, size=backbone.image_size[0])
    images = {f"img_{i:02d}": im for i, im in enumerate(data.images)}
    scores = scorer.score(images)
    bottleneck = SparseLinearBottleneck(cv=3).fit(scores, np.where(data.diagnoses == 1, "melanoma", "benign"))
    return Explorer(scorer, images, bottleneck, scores=scores)


def test_intervention_is_the_bottleneck_on_the_edited_row(explorer):
    explorer.select("img_07")
    concept = explorer.concepts().index[0]
    after = explorer.intervene(concept, 0.0)
    row = explorer.scores.table.loc[["img_07"]].copy()
    row[concept] = 0.0
    expected = explorer.bottleneck.predict_proba(row)[0]
    assert [after["probabilities"][str(c)] for c in explorer.bottleneck.classes_] == pytest.approx(expected)
    assert after["changed"] == (after["prediction"] != explorer.decision(original=True)["prediction"])
    # contributions after the intervention add up to the edited decision value
    contributions = explorer.bottleneck.contributions(row)
    assert contributions.decision[0, 0] == pytest.approx(explorer.bottleneck.decision_function(row)[0])
    explorer.intervene(concept, None)
    assert explorer.interventions == {}
    assert explorer.decision()["changed"] is False


def test_maps_toggle_and_selection_resets(explorer):
    concept = explorer.scores.table.columns[0]
    assert explorer.toggle_map(concept) == [concept]
    assert explorer.concept_map(concept).shape == np.asarray(explorer.images[explorer.image_id]).shape[:2]
    assert explorer.toggle_map(concept) == []
    explorer.toggle_map(concept, on=True)
    explorer.intervene(concept, 1.0)
    explorer.select("img_01")
    assert explorer.shown_maps == [] and explorer.interventions == {}
    with pytest.raises(KeyError):
        explorer.select("no_such_image")
    with pytest.raises(KeyError):
        explorer.toggle_map("no:such_concept")
