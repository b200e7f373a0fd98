"""The data-set report: its numbers (confusion, drivers, error groups) and its page in Chromium."""

import json

import numpy as np
import pytest

from conceptlens.concepts import SparseLinearBottleneck
from conceptlens.demo import generate
from conceptlens.explain.report import dataset_report
from conceptlens.explain.report.dataset import choose_cases, dataset_tables
from conceptlens.explain.report.document import _format_cell
from conceptlens.models import load_backbone
from conceptlens.vocab import ConceptScorer, ConceptVocabulary
from tests.browser import headless_chromium, require_browser


@pytest.fixture(scope="module")
def setup():
    backbone = load_backbone("demo", device="cpu")
    base = ConceptVocabulary.builtin("demo")
    vocabulary = base.subset([c.id for c in base if not c.id.startswith("artifact:")])
    scorer = ConceptScorer(backbone, vocabulary, mode="combined", calibration="sigmoid", progress=False)
    data = generate(90, seed=7, size=backbone.image_size[0])
    images = {f"img_{i:03d}.png": im for i, im in enumerate(data.images)}
    scores = scorer.score(images)
    diagnosis = np.where(data.diagnoses == 1, "melanoma", "benign")
    # fitted on half, so the other half has errors to group
    bottleneck = SparseLinearBottleneck(cv=3).fit(scores.table.iloc[:45], diagnosis[:45])
    return scorer, images, scores, diagnosis, bottleneck


def test_tables_agree_with_the_bottleneck(setup):
    _, _, scores, diagnosis, bottleneck = setup
    tables = dataset_tables(scores, bottleneck, diagnosis)
    predicted = bottleneck.predict(scores).astype(str)
    confusion = tables["confusion"]
    assert confusion.to_numpy().sum() == len(diagnosis)
    assert np.trace(confusion.to_numpy()) == int((predicted == diagnosis).sum())
    accuracy, low, high = tables["accuracy"]
    assert accuracy == pytest.approx(np.mean(predicted == diagnosis)) and low <= accuracy <= high
    errors = tables["errors"]
    assert len(errors) == int((predicted != diagnosis).sum()) == tables["error_groups"]["errors"].sum()
    contributions = bottleneck.contributions(scores)
    for row in errors.to_dict(orient="records"):  # the named concept pushed most toward the wrong class
        towards = contributions.for_class(row["predicted"]).loc[row["image"]]
        assert row["concept id"] == towards.idxmax()
        assert row["contribution"] == pytest.approx(towards.max())
    # drivers: the mean and SD over the images predicted as the class
    drivers = tables["drivers"]
    row = drivers[drivers["class"] == "melanoma"].iloc[0]
    column = contributions.for_class("melanoma").loc[predicted == "melanoma", row["concept id"]]
    assert row["mean contribution"] == pytest.approx(column.mean())
    assert row["SD"] == pytest.approx(column.std(ddof=1))
    cases = choose_cases(tables, diagnosis, 4)
    assert len(cases) == 4 and len(set(cases)) == 4
    wrong = set(errors["image"])
    assert 1 <= len(set(cases) & wrong) <= 3, "the gallery shows correct and wrong cases"


_TABLES_JS = """
return Array.from(document.querySelectorAll('main > section, main > details')).map(s => ({
  title: (s.querySelector('h2, summary') || {}).innerText || '',
  rows: Array.from(s.querySelectorAll('tbody tr')).map(r =>
        Array.from(r.querySelectorAll('th, td')).map(c => c.innerText)),
  numbers: Array.from(s.querySelectorAll('dl.numbers > div')).map(d =>
        [d.querySelector('dt').innerText, d.querySelector('dd').innerText]),
}));
"""


def test_dataset_report_in_browser(setup, tmp_path):
    require_browser()
    from tests.explain._layout import assert_findings_first, first_screen

    scorer, images, scores, diagnosis, bottleneck = setup
    report = dataset_report(scores, bottleneck, diagnosis, scorer=scorer, images=images, n_cases=3,
                            n_steps=16)
    html_path, json_path = report.save(tmp_path, "dataset")
    layout = first_screen(html_path, tmp_path / "dataset.png")
    assert_findings_first(layout)
    assert layout["headline"].startswith("Accuracy ")
    assert layout["images"] and all(w > 0 for w in layout["images"])  # every image decodes
    assert len(layout["images"]) >= 1 + 3  # drivers chart and one figure per case
    payload = json.loads(json_path.read_text())
    with headless_chromium() as driver:
        driver.get(html_path.resolve().as_uri())
        shown = {s["title"]: s for s in driver.execute_script(_TABLES_JS)}
    summary = payload["sections"][0]
    assert summary["kind"] == "summary"
    assert dict(shown["Summary"]["numbers"]) == summary["numbers"]
    checked = 0
    for section in payload["sections"]:
        if section["kind"] != "table":
            continue
        page_rows = shown[section["title"]]["rows"]
        assert len(page_rows) == min(len(section["rows"]), 40)
        for page_row, row in zip(page_rows, section["rows"], strict=False):
            expected = [_format_cell(row[c], 3) for c in section["columns"]]
            assert page_row == expected, section["title"]
            checked += 1
    assert checked >= 10
    titles = [s["title"] for s in payload["sections"]]
    for title in ("Concepts that drive each class", "Concept prevalence by class", "Confusion matrix",
                  "Errors grouped by the concept that explains them", "Faithfulness of the attributions shown"):
        assert title in titles
    faith = next(s for s in payload["sections"] if s["title"] == "Faithfulness of the attributions shown")
    assert len(faith["rows"]) == 3 and all(r["verdict"] for r in faith["rows"])
