"""Hostile saved bottlenecks: every edited or damaged file is refused with one line naming
it; nothing loads and mispredicts silently."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conceptlens.concepts import SparseLinearBottleneck, load_bottleneck
from conceptlens.concepts.persistence import BottleneckFileError
from conceptlens.vocab import ConceptScores
from tests.hostile.conftest import one_line


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, "melanoma", "nevus")
    scores = ConceptScores(pd.DataFrame(X, columns=["c0", "c1", "c2", "c3"]))
    folder = SparseLinearBottleneck(Cs=3, cv=2).fit(scores, y).save(
        tmp_path_factory.mktemp("m") / "model")
    return folder


def _edit_json(folder, tmp_path, change):
    target = tmp_path / "edited"
    target.mkdir()
    meta = json.loads((folder / "bottleneck.json").read_text())
    change(meta)
    (target / "bottleneck.json").write_text(json.dumps(meta))
    (target / "bottleneck.npz").write_bytes((folder / "bottleneck.npz").read_bytes())
    return target


def _classes(values):
    def change(meta):
        meta["classes"]["__ndarray__"] = values
    return change


def _param(meta):
    meta["params"]["__pairs__"].append(["evil_param", 1])


JSON_EDITS = [
    ("classes-too-many", _classes(["melanoma", "nevus", "bcc"]),
     "3 classes and 4 concepts need coef_ of shape (3, 4)"),
    ("classes-one", _classes(["nevus"]), "must list at least two classes, got 1"),
    ("classes-duplicate", _classes(["nevus", "nevus"]), "lists a class twice"),
    ("unknown-param", _param, "unknown parameter(s) 'evil_param' for SparseLinearBottleneck"),
    ("missing-field", lambda meta: meta.pop("concept_ids"), "missing field(s) concept_ids"),
    ("params-not-mapping", lambda meta: meta.__setitem__("params", [1, 2]),
     "'params' must be a mapping"),
    ("concept-count", lambda meta: meta["concept_ids"].append("c4"), "5 concept ids for 4"),
    ("n-features", lambda meta: meta.__setitem__("n_features_in", 5), "need coef_ of shape (1, 5)"),
]


@pytest.mark.parametrize(("case", "change", "expected"), JSON_EDITS, ids=[c[0] for c in JSON_EDITS])
def test_edited_metadata_is_refused_naming_the_file(saved, tmp_path, case, change, expected):
    folder = _edit_json(saved, tmp_path, change)
    with pytest.raises(BottleneckFileError) as info:
        load_bottleneck(folder)
    message = one_line(str(info.value))
    assert "bottleneck.json" in message and expected in message


def test_non_finite_coefficients_are_refused(saved, tmp_path):
    target = _edit_json(saved, tmp_path, lambda meta: None)
    with np.load(saved / "bottleneck.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["coef_"] = np.full_like(arrays["coef_"], np.nan)
    np.savez(target / "bottleneck.npz", **arrays)
    with pytest.raises(BottleneckFileError, match=r"bottleneck\.npz: coef_ holds non-finite"):
        load_bottleneck(target)


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("bottleneck.npz", b"not a zip file", "is not a readable array file"),
    ("bottleneck.json", b"{ truncated", "is not valid JSON"),
    ("bottleneck.json", b"\xff\xfe\x00garbage", "is not valid JSON"),
], ids=["npz-garbage", "json-truncated", "json-binary"])
def test_damaged_files_are_named(saved, tmp_path, name, content, expected):
    target = _edit_json(saved, tmp_path, lambda meta: None)
    (target / name).write_bytes(content)
    with pytest.raises(BottleneckFileError) as info:
        load_bottleneck(target)
    message = one_line(str(info.value))
    assert name in message and expected in message


def test_pickled_object_array_is_not_unpickled(saved, tmp_path):
    target = _edit_json(saved, tmp_path, lambda meta: None)
    with np.load(saved / "bottleneck.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["coef_"] = np.array([object()], dtype=object)
    np.savez(target / "bottleneck.npz", **arrays)
    with pytest.raises(BottleneckFileError, match="Object arrays cannot be loaded"):
        load_bottleneck(target)


def test_intact_model_still_loads_and_predicts_the_same(saved):
    model = load_bottleneck(saved)
    assert list(model.classes_) == ["melanoma", "nevus"] and model.coef_.shape == (1, 4)
