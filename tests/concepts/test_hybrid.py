"""HybridBottleneck (PCBM-h): bottleneck + residual on the embedding, exact decomposition."""

import warnings

import numpy as np
import pandas as pd
import pytest

from conceptlens.concepts import (
    EmbeddingsError,
    HybridBottleneck,
    SparseLinearBottleneck,
    load_bottleneck,
)
from conceptlens.errors import ConceptlensError

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _world(seed: int = 0, n: int = 600, n_classes: int = 2):
    """Concept scores see part of the signal; the embedding holds what they miss."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    E = rng.normal(size=(n, 16))
    if n_classes == 2:
        y = (1.5 * X[:, 0] - X[:, 1] + 1.5 * E[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    else:
        logits = np.column_stack([2 * X[:, 0], 2 * X[:, 1], 2 * E[:, 0]])
        y = np.array(["a", "b", "c"])[np.argmax(logits + 0.5 * rng.normal(size=logits.shape), 1)]
    ids = [f"img{i}" for i in range(n)]
    return (pd.DataFrame(X, columns=[f"C{j}" for j in range(6)], index=ids), y,
            pd.DataFrame(E, index=ids))


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("input_transform", ["identity", "logit"])
def test_parts_sum_to_decision(n_classes, input_transform):
    X, y, E = _world(n_classes=n_classes)
    if input_transform == "logit":
        X = 1 / (1 + np.exp(-X))
    model = HybridBottleneck(input_transform=input_transform).fit(X, y, embeddings=E)
    parts = model.decompose(X, embeddings=E)
    d = model.decision_function(X, embeddings=E)
    d = d[:, None] if d.ndim == 1 else d
    rebuilt = parts.contributions.values.sum(-1) + parts.residual + parts.intercept[None, :]
    np.testing.assert_allclose(rebuilt, d, rtol=0, atol=1e-10)
    np.testing.assert_allclose(parts.decision, d, rtol=0, atol=1e-12)
    assert np.all((parts.residual_share >= 0) & (parts.residual_share <= 1))
    # the concept part is the frozen bottleneck's own decision (plus the residual's bias)
    inner = model.bottleneck_.decision_function(model.transform_scores(X))
    inner = inner[:, None] if inner.ndim == 1 else inner
    concept = model.concept_decision_function(X)
    concept = concept[:, None] if concept.ndim == 1 else concept
    np.testing.assert_allclose(concept - inner, np.broadcast_to(
        model.intercept_ - model.bottleneck_.intercept_, inner.shape), atol=1e-10)


def test_residual_recovers_what_concepts_miss():
    X, y, E = _world(seed=1)
    Xt, yt, Et = _world(seed=2)
    sparse = SparseLinearBottleneck().fit(X, y)
    hybrid = HybridBottleneck().fit(X, y, embeddings=E)
    assert hybrid.score(Xt, yt, embeddings=Et) >= sparse.score(Xt, yt) + 0.05
    share = hybrid.residual_share(Xt, embeddings=Et)
    assert share.shape == (len(Xt), 1) and 0.1 < float(share.mean().iloc[0]) < 0.9
    # the residual leans on the embedding dimension that carries the missing signal
    assert np.argmax(np.abs(hybrid.residual_coef_[0])) == 0


def test_no_residual_signal_keeps_the_bottleneck():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(500, 5))
    E = rng.normal(size=(500, 20))  # pure noise
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    model = HybridBottleneck().fit(X, y, embeddings=E)
    assert float(np.median(model.decompose(X, E).residual_share)) < 0.2
    assert model.score(X, y, embeddings=E) >= model.concept_accuracy_ - 0.02


def test_embeddings_contract():
    X, y, E = _world(n=200)
    model = HybridBottleneck(residual_C=1.0).fit(X, y, embeddings=E)
    with pytest.raises(EmbeddingsError, match="pass embeddings"):
        model.predict(X)
    with pytest.raises(EmbeddingsError, match="dimensions"):
        model.predict(X, embeddings=E.iloc[:, :5])
    with pytest.raises(EmbeddingsError, match="lack"):
        model.predict(X, embeddings=E.rename(index=lambda i: i + "x").iloc[:150])
    assert issubclass(EmbeddingsError, ConceptlensError)
    # a DataFrame of embeddings is aligned to the scores' image ids
    shuffled = E.sample(frac=1.0, random_state=0)
    np.testing.assert_allclose(model.decision_function(X, embeddings=shuffled),
                               model.decision_function(X, embeddings=E))
    plain = HybridBottleneck(residual_C=1.0).fit(X, y)  # residual on the scores
    with pytest.raises(EmbeddingsError, match="without embeddings"):
        plain.predict(X, embeddings=E)


def test_interventions_keep_the_residual():
    X, y, E = _world(n=300)
    model = HybridBottleneck(residual_C=1.0).fit(X, y, embeddings=E)
    result = model.intervene(X, {"C0": 3.0}, embeddings=E)
    np.testing.assert_allclose(result.decision_before.to_numpy()[:, 0],
                               model.decision_function(X, embeddings=E))
    Xn = X.copy()
    Xn["C0"] = 3.0
    np.testing.assert_allclose(result.decision_after.to_numpy()[:, 0],
                               model.decision_function(Xn, embeddings=E))


def test_save_load_round_trip(tmp_path):
    X, y, E = _world(n=300, n_classes=3)
    model = HybridBottleneck(SparseLinearBottleneck(max_concepts=2, cv=3)).fit(X, y, embeddings=E)
    model.save(tmp_path / "h")
    loaded = load_bottleneck(tmp_path / "h")
    assert isinstance(loaded, HybridBottleneck)
    assert loaded.bottleneck.get_params() == model.bottleneck.get_params()
    np.testing.assert_array_equal(loaded.decision_function(X, embeddings=E),
                                  model.decision_function(X, embeddings=E))
    np.testing.assert_array_equal(loaded.decompose(X, E).residual_share,
                                  model.decompose(X, E).residual_share)
    assert loaded.residual_C_ == model.residual_C_ and loaded.uses_embeddings_
    raw = (tmp_path / "h" / "bottleneck.json").read_text()
    assert "__estimator__" in raw


def test_plot_and_frame():
    import matplotlib

    matplotlib.use("Agg")
    X, y, E = _world(n=200)
    parts = HybridBottleneck(residual_C=1.0).fit(X, y, embeddings=E).decompose(X.iloc[:4], E)
    ax = parts.plot(sample=1)
    assert "residual share" in ax.get_title()
    frame = parts.to_frame()
    np.testing.assert_allclose(frame["concepts"] + frame["residual"] + frame["intercept"],
                               frame["decision"], atol=1e-10)
    assert "residual share" in repr(parts)


@pytest.mark.slow
def test_demo_data_at_least_as_accurate_as_sparse():
    """On the shipped demo model's scores and embeddings (held-out half)."""
    from conceptlens.demo import generate
    from conceptlens.errors import InputQualityWarning
    from conceptlens.models import load_backbone
    from conceptlens.vocab import ConceptScorer, ConceptVocabulary

    backbone = load_backbone("demo", device="cpu")
    scorer = ConceptScorer(backbone, ConceptVocabulary.builtin("demo"), mode="combined",
                           calibration="sigmoid", progress=False)
    n = 240
    data = generate(n, seed=21, size=backbone.image_size[0], masks=False)
    ids = [f"h{i:03d}" for i in range(n)]
    images = dict(zip(ids, data.images, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputQualityWarning)
        scores, embeddings = scorer.score(images), scorer.embed(images)
    y = np.where(data.diagnoses == 1, "melanoma", "benign")
    half = n // 2
    table = scores.table
    sparse = SparseLinearBottleneck(cv=3, input_transform="logit").fit(table.iloc[:half], y[:half])
    hybrid = HybridBottleneck(SparseLinearBottleneck(cv=3), input_transform="logit").fit(
        table.iloc[:half], y[:half], embeddings=embeddings)
    acc_sparse = sparse.score(table.iloc[half:], y[half:])
    acc_hybrid = hybrid.score(table.iloc[half:], y[half:], embeddings=embeddings)
    assert acc_hybrid >= acc_sparse - 1e-12
    # and the ConceptScores path records the score space like every bottleneck
    fitted = HybridBottleneck(residual_C=0.01).fit(scores, y, embeddings=embeddings)
    assert fitted.score_space_ is not None


@pytest.mark.slow
def test_class_target_chain_includes_the_residual():
    """ClassTarget through scorer + backbone equals the hybrid's decision (embedding residual)."""
    import torch

    from conceptlens.demo import generate
    from conceptlens.errors import InputQualityWarning
    from conceptlens.explain import ClassTarget
    from conceptlens.models import load_backbone
    from conceptlens.vocab import ConceptScorer, ConceptVocabulary

    backbone = load_backbone("demo", device="cpu")
    scorer = ConceptScorer(backbone, ConceptVocabulary.builtin("demo"), mode="combined",
                           calibration="sigmoid", progress=False)
    data = generate(80, seed=5, size=backbone.image_size[0], masks=False)
    ids = [f"t{i:02d}" for i in range(80)]
    images = dict(zip(ids, data.images, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputQualityWarning)
        scores, embeddings = scorer.score(images), scorer.embed(images)
    y = np.where(data.diagnoses == 1, "melanoma", "benign")
    model = HybridBottleneck(SparseLinearBottleneck(cv=None, Cs=3), residual_C=1.0,
                             input_transform="logit").fit(scores, y, embeddings=embeddings)
    assert np.abs(model.residual_coef_).sum() > 0
    expected = model.decision_function(scores, embeddings=embeddings)[:4]
    with torch.no_grad():
        pixels = backbone.preprocess([images[i] for i in ids[:4]]).float()
        pos = ClassTarget("melanoma").build(backbone, scorer, model)(pixels).numpy()
        neg = ClassTarget("benign").build(backbone, scorer, model)(pixels).numpy()
    np.testing.assert_allclose(pos, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(neg, -expected, rtol=1e-4, atol=1e-4)
