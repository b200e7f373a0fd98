"""The data-set report: its numbers (confusion, drivers, error groups) and its page in Chromium."""

import json

import numpy as np
import pytest

from conceptlens._html.document import _format_cell
from conceptlens.concepts import HybridBottleneck, SparseLinearBottleneck
from conceptlens.demo import generate
from conceptlens.explain.report import dataset_report, hybrid_parts
from conceptlens.explain.report.dataset import choose_cases, dataset_tables
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


def _page_matches_json(html_path, payload) -> int:
    """Every table cell and summary number on the page equals its JSON value as formatted;
    returns the number of table rows compared."""
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
            assert page_row == [_format_cell(row[c], 3) for c in section["columns"]], section["title"]
            checked += 1
    return checked


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
    assert _page_matches_json(html_path, payload) >= 10
    titles = [s["title"] for s in payload["sections"]]
    for title in ("Concepts that drive each class", "Concept prevalence by class", "Confusion matrix",
                  "Errors grouped by the concept that explains them", "Faithfulness of the attributions shown"):
        assert title in titles
    faith = next(s for s in payload["sections"] if s["title"] == "Faithfulness of the attributions shown")
    assert len(faith["rows"]) == 3 and all(r["verdict"] for r in faith["rows"])


def test_dataset_report_of_a_hybrid_bottleneck_has_its_gallery(setup, monkeypatch):
    """A hybrid bottleneck (PCBM-h) on image embeddings gets its gallery too, each case with its
    residual share; the gallery reads the scores given (nothing is scored again) (issue 16)."""
    scorer, images, scores, diagnosis, _ = setup
    embeddings = scorer.embed(images)
    hybrid = HybridBottleneck(residual_C=1.0).fit(scores.table.iloc[:45], diagnosis[:45],
                                                  embeddings=embeddings.iloc[:45])

    def no_scoring(*args, **kwargs):
        raise AssertionError("the data-set report scored its cases again")

    monkeypatch.setattr(scorer, "score", no_scoring)
    report = dataset_report(scores, hybrid, diagnosis, scorer=scorer, images=images, n_cases=3,
                            method="saliency", embeddings=embeddings)
    payload = report.to_dict()
    cases = [s for s in payload["sections"] if s["title"].startswith("Case ")]
    assert len(cases) == 3
    parts = hybrid_parts(hybrid, scores, embeddings)
    for case in cases:
        image_id = case["title"].split(" ")[1]
        assert case["data"]["prediction"] == parts.loc[image_id, "class"]
        assert case["data"]["residual_share"] == pytest.approx(parts.loc[image_id, "residual_share"], abs=1e-6)
        assert "the residual on the image embedding" in case["caption"]
    assert not any("left out" in str(s.get("text", "")) for s in payload["sections"])
    summary = payload["sections"][0]
    assert "median residual share" in summary["numbers"]
    assert any(p.startswith("Hybrid bottleneck:") for p in summary["points"])
    faith = next(s for s in payload["sections"] if s["title"] == "Faithfulness of the attributions shown")
    assert len(faith["rows"]) == 3


def test_report_command_writes_dataset_html_and_json(tmp_path, capsys):
    """``conceptlens score`` -> ``fit`` -> ``report`` on a folder; the gallery reads only the folder."""
    from PIL import Image

    from conceptlens.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    data = generate(40, seed=11, size=64)
    ids = []
    for i, image in enumerate(data.images):
        Image.fromarray(image).save(folder / f"case_{i:02d}.png")
        ids.append(f"case_{i:02d}.png")
    import pandas as pd

    labels = np.where(data.diagnoses == 1, "melanoma", "benign")
    pd.DataFrame({"image": ids, "label": labels}).to_csv(tmp_path / "labels.csv", index=False)
    assert main(["score", str(folder), "--out", str(tmp_path / "s.parquet"), "--quiet"]) == 0
    assert main(["fit", str(tmp_path / "s.parquet"), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(tmp_path / "bn"), "--quiet"]) == 0
    code = main(["report", str(tmp_path / "s.parquet"), "--bottleneck", str(tmp_path / "bn"),
                 "--labels", str(tmp_path / "labels.csv"), "--images", str(folder), "--cases", "2",
                 "--n-steps", "8", "--out", str(tmp_path / "out"), "--quiet"])
    stderr = capsys.readouterr().err
    assert code == 0, stderr
    payload = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert payload["kind"] == "dataset" and payload["sections"][0]["kind"] == "summary"
    cases = [s for s in payload["sections"] if s["title"].startswith("Case ")]
    assert len(cases) == 2
    confusion = next(s for s in payload["sections"] if s["title"] == "Confusion matrix")
    assert sum(v for row in confusion["rows"] for k, v in row.items() if k != "true label") == 40
    assert str(tmp_path) not in (tmp_path / "out" / "dataset.html").read_text()


def test_demo_job_writes_the_dataset_report(tmp_path):
    """``conceptlens demo`` writes dataset.html + dataset.json; the page loads without console
    errors, its images decode and its numbers equal the JSON's."""
    require_browser()
    from conceptlens.cli.demo import run_demo
    from tests.explain._layout import assert_findings_first, first_screen

    run_demo(tmp_path, n=60, n_explain=1, n_cases=2, progress=False)
    html_path, json_path = tmp_path / "dataset.html", tmp_path / "dataset.json"
    layout = first_screen(html_path)
    assert_findings_first(layout)
    assert layout["images"] and all(w > 0 for w in layout["images"])
    payload = json.loads(json_path.read_text())
    assert _page_matches_json(html_path, payload) >= 5
    assert len([s for s in payload["sections"] if s["title"].startswith("Case ")]) == 2
    for name in ("explanation.html", "audit.html"):  # the demo's other reports open findings first too
        assert_findings_first(first_screen(tmp_path / name))
