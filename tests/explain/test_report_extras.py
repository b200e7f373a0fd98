"""TCAV, the MPRT cascade, calibration, filtering and learned concepts go into one Report.

Small settings on the demo model (a few dozen images, 3 TCAV runs, 2 MPRT maps) so the whole
module runs in seconds; the numbers themselves are tested elsewhere -- here only that each
result's report sections carry them into the JSON twin and that the page stays escaped.
"""

from __future__ import annotations

import json
import warnings

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conceptlens.concepts import SparseLinearBottleneck  # noqa: E402
from conceptlens.demo import CRITERIA_IDS, generate  # noqa: E402
from conceptlens.explain.metrics import MPRTCascade, mprt_cascade  # noqa: E402
from conceptlens.explain.report import Report, Section  # noqa: E402
from conceptlens.explain.tcav import TCAVResult, tcav  # noqa: E402
from conceptlens.models import load_backbone  # noqa: E402
from conceptlens.vocab import Concept, ConceptScorer, ConceptVocabulary  # noqa: E402
from conceptlens.vocab.calibration import (  # noqa: E402
    CalibrationReport,
    ConceptCalibrator,
    calibration_report,
)
from conceptlens.vocab.examples import (  # noqa: E402
    ConceptVectorStore,
    concept_from_examples,
    learned_vector,
)
from conceptlens.vocab.filtering import ConceptFilterResult, filter_concepts  # noqa: E402
from tests.browser import inspect_page, require_browser  # noqa: E402

XSS_NAME = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
ABSENT = "derm7pt:regression_structures"


def _score(scorer, images, prefix):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scorer.score({f"{prefix}{i}": im for i, im in enumerate(images)})


@pytest.fixture(scope="module")
def results():
    backbone = load_backbone("demo")
    vocabulary = ConceptVocabulary.builtin("demo")
    scorer = ConceptScorer(backbone, vocabulary, progress=False)

    # TCAV: melanoma class of a small bottleneck, one criterion plus a concept named like XSS
    criteria = ConceptScorer(backbone, vocabulary.subset(list(CRITERIA_IDS)), progress=False)
    train = generate(80, seed=0)
    bottleneck = SparseLinearBottleneck(cv=3).fit(_score(criteria, train.images, "t"),
                                                  train.diagnoses)
    examples = generate(60, seed=51)
    melanoma = list(examples.images[examples.diagnoses == 1][:8])
    concepts = {CRITERIA_IDS[0]: list(examples.images[examples.concepts[:, 0] == 1][:10]),
                XSS_NAME: list(generate(10, seed=91).images)}
    pool = list(generate(30, seed=81).images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tcav_result = tcav(criteria, bottleneck, 1, melanoma, concepts, pool, n_runs=3)

    # MPRT: saliency of one concept on 2 images, 3 blocks randomised from the top
    data = generate(2, seed=3, concept_prob=1.0)

    def saliency(model):
        s = ConceptScorer(model, vocabulary, progress=False, reference=None)
        x = model.preprocess(list(data.images)).requires_grad_(True)
        s.score_tensor(x)[:, 1].sum().backward()
        return x.grad.abs().sum(1).numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cascade = mprt_cascade(saliency, backbone)

    # calibration: fit on 60 images, summarise on 60 others; one column renamed to the XSS name
    fit_data, held = generate(60, seed=11), generate(60, seed=21)
    rename = {vocabulary.ids[1]: XSS_NAME}
    fit_scores = _score(scorer, fit_data.images, "a").table.rename(columns=rename)
    held_scores = _score(scorer, held.images, "b").table.rename(columns=rename)
    calibrator = ConceptCalibrator("platt").fit(fit_scores, fit_data.concepts)
    calibration = calibration_report(calibrator, held_scores, held.concepts)

    # filtering: a planted duplicate and a reference set without regression structures
    twin = Concept("dup:veil", "blue-white veil", synonyms=("bluish-white veil",),
                   modalities=("dermoscopy",))
    planted = ConceptScorer(backbone, ConceptVocabulary([*vocabulary, twin], name="planted",
                                                        modality="dermoscopy"), progress=False)
    ref = generate(60, seed=3, concept_prob=[0.3] * 6 + [0.0])
    filtering = filter_concepts(planted, _score(planted, ref.images, "r"),
                                class_names=["melanoma", "benign nevus"], max_class_similarity=None)

    # a concept learned from examples (8 + 8 images)
    learn = generate(40, seed=61)
    column = learn.concepts[:, 0] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learned = concept_from_examples(backbone, "mine:report_extras",
                                        list(learn.images[column][:8]),
                                        list(learn.images[~column][:8]), store=ConceptVectorStore())
    vector = learned_vector(learned, backbone)
    return {"tcav": tcav_result, "mprt": cascade, "calibration": calibration,
            "calibrator": calibrator, "filtering": filtering, "learned": vector}


@pytest.fixture(scope="module")
def saved(results, tmp_path_factory):
    report = Report("Concept extras", kind="audit")
    for key in ("tcav", "mprt", "calibration", "calibrator", "filtering", "learned"):
        report.sections.extend(results[key].report_sections())
    out = tmp_path_factory.mktemp("extras")
    html_path, json_path = report.save(out, "extras")
    return report, html_path, json.loads(json_path.read_text())


def _section(data, title):
    return next(s for s in data["sections"] if s["title"] == title)


def test_types_and_sections(results):
    assert isinstance(results["tcav"], TCAVResult)
    assert isinstance(results["mprt"], MPRTCascade)
    assert isinstance(results["calibration"], CalibrationReport)
    assert isinstance(results["filtering"], ConceptFilterResult)
    for key, result in results.items():
        sections = result.report_sections()
        assert sections and all(isinstance(s, Section) for s in sections), key
        assert all(s.title for s in sections), key


def test_json_twin_holds_tcav_numbers(results, saved):
    _, _, data = saved
    table = results["tcav"].table
    rows = {r["concept"]: r for r in _section(data, "Concept sensitivity (TCAV)")["rows"]}
    assert set(rows) == {str(k) for k in table.index}
    for name, row in table.iterrows():
        assert rows[name]["tcav_mean"] == pytest.approx(row.tcav_mean)
        assert rows[name]["p_adjusted"] == pytest.approx(row.p_adjusted)
        assert rows[name]["significant"] == bool(row.significant)
    figure = _section(data, "Concept sensitivity (TCAV): plot")
    assert figure["n_images"] == 1 and figure["data"]["concepts"] == list(rows)
    settings = _section(data, "Concept sensitivity (TCAV): settings")
    assert settings["collapsed"] and settings["facts"]["n_runs"] == 3


def test_json_twin_holds_mprt_numbers(results, saved):
    _, _, data = saved
    table = results["mprt"].table
    section = _section(data, "Model randomization cascade (MPRT)")
    assert [r["step"] for r in section["rows"]] == list(table["step"])
    assert section["rows"][0]["layer"] == "original"
    np.testing.assert_allclose([r["spearman"] for r in section["rows"]], table["spearman"])
    np.testing.assert_allclose([r["ssim"] for r in section["rows"]], table["ssim"])
    figure = _section(data, "Model randomization cascade (MPRT): plot")
    assert figure["n_images"] == 1 and figure["data"]["layers"][1:] == results["mprt"].layers


def test_json_twin_holds_calibration_numbers(results, saved):
    _, _, data = saved
    summary = results["calibration"]
    facts = _section(data, "Concept score calibration")["facts"]
    assert facts["ECE before"] == pytest.approx(summary.ece_before)
    assert facts["ECE after"] == pytest.approx(summary.ece_after)
    rows = {r["concept"]: r for r in _section(data, "Concept score calibration: per concept")["rows"]}
    assert XSS_NAME in rows
    for cid, row in summary.table.iterrows():
        assert rows[cid]["ece_before"] == pytest.approx(row.ece_before)
        assert rows[cid]["ece_after"] == pytest.approx(row.ece_after)
    assert _section(data, "Concept score calibration: reliability")["n_images"] == 1
    maps = {r["concept"]: r for r in _section(data, "Concept calibration maps")["rows"]}
    assert maps[XSS_NAME]["a"] == pytest.approx(results["calibrator"].params_[XSS_NAME]["a"])


def test_json_twin_holds_filtering_table(results, saved):
    _, _, data = saved
    result = results["filtering"]
    facts = _section(data, "Concept-set filtering")["facts"]
    assert facts["kept"] == len(result.kept) and facts["dropped"] == len(result.dropped)
    rows = _section(data, "Concept-set filtering: dropped concepts")["rows"]
    assert [r["concept_id"] for r in rows] == list(result.dropped["concept_id"])
    dropped = {r["concept_id"]: r for r in rows}
    assert dropped["dup:veil"]["filter"] == "duplicate"
    assert dropped["dup:veil"]["other"] == "derm7pt:blue_whitish_veil"
    assert dropped["dup:veil"]["value"] == pytest.approx(
        float(result.dropped.set_index("concept_id").loc["dup:veil", "value"]))


def test_json_twin_holds_learned_concept_accuracy(results, saved):
    _, _, data = saved
    vector = results["learned"]
    facts = _section(data, "Concept learned from examples: mine:report_extras")["facts"]
    assert facts["held-out global auc"] == pytest.approx(vector.validation["global_auc"])
    assert facts["held-out global accuracy"] == pytest.approx(vector.validation["global_accuracy"])
    assert facts["positives"] == 8 and facts["negatives"] == 8


def test_page_escapes_concept_names(saved):
    report, html_path, data = saved
    page = html_path.read_text()
    assert page == report.to_html()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert page.count('src="data:image/') == 3  # TCAV, MPRT, reliability
    assert "<script>window.__pwned=1</script>" in json.dumps(data)  # the JSON keeps it as is


def test_page_in_headless_browser(saved, tmp_path):
    require_browser()
    _, html_path, _ = saved
    result = inspect_page(html_path, tmp_path / "shot.png")
    assert result["errors"] == []
    assert len(result["widths"]) == 3 and all(w > 0 for w in result["widths"])
    assert result["pwned"] is None and result["n_scripts"] == 0
    assert "<script>window.__pwned=1</script>" in result["text"]


def test_every_object_renders_in_jupyter(results):
    """Each result's ``_repr_html_`` (what Jupyter shows) is escaped HTML with its numbers."""
    for key, result in results.items():
        page = result._repr_html_()
        assert isinstance(page, str) and page.startswith("<"), key
        assert "<script" not in page.lower(), key
    assert "&lt;script&gt;" in results["tcav"]._repr_html_()
    assert "&lt;script&gt;" in results["calibration"]._repr_html_()
    assert "&lt;script&gt;" in results["calibrator"]._repr_html_()
    assert f"{results['calibration'].ece_after:.3f}" in results["calibration"]._repr_html_()
    assert "dup:veil" in results["filtering"]._repr_html_()
    assert f"{results['learned'].validation['global_auc']:.3f}" in results["learned"]._repr_html_()
    last = results["mprt"].table.iloc[-1]
    assert f"{last.spearman:.3f}" in results["mprt"]._repr_html_()


def test_training_results_render_and_go_into_reports():
    import pandas as pd

    from conceptlens.train import ConceptModelEvaluation, TrainingHistory

    history = TrainingHistory(loss=[2.0, 1.5, 1.0], global_loss=[1.5, 1.0, 0.7],
                              local_loss=[0.5, 0.5, 0.3], config={"steps": 3, "lr": 1e-3},
                              wall_time_s=1.25)
    assert history["loss"] == [2.0, 1.5, 1.0] and isinstance(history, dict)
    json.dumps(history)  # still a plain, JSON-ready dict
    assert "<table" in history._repr_html_() and "1.25" in history._repr_html_()
    table = pd.DataFrame({"auc": [0.99, 0.5], "prevalence": [0.4, 0.3]},
                         index=pd.Index(["robot:arm", XSS_NAME], name="concept"))
    evaluation = ConceptModelEvaluation(table=table, scores=pd.DataFrame(index=range(12)))
    assert "&lt;script&gt;" in evaluation._repr_html_() and "<script" not in evaluation._repr_html_()
    report = Report("Training", kind="training")
    for section in [*history.report_sections(), *evaluation.report_sections()]:
        report.add(section)
    data = report.to_dict()
    titles = [s["title"] for s in data["sections"]]
    assert titles[:3] == ["Concept-alignment training", "Concept-alignment training: loss",
                          "Concept model on held-out images"]
    loss = next(s for s in data["sections"] if s["title"] == "Concept-alignment training: loss")
    assert loss["data"]["loss"] == [2.0, 1.5, 1.0]
    rows = next(s for s in data["sections"] if s["title"] == "Concept model on held-out images")["rows"]
    assert rows[1]["concept"] == XSS_NAME and rows[0]["auc"] == pytest.approx(0.99)
    assert data["sections"][-1]["collapsed"] and data["sections"][-1]["facts"]["steps"] == 3
    page = report.to_html()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
