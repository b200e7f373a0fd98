import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from conceptlens.explain.report import Facts, Figures, Gallery, Report, Table, Text  # noqa: E402
from tests.browser import inspect_page, require_browser  # noqa: E402

XSS_NAME = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def _report():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["a", "b"], [1.0, -0.5])
    gallery = Gallery("Examples")
    gallery.add(np.full((40, 60, 3), 200, np.uint8), XSS_NAME, details={"score": 0.91234})
    table = pd.DataFrame({"concept": [XSS_NAME, "blue-whitish veil"], "weight": [1.23456, -0.5]})
    return Report(
        "Explanation <b>report</b>",
        kind="explanation",
        notice="Not for clinical use.",
        sections=[
            Facts("Model", facts={"model_id": "demo", "alpha": 0.5, "nested": {"k": [1, 2]}}),
            Table("Weights", frame=table),
            Figures.from_matplotlib("Bars", fig, data={"values": [1.0, -0.5]}),
            gallery,
            Text("Note", text=XSS_NAME),
        ],
    )


def test_save_writes_html_and_json_side_by_side(tmp_path):
    html_path, json_path = _report().save(tmp_path / "out", "explanation")
    assert html_path.name == "explanation.html" and json_path.name == "explanation.json"
    data = json.loads(json_path.read_text())
    assert data["kind"] == "explanation"
    weights = next(s for s in data["sections"] if s["title"] == "Weights")
    assert [r["weight"] for r in weights["rows"]] == [1.23456, -0.5]
    page = html_path.read_text()
    # the page shows the same numbers, rounded to 3 decimals
    for row in weights["rows"]:
        assert f"{row['weight']:.3f}" in page


def test_page_is_self_contained_and_escaped(tmp_path):
    page = _report().to_html()
    assert "<script" not in page.lower()
    assert "onerror=" not in page.replace("onerror=&#34;", "").replace("onerror=&quot;", "")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no external resources"
    assert page.count('src="data:image/') == 2
    assert "&lt;script&gt;" in page


def test_name_must_stay_inside_output_folder(tmp_path):
    for bad in ("../escape", "sub/dir", ""):
        with pytest.raises(ValueError, match="plain file name"):
            _report().save(tmp_path, bad)


def test_json_has_no_nan(tmp_path):
    report = Report("r", sections=[Table("t", frame=pd.DataFrame({"x": [np.nan, 1.0]}))])
    _, json_path = report.save(tmp_path, "r")
    assert json.loads(json_path.read_text())["sections"][0]["rows"][0]["x"] is None


def test_repr_html_is_sandboxed_iframe():
    out = _report()._repr_html_()
    assert out.startswith("<iframe") and "sandbox" in out and "<script" not in out


def test_report_in_headless_browser(tmp_path):
    require_browser()
    html_path, _ = _report().save(tmp_path, "page")
    result = inspect_page(html_path, tmp_path / "shot.png")
    assert result["errors"] == []
    assert result["widths"] and all(w > 0 for w in result["widths"])
    assert result["pwned"] is None and result["n_scripts"] == 0
    assert "<script>window.__pwned=1</script>" in result["text"]
    assert (tmp_path / "shot.png").stat().st_size > 1000


def test_readme_shows_the_three_report_screenshots():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    for name in ("explanation", "dataset", "audit"):
        shot = root / "docs" / f"{name}.png"
        assert f"](docs/{name}.png)" in readme and shot.stat().st_size > 20_000
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
