"""``conceptlens compare``: the demo model against a second backbone, report in headless Chromium."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from conceptlens.cli.main import main
from conceptlens.demo.generator import generate
from conceptlens.models import create_reference_model
from tests.browser import inspect_page, require_browser

HOSTILE = "ref<img src=x onerror=window.__pwned=1>"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    data = generate(24, seed=7)
    images = root / "images"
    images.mkdir()
    rows = []
    for i, array in enumerate(data.images):
        Image.fromarray(array).save(images / f"lesion_{i}.png")
        rows.append({"image": f"lesion_{i}.png",
                     **{c: int(v) for c, v in zip(data.concept_ids[:7], data.concepts[i, :7],
                                                  strict=True)}})
    labels = root / "concept_labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    second = root / HOSTILE  # a model whose name tries to inject markup into the report
    model, processor = create_reference_model("tiny", seed=3)
    model.save_pretrained(second)
    processor.save_pretrained(second)
    out = root / "out"
    code = main(["compare", str(images), "--model", "demo", "--model", str(second),
                 "--concept-labels", str(labels), "--n-bootstrap", "200", "--out", str(out),
                 "--quiet"])
    return code, out


def test_compare_writes_html_and_json(job, capsys):
    code, out = job
    assert code == 0
    data = json.loads((out / "comparison.json").read_text())
    assert data["kind"] == "comparison"
    comparison = data["meta"]["comparison"]
    assert comparison["models"] == ["demo", HOSTILE]
    pooled = {r["model"]: r["roc_auc"] for r in comparison["metrics"] if r["concept"] == "pooled"}
    assert pooled["demo"] > pooled[HOSTILE]  # the trained model annotates better
    kinds = [s["kind"] for s in data["sections"]]
    assert kinds[:3] == ["summary", "table", "figure"]
    assert data["sections"][0]["headline"].startswith("demo annotates these concepts best")


def test_comparison_report_in_browser(job, tmp_path):
    require_browser()
    _, out = job
    page = inspect_page(out / "comparison.html", tmp_path / "comparison.png")
    assert page["errors"] == []
    assert page["pwned"] is None and page["n_scripts"] == 0  # the model name stayed text
    assert HOSTILE in page["text"]
    assert "Annotation AUC per concept" in page["text"] and "Paired tests" in page["text"]
    assert page["widths"] and all(w > 0 for w in page["widths"])


def test_compare_needs_two_models(tmp_path, capsys):
    code = main(["compare", str(tmp_path), "--model", "demo", "--concept-labels", "x.csv",
                 "--out", str(tmp_path / "o")])
    assert code != 0
    assert "at least two models" in capsys.readouterr().err
