"""Hostile tables: score CSVs, labels, decisions, concept labels and manifests. Every bad
table is one line naming the file and the line or id; ids survive exactly."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from conceptlens._io.image_keys import ImageKeyError, read_aligned_column, read_aligned_frame
from conceptlens._io.tables import (
    TableFormatError,
    neutralise_cell,
    read_table,
    restore_cell,
    write_csv,
)
from conceptlens.vocab import ConceptScores
from conceptlens.vocab.sources import iter_image_sources
from tests.hostile.conftest import one_line

FORMULAS = ['=HYPERLINK("http://evil.example";"x")', "+cmd|' /C calc'!A0", "@SUM(1+1)",
            "-2+3", "\t=1+1", "\r=1+1", "'=quoted", "''=twice"]


@pytest.mark.parametrize("cell", FORMULAS)
def test_formula_cells_are_neutralised_and_restored(cell):
    written = neutralise_cell(cell)
    assert written.startswith("'") and restore_cell(written) == cell


@pytest.mark.parametrize("cell", ["-1.5", "+3", "-1e3", "it's", "plain", "", "-inf"])
def test_numbers_and_plain_text_are_left_alone(cell):
    assert neutralise_cell(cell) == cell and restore_cell(cell) == cell


def test_score_csv_keeps_ids_and_neutralises_every_text_cell(tmp_path):
    ids = ["001", "2", "NA", "1e3", *FORMULAS]
    table = pd.DataFrame({"=concept": np.linspace(-1, 1, len(ids)), "c2": 0.5}, index=ids)
    path = ConceptScores(table).save(tmp_path / "s.csv")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    for row in rows:
        for cell in row:
            assert not cell or cell[0] not in "=+@\t\r" and not (
                cell[0] == "-" and not _is_number(cell)), cell
    back = ConceptScores.load(path)
    assert back.image_ids == ids and list(back.table.columns) == ["=concept", "c2"]
    np.testing.assert_array_equal(back.to_numpy(), table.to_numpy())


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


BAD_SCORE_CSVS = [
    ("dup.csv", "image,c\na,0.1\na,0.2\n", "line 3: image 'a' appears twice (also line 2)"),
    ("text.csv", "image,c\na,high\n", "line 2, column 'c': 'high' is not a number"),
    ("ragged.csv", "image,c\na,0.1,0.2\n", "line 2: 3 cells for 2 columns"),
    ("empty.csv", "", "is empty"),
    ("dup_header.csv", "image,c,c\na,1,2\n", "column 'c' appears twice"),
    ("latin1.csv", "image,c\ncaf\xe9,1\n".encode("latin-1"), "not UTF-8"),
]


@pytest.mark.parametrize(("name", "content", "expected"), BAD_SCORE_CSVS,
                         ids=[c[0] for c in BAD_SCORE_CSVS])
def test_bad_score_csv_names_file_and_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TableFormatError) as info:
        ConceptScores.load(path)
    message = one_line(str(info.value))
    assert name in message and expected in message


SCORED = ["benign/robot_1.png", "benign/robot_2.png", "malignant/robot_3.png"]


def _labels(tmp_path, rows, name="labels.csv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("keys", [
    SCORED,                                                  # exact ids
    ["robot_1.png", "robot_2.png", "robot_3.png"],            # file names
    ["/data/set/benign/robot_1.png", "/data/set/benign/robot_2.png",
     "/data/set/malignant/robot_3.png"],                       # absolute paths
    [".\\benign\\robot_1.png", "./benign/robot_2.png", "malignant//robot_3.png"],  # spellings
], ids=["ids", "file-names", "absolute", "windows-spelling"])
def test_labels_match_by_id_relative_path_or_file_name(tmp_path, keys):
    path = _labels(tmp_path, list(zip(keys[::-1], ["1", "0", "0"], strict=True)))
    values = read_aligned_column(path, "label", SCORED, what="labels")
    assert values.tolist() == [0, 0, 1] and values.dtype == np.int64


BAD_LABELS = [
    ("duplicate", [("robot_1.png", 0), ("robot_2.png", 1), ("robot_3.png", 1), ("robot_1.png", 1)],
     "line 5: image 'robot_1.png' appears twice (also line 2)"),
    ("empty-id", [("robot_1.png", 0), ("", 1), ("robot_3.png", 1)], "line 3: empty image key"),
    ("empty-label", [("robot_1.png", 0), ("robot_2.png", ""), ("robot_3.png", 1)],
     "line 3: empty 'label' for image 'benign/robot_2.png'"),
    ("missing", [("robot_1.png", 0), ("robot_2.png", 1)],
     "1 scored image(s) have no row, e.g. ['malignant/robot_3.png']"),
]


@pytest.mark.parametrize(("case", "rows", "expected"), BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
def test_bad_labels_name_file_line_and_id(tmp_path, case, rows, expected):
    path = _labels(tmp_path, rows)
    with pytest.raises(ImageKeyError) as info:
        read_aligned_column(path, "label", SCORED, what="labels")
    message = one_line(str(info.value))
    assert str(path) in message and expected in message


def test_a_file_name_shared_by_two_images_is_an_error_not_a_guess(tmp_path):
    scored = ["a/x.png", "b/x.png"]
    path = _labels(tmp_path, [("x.png", 1), ("other.png", 0)])
    with pytest.raises(ImageKeyError, match=r"line 2: image 'x.png' matches several scored "
                                            r"images \('a/x.png', 'b/x.png'\)"):
        read_aligned_column(path, "label", scored, what="labels")


def test_two_rows_matching_one_image_is_an_error(tmp_path):
    path = _labels(tmp_path, [("a/x.png", 1), ("b/x.png", 0)])
    with pytest.raises(ImageKeyError, match=r"scored image 'x.png' matches several rows: line 2"):
        read_aligned_column(path, "label", ["x.png"], what="labels")


def test_label_ids_like_001_na_1e3_stay_distinct_text(tmp_path):
    path = _labels(tmp_path, [("001", "NA"), ("1", "1e3"), ("NA", "001")])
    values = read_aligned_column(path, "label", ["001", "1", "NA"], what="labels")
    assert values.tolist() == ["NA", "1e3", "001"]


def test_no_label_column_names_the_columns(tmp_path):
    path = _labels(tmp_path, [("robot_1.png", 0)])
    with pytest.raises(ImageKeyError, match=r"no column 'diagnosis' \(columns: image, label\)"):
        read_aligned_column(path, "diagnosis", ["robot_1.png"], what="labels")


def test_concept_labels_are_aligned_and_non_numbers_named(tmp_path):
    path = tmp_path / "concepts.csv"
    path.write_text("image,c1,c2\nrobot_1.png,1,\nrobot_3.png,0,1\n")
    frame = read_aligned_frame(path, SCORED, what="concept labels")
    assert list(frame.index) == ["benign/robot_1.png", "malignant/robot_3.png"]
    assert np.isnan(frame.loc["benign/robot_1.png", "c2"])
    path.write_text("image,c1\nrobot_1.png,yes\n")
    with pytest.raises(TableFormatError, match=r"line 2, column 'c1': 'yes' is not a number"):
        read_aligned_frame(path, SCORED, what="concept labels")


def test_labels_from_parquet_with_integer_ids_match_text_ids(tmp_path):
    path = tmp_path / "labels.parquet"
    pd.DataFrame({"image": [1, 2], "label": ["a", "b"]}).to_parquet(path)
    assert read_aligned_column(path, "label", ["2", "1"], what="labels").tolist() == ["b", "a"]


def test_unknown_table_suffix_is_named(tmp_path):
    with pytest.raises(TableFormatError, match=r"labels file '.*labels\.xlsx' must be \.csv"):
        read_table(tmp_path / "labels.xlsx", what="labels")


def test_manifest_with_empty_and_formula_paths(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    manifest = tmp_path / "m.csv"
    write_csv(pd.DataFrame({"path": ["ok.png", "", "=evil.png"], "site": ["a", "b", "c"]}),
              manifest, index=False)
    sources = list(iter_image_sources(manifest))
    assert [s.image_id for s in sources] == ["ok.png", "m.csv:line3", "=evil.png"]
    assert sources[0].load().original_size == (8, 8)
    with pytest.raises(ValueError, match=r"m\.csv, line 3: empty path"):
        sources[1].load()
    with pytest.raises(FileNotFoundError, match=r"=evil\.png"):
        sources[2].load()


def test_write_csv_into_a_folder_path_names_it(tmp_path):
    from conceptlens._io.files import FileAccessError

    (tmp_path / "out.csv").mkdir()
    with pytest.raises(FileAccessError, match=r"cannot write score file '.*out\.csv'"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "out.csv", what="score file")
