"""`conceptlens score`, `explain` and `demo` print input warnings as plain lines on stderr."""

import json

import pytest
from PIL import Image

from conceptlens.cli import main


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from conceptlens.demo import generate

    folder = tmp_path_factory.mktemp("warn")
    data = generate(3, seed=99, size=64)
    paths = []
    for i, array in enumerate(data.images):
        paths.append(folder / f"lesion_{i}.png")
        Image.fromarray(array).save(paths[-1])
    paths.append(folder / "gray.png")
    Image.fromarray(data.images[0]).convert("L").convert("RGB").save(paths[-1])
    paths.append(folder / "tiny.png")
    Image.fromarray(data.images[1]).resize((8, 8)).save(paths[-1])
    return paths


def _run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_score_prints_one_line_per_warning(images, tmp_path, capsys):
    code, stdout, stderr = _run(["score", *images, "--out", tmp_path / "s.parquet", "--quiet"], capsys)
    assert code == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("conceptlens: warning ")]
    assert any("gray.png: grayscale:" in line for line in lines)
    assert any("tiny.png: too_small:" in line for line in lines)
    assert not any("lesion_" in line and "grayscale" in line for line in lines)
    assert "InputQualitySummary" not in stderr  # the Python warning became the lines above
    assert "with input warnings" in stdout


def test_explain_prints_warning_lines(images, tmp_path, capsys):
    code, _, stderr = _run(["explain", images[0], images[3], "--method", "saliency", "--out", tmp_path,
                            "--quiet"], capsys)
    assert code == 0, stderr
    assert "conceptlens: warning " in stderr and "gray.png: grayscale:" in stderr


def test_demo_shows_the_grayscale_probe(tmp_path, capsys):
    code, _, stderr = _run(["demo", "--out", tmp_path / "demo", "--n", "40", "--n-explain", "1",
                            "--quiet"], capsys)
    assert code == 0, stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    probe = [w for w in summary["input_warnings"] if w["image_id"] == "probe_grayscale.png"]
    assert {w["kind"] for w in probe} >= {"grayscale"}
    assert "conceptlens: warning probe_grayscale.png: grayscale:" in stderr
