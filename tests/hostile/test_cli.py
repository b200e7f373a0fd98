"""Hostile command lines: bad arguments are usage errors (exit 2), bad files one-line errors
naming the culprit (exit 1), never a traceback or a raw ``[Errno N]``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conceptlens.cli import main
from conceptlens.vocab import ConceptScores
from tests.hostile.conftest import one_line

USAGE = [
    (["explain", "x.png", "--top-k", "-1", "--out", "o"], "--top-k: must be >= 1, got -1"),
    (["explain", "x.png", "--top-k", "0", "--out", "o"], "--top-k: must be >= 1, got 0"),
    (["explain", "x.png", "--n-steps", "two", "--out", "o"], "expected a whole number >= 1"),
    (["score", "x.png", "--batch-size", "0", "--out", "o.csv"], "--batch-size: must be >= 1"),
    (["score", "x.png", "--alpha", "2", "--out", "o.csv"], "--alpha: must lie in [0, 1]"),
    (["score", "x.png", "--frame", "-1", "--out", "o.csv"], "--frame: must be >= 0, got -1"),
    (["score", "x.png", "--template", "no slot", "--out", "o.csv"],
     "must contain {concept} exactly once"),
    (["fit", "s.csv", "--labels", "l.csv", "--max-concepts", "-3", "--out", "m"],
     "--max-concepts: must be >= 1"),
    (["demo", "--n", "0", "--out", "o"], "--n: must be >= 1"),
]


@pytest.mark.parametrize(("argv", "expected"), USAGE, ids=[" ".join(a[:4]) for a, _ in USAGE])
def test_bad_arguments_are_usage_errors(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


def _error(argv, capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "[Errno" not in err
    return one_line(err)


@pytest.fixture
def scored(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"benign/robot_{i}.png" for i in range(20)]
    X = rng.normal(size=(20, 3))
    ConceptScores(pd.DataFrame(X, index=ids, columns=["c1", "c2", "c3"])).save(tmp_path / "s.csv")
    y = np.where(X[:, 0] > 0, "mel", "nev")
    return tmp_path, ids, y


def test_fit_matches_labels_by_file_name(scored, capsys):
    tmp_path, ids, y = scored
    names = [i.rsplit("/", 1)[1] for i in ids]
    pd.DataFrame({"image": names[::-1], "label": y[::-1]}).to_csv(tmp_path / "l.csv", index=False)
    assert main(["fit", str(tmp_path / "s.csv"), "--labels", str(tmp_path / "l.csv"),
                 "--out", str(tmp_path / "m"), "--quiet"]) == 0
    assert "training accuracy" in capsys.readouterr().out


def test_fit_with_duplicate_label_rows_names_file_and_line(scored, capsys):
    tmp_path, ids, y = scored
    frame = pd.DataFrame({"image": ids + [ids[3]], "label": list(y) + ["mel"]})
    frame.to_csv(tmp_path / "l.csv", index=False)
    message = _error(["fit", str(tmp_path / "s.csv"), "--labels", str(tmp_path / "l.csv"),
                      "--out", str(tmp_path / "m")], capsys)
    assert "l.csv, line 22: image 'benign/robot_3.png' appears twice (also line 5)" in message


def test_fit_with_an_empty_label_names_the_image(scored, capsys):
    tmp_path, ids, y = scored
    labels = list(y)
    labels[7] = ""
    pd.DataFrame({"image": ids, "label": labels}).to_csv(tmp_path / "l.csv", index=False)
    message = _error(["fit", str(tmp_path / "s.csv"), "--labels", str(tmp_path / "l.csv"),
                      "--out", str(tmp_path / "m")], capsys)
    assert "line 9: empty 'label' for image 'benign/robot_7.png'" in message


def test_fit_out_over_an_existing_file_is_named(scored, capsys):
    tmp_path, ids, y = scored
    pd.DataFrame({"image": ids, "label": y}).to_csv(tmp_path / "l.csv", index=False)
    (tmp_path / "taken").write_text("a file")
    message = _error(["fit", str(tmp_path / "s.csv"), "--labels", str(tmp_path / "l.csv"),
                      "--out", str(tmp_path / "taken")], capsys)
    assert "taken" in message


def test_audit_out_over_an_existing_file_says_so_in_words(scored, capsys):
    tmp_path, ids, y = scored
    pd.DataFrame({"image": ids, "decision": y}).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "report").write_text("a file")
    message = _error(["audit", str(tmp_path / "s.csv"), "--decisions", str(tmp_path / "d.csv"),
                      "--out", str(tmp_path / "report")], capsys)
    assert "report" in message and "a file of that name exists where a folder is needed" in message


def test_scores_path_that_is_a_folder_is_named(tmp_path, capsys):
    (tmp_path / "s.csv").mkdir()
    message = _error(["fit", str(tmp_path / "s.csv"), "--labels", "l.csv",
                      "--out", str(tmp_path / "m")], capsys)
    assert "s.csv" in message and "is a folder, not a file" in message


def test_vocab_validate_refuses_an_empty_vocabulary_like_score_does(tmp_path, capsys):
    (tmp_path / "v.yaml").write_text("name: empty\nconcepts: []\n")
    message = _error(["vocab", "validate", str(tmp_path / "v.yaml")], capsys)
    assert "v.yaml: holds no concepts" in message


def test_vocab_validate_billion_laughs_fails_fast(tmp_path, capsys):
    import time

    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = ("name: bomb\nconcepts:\n  - id: t:a\n    name: a\n    attributes:\n"
            + "\n".join("      " + line for line in lines) + "\n")
    (tmp_path / "bomb.yaml").write_text(text)
    start = time.perf_counter()
    message = _error(["vocab", "validate", str(tmp_path / "bomb.yaml")], capsys)
    assert time.perf_counter() - start < 0.5
    assert "bomb.yaml, line" in message and "billion laughs" in message


def test_vocab_validate_notes_an_unknown_modality(tmp_path, capsys):
    (tmp_path / "v.yaml").write_text("name: u\nmodality: sonar\nconcepts:\n  - {id: t:a, name: a}\n")
    assert main(["vocab", "validate", str(tmp_path / "v.yaml")]) == 0
    assert "no prompt templates for modality 'sonar'" in capsys.readouterr().out


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_imgs")
    frames = [Image.new("RGB", (64, 64), (40 * i, 90, 120)) for i in range(3)]
    frames[0].save(folder / "stack.tif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (64, 64), (150, 90, 60)).save(folder / "flat.png")
    (folder / "readme.txt").write_text("not an image")
    return folder


def test_score_unknown_modality_needs_a_template(demo_images, tmp_path, capsys):
    (tmp_path / "v.yaml").write_text("name: u\nmodality: sonar\nconcepts:\n  - {id: t:a, name: a}\n")
    message = _error(["score", str(demo_images), "--vocab", str(tmp_path / "v.yaml"),
                      "--out", str(tmp_path / "s.csv"), "--quiet"], capsys)
    assert "modality 'sonar'" in message and "--template" in message


def test_score_frame_and_template_and_reported_skips(demo_images, tmp_path, capsys):
    (tmp_path / "v.yaml").write_text("name: u\nmodality: sonar\nconcepts:\n  - {id: t:a, name: a}\n")
    out = tmp_path / "s.csv"
    assert main(["score", str(demo_images), "--vocab", str(tmp_path / "v.yaml"), "--frame", "2",
                 "--template", "a sonar image of {concept}.", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    skip_lines = [line for line in captured.err.splitlines()
                  if line.startswith("conceptlens: skipped readme.txt:")]
    assert len(skip_lines) == 1 and "not an image file (.txt" in skip_lines[0]
    assert ConceptScores.load(out).image_ids == ["flat.png", "stack.tif"]
