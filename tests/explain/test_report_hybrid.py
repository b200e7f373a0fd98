"""Reports on synthetic scores: reasons worded by high / low scores, the residual share of a
hybrid bottleneck (PCBM-h), concept-group reliance, the image index, and ``extra=``.

No backbone: the scores, embeddings and images are made up, so the module runs in seconds.
"""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from conceptlens.concepts import HybridBottleneck, SparseLinearBottleneck, audit  # noqa: E402
from conceptlens.explain.report import (  # noqa: E402
    ImageExplanation,
    Report,
    Text,
    audit_report,
    dataset_report,
    explanation_report,
    hybrid_parts,
)
from conceptlens.explain.report.builders import concept_deviations, reason_text  # noqa: E402
from conceptlens.vocab import ConceptScores  # noqa: E402
from tests.browser import require_browser  # noqa: E402

XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
IDS = ["c:vascular", "c:network", "c:veil", "c:oh_a", "c:oh_b", "c:oh_c"]
NAMES = {"c:vascular": "atypical vascular pattern", "c:network": "pigment network",
         "c:veil": XSS, "c:oh_a": "colour: brown", "c:oh_b": "colour: black", "c:oh_c": "colour: blue"}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 240
    X = rng.uniform(0, 1, size=(n, len(IDS)))
    colour = rng.integers(0, 3, size=n)
    X[:, 3:] = np.eye(3)[colour] * 0.8 + rng.uniform(0, 0.2, size=(n, 3))
    E = rng.normal(size=(n, 6))
    logit = 6 * (X[:, 0] - 0.5) + 2 * (X[:, 1] - 0.5) + 1.5 * (colour == 2) + 1.2 * E[:, 0]
    y = np.where(logit + rng.normal(0, 0.5, n) > 0, "melanoma", "benign")
    ids = [f"case_{i:03d}.png" for i in range(n)]
    table = pd.DataFrame(X, index=ids, columns=IDS)
    scores = ConceptScores(table, concept_names=NAMES)
    embeddings = pd.DataFrame(E, index=ids)
    sparse = SparseLinearBottleneck(cv=3).fit(scores, y)
    hybrid = HybridBottleneck(residual_C=1.0).fit(scores, y, embeddings=embeddings)
    return scores, embeddings, y, sparse, hybrid


def _items(scores, model, ids, embeddings=None):
    kwargs = {"embeddings": embeddings.loc[ids]} if embeddings is not None else {}
    subset = scores.table.loc[ids]
    predicted = model.predict(subset, **kwargs)
    proba = model.predict_proba(subset, **kwargs)
    contributions = model.contributions(subset)
    items = []
    for i, image_id in enumerate(ids):
        pred = str(predicted[i])
        per_class = contributions.for_class(pred)
        intercept = (float(contributions.intercept[0]) if pred == str(contributions.outputs[0])
                     else -float(contributions.intercept[0]))
        items.append(ImageExplanation(
            image_id=image_id, image=Image.new("RGB", (32, 32), (200, 150, 120)),
            scores=scores.table.loc[image_id], concept_names=NAMES, prediction=pred,
            probabilities=dict(zip([str(c) for c in model.classes_], proba[i], strict=True)),
            contributions=per_class.loc[image_id], intercept=intercept))
    return items


def test_reason_wording():
    assert reason_text("atypical vascular pattern", 5.4, -1.2, "benign") == \
        "low atypical vascular pattern score (+5.4 toward benign)"
    assert reason_text("pigment network", 2.04, 0.7, "melanoma") == "pigment network (+2.0 toward melanoma)"
    assert reason_text("veil", -0.31, 1.0, "melanoma") == "veil (-0.31, against melanoma)"
    assert reason_text("veil", 0.3, None, "melanoma") == "veil (+0.30 toward melanoma)"


def test_benign_summary_says_the_score_is_low(data):
    scores, _, y, sparse, _ = data
    low = scores.table["c:vascular"].idxmin()  # the lowest vascular score: benign, because it is low
    items = _items(scores, sparse, [low])
    assert items[0].prediction == "benign"
    report = explanation_report(items, bottleneck=sparse)
    headline = report.summary.headline
    contribution = items[0].contributions["c:vascular"]
    assert contribution > 0  # toward benign ...
    assert concept_deviations(sparse, scores.table.loc[[low]]).loc[low, "c:vascular"] < 0  # ... as it is low
    assert f"low atypical vascular pattern score (+{contribution:.2g}" in headline or \
        "low atypical vascular pattern score (+" in headline
    assert "toward benign" in headline
    high = scores.table["c:vascular"].idxmax()
    items = _items(scores, sparse, [high])
    headline = explanation_report(items, bottleneck=sparse).summary.headline
    assert items[0].prediction == "melanoma"
    assert "atypical vascular pattern (+" in headline and "low atypical vascular" not in headline


def test_hybrid_explanation_report(data, tmp_path):
    scores, embeddings, _, _, hybrid = data
    ids = list(scores.table.index[:3])
    items = _items(scores, hybrid, ids, embeddings)
    report = explanation_report(items, bottleneck=hybrid, embeddings=embeddings)
    parts = hybrid_parts(hybrid, scores.table.loc[ids], embeddings.loc[ids])
    html_path, json_path = report.save(tmp_path, "explanation")
    payload = json.loads(json_path.read_text())
    for item, (image_id, row) in zip(items, parts.iterrows(), strict=True):
        assert item.residual == pytest.approx(row["residual"])
        assert item.residual_share == pytest.approx(row["residual_share"])
        facts = next(s["facts"] for s in payload["sections"] if s["kind"] == "facts" and
                     s["facts"].get("image") == image_id)
        assert facts["residual share"] == pytest.approx(row["residual_share"])
        # concepts + residual + intercept = the hybrid's decision toward the predicted class
        decision = hybrid.decision_function(scores.table.loc[[image_id]], embeddings=embeddings.loc[[image_id]])[0]
        sign = 1 if item.prediction == "melanoma" else -1
        assert facts["decision value"] == pytest.approx(sign * decision, abs=1e-9)
        figure = next(s for s in payload["sections"] if s["title"] == f"{image_id}: concepts")
        assert figure["data"]["residual share"] == pytest.approx(row["residual_share"])
        assert f"{image_id}: " in " ".join(payload["sections"][0]["points"])
    summary = payload["sections"][0]
    assert "median residual share" in summary["numbers"]
    assert all("residual on the image embedding" in p for p in summary["points"])
    titles = [s["title"] for s in payload["sections"]]
    assert "Residual share of the decisions (hybrid bottleneck)" in titles
    page = html_path.read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    # embeddings as an array in the order of the explanations, or a mapping by image id
    for given in (embeddings.loc[ids].to_numpy(), {i: embeddings.loc[i].to_numpy() for i in ids}):
        again = _items(scores, hybrid, ids, embeddings)
        explanation_report(again, bottleneck=hybrid, embeddings=given)
        assert [i.residual for i in again] == pytest.approx(list(parts["residual"]))


def test_contents_links_every_image_block(data, tmp_path):
    scores, _, _, sparse, _ = data
    ids = list(scores.table.index[:20]) + [XSS]
    table = pd.concat([scores.table.iloc[:20], scores.table.iloc[[20]].set_axis([XSS])])
    items = _items(ConceptScores(table, concept_names=NAMES), sparse, ids)
    report = explanation_report(items, bottleneck=sparse)
    ordered = report.ordered()
    assert ordered[0].kind == "summary" and ordered[1].kind == "contents"
    entries = ordered[1].entries
    assert [e["label"] for e in entries] == ids
    anchors = [s.anchor for s in ordered if s.anchor and s.kind != "contents"]
    assert anchors == [f"image-{i}" for i in range(1, 22)]
    page = report.to_html()
    for i in range(1, 22):
        assert page.count(f'href="#image-{i}"') == 1 and page.count(f'id="image-{i}"') == 1
    assert "<script" not in page.lower()
    assert page.index('id="summary"') < page.index('class="contents"') < page.index('id="image-1"')
    # one image: no index
    single = explanation_report(items[:1], bottleneck=sparse)
    assert not any(s.kind == "contents" for s in single.sections)


def test_contents_in_browser(data, tmp_path):
    require_browser()
    from tests.browser import headless_chromium
    from tests.explain._layout import assert_findings_first, first_screen, printed

    scores, _, _, sparse, _ = data
    items = _items(scores, sparse, list(scores.table.index[:20]))
    html_path, _ = explanation_report(items, bottleneck=sparse).save(tmp_path, "explanation")
    assert_findings_first(first_screen(html_path))
    with headless_chromium() as driver:
        driver.get(html_path.resolve().as_uri())
        missing = driver.execute_script("""
          return Array.from(document.querySelectorAll('nav.contents a')).filter(
            a => !document.getElementById(a.getAttribute('href').slice(1))).length;""")
        driver.find_element("css selector", 'nav.contents a[href="#image-17"]').click()
        top = driver.execute_script("return document.getElementById('image-17').getBoundingClientRect().top")
    assert missing == 0 and abs(top) < 5
    page = printed(html_path)  # A4: the index and the images fit the paper's width
    assert page["scroll_width"] <= page["width"], page


def test_hybrid_in_audit_and_dataset_reports(data, tmp_path):
    scores, embeddings, y, _, hybrid = data
    decisions = hybrid.predict(scores, embeddings=embeddings)
    result = audit(scores, decisions, y)
    report = audit_report(result, scores=scores, decisions=decisions, labels=y, bottleneck=hybrid,
                          embeddings=embeddings)
    _, json_path = report.save(tmp_path, "audit")
    payload = json.loads(json_path.read_text())
    parts = hybrid_parts(hybrid, scores, embeddings)
    rows = next(s for s in payload["sections"] if s["title"].endswith("decisions the concepts explain least"))["rows"]
    assert len(rows) == len(parts)
    share = {r["image"]: r["residual_share"] for r in rows}
    for image_id, value in parts["residual_share"].items():
        assert share[image_id] == pytest.approx(value)
    assert payload["sections"][0]["values"]["residual_share"]["median"] == pytest.approx(
        parts["residual_share"].median())
    kinds = [s["kind"] for s in payload["sections"]]
    assert kinds[-1] == "facts" and payload["sections"][-1]["collapsed"]

    report = dataset_report(scores, hybrid, y, embeddings=embeddings)
    _, json_path = report.save(tmp_path, "dataset")
    payload = json.loads(json_path.read_text())
    figure = next(s for s in payload["sections"]
                  if s["title"] == "Residual share of the decisions (hybrid bottleneck): distribution")
    np.testing.assert_allclose(figure["data"]["residual_share"], parts["residual_share"], atol=1e-6)
    assert "median residual share" in payload["sections"][0]["numbers"]
    # without the embeddings the residual cannot be computed: a clear error
    from conceptlens.concepts.hybrid import EmbeddingsError

    with pytest.raises(EmbeddingsError, match="embeddings"):
        dataset_report(scores, hybrid, y)


def test_group_reliance_in_audit_report(data, tmp_path):
    scores, _, y, sparse, _ = data
    groups = {"c:oh_a": XSS, "c:oh_b": XSS, "c:oh_c": XSS, "c:vascular": "vascular",
              "c:network": "vascular"}
    decisions = sparse.predict(scores)
    result = audit(scores, decisions, y, concept_groups=groups)
    assert len(result.group_reliance) == 2
    report = audit_report(result, scores=scores, decisions=decisions, labels=y)
    html_path, json_path = report.save(tmp_path, "audit")
    payload = json.loads(json_path.read_text())
    titles = [s["title"] for s in payload["sections"]]
    at = titles.index("Reliance per concept group")
    assert titles[at - 1] == "Reliance of the surrogate on each concept"
    assert titles[at + 1] == "Reliance per concept group: plot"
    rows = {r["group"]: r for r in payload["sections"][at]["rows"]}
    for row in result.group_reliance.to_dict(orient="records"):
        assert rows[row["group"]]["share"] == pytest.approx(row["share"])
        assert rows[row["group"]]["relied"] == bool(row["relied"])
    assert rows[XSS]["concepts"] == "colour: brown, colour: black, colour: blue"
    assert any("Concept groups relied upon" in p or "No concept group" in p
               for p in payload["sections"][0]["points"])
    assert payload["sections"][0]["values"]["group_reliance"][XSS] == pytest.approx(
        float(result.group_reliance.set_index("group").loc[XSS, "share"]))
    page = html_path.read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    # without groups there is no group section
    plain = audit_report(audit(scores, decisions, y), scores=scores, decisions=decisions, labels=y)
    assert "Reliance per concept group" not in [s.title for s in plain.sections]
    shown = result._repr_html_()  # Jupyter: the group table right after the reliance table
    assert shown.index("<h4>reliance</h4>") < shown.index("<h4>group reliance</h4>") < shown.index("<h4>association")
    assert "c:oh_a, c:oh_b, c:oh_c" in shown
    assert "<script" not in shown.lower()


class _Thing:
    def report_sections(self):
        return [Text(f"My check {XSS}", text=XSS)]


def test_extra_goes_into_the_evidence(data):
    scores, _, y, sparse, _ = data
    items = _items(scores, sparse, list(scores.table.index[:2]))
    thing = _Thing()
    report = explanation_report(items, bottleneck=sparse, extra=[thing, None, thing])
    ordered = report.ordered()
    titles = [s.title for s in ordered]
    assert titles.count(f"My check {XSS}") == 1  # the same object once
    at = titles.index(f"My check {XSS}")
    assert ordered[0].kind == "summary" and all(not s.collapsed for s in ordered[:at + 1])
    assert all(s.collapsed for s in ordered[at + 1:])
    page = report.to_html()
    assert "<script" not in page.lower() and page.count("&lt;script&gt;") >= 2
    with pytest.raises(TypeError, match="report_sections"):
        explanation_report(items, extra=[object()])
    decisions = sparse.predict(scores)
    audit_page = audit_report(audit(scores, decisions, y), scores=scores, decisions=decisions,
                              extra=[thing])
    assert f"My check {XSS}" in [s.title for s in audit_page.ordered()]
    data_page = dataset_report(scores, sparse, y, extra=thing)
    assert f"My check {XSS}" in [s.title for s in data_page.ordered()]


def test_jupyter_reprs_of_report_objects(data):
    scores, embeddings, y, _, hybrid = data
    parts = hybrid.decompose(scores, embeddings=embeddings)
    assert "residual share" in parts._repr_html_()
    report = Report("r", sections=[Text("t", text=XSS)])
    frame = report._repr_html_()
    assert frame.startswith("<iframe") and "sandbox" in frame and "<script" not in frame
    assert re.search(r"&amp;lt;script", frame)


def test_residual_plots():
    from conceptlens.explain.plots import plot_decision_parts, plot_residual_share

    fig = plot_decision_parts({"a": 1.0, "b": -0.5, "c": 0.2, XSS: 0.1}, residual=-0.6, intercept=0.3,
                              top_k=2)
    ax = fig.axes[0]
    heights = [p.get_width() for p in ax.patches]
    assert heights == pytest.approx([1.0, -0.5, 0.3, -0.6, 0.3])  # a, b, 2 others, residual, intercept
    assert "residual share 25%" in ax.get_title()  # 0.6 / (1.8 + 0.6)
    assert [t.get_text() for t in ax.get_yticklabels()][-2:] == ["residual (image embedding)", "intercept"]
    fig = plot_residual_share([0.0, 0.25, 1.0, 0.5], groups=["x", "y", "x", "y"])
    assert sum(p.get_height() for p in fig.axes[0].patches) == 4
    with pytest.raises(ValueError, match="0, 1"):
        plot_residual_share([1.5])
    with pytest.raises(ValueError, match="empty"):
        plot_decision_parts({}, residual=0.0)
