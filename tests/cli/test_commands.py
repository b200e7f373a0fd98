"""Every sub-command end to end on the shipped demo model, including a corrupt image."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conceptlens.cli import main

N_IMAGES = 40


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from conceptlens.demo import DEMO_WEIGHTS_DIR, generate

    if not (DEMO_WEIGHTS_DIR / "config.json").exists():
        pytest.fail(f"the demo model is not shipped in {DEMO_WEIGHTS_DIR}")
    root = tmp_path_factory.mktemp("cli")
    folder = root / "images"
    folder.mkdir()
    data = generate(N_IMAGES, seed=4242, size=64, artifact_correlation=0.8)
    names = []
    for i, image in enumerate(data.images):
        name = f"lesion_{i:02d}.png"
        Image.fromarray(image).save(folder / name)
        names.append(str(folder / name))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    diagnosis = np.where(data.diagnoses == 1, "melanoma", "benign")
    pd.DataFrame({"image": names, "label": diagnosis}).to_csv(root / "labels.csv", index=False)
    # a decision-maker that copies the ink marking: the audit must flag it
    decisions = np.where(data.concepts[:, -1] == 1, "melanoma", "benign")
    pd.DataFrame({"image": names, "decision": decisions}).to_csv(root / "decisions.csv", index=False)
    pd.DataFrame(data.concepts, columns=data.concept_ids).assign(image=names).to_csv(
        root / "concepts.csv", index=False)
    return root


def _run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_score_folder_reports_corrupt_image_and_keeps_the_rest(workspace, capsys):
    out = workspace / "scores.parquet"
    code, stdout, stderr = _run(["score", workspace / "images", "--out", out, "--quiet"], capsys)
    assert code == 0, stderr
    from conceptlens.vocab import ConceptScores

    scores = ConceptScores.load(out)
    assert len(scores) == N_IMAGES
    assert scores.errors["image"].str.endswith("broken.png").tolist() == [True]
    assert "broken.png" in stderr
    assert (workspace / "scores.errors.csv").exists()
    assert "skipped" in stdout


def test_score_to_csv_with_preset(workspace, capsys):
    out = workspace / "preset.csv"
    files = sorted((workspace / "images").glob("lesion_0*.png"))[:3]
    code, _, stderr = _run(["score", *files, "--preset", "derm7pt", "--out", out, "--quiet"], capsys)
    assert code == 0, stderr
    table = pd.read_csv(out, index_col=0)
    assert table.shape == (3, 8) and ((table >= 0) & (table <= 1)).all().all()


def test_fit_writes_a_bottleneck(workspace, capsys):
    code, stdout, stderr = _run(["fit", workspace / "scores.parquet", "--labels", workspace / "labels.csv",
                                 "--out", workspace / "model", "--quiet"], capsys)
    assert code == 0, stderr
    assert (workspace / "model").is_dir() and any((workspace / "model").iterdir())
    assert "training accuracy" in stdout


def test_explain_writes_report_pair(workspace, capsys):
    files = sorted((workspace / "images").glob("lesion_*.png"))[:2]
    code, _, stderr = _run(["explain", *files, workspace / "images" / "broken.png", "--bottleneck",
                            workspace / "model", "--method", "saliency", "--out", workspace / "explain",
                            "--quiet"], capsys)
    assert code == 0, stderr
    page = (workspace / "explain" / "explanation.html").read_text()
    data = json.loads((workspace / "explain" / "explanation.json").read_text())
    assert data["kind"] == "explanation" and "lesion_00.png" in page
    assert "broken.png" in stderr
    _assert_reasons_worded(data, workspace / "model")


def _assert_reasons_worded(data, model):
    """Each image's reasons in the summary are worded with the bottleneck's reference: "low X
    score (+n toward class)" where the score is below the training mean (issue 16)."""
    from conceptlens.concepts import load_bottleneck
    from conceptlens.explain.report.builders import concept_deviations, reason_text

    bottleneck = load_bottleneck(model)
    summary = data["sections"][0]
    points = summary["points"] or [summary["headline"]]
    assert len(points) == len(summary["values"]) >= 1
    for point, (image_id, values) in zip(points, summary["values"].items(), strict=True):
        table = next(s for s in data["sections"] if s["title"] == f"{image_id}: concept table")
        rows = {r["concept"]: r for r in table["rows"]}
        scores = pd.Series({r["concept id"]: r["score"] for r in table["rows"]})
        deviations = concept_deviations(bottleneck, scores.reindex(list(bottleneck.concept_ids_))).iloc[0]
        for name, contribution in values["top_reasons"].items():
            concept = rows[name]["concept id"]
            assert reason_text(name, contribution, deviations[concept], values["prediction"]) in point


def test_audit_flags_the_copied_artifact(workspace, capsys):
    code, _, stderr = _run(["audit", workspace / "scores.parquet", "--decisions", workspace / "decisions.csv",
                            "--labels", workspace / "labels.csv", "--concept-labels", workspace / "concepts.csv",
                            "--irrelevant", "artifact:ink_marking", "--out", workspace / "audit", "--quiet"], capsys)
    assert code == 0, stderr
    data = json.loads((workspace / "audit" / "audit.json").read_text())
    titles = [s["title"] for s in data["sections"]]
    assert "Concept annotation quality" in titles
    text = (workspace / "audit" / "audit.html").read_text()
    assert "ink marking" in text


def test_audit_unknown_concept_is_one_line_error(workspace, capsys):
    code, _, stderr = _run(["audit", workspace / "scores.parquet", "--decisions", workspace / "decisions.csv",
                            "--irrelevant", "no:such_concept", "--out", workspace / "audit2"], capsys)
    assert code == 1 and "no:such_concept" in stderr and len(stderr.strip().splitlines()) == 1


def test_vocab_commands(workspace, capsys):
    code, stdout, _ = _run(["vocab", "list"], capsys)
    assert code == 0 and "dermoscopy" in stdout and "demo" in stdout
    code, stdout, _ = _run(["vocab", "show", "demo"], capsys)
    assert code == 0 and "derm7pt:blue_whitish_veil" in stdout
    target = workspace / "demo.obo"
    code, _, stderr = _run(["vocab", "convert", "demo", target], capsys)
    assert code == 0, stderr
    code, stdout, _ = _run(["vocab", "validate", target], capsys)
    assert code == 0 and "valid" in stdout
    bad = workspace / "bad.yaml"
    bad.write_text("name: bad\nconcepts:\n  - id: x\n    name: ''\n")
    code, _, stderr = _run(["vocab", "validate", bad], capsys)
    assert code == 1 and "bad.yaml" in stderr


def test_demo_command(tmp_path, capsys):
    code, stdout, stderr = _run(["demo", "--out", tmp_path / "demo", "--n", "60", "--n-explain", "1",
                                 "--quiet"], capsys)
    assert code == 0, stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    for name in ("explanation.html", "explanation.json", "audit.html", "audit.json", "scores.parquet"):
        assert (tmp_path / "demo" / name).exists(), name
    assert 0.0 <= summary["headline"]["bottleneck_test_accuracy"] <= 1.0
    assert "bottleneck_test_accuracy" in stdout


def test_explain_defaults_are_converged_and_use_the_bottlenecks_score_space(workspace, capsys):
    files = sorted((workspace / "images").glob("lesion_*.png"))[2:4]
    code, _, stderr = _run(["explain", *files, "--bottleneck", workspace / "model",
                            "--out", workspace / "explain_ig", "--quiet"], capsys)
    assert code == 0, stderr
    data = json.loads((workspace / "explain_ig" / "explanation.json").read_text())
    cards = [s["facts"] for s in data["sections"] if s["title"].endswith("faithfulness card")]
    assert len(cards) == 2
    for card in cards:
        assert card["method"] == "integrated_gradients" and card["integration steps"] >= 32
        assert {"verdict", "baseline", "f(baseline)", "f(x), the explained output"} <= set(card)
    settings = next(s["facts"] for s in data["sections"] if "facts" in s
                    and "scoring calibration" in s["facts"])
    assert settings["scoring calibration"] == "sigmoid"  # from the bottleneck, not the scorer default
    _assert_reasons_worded(data, workspace / "model")


@pytest.mark.parametrize("steps", ["0", "-3", "lots"])
def test_explain_rejects_bad_step_counts(workspace, capsys, steps):
    code = main(["explain", str(workspace / "images"), "--n-steps", steps, "--out", str(workspace / "x")])
    assert code == 2
    assert "--n-steps" in capsys.readouterr().err
