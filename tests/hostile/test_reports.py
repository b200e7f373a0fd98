"""Hostile strings in reports: every user string (image ids, concept ids and names,
decisions, labels) is shown as text in headless Chromium and never runs; a thumbnail that
cannot be loaded is left out; local files are embedded only from the folder the user names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conceptlens.cli import main
from conceptlens.concepts import audit
from conceptlens.explain.report import audit_report
from conceptlens.vocab import ConceptScores
from tests.browser import inspect_page, require_browser

XSS = '<script>window.__pwned=1</script>'
IMG_XSS = '<img src=x onerror="window.__pwned=2">'


def _hostile_scores(n: int = 40) -> tuple[ConceptScores, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = [f"{XSS}{i}.png" if i % 2 else f"=HYPERLINK(\"x\")-{IMG_XSS}{i}" for i in range(n)]
    X = rng.normal(size=(n, 3))
    columns = [f"c:{XSS}", f"c:{IMG_XSS}", "c:plain"]
    names = {columns[0]: f"name {IMG_XSS}", columns[1]: f"name {XSS}", columns[2]: "plain"}
    scores = ConceptScores(pd.DataFrame(X, index=ids, columns=columns), concept_names=names)
    decisions = np.where(X[:, 0] > 0, f"yes{XSS}", f"no{IMG_XSS}")
    labels = np.where(X[:, 0] + 0.3 * rng.normal(size=n) > 0, f"yes{XSS}", f"no{IMG_XSS}")
    return scores, decisions, labels


def test_every_user_string_is_inert_in_chromium(tmp_path):
    require_browser()
    scores, decisions, labels = _hostile_scores()
    result = audit(scores, decisions, labels)
    thumb = Image.new("RGB", (20, 20), (200, 0, 0))
    report = audit_report(result, scores=scores, decisions=decisions, labels=labels,
                          images=lambda image_id: thumb)
    html_path, json_path = report.save(tmp_path, "audit")
    page = inspect_page(html_path, tmp_path / "shot.png")
    assert page["pwned"] is None and page["n_scripts"] == 0
    assert XSS in page["text"]  # shown as text
    assert page["errors"] == [] and page["widths"] and all(w > 0 for w in page["widths"])


def test_unloadable_thumbnail_is_left_out_and_named(tmp_path):
    scores, decisions, labels = _hostile_scores(20)
    result = audit(scores, decisions, labels)
    good = Image.new("RGB", (20, 20))

    def images(image_id):
        return "/etc/passwd" if image_id == scores.image_ids[0] else good

    report = audit_report(result, scores=scores, decisions=decisions, labels=labels,
                          images=images)
    gallery = next(s for s in report.sections if s.kind == "gallery")
    assert gallery.items and "1 thumbnail(s) could not be loaded and are left out" in gallery.caption
    assert f"{scores.image_ids[0]} (not a recognised image format" in gallery.caption
    assert scores.image_ids[0] not in [item["label"] for item in gallery.items]


@pytest.fixture
def audit_inputs(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    outside = tmp_path / "private.png"
    Image.new("RGB", (16, 16), (0, 0, 255)).save(outside)
    ids = []
    for i in range(24):
        Image.new("RGB", (16, 16), (i * 10, 0, 0)).save(root / f"img{i}.png")
        ids.append(f"img{i}.png")
    ids[0] = str(outside)           # someone else's table naming a file outside the folder
    ids[1] = "../private.png"       # ... or climbing out of it
    rng = np.random.default_rng(1)
    X = rng.normal(size=(24, 2))
    scores = ConceptScores(pd.DataFrame(X, index=ids, columns=["c1", "c2"]))
    scores.save(tmp_path / "s.parquet")
    pd.DataFrame({"image": ids, "decision": (X[:, 0] > 0).astype(int)}).to_csv(
        tmp_path / "d.csv", index=False)
    return tmp_path, root


@pytest.mark.parametrize("with_root", [False, True], ids=["no-images-root", "images-root"])
def test_audit_cli_embeds_only_files_inside_the_images_root(audit_inputs, with_root):
    tmp_path, root = audit_inputs
    args = ["audit", str(tmp_path / "s.parquet"), "--decisions", str(tmp_path / "d.csv"),
            "--out", str(tmp_path / "out"), "--quiet"]
    if with_root:
        args += ["--images", str(root)]
    assert main(args) == 0
    import json

    data = json.loads((tmp_path / "out" / "audit.json").read_text())
    galleries = [s for s in data["sections"] if s["kind"] == "gallery"]
    labels = {item["label"] for g in galleries for item in g["items"]}
    assert not labels & {str(tmp_path / "private.png"), "../private.png"}
    assert bool(labels) == with_root
