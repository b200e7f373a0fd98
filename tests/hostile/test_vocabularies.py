"""Hostile vocabulary files (YAML / JSON / CSV / OBO): each fails fast with one line naming
the file (and line) or the concept, or round-trips exactly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conceptlens._io.files import FileAccessError
from conceptlens.vocab import ConceptVocabulary
from conceptlens.vocab.concept import Concept, VocabularyError
from tests.hostile.conftest import one_line


def _laughs(field: str) -> str:
    """A 1 KB "billion laughs" vocabulary: nine levels of nine aliases under ``field``."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    head = ("name: bomb\nconcepts:\n  - id: t:a\n    name: a\n    attributes:\n"
            + "\n".join("      " + line for line in lines) + "\n")
    return head if field == "attributes" else head + "    synonyms: *l8\n"


# (file name, content, expected message fragment(s)); every one must raise VocabularyError
BAD_FILES = [
    ("laughs_attributes.yaml", _laughs("attributes"), ["laughs_attributes.yaml", "billion laughs"]),
    ("laughs_synonyms.yaml", _laughs("synonyms"), ["laughs_synonyms.yaml", "billion laughs"]),
    ("recursive.yaml", "name: r\nconcepts:\n  - &c\n    id: t:a\n    name: a\n    attributes:\n"
     "      self: *c\n", ["recursive.yaml", "recursive YAML"]),
    ("deep.yaml", "name: d\nconcepts:\n  - id: t:a\n    name: a\n    attributes:\n      x: "
     + "[" * 300 + "]" * 300 + "\n", ["deep.yaml", "deeper than"]),
    ("python_tag.yaml", "name: p\nconcepts:\n  - id: t:a\n    name: !!python/object/apply:os.system"
     " ['echo pwned']\n", ["python_tag.yaml", "line 4", "could not determine a constructor"]),
    ("two_docs.yaml", "name: a\nconcepts: []\n---\nname: b\n", ["two_docs.yaml", "another document"]),
    ("tab_indent.yaml", "name: t\nconcepts:\n\t- id: t:a\n", ["tab_indent.yaml", "invalid YAML"]),
    ("not_a_mapping.yaml", "- just\n- a list\n", ["not_a_mapping.yaml", "expected a mapping"]),
    ("empty.yaml", "", ["empty.yaml", "expected a mapping"]),
    ("no_concepts.yaml", "name: n\nconcepts: []\n", ["no_concepts.yaml", "holds no concepts"]),
    ("latin1.yaml", "name: caf\xe9\n".encode("latin-1"), ["latin1.yaml", "not UTF-8"]),
    ("deep.json", '{"name": "d", "concepts": [{"id": "t:a", "name": "a", "attributes": {"x": '
     + "[" * 100000 + "]" * 100000 + "}}]}", ["deep.json", "nested too deeply"]),
    ("trailing.json", '{"name": "x", "concepts": []', ["trailing.json", "invalid JSON"]),
    ("ragged.csv", "id,name\nt:a,a,extra\n", ["ragged.csv", "row 2", "more cells"]),
    ("bad_attrs.csv", 'id,name,attributes\nt:a,a,"{not json"\n', ["bad_attrs.csv", "row 2", "t:a"]),
    ("unknown_column.csv", "id,name,evil\nt:a,a,x\n", ["unknown_column.csv", "'evil'"]),
    ("garbage.obo", b"\x00\xff\xfe binary \x00", ["garbage.obo", "not UTF-8"]),
    ("empty.obo", "format-version: 1.2\n", ["empty.obo", "holds no concepts"]),
    ("duplicate.json", '{"concepts": [{"id": "t:a", "name": "a"}, {"id": "t:a", "name": "b"}]}',
     ["duplicate.json", "duplicate id", "t:a"]),
]


@pytest.mark.parametrize(("name", "content", "expected"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_vocabulary_file_fails_fast_with_one_named_line(tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(VocabularyError) as info:
        ConceptVocabulary.from_file(path)
    elapsed = time.perf_counter() - start
    message = one_line(str(info.value))
    for fragment in expected:
        assert fragment in message
    assert elapsed < 0.5, f"took {elapsed:.2f} s"


def test_folder_named_like_a_vocabulary_is_named(tmp_path):
    (tmp_path / "vocab.yaml").mkdir()
    with pytest.raises(VocabularyError, match=r"vocab\.yaml: is a folder"):
        ConceptVocabulary.from_file(tmp_path / "vocab.yaml")


def test_oversized_text_is_refused_before_reading_it_all(tmp_path):
    from conceptlens._io.files import FileContentError, read_text_limited

    path = tmp_path / "big.yaml"
    path.write_text("x" * 2000)
    with pytest.raises(FileContentError, match=r"big\.yaml'.*larger than the limit of 1,000"):
        read_text_limited(path, what="vocabulary file", max_bytes=1000)


def test_missing_vocabulary_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        ConceptVocabulary.from_file(tmp_path / "nope.yaml")


def test_python_level_shared_structure_bomb_is_refused_at_once():
    level: list = ["lol"] * 9
    for _ in range(8):
        level = [level] * 9
    start = time.perf_counter()
    with pytest.raises(VocabularyError, match="more than 100,000 values"):
        Concept("t:a", "a", attributes={"x": level})
    assert time.perf_counter() - start < 0.5


def test_self_containing_attributes_are_refused():
    data: dict = {}
    data["self"] = data
    with pytest.raises(VocabularyError, match="contains itself"):
        Concept("t:a", "a", attributes=data)


def test_shared_but_small_attributes_are_kept_and_equal():
    shared = {"points": 2}
    concept = Concept("t:a", "a", attributes={"x": shared, "y": shared})
    assert concept.to_dict()["attributes"] == {"x": {"points": 2}, "y": {"points": 2}}


FORMULA_IDS = ['=HYPERLINK("http://evil.example";"x")', "+cmd|' /C calc'!A0", "@SUM(1+1)",
               "-2+3", "\t=1", "'=already quoted"]


@pytest.mark.parametrize("suffix", [".csv", ".yaml", ".json", ".obo"])
def test_formula_ids_round_trip_and_csv_cells_are_inert(tmp_path, suffix):
    concepts = [Concept(f"{cid}", f"name {i}", synonyms=("=evil()",)) for i, cid in enumerate(FORMULA_IDS)
                if not cid.startswith(("\t",)) or suffix in (".csv", ".json", ".yaml")]
    vocab = ConceptVocabulary(concepts, name="formulas")
    path = vocab.to_file(tmp_path / f"v{suffix}")
    back = ConceptVocabulary.from_file(path)
    assert back.ids == vocab.ids and [c.synonyms for c in back] == [c.synonyms for c in vocab]
    if suffix == ".csv":
        import csv

        rows = list(csv.reader(line for line in Path(path).read_text().splitlines()
                               if not line.startswith("#")))
        for row in rows[1:]:
            assert all(not cell or cell[0] not in "=+-@\t\r" for cell in row), row


def test_access_errors_name_the_file(tmp_path):
    from conceptlens._io.files import file_errors

    with pytest.raises(FileAccessError, match=r"cannot read vocabulary file '.*gone\.yaml': no such"):
        with file_errors(tmp_path / "gone.yaml", "read vocabulary file"):
            open(tmp_path / "gone.yaml")
