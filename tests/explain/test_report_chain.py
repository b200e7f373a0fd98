"""What the scorer carries goes into the reports on its own: concepts learned from examples
(held-out accuracy), the calibration the scorer applies (ECE before / after, reliability plot)
and the filtering of its vocabulary (what was dropped and why).

On the demo model with small sizes (a few dozen images), about ten seconds.
"""

from __future__ import annotations

import json
import warnings

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from conceptlens.concepts import SparseLinearBottleneck, audit  # noqa: E402
from conceptlens.demo import generate  # noqa: E402
from conceptlens.explain.report import (  # noqa: E402
    ImageExplanation,
    audit_report,
    chain_sections,
    dataset_report,
    explanation_report,
)
from conceptlens.models import load_backbone  # noqa: E402
from conceptlens.vocab import Concept, ConceptScorer, ConceptVocabulary  # noqa: E402
from conceptlens.vocab.calibration import ConceptCalibrator, calibration_report  # noqa: E402
from conceptlens.vocab.examples import concept_from_examples, learned_vector  # noqa: E402
from conceptlens.vocab.filtering import filter_concepts, filtering_of  # noqa: E402

XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
LEARNED = "mine:chain_network"
NETWORK = "derm7pt:atypical_pigment_network"


def _score(scorer, images, prefix):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scorer.score({f"{prefix}{i:03d}": im for i, im in enumerate(images)})


def _labels(data, ids):
    frame = pd.DataFrame(data.concepts, columns=data.concept_ids)
    frame[LEARNED] = frame[NETWORK]
    return frame[ids].to_numpy()


@pytest.fixture(scope="module")
def chain():
    backbone = load_backbone("demo")
    base = ConceptVocabulary.builtin("demo")
    learn = generate(40, seed=61)
    column = learn.concepts[:, 0] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learned = concept_from_examples(backbone, LEARNED, list(learn.images[column][:8]),
                                        list(learn.images[~column][:8]), name=f"network {XSS}")
    twin = Concept("dup:veil", "blue-white veil", synonyms=("bluish-white veil",),
                   modalities=("dermoscopy",))
    vocabulary = ConceptVocabulary([*base, twin, learned], name="chain", modality="dermoscopy")
    full = ConceptScorer(backbone, vocabulary, progress=False)
    reference = generate(60, seed=3, concept_prob=[0.3] * 6 + [0.0])
    filtering = filter_concepts(full, _score(full, reference.images, "r"))
    kept = filtering.vocabulary
    scorer = ConceptScorer(backbone, kept, progress=False)
    fit, held = generate(60, seed=11), generate(60, seed=21)
    calibrator = ConceptCalibrator("platt").fit(_score(scorer, fit.images, "f"), _labels(fit, kept.ids))
    evaluation = calibration_report(calibrator, _score(scorer, held.images, "h"), _labels(held, kept.ids))
    calibrated = ConceptScorer(backbone, kept, calibrator=calibrator, progress=False)
    data = generate(40, seed=31)
    scores = _score(calibrated, data.images, "d")
    diagnosis = np.where(data.diagnoses == 1, "melanoma", "benign")
    bottleneck = SparseLinearBottleneck(cv=3).fit(scores, diagnosis)
    return {"scorer": calibrated, "filtering": filtering, "calibrator": calibrator,
            "evaluation": evaluation, "learned": learned_vector(learned, backbone),
            "scores": scores, "diagnosis": diagnosis, "bottleneck": bottleneck}


def test_the_chain_is_set_up(chain):
    filtering = chain["filtering"]
    assert set(filtering.dropped["concept_id"]) >= {"dup:veil"}
    assert LEARNED in filtering.kept
    assert filtering_of(chain["scorer"].vocabulary) is filtering
    assert chain["calibrator"].evaluation_ is chain["evaluation"]
    # a vocabulary that no filtering produced has no filtering result
    assert filtering_of(ConceptVocabulary.builtin("demo")) is None


def _check_chain_sections(payload, chain):
    titles = [s["title"] for s in payload["sections"]]
    learned = next(s for s in payload["sections"] if s["title"] == "Concepts learned from example images")
    row = next(r for r in learned["rows"] if r["concept id"] == LEARNED)
    assert row["concept"] == f"network {XSS}"
    vector = chain["learned"]
    assert row["held-out AUC"] == pytest.approx(vector.validation["global_auc"])
    assert row["held-out accuracy"] == pytest.approx(vector.validation["global_accuracy"])
    assert row["positives"] == 8 and row["negatives"] == 8
    facts = next(s for s in payload["sections"] if s["title"] == "Concept score calibration")["facts"]
    assert facts["ECE before"] == pytest.approx(chain["evaluation"].ece_before)
    assert facts["ECE after"] == pytest.approx(chain["evaluation"].ece_after)
    assert "Concept score calibration: reliability" in titles
    dropped = next(s for s in payload["sections"] if s["title"] == "Concept-set filtering: dropped concepts")
    assert [r["concept_id"] for r in dropped["rows"]] == list(chain["filtering"].dropped["concept_id"])
    # in the evidence part: after the summary, before the collapsed settings
    assert payload["sections"][0]["kind"] == "summary"
    first_collapsed = next(i for i, s in enumerate(payload["sections"]) if s["collapsed"])
    for title in ("Concepts learned from example images", "Concept score calibration",
                  "Concept score calibration: reliability", "Concept-set filtering"):
        assert titles.count(title) == 1, title
        assert 0 < titles.index(title) < first_collapsed, title
    maps = next(s for s in payload["sections"] if s["title"] == "Concept calibration maps")
    assert maps["collapsed"]


def test_explanation_report_includes_the_chain(chain, tmp_path):
    scores, bottleneck = chain["scores"], chain["bottleneck"]
    image_id = scores.image_ids[0]
    contributions = bottleneck.contributions(scores.table.loc[[image_id]])
    pred = str(bottleneck.predict(scores.table.loc[[image_id]])[0])
    item = ImageExplanation(image_id, Image.new("RGB", (32, 32)), scores.table.loc[image_id],
                            dict(scores.concept_names), prediction=pred,
                            contributions=contributions.for_class(pred).iloc[0])
    # the chain's objects given again in extra= are not repeated
    report = explanation_report([item], scorer=chain["scorer"], bottleneck=bottleneck,
                                extra=[chain["evaluation"], chain["filtering"], chain["calibrator"]])
    html_path, json_path = report.save(tmp_path, "explanation")
    payload = json.loads(json_path.read_text())
    _check_chain_sections(payload, chain)
    page = html_path.read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    assert page.count('src="data:image/') == 3  # thumbnail, concept bars, reliability
    assert 'src="http' not in page and "href=\"http" not in page


def test_audit_and_dataset_reports_include_the_chain(chain, tmp_path):
    scores, diagnosis, bottleneck = chain["scores"], chain["diagnosis"], chain["bottleneck"]
    decisions = bottleneck.predict(scores)
    result = audit(scores, decisions, diagnosis)
    report = audit_report(result, scores=scores, decisions=decisions, labels=diagnosis,
                          scorer=chain["scorer"])
    _, json_path = report.save(tmp_path, "audit")
    _check_chain_sections(json.loads(json_path.read_text()), chain)
    report = dataset_report(scores, bottleneck, diagnosis, scorer=chain["scorer"])
    html_path, json_path = report.save(tmp_path, "dataset")
    _check_chain_sections(json.loads(json_path.read_text()), chain)
    assert "<script" not in html_path.read_text().lower()


def test_calibrator_without_evaluation_says_how_to_get_one(chain):
    fresh = ConceptCalibrator("isotonic").fit(chain["scores"], _labels(generate(40, seed=31),
                                                                        list(chain["scores"].table.columns)))
    sections, objects = chain_sections(calibrator=fresh)
    assert objects == [fresh]
    assert sections[0].title == "Concept score calibration"
    assert "calibration_report(calibrator, scores, labels)" in sections[0].text
    # refitting forgets an earlier evaluation (it was of other maps)
    calibrator = chain["calibrator"]
    assert hasattr(calibrator, "evaluation_")
    copy = ConceptCalibrator("platt")
    copy.evaluation_ = chain["evaluation"]
    copy.fit(chain["scores"], _labels(generate(40, seed=31), list(chain["scores"].table.columns)))
    assert not hasattr(copy, "evaluation_")


def test_chain_sections_in_browser(chain, tmp_path):
    """The added sections fit the page at 1280 px, their figure decodes, and nothing runs."""
    from tests.browser import inspect_page, require_browser
    from tests.explain._layout import assert_findings_first, first_screen

    require_browser()
    scores, diagnosis, bottleneck = chain["scores"], chain["diagnosis"], chain["bottleneck"]
    decisions = bottleneck.predict(scores)
    report = audit_report(audit(scores, decisions, diagnosis), scores=scores, decisions=decisions,
                          labels=diagnosis, scorer=chain["scorer"])
    html_path, _ = report.save(tmp_path, "audit")
    assert_findings_first(first_screen(html_path, tmp_path / "first.png"))
    page = inspect_page(html_path, tmp_path / "page.png")
    assert page["errors"] == [] and page["pwned"] is None and page["n_scripts"] == 0
    assert all(w > 0 for w in page["widths"])
    assert f"network {XSS}" in page["text"]
