import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conceptlens.concepts.sparse import SparseLinearBottleneck
from conceptlens.errors import DeprecatedNameWarning
from conceptlens.explain import (
    Attribution,
    ClassTarget,
    ConceptTarget,
    TargetError,
    UnknownClassError,
    UnknownConceptError,
    UnsupportedMethodError,
    attribute,
    concept_maps,
    plot_concept_maps,
)
from conceptlens.explain.metrics import completeness_gap, deletion_curve, randomization_check
from conceptlens.vocab.scorer import ConceptScorer
from tests.explain._planted import vocabulary
from tests.helpers.backbones import bag_of_patches_backbone
from tests.helpers.backbones import tiny_conceptclip_backbone as tiny_backbone

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone()


@pytest.fixture(scope="module")
def vocab():
    return vocabulary()


@pytest.fixture(scope="module")
def scorer(backbone, vocab):
    return ConceptScorer(backbone, vocab, progress=False)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray((rng.random((48, 80, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def bottleneck(scorer, vocab):
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(60, len(vocab))), columns=vocab.ids)
    y = np.array(["mel", "nev", "bcc"])[np.argmax(X.to_numpy()[:, :3] + 0.3 * rng.normal(size=(60, 3)), axis=1)]
    return SparseLinearBottleneck(Cs=[1.0], cv=None).fit(X, y)


def test_ig_completeness_gap_below_one_percent(backbone, scorer, vocab, image):
    a = attribute(scorer, image, ConceptTarget(vocab.ids[1]), tolerance=0.01,
                  internal_batch_size=32, baselines="blur")
    assert a.converged and a.verdict == "converged" and a.n_steps >= 32
    assert isinstance(a, Attribution) and a.method == "integrated_gradients"
    assert a.raw.shape == (3, 64, 64)
    assert a.map.shape == (48, 80)  # original image coordinates (H, W)
    with torch.no_grad():
        f_x = float(a.forward(a.pixel_values)[0])
        f_b = float(a.forward(a.baselines)[0])
    assert f_x == pytest.approx(a.target_value)
    assert completeness_gap(a.raw, f_x, f_b) < 0.01
    assert abs(a.convergence_delta) < 0.01 * abs(f_x - f_b)


def test_class_attribution_is_weighted_sum_of_concept_attributions(backbone, scorer, vocab, image, bottleneck):
    label = "nev"
    cls = attribute(scorer, image, ClassTarget(label), bottleneck=bottleneck, n_steps=16,
                    baselines="black")
    row = list(bottleneck.classes_).index(label)
    weights = bottleneck.coef_[row]
    assert np.count_nonzero(weights) >= 2
    combined = np.zeros_like(cls.raw)
    for cid, w in zip(bottleneck.feature_names_in_, weights, strict=True):
        concept = attribute(scorer, image, ConceptTarget(str(cid)), n_steps=16,
                            baselines="black")
        combined += w * concept.raw
    np.testing.assert_allclose(cls.raw, combined, rtol=1e-3, atol=1e-4 * np.abs(combined).max())
    # and the class target's value is the bottleneck's own decision function on the scores
    scores = scorer.score_tensor(cls.pixel_values).detach().double().numpy()
    frame = pd.DataFrame(scores, columns=vocab.ids)
    assert cls.target_value == pytest.approx(bottleneck.decision_function(frame)[0, row], rel=1e-4)


def test_string_shorthand_resolves_class_then_concept(backbone, scorer, vocab, image, bottleneck):
    a = attribute(scorer, image, "mel", method="saliency", bottleneck=bottleneck)
    assert isinstance(a.target, ClassTarget)
    b = attribute(scorer, image, "blue whitish veil", method="saliency")
    assert b.target == ConceptTarget("blue whitish veil")
    c = attribute(scorer, image, "prompt:a mole", method="saliency")
    assert c.target.describe() == "prompt 'a mole'"


@pytest.mark.parametrize(
    ("method", "kwargs", "raw_shape"),
    [
        ("saliency", {}, (3, 64, 64)),
        ("input_x_gradient", {}, (3, 64, 64)),
        ("gradient_shap", {"nt_samples": 4, "internal_batch_size": 3}, (3, 64, 64)),
        ("smoothgrad", {"nt_samples": 4, "internal_batch_size": 4}, (3, 64, 64)),
        ("occlusion", {"sliding_window": 16, "internal_batch_size": 16}, (3, 64, 64)),
        ("grad_cam", {}, (8, 8)),
        ("concept_map", {}, (8, 8)),
    ],
)
def test_methods_shapes(backbone, scorer, vocab, image, method, kwargs, raw_shape):
    a = attribute(scorer, image, vocab.ids[0], method=method, **kwargs)
    assert a.raw.shape == raw_shape
    assert a.map.shape == (48, 80)
    assert np.isfinite(a.map).all() and np.abs(a.raw).max() > 0


def test_patch_maps_land_on_the_right_part_of_the_original_image(backbone, scorer, vocab, image):
    a = attribute(scorer, image, vocab.ids[0], method="concept_map")
    i, j = np.unravel_index(np.argmax(a.raw), a.raw.shape)
    y, x = np.unravel_index(np.argmax(a.map), a.map.shape)
    # cell (i, j) of the 8 x 8 grid covers rows [i, i+1) * 48/8 and cols [j, j+1) * 80/8
    assert i * 6 - 1 <= y <= (i + 1) * 6 and j * 10 - 1 <= x <= (j + 1) * 10


def test_occluding_the_mapped_region_lowers_the_score_most(image):
    backbone = bag_of_patches_backbone()
    scorer = ConceptScorer(backbone, vocabulary(), mode="local", aggregation="mean", calibration="cosine",
                           progress=False)
    concept = scorer.concept_ids[2]
    a = attribute(scorer, image, concept, method="concept_map")
    pixels = a.pixel_values
    k = 16  # a quarter of the 64 patches

    def occluded_score(cells: np.ndarray) -> float:
        x = pixels.clone()
        for c in cells:
            r, q = divmod(int(c), 8)
            x[:, :, r * 8:(r + 1) * 8, q * 8:(q + 1) * 8] = 0.0
        with torch.no_grad():
            return float(a.forward(x)[0])

    marked = np.argsort(-a.raw.ravel())[:k]
    drop_marked = a.target_value - occluded_score(marked)
    rng = np.random.default_rng(0)
    drops_random = [a.target_value - occluded_score(rng.choice(64, size=k, replace=False)) for _ in range(8)]
    assert drop_marked > 0
    assert drop_marked > max(drops_random)
    # the same map, through the deletion metric: removing its top pixels first hurts more
    best_first = deletion_curve(a.forward, pixels, a.map, steps=8, baseline="zero", batch_size=9)
    worst_first = deletion_curve(a.forward, pixels, -a.map, steps=8, baseline="zero", batch_size=9)
    assert best_first.auc < worst_first.auc


def test_randomization_check_gives_lower_similarity(vocab, image):
    def explain(bb):
        sc = ConceptScorer(bb, vocab, progress=False)
        return attribute(sc, image, vocab.ids[0], method="saliency").map

    backbone = tiny_backbone()
    result = randomization_check(explain, backbone, 2)
    assert len(result.layers) == 2
    assert result.spearman < 0.5 and result.ssim < 0.5
    # the original backbone is untouched: re-running gives the same map
    np.testing.assert_allclose(explain(backbone), result.original, rtol=1e-5)


def test_bad_inputs(backbone, scorer, vocab, image, bottleneck):
    with pytest.raises(UnknownConceptError, match="no such concept"):
        attribute(scorer, image, ConceptTarget("no such concept"))
    with pytest.raises(UnknownConceptError, match="typo"):
        attribute(scorer, image, "typo")
    with pytest.raises(UnknownClassError, match="'cat'"):
        attribute(scorer, image, ClassTarget("cat"), bottleneck=bottleneck)
    with pytest.raises(TargetError, match="scorer"):
        attribute(backbone, image, ConceptTarget(vocab.ids[0]))
    with pytest.raises(UnsupportedMethodError, match="unknown attribution method"):
        attribute(scorer, image, vocab.ids[0], method="lime")
    with pytest.raises(ValueError, match="baselines must have shape"):
        attribute(scorer, image, vocab.ids[0], baselines=torch.zeros(3, 8, 8))


def test_grad_cam_unsupported_backbone(scorer, vocab, image, monkeypatch):
    backbone = scorer.backbone

    def no_layers():
        raise NotImplementedError("no token layers")

    monkeypatch.setattr(backbone, "token_layers", no_layers)
    with pytest.raises(UnsupportedMethodError, match="token layers"):
        attribute(scorer, image, vocab.ids[0], method="grad_cam")


def test_plot_and_html(backbone, scorer, vocab, image, tmp_path):
    a = attribute(scorer, image, vocab.ids[0], method="saliency")
    fig = a.plot()
    assert fig.axes[0].get_title().startswith("saliency")
    html = a._repr_html_()
    assert html.startswith("<div><img src='data:image/png;base64,")
    evil = attribute(backbone, image, "prompt:<script>x</script>", method="saliency")
    assert "<script>" not in evil._repr_html_()


def test_concept_maps_for_many_concepts_plot_one_panel_each(scorer, vocab, image):
    maps = concept_maps(scorer, image, vocab.ids[:3])
    assert maps.maps.shape == (3, 8, 8)
    fig = plot_concept_maps(maps, ncols=2)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == [vocab.names[c] for c in vocab.ids[:3]]


def test_methods_are_a_registry_with_their_own_options():
    from conceptlens.explain import METHODS, list_methods
    from conceptlens.explain.methods import get_method

    assert list_methods() == sorted(METHODS) == sorted([
        "integrated_gradients", "gradient_shap", "saliency", "input_x_gradient", "occlusion",
        "smoothgrad", "grad_cam", "concept_map"])
    assert get_method("IntegratedGradients") is get_method("ig")
    assert get_method("LayerGradCam").name == "grad_cam"
    assert set(get_method("integrated_gradients").options) == {"n_steps", "tolerance", "max_steps"}
    assert set(get_method("occlusion").options) == {"sliding_window", "strides"}
    assert get_method("input_x_gradient").options == {}
    assert not get_method("concept_map").gradients


def test_an_option_no_method_takes_is_refused_and_others_are_ignored(scorer, vocab, image):
    with pytest.raises(TypeError, match="'n_step'"):
        attribute(scorer, image, vocab.ids[0], method="saliency", n_step=8)
    # one set of keywords serves several methods: saliency ignores n_steps, as before
    a = attribute(scorer, image, vocab.ids[0], method="saliency", n_steps=8, nt_samples=3)
    assert a.params == {"abs": True}
    with pytest.raises(ValueError, match="nt_samples"):  # still checked for every method
        attribute(scorer, image, vocab.ids[0], method="saliency", nt_samples=0)


def test_backbone_plus_scorer_still_works_with_a_deprecation_warning(backbone, scorer, vocab, image):
    new = attribute(scorer, image, vocab.ids[0], method="saliency")
    with pytest.warns(DeprecatedNameWarning, match=r"attribute\(scorer, image"):
        old = attribute(backbone, image, vocab.ids[0], method="saliency", scorer=scorer)
    np.testing.assert_array_equal(old.raw, new.raw)
    with pytest.raises(TypeError, match="twice"):
        attribute(scorer, image, vocab.ids[0], scorer=scorer)
    other = tiny_backbone()
    with pytest.warns(DeprecatedNameWarning), pytest.raises(ValueError, match="same backbone"):
        attribute(other, image, vocab.ids[0], scorer=scorer)


def test_given_pixels_and_loaded_image_are_used_as_they_are(scorer, vocab, image, monkeypatch):
    from conceptlens.models.images import load_image

    loaded = load_image(image)
    pixels = scorer.backbone.preprocess([loaded.image])
    expected = attribute(scorer, loaded, vocab.ids[0], method="saliency")

    def refuse(*args, **kwargs):
        raise AssertionError("preprocessed again")

    monkeypatch.setattr(scorer.backbone, "preprocess", refuse)
    again = attribute(scorer, loaded, vocab.ids[0], method="saliency", pixels=pixels)
    np.testing.assert_array_equal(again.raw, expected.raw)
    assert again.image is loaded.image
    with pytest.raises(ValueError, match=r"\(1, 3, H, W\)"):
        attribute(scorer, loaded, vocab.ids[0], method="saliency", pixels=pixels[0])
