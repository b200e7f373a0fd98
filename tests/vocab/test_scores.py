import numpy as np
import pandas as pd
import pytest

from conceptlens.vocab import ConceptScores


def _scores():
    table = pd.DataFrame({"C0001": [0.1, 0.9], "local:x": [0.5, 0.25]}, index=["a.png", "b.png"])
    errors = pd.DataFrame({"image": ["bad.png"], "reason": ["cannot identify image file"]})
    return ConceptScores(table, config={"mode": "combined", "alpha": 0.5}, vocabulary_hash="abc",
                         concept_names={"C0001": "Melanoma <b>"}, errors=errors)


def test_parquet_round_trip_keeps_numbers_and_metadata(tmp_path):
    scores = _scores()
    loaded = ConceptScores.load(scores.save(tmp_path / "s.parquet"))
    pd.testing.assert_frame_equal(loaded.table, scores.table, check_names=False)
    assert loaded.config == {"mode": "combined", "alpha": 0.5}
    assert loaded.vocabulary_hash == "abc"
    assert loaded.errors["image"].tolist() == ["bad.png"]


def test_csv_round_trip_keeps_numbers(tmp_path):
    scores = _scores()
    loaded = ConceptScores.load(scores.save(tmp_path / "s.csv"))
    np.testing.assert_allclose(loaded.to_numpy(), scores.to_numpy())
    assert loaded.concept_ids == ["C0001", "local:x"]


def test_unknown_suffix_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        _scores().save(tmp_path / "s.xlsx")


def test_html_escapes_names():
    out = _scores()._repr_html_()
    assert "<b>" not in out.split("</b></p>", 1)[1]
    assert "Melanoma &lt;b&gt;" in out
