"""Explanation and audit reports built from real results, checked in a headless browser."""

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest

from conceptlens.concepts import HybridBottleneck, SparseLinearBottleneck, audit
from conceptlens.demo import generate
from conceptlens.explain.report import (
    Text,
    audit_report,
    explain_images,
    hybrid_parts,
    model_notice,
)
from conceptlens.explain.report.builders import concept_deviations, reason_text
from conceptlens.models import load_backbone
from conceptlens.vocab import ConceptScorer, ConceptScores, ConceptVocabulary
from tests.browser import inspect_page, require_browser

XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">veil'


@pytest.fixture(scope="module")
def demo_setup():
    backbone = load_backbone("demo", device="cpu")
    base = ConceptVocabulary.builtin("demo")
    concepts = [dataclasses.replace(c, name=XSS) if c.id == "derm7pt:blue_whitish_veil" else c
                for c in base if not c.id.startswith("artifact:")]
    vocabulary = ConceptVocabulary(concepts, name="xss-demo", modality=base.modality)
    scorer = ConceptScorer(backbone, vocabulary, mode="combined", calibration="sigmoid", progress=False)
    data = generate(80, seed=99, size=backbone.image_size[0])
    images = {f"img_{i:02d}.png": im for i, im in enumerate(data.images)}
    scores = scorer.score(images)
    diagnosis = np.where(data.diagnoses == 1, "melanoma", "benign")
    bottleneck = SparseLinearBottleneck(cv=3).fit(scores, diagnosis)
    return backbone, scorer, images, scores, diagnosis, bottleneck, data


@pytest.fixture(scope="module")
def explanation(demo_setup, tmp_path_factory):
    backbone, scorer, images, _, _, bottleneck, _ = demo_setup
    chosen = {k: images[k] for k in list(images)[:2]}
    report, errors = explain_images(scorer, chosen, bottleneck=bottleneck, method="integrated_gradients",
                                    n_steps=8, notice=model_notice(backbone))
    out = tmp_path_factory.mktemp("explanation")
    html_path, json_path = report.save(out, "explanation")
    return html_path, json_path, errors


def test_explanation_report_contents(explanation, demo_setup):
    html_path, json_path, errors = explanation
    assert errors.empty
    data = json.loads(json_path.read_text())
    page = html_path.read_text()
    assert "not for clinical use" in (data["notice"] or "").lower()
    titles = [s["title"] for s in data["sections"]]
    for suffix in ("concepts", "concept table", "concept maps", "attribution"):
        assert any(t.endswith(suffix) for t in titles), suffix
    # every contribution in the JSON is shown on the page, and they add up to the decision value
    for section in data["sections"]:
        if section["title"].endswith("concept table"):
            for row in section["rows"]:
                assert f"{row['contribution']:.3f}" in page or f"{row['contribution']:.3g}" in page
    summaries = [s["facts"] for s in data["sections"] if s["kind"] == "facts" and "decision value" in s["facts"]]
    assert len(summaries) == 2
    for facts in summaries:
        table = next(s for s in data["sections"] if s["title"] == f"{facts['image']}: concept table")
        total = facts["intercept"] + sum(r["contribution"] for r in table["rows"])
        assert total == pytest.approx(facts["decision value"], abs=1e-6)
        assert 0.5 <= facts["confidence"] <= 1.0


def test_workflow_words_reasons_by_low_scores_and_adds_extra_sections(demo_setup):
    """The workflow hands its bottleneck to the report: a reason that comes from a low score
    is worded "low X score (+n toward class)" (issue 16); ``extra=`` sections follow the images."""
    _, scorer, images, scores, _, bottleneck, _ = demo_setup
    deviations = concept_deviations(bottleneck, scores)
    contributions = bottleneck.contributions(scores)
    predicted = bottleneck.predict(scores)
    chosen = None
    for i, image_id in enumerate(scores.image_ids):  # an image whose top reasons include a low score
        towards = contributions.for_class(predicted[i]).loc[image_id]
        top = towards.abs().sort_values(ascending=False).index[:3]
        if any(deviations.loc[image_id, c] < 0 and towards[c] != 0 for c in top):
            chosen = image_id
            break
    assert chosen is not None
    note = Text("A note from the caller", text="hello")
    report, _ = explain_images(scorer, {chosen: images[chosen]}, bottleneck=bottleneck, method=None,
                               scores=None, extra=[note])
    headline = report.summary.headline
    names = dict(scores.concept_names)
    towards = contributions.for_class(predicted[scores.image_ids.index(chosen)]).loc[chosen]
    for concept in towards.abs().sort_values(ascending=False).index[:3]:
        expected = reason_text(names.get(concept, concept), float(towards[concept]),
                               float(deviations.loc[chosen, concept]), str(predicted[scores.image_ids.index(chosen)]))
        assert expected in headline
    assert "low " in headline and " score (+" in headline
    titles = [s.title for s in report.sections]
    assert "A note from the caller" in titles
    assert titles.index("A note from the caller") > max(i for i, t in enumerate(titles) if t.startswith(chosen))


@pytest.fixture(scope="module")
def hybrid_setup(demo_setup):
    _, scorer, images, scores, diagnosis, _, _ = demo_setup
    embeddings = scorer.embed(images)
    hybrid = HybridBottleneck(residual_C=1.0).fit(scores, diagnosis, embeddings=embeddings)
    return embeddings, hybrid


def test_hybrid_explanation_from_images(demo_setup, hybrid_setup):
    """A hybrid bottleneck (PCBM-h) on image embeddings: the workflow takes each image's
    embedding from the features it computes for the maps (no EmbeddingsError), and the
    report states each decision's residual share (issue 16)."""
    _, scorer, images, scores, _, _, _ = demo_setup
    embeddings, hybrid = hybrid_setup
    ids = list(images)[:3]
    report, errors = explain_images(scorer, {i: images[i] for i in ids}, bottleneck=hybrid,
                                    method="saliency", top_k=2)
    assert errors.empty
    parts = hybrid_parts(hybrid, scores.table.loc[ids], embeddings.loc[ids])
    decisions = hybrid.decision_function(scores.table.loc[ids], embeddings=embeddings.loc[ids])
    payload = report.to_dict()
    for k, image_id in enumerate(ids):
        facts = next(s["facts"] for s in payload["sections"]
                     if s["kind"] == "facts" and s["facts"].get("image") == image_id)
        assert facts["residual share"] == pytest.approx(parts.loc[image_id, "residual_share"], abs=1e-4)
        assert facts["residual (image embedding)"] == pytest.approx(parts.loc[image_id, "residual"], abs=1e-4)
        total = facts["intercept"] + facts["concepts (sum of contributions)"] + facts["residual (image embedding)"]
        assert total == pytest.approx(facts["decision value"], abs=1e-6)
        sign = 1.0 if facts["prediction"] == str(hybrid.classes_[1]) else -1.0
        assert facts["decision value"] == pytest.approx(sign * decisions[k], abs=1e-4)
        assert facts["prediction"] == parts.loc[image_id, "class"]
    summary = payload["sections"][0]
    assert "median residual share" in summary["numbers"]
    assert all("the residual on the image embedding the other" in p for p in summary["points"])
    titles = [s["title"] for s in payload["sections"]]
    assert "Residual share of the decisions (hybrid bottleneck)" in titles


def test_explanation_report_in_browser(explanation, tmp_path):
    require_browser()
    html_path, _, _ = explanation
    result = inspect_page(html_path, tmp_path / "explanation.png")
    assert result["errors"] == []
    assert len(result["widths"]) >= 4 and all(w > 0 for w in result["widths"])
    assert result["pwned"] is None and result["n_scripts"] == 0
    assert "<script>window.__pwned=1</script>" in result["text"]
    assert (tmp_path / "explanation.png").stat().st_size > 10_000


def test_audit_report_in_browser(demo_setup, tmp_path):
    require_browser()
    _, _, images, scores, diagnosis, bottleneck, data = demo_setup
    decisions = np.where(data.concepts[:, -1] == 1, "melanoma", "benign")  # copies the ink marking
    result = audit(scores, decisions, diagnosis)
    report = audit_report(result, scores=scores, decisions=decisions, labels=diagnosis,
                          weights=bottleneck.coef_frame(), images=images)
    html_path, json_path = report.save(tmp_path, "audit")
    page = inspect_page(html_path, tmp_path / "audit.png")
    assert page["errors"] == [] and page["pwned"] is None
    assert page["widths"] and all(w > 0 for w in page["widths"])
    assert "<script>window.__pwned=1</script>" in page["text"]
    payload = json.loads(json_path.read_text())
    prevalence = next(s for s in payload["sections"] if s["title"] == "Concept prevalence by decision")
    shown = re.findall(r"<td>(\d+\.\d{3})</td>", html_path.read_text())
    for row in prevalence["rows"]:
        for key, value in row.items():
            if key != "concept":
                assert f"{value:.3f}" in shown


def test_audit_report_for_2000_images_stays_small(tmp_path):
    data = generate(2000, seed=5, size=64, artifact_correlation=0.6)
    rng = np.random.default_rng(0)
    ids = [f"case_{i:04d}.png" for i in range(2000)]
    table = pd.DataFrame(np.clip(data.concepts + rng.normal(0, 0.3, data.concepts.shape), 0, 1),
                         index=ids, columns=data.concept_ids)
    scores = ConceptScores(table, concept_names={c: c.split(":")[1] for c in data.concept_ids})
    diagnosis = np.where(data.diagnoses == 1, "melanoma", "benign")
    decisions = np.where(rng.random(2000) < 0.9, diagnosis, np.where(diagnosis == "melanoma", "benign", "melanoma"))
    result = audit(scores, decisions, diagnosis, irrelevant_concepts=["artifact:ink_marking"])
    report = audit_report(result, scores=scores, decisions=decisions, labels=diagnosis,
                          images=dict(zip(ids, data.images, strict=True)))
    html_path, json_path = report.save(tmp_path, "audit")
    assert html_path.stat().st_size < 10 * 2**20
    assert json_path.stat().st_size < 10 * 2**20
    gallery = next(s for s in json.loads(json_path.read_text())["sections"] if s["kind"] == "gallery")
    assert 0 < len(gallery["items"]) <= 24


def test_explanation_report_first_screen(explanation, tmp_path):
    """At 1280 x 800 the summary with each image's prediction, reasons and verdict is visible
    first; the settings sit collapsed at the end; no table is wider than the page."""
    require_browser()
    from tests.explain._layout import assert_findings_first, first_screen

    html_path, json_path, _ = explanation
    result = first_screen(html_path, tmp_path / "first.png")
    assert_findings_first(result)
    summary = json.loads(json_path.read_text())["sections"][0]
    assert summary["kind"] == "summary" and len(summary["points"]) == 2
    for point, (image_id, values) in zip(summary["points"], summary["values"].items(), strict=True):
        assert point.startswith(f"{image_id}: {values['prediction']} (confidence ")
        assert "Top reasons:" in point and f"Attribution {values['verdict']}" in point
        assert f"{values['confidence']:.2f}" in point


def test_audit_report_findings_first(demo_setup, tmp_path):
    require_browser()
    from tests.explain._layout import assert_findings_first, first_screen

    _, _, images, scores, diagnosis, bottleneck, data = demo_setup
    veil = "derm7pt:blue_whitish_veil"  # named with the XSS string: the headline must escape it
    column = scores.table[veil].to_numpy()
    decisions = np.where(column > np.median(column), "melanoma", "benign")  # decided by the veil
    result = audit(scores, decisions, diagnosis, irrelevant_concepts=[veil])
    report = audit_report(result, scores=scores, decisions=decisions, labels=diagnosis,
                          weights=bottleneck.coef_frame(), images=images)
    html_path, json_path = report.save(tmp_path, "audit")
    layout = first_screen(html_path, tmp_path / "audit.png")
    assert_findings_first(layout)
    assert layout["headline"] == f"The decisions rely on '{XSS}', which you declared irrelevant."
    summary = json.loads(json_path.read_text())["sections"][0]
    assert summary["values"]["flagged"] == [veil]
    fid = summary["values"]["fidelity"]
    shown = f"{fid['value']:.2f} ({fid['ci_low']:.2f}-{fid['ci_high']:.2f})"
    assert summary["numbers"]["surrogate fidelity (95% interval)"] == shown
    assert any(shown in p for p in summary["points"])
    assert any("beyond_labels" in p and "FLAGGED" in p for p in summary["points"])


def test_audit_report_prints_on_a4(demo_setup, tmp_path):
    """With the print stylesheet at A4 width nothing is wider than the paper and the collapsed
    settings are printed (taller than their one-line summary)."""
    require_browser()
    from tests.explain._layout import printed

    _, _, _, scores, diagnosis, _, _ = demo_setup
    column = scores.table["derm7pt:blue_whitish_veil"].to_numpy()
    decisions = np.where(column > np.median(column), "melanoma", "benign")
    result = audit(scores, decisions, diagnosis, irrelevant_concepts=["derm7pt:blue_whitish_veil"])
    html_path, _ = audit_report(result, scores=scores, decisions=decisions, labels=diagnosis).save(tmp_path, "a")
    page = printed(html_path)
    assert page["scroll_width"] <= page["width"], page
    assert all(h > 2 * s for h, s in zip(page["settings_height"], page["summary_height"], strict=True)), page


def test_audit_report_needs_only_the_audit_and_decisions(demo_setup, tmp_path):
    """Without the scores again the report still opens with the findings (names from the audit)."""
    _, _, _, scores, diagnosis, _, _ = demo_setup
    column = scores.table["derm7pt:blue_whitish_veil"].to_numpy()
    decisions = np.where(column > np.median(column), "melanoma", "benign")
    result = audit(scores, decisions, diagnosis, irrelevant_concepts=["derm7pt:blue_whitish_veil"])
    report = audit_report(result, decisions=decisions, labels=diagnosis)
    payload = report.to_dict()
    assert payload["sections"][0]["headline"] == f"The decisions rely on '{XSS}', which you declared irrelevant."
    assert "Concept prevalence by decision" not in [s["title"] for s in payload["sections"]]
    assert "&lt;script&gt;" in report.to_html()
