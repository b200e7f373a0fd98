"""Input warnings: pixel checks, the embedding-space reference, and how ConceptScores carries them."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conceptlens.errors import InputQualityWarning
from conceptlens.vocab.concept import Concept
from conceptlens.vocab.input_checks import (
    WARNING_COLUMNS,
    InputChecks,
    InputQualitySummary,
    check_image,
    expects_color,
)
from conceptlens.vocab.reference import EmbeddingReference, ReferenceNotFittedError
from conceptlens.vocab.scorer import ConceptScorer
from conceptlens.vocab.scores import ConceptScores
from conceptlens.vocab.vocabulary import ConceptVocabulary
from tests.helpers.fakes import make_image

# ---------------------------------------------------------------------------------------------
# pixel checks


def _kinds(image, size=(64, 64), **kw) -> list[str]:
    return [kind for kind, _ in check_image(image, size, **kw)]


def _colour_image(seed: int, side: int = 64) -> Image.Image:
    """Smooth colourful image with moderate contrast (a lesion-like blob on skin)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    blob = np.exp(-((yy - rng.uniform(0.3, 0.7)) ** 2 + (xx - rng.uniform(0.3, 0.7)) ** 2) / 0.05)
    skin = np.array([200, 150, 120]) + rng.normal(0, 6, (side, side, 3))
    lesion = np.array([90, 50, 30])
    pixels = skin * (1 - blob[..., None]) + lesion * blob[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("seed", range(5))
def test_clean_colour_images_pass_every_pixel_check(seed):
    assert _kinds(_colour_image(seed)) == []


@pytest.mark.parametrize("seed", range(3))
def test_degraded_images_get_the_right_kind(seed):
    clean = _colour_image(seed)
    gray = clean.convert("L").convert("RGB")
    assert _kinds(gray) == ["grayscale"]
    buffer = io.BytesIO()
    gray.save(buffer, "JPEG", quality=10)  # compression noise does not hide the grayscale
    assert "grayscale" in _kinds(Image.open(buffer).convert("RGB"))
    assert _kinds(Image.new("RGB", (64, 64))) == ["constant"]  # all black: constant only
    assert _kinds(Image.new("RGB", (64, 64), (250, 250, 250))) == ["constant"]
    assert _kinds(clean.resize((8, 8))) == ["too_small"]
    dark = Image.fromarray((np.asarray(clean) * 0.08).astype(np.uint8))
    assert "too_dark" in _kinds(dark)
    bright = Image.fromarray((255 - (255 - np.asarray(clean, dtype=float)) * 0.08).astype(np.uint8))
    assert "too_bright" in _kinds(bright)
    flat = np.asarray(clean, dtype=float)
    flat = Image.fromarray((flat.mean() + (flat - flat.mean()) * 0.1).astype(np.uint8))
    assert "low_contrast" in _kinds(flat)


def test_too_small_is_relative_to_the_model_input_and_names_the_grid():
    image = _colour_image(0, side=40)
    assert _kinds(image, size=(64, 64)) == []  # 1.6x upsampling: fine
    found = check_image(image, (384, 384), grid_size=(27, 27))
    assert [k for k, _ in found] == ["too_small"]
    assert "9.6x" in found[0][1] and "27x27 patch grid" in found[0][1]


def test_grayscale_check_follows_the_expected_modality():
    gray = _colour_image(1).convert("L").convert("RGB")
    assert _kinds(gray, expect_color=False) == []
    assert _kinds(gray, checks=InputChecks(expect_color=True), expect_color=False) == ["grayscale"]
    assert expects_color(ConceptVocabulary([Concept("a", "a")], modality="dermoscopy"))
    assert expects_color(ConceptVocabulary([Concept("a", "a")], modality="histopathology"))
    assert not expects_color(ConceptVocabulary([Concept("a", "a")], modality="chest x-ray"))
    assert not expects_color(ConceptVocabulary([Concept("a", "a")], modality="CT"))


# ---------------------------------------------------------------------------------------------
# embedding reference


def _cloud(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = np.zeros(dim)
    centre[0] = 4.0
    return centre + rng.normal(size=(n, dim))


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_reference_false_alarm_rate_near_one_minus_quantile(method):
    """Fresh draws from the reference distribution are flagged at about 1 - quantile.

    Over 5 seeds (400 reference, 2000 test points, dim 8) the rate stays within 0-3 % for
    quantile 0.99.
    """
    rates = []
    for seed in range(5):
        reference = EmbeddingReference(method=method, k=20, quantile=0.99).fit(_cloud(400, 8, seed))
        rates.append(reference.is_outlier(_cloud(2000, 8, seed + 100)).mean())
    assert 0.0 < np.mean(rates) < 0.03
    assert max(rates) < 0.04


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_reference_flags_a_shifted_cloud(method):
    reference = EmbeddingReference(method=method, k=20).fit(_cloud(300, 8, 0))
    shifted = np.roll(_cloud(200, 8, 1), 1, axis=1)  # same cloud, pointing another way
    assert reference.is_outlier(shifted).mean() > 0.9
    assert set(reference.predict(shifted)) <= {-1, 1}
    assert np.all((reference.decision_function(shifted) < 0) == reference.is_outlier(shifted))


def test_mahalanobis_leave_one_out_equals_refitting_without_the_point():
    x = _cloud(60, 5, 3)
    reference = EmbeddingReference().fit(x)
    normed = reference.embeddings_
    n, dim = normed.shape
    s = reference.shrinkage_
    centred = normed - normed.mean(0)
    target = np.trace(centred.T @ centred) / (n * dim)  # shrinkage and target held fixed
    brute = []
    for i in range(n):
        rest = np.delete(normed, i, axis=0)
        mean = rest.mean(0)
        cov = (1 - s) * (rest - mean).T @ (rest - mean) / (n - 1) + s * target * np.eye(dim)
        d = normed[i] - mean
        brute.append(d @ np.linalg.solve(cov, d))
    np.testing.assert_allclose(reference.reference_scores_, brute, rtol=1e-9)


def test_knn_clips_k_for_small_sets_and_validates():
    reference = EmbeddingReference(method="knn", k=50).fit(_cloud(10, 4, 0))
    assert reference.k_ == 9
    with pytest.raises(ReferenceNotFittedError):
        EmbeddingReference().score(np.ones((1, 4)))
    with pytest.raises(ValueError, match="method"):
        EmbeddingReference(method="lof").fit(_cloud(10, 4, 0))
    with pytest.raises(ValueError, match="dimension"):
        reference.score(np.ones((2, 5)))
    with pytest.raises(ValueError, match="at least 3"):
        EmbeddingReference().fit(np.ones((2, 4)))
    assert reference.set_params(k=3).get_params()["k"] == 3


def test_reference_round_trips_through_npz_without_pickle(tmp_path):
    reference = EmbeddingReference(quantile=0.95).fit(_cloud(100, 6, 0))
    path = reference.save(tmp_path / "ref.npz", metadata={"weights_hash": "abc"})
    with np.load(path, allow_pickle=False) as data:
        assert data["embeddings"].dtype == np.float16
    loaded = EmbeddingReference.load(path)
    assert loaded.quantile == 0.95 and loaded.metadata_["weights_hash"] == "abc"
    probe = _cloud(20, 6, 1)
    np.testing.assert_allclose(loaded.score(probe), reference.score(probe), rtol=0.05)
    assert abs(loaded.threshold_ - reference.threshold_) / reference.threshold_ < 0.05


# ---------------------------------------------------------------------------------------------
# scorer and ConceptScores


def test_scorer_reports_warnings_and_one_python_warning(backbone, vocabulary):
    images = {
        "ok.png": make_image(1, size=(20, 20)),
        "black.png": Image.new("RGB", (20, 20)),
        "gray.png": make_image(2, size=(20, 20)).convert("L").convert("RGB"),
        "tiny.png": make_image(3, size=(4, 4)),
    }
    scorer = ConceptScorer(backbone, vocabulary, progress=False)
    assert scorer.reference is None  # the fake model ships no reference
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = scorer.score(images)
    summaries = [w for w in caught if issubclass(w.category, InputQualityWarning)]
    assert len(summaries) == 1
    assert "3 of 4 image(s)" in str(summaries[0].message)
    assert isinstance(summaries[0].message, InputQualitySummary)
    assert list(summaries[0].message.warnings.columns) == list(WARNING_COLUMNS)
    assert list(scores.warnings.columns) == list(WARNING_COLUMNS)
    assert len(scores) == 4  # flagged images are still scored
    assert scores.warnings_for("ok.png") == []
    assert [w["kind"] for w in scores.warnings_for("black.png")] == ["constant"]
    assert [w["kind"] for w in scores.warnings_for("gray.png")] == ["grayscale"]
    assert [w["kind"] for w in scores.warnings_for("tiny.png")] == ["too_small"]
    assert scores.flagged_ids == ["black.png", "gray.png", "tiny.png"]


def test_clean_scoring_emits_no_warning(backbone, vocabulary, images):
    scorer = ConceptScorer(backbone, vocabulary, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputQualityWarning)
        scores = scorer.score(images)
    assert scores.warnings.empty and list(scores.warnings.columns) == list(WARNING_COLUMNS)


def test_set_reference_adds_out_of_distribution_warnings(backbone, vocabulary):
    rng = np.random.default_rng(0)
    base = rng.integers(90, 160, size=(18, 18, 3))
    reference = [Image.fromarray(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))
                 for _ in range(40)]
    scorer = ConceptScorer(backbone, vocabulary, progress=False, input_checks=None)
    assert scorer.set_reference(reference) is scorer
    assert scorer.reference.is_fitted and len(scorer.reference.embeddings_) == 40
    odd = Image.fromarray(rng.integers(0, 256, size=(18, 18, 3)).astype(np.uint8))
    with pytest.warns(InputQualityWarning, match="out_of_distribution: 1"):
        scores = scorer.score({"odd.png": odd})
    assert [w["kind"] for w in scores.warnings_for("odd.png")] == ["out_of_distribution"]
    scorer.set_reference(None)
    assert scorer.reference is None
    with pytest.raises(ValueError, match="not fitted"):
        ConceptScorer(backbone, vocabulary, reference=EmbeddingReference())
    with pytest.raises(ValueError, match="reference must be"):
        ConceptScorer(backbone, vocabulary, reference="mine")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_warnings_survive_save_and_load(tmp_path, suffix):
    warnings_frame = pd.DataFrame({"image_id": ["001", "b"], "kind": ["grayscale", "constant"],
                                   "message": ["gray, really", "flat"]})
    scores = ConceptScores(pd.DataFrame({"C1": [0.1, 0.2]}, index=["001", "b"]), warnings=warnings_frame)
    loaded = ConceptScores.load(scores.save(tmp_path / f"s{suffix}"))
    pd.testing.assert_frame_equal(loaded.warnings, scores.warnings)
    assert loaded.warnings_for("001") == [{"kind": "grayscale", "message": "gray, really"}]
    # saving again without warnings leaves no stale warnings behind
    clean = ConceptScores(scores.table)
    assert ConceptScores.load(clean.save(tmp_path / f"s{suffix}")).warnings.empty


def test_warnings_show_in_repr_and_html():
    frame = pd.DataFrame({"image_id": ["a"], "kind": ["constant"], "message": ["<flat>"]})
    scores = ConceptScores(pd.DataFrame({"C1": [0.1, 0.2]}, index=["a", "b"]), warnings=frame)
    assert "1 warnings on 1 images" in repr(scores)
    page = scores._repr_html_()
    assert "Input warnings" in page and "&lt;flat&gt;" in page and "<flat>" not in page
    assert "Input warnings" not in ConceptScores(scores.table)._repr_html_()
    with pytest.raises(ValueError, match="missing"):
        ConceptScores(scores.table, warnings=pd.DataFrame({"image_id": ["a"]}))


# ---------------------------------------------------------------------------------------------
# the demo model and its shipped reference


@pytest.fixture(scope="module")
def demo_scorer():
    from conceptlens.models import load_backbone

    backbone = load_backbone("demo", device="cpu")
    return ConceptScorer(backbone, ConceptVocabulary.builtin("demo"), progress=False)


@pytest.mark.parametrize("seed", [11, 12])
def test_demo_reference_rarely_flags_clean_images_and_always_degraded_ones(demo_scorer, seed):
    """Measured over 5 seeds x 220 clean images: 13 / 1100 flagged (0-2.3 % per seed, all
    out_of_distribution); grayscale, all-black, constant and 8x8 copies: 100 % every seed."""
    from conceptlens.demo import generate

    assert demo_scorer.reference is not None and demo_scorer.reference.method == "mahalanobis"
    clean = generate(150, seed=seed, size=64, masks=False).images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputQualityWarning)
        scores = demo_scorer.score({f"c{i}": a for i, a in enumerate(clean)})
        assert len(scores.flagged_ids) / len(scores) <= 0.04
        assert set(scores.warnings["kind"]) <= {"out_of_distribution"}
        degraded = {}
        for i, array in enumerate(clean[:20]):
            image = Image.fromarray(array)
            degraded[f"gray{i}"] = image.convert("L").convert("RGB")
            degraded[f"tiny{i}"] = image.resize((8, 8))
        degraded["black"] = Image.new("RGB", (64, 64))
        flagged = demo_scorer.score(degraded)
    assert flagged.flagged_ids == flagged.image_ids
    kinds = flagged.warnings.groupby("image_id")["kind"].apply(set)
    assert all("grayscale" in kinds[f"gray{i}"] for i in range(20))
    assert all("too_small" in kinds[f"tiny{i}"] for i in range(20))
    assert {"constant", "out_of_distribution"} <= kinds["black"]
    # the embedding check alone also sees the grayscale copies (99-100 % in the measurements)
    ood = flagged.warnings[flagged.warnings["kind"] == "out_of_distribution"]["image_id"]
    assert sum(i.startswith("gray") for i in ood) >= 18
