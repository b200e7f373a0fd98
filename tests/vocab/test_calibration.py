"""Calibrated concept scores: ECE falls on held-out demo images; the scorer applies it; JSON."""

from __future__ import annotations

import json
import warnings

import matplotlib
import numpy as np
import pytest
import torch

from conceptlens.demo import generate
from conceptlens.models import load_backbone
from conceptlens.vocab import ConceptScorer, ConceptVocabulary
from conceptlens.vocab.calibration import (
    CalibrationError,
    ConceptCalibrator,
    calibration_report,
    expected_calibration_error,
)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def scorer():
    return ConceptScorer(load_backbone("demo"), ConceptVocabulary.builtin("demo"), progress=False)


def _score(scorer, data, prefix):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scorer.score({f"{prefix}{i}": im for i, im in enumerate(data.images)})


def test_ece_formula():
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == 0.0
    # all at 0.8 with 50 % positives: |0.5 - 0.8| = 0.3
    assert expected_calibration_error([0.8] * 4, [1, 0, 1, 0]) == pytest.approx(0.3)
    assert expected_calibration_error([1.5, -1.0], [1, 0]) == 0.0  # clipped


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_calibration_lowers_held_out_ece(scorer, seed):
    # Measured (300 + 300 images, seeds 1-3): cosine scores pooled ECE 0.152-0.160 before,
    # 0.002-0.005 after either method (worst concept <= 0.018).
    fit_data, held_out = generate(200, seed=10 + seed), generate(200, seed=20 + seed)
    fit_scores, held_scores = _score(scorer, fit_data, "a"), _score(scorer, held_out, "b")
    for method in ("platt", "isotonic"):
        calibrator = ConceptCalibrator(method).fit(fit_scores, fit_data.concepts)
        report = calibration_report(calibrator, held_scores, held_out.concepts)
        assert report.ece_before > 0.1
        assert report.ece_after < 0.03
        assert (report.table["ece_after"] < report.table["ece_before"]).all()
        assert "ECE before" in report._repr_html_()


def test_scorer_applies_calibrator_and_json_round_trip(scorer, tmp_path):
    data = generate(120, seed=4)
    raw = _score(scorer, data, "x")
    calibrator = ConceptCalibrator("isotonic").fit(raw, data.concepts)
    path = calibrator.save(tmp_path / "cal.json")
    json.loads(path.read_text())  # plain JSON
    loaded = ConceptCalibrator.load(path)
    calibrated = ConceptScorer(scorer.backbone, scorer.vocabulary, progress=False, calibrator=loaded)
    scores = _score(calibrated, data, "x")
    assert scores.config["concept_calibration"] == "isotonic"
    np.testing.assert_allclose(scores.table.to_numpy(), calibrator.transform(raw).table.to_numpy(), atol=1e-9)
    assert scores.table.to_numpy().min() >= 0 and scores.table.to_numpy().max() <= 1
    # score_tensor gives the same numbers and stays differentiable
    pixels = scorer.backbone.preprocess(list(data.images[:3])).requires_grad_(True)
    platt = ConceptScorer(scorer.backbone, scorer.vocabulary, progress=False,
                          calibrator=ConceptCalibrator("platt").fit(raw, data.concepts))
    out = platt.score_tensor(pixels)
    out[:, 1].sum().backward()
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0
    np.testing.assert_allclose(out.detach().numpy(), _score(platt, data, "x").table.to_numpy()[:3], atol=1e-5)


def test_errors_and_plot(scorer):
    data = generate(40, seed=5)
    raw = _score(scorer, data, "e")
    labels = data.concepts.copy()
    labels[:, 0] = 0
    with pytest.raises(CalibrationError, match="one class"):
        ConceptCalibrator().fit(raw, labels)
    with pytest.raises(CalibrationError, match="not fitted"):
        ConceptCalibrator().transform(raw)
    calibrator = ConceptCalibrator().fit(raw.table.iloc[:, 1:], data.concepts[:, 1:])
    with pytest.raises(CalibrationError, match="not fitted on concept"):
        calibrator.transform(raw)
    report = calibration_report(calibrator, raw.table.iloc[:, 1:], data.concepts[:, 1:])
    ax = report.plot()
    assert len(ax.lines) == 3 and "reliability" in ax.get_title().lower()
