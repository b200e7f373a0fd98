import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from conceptlens.explain.metrics import (
    completeness_gap,
    deletion_curve,
    energy_pointing_game,
    insertion_curve,
    make_baseline,
    map_auroc,
    pointing_game,
    randomization_check,
    spearman_correlation,
    ssim,
)


def _region_model():
    """Score = mean of the red channel in the top-left 4x4 block of an 8x8 image."""
    return lambda x: x[:, 0, :4, :4].mean(dim=(1, 2))


def _region_map():
    attr = torch.zeros(8, 8)
    attr[:4, :4] = 1.0 + torch.arange(16.0).view(4, 4) / 100
    return attr


def test_deletion_of_true_region_beats_random_order():
    image = torch.ones(3, 8, 8)
    good = deletion_curve(_region_model(), image, _region_map(), steps=16, baseline="zero", batch_size=5)
    rand = deletion_curve(_region_model(), image, torch.rand(8, 8, generator=torch.Generator().manual_seed(0)),
                          steps=16, baseline="zero")
    assert good.fractions[0] == 0 and good.fractions[-1] == 1 and len(good.scores) == 17
    assert good.scores[0] == pytest.approx(1.0) and good.scores[-1] == pytest.approx(0.0)
    # the whole region is gone after 16/64 = 25 % of the pixels: score 0 from fraction 0.25 on
    assert good.scores[4] == pytest.approx(0.0)
    assert good.auc == pytest.approx(np.trapezoid(good.scores, good.fractions))
    assert good.auc < rand.auc


def test_insertion_mirrors_deletion():
    image = torch.ones(3, 8, 8)
    ins = insertion_curve(_region_model(), image, _region_map(), steps=16, baseline="zero")
    assert ins.scores[0] == pytest.approx(0.0) and ins.scores[4] == pytest.approx(1.0)
    assert ins.auc == pytest.approx(1 - 0.25 / 2)


def test_curve_resizes_map_and_checks_forward_shape():
    image = torch.ones(3, 8, 8)
    coarse = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    out = deletion_curve(_region_model(), image, coarse, steps=4, baseline="mean")
    assert out.scores.shape == (5,)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        deletion_curve(lambda x: x.sum(), image, coarse, steps=2)
    with pytest.raises(ValueError, match="baseline"):
        deletion_curve(_region_model(), image, coarse, baseline="noise")


def test_baselines():
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    blurred = make_baseline(image, "blur", blur_sigma=2.0)
    assert blurred.shape == image.shape
    assert blurred.std() < image.std()  # smoother
    assert torch.allclose(blurred.mean(dim=(1, 2)), image.mean(dim=(1, 2)), atol=0.05)
    assert torch.allclose(make_baseline(image, "mean")[:, 3, 5], image.mean(dim=(1, 2)))
    assert make_baseline(image, "zero").abs().sum() == 0


def test_pointing_game_hit_miss_tolerance_and_ties():
    mask = np.zeros((10, 10))
    mask[2:4, 2:4] = 1
    m = np.zeros((10, 10))
    m[3, 3] = 1.0
    assert pointing_game(m, mask)
    m2 = np.zeros((10, 10))
    m2[3, 6] = 1.0
    assert not pointing_game(m2, mask)
    assert pointing_game(m2, mask, tolerance=3)
    assert not pointing_game(np.ones((10, 10)), mask)  # a constant map does not score


def test_pointing_game_tie_rule_one_plateau_is_one_peak():
    mask = np.zeros((12, 12))
    mask[0:3, 3:6] = 1  # a concept near the top border
    # a bilinearly upsampled patch map clamps at the border: its maximum is a plateau
    grid = np.zeros((3, 3))
    grid[0, 1] = 1.0
    up = ndimage.zoom(grid, 4, order=1, mode="nearest", grid_mode=True)
    plateau = up >= up.max() - 1e-6 * np.ptp(up)
    assert plateau.sum() > 1 and (mask[plateau] > 0).any() and not (mask[plateau] > 0).all()
    assert pointing_game(up, mask)  # the plateau touches the mask: one peak, a hit
    # two separate peaks of the same height: both must hit
    two = np.zeros((12, 12))
    two[1, 4] = two[10, 10] = 1.0
    assert not pointing_game(two, mask)
    assert pointing_game(two, mask, tolerance=10)
    # a near-tie within rtol is a second peak, outside it the strict maximum alone counts
    near = two.copy()
    near[10, 10] = 1.0 - 1e-9
    assert not pointing_game(near, mask)
    assert pointing_game(near, mask, rtol=0)
    with pytest.raises(ValueError, match="rtol"):
        pointing_game(two, mask, rtol=-1)


def test_energy_pointing_game_and_auroc():
    mask = np.zeros((10, 10))
    mask[:5] = 1
    uniform = np.ones((10, 10))
    assert energy_pointing_game(uniform, mask) == pytest.approx(0.5)
    m = np.where(mask > 0, 3.0, -1.0)
    m[9, 9] = 1.0
    assert energy_pointing_game(m, mask) == pytest.approx(150 / 151)
    assert map_auroc(mask * 2 + 0.1, mask) == pytest.approx(1.0)
    assert map_auroc(-mask, mask) == pytest.approx(0.0)
    with pytest.warns(UserWarning, match="positive"):
        assert np.isnan(energy_pointing_game(-uniform, mask))


@pytest.mark.parametrize("fn", [pointing_game, energy_pointing_game, map_auroc])
def test_mask_errors(fn):
    with pytest.raises(ValueError, match="does not match"):
        fn(np.ones((4, 4)), np.ones((5, 5)))
    with pytest.raises(ValueError, match="empty"):
        fn(np.ones((4, 4)), np.zeros((4, 4)))


def test_map_auroc_full_mask():
    with pytest.raises(ValueError, match="whole map"):
        map_auroc(np.arange(16.0).reshape(4, 4), np.ones((4, 4)))


def test_completeness_gap():
    assert completeness_gap(torch.full((3, 2, 2), 0.25), 4.0, 1.0) == pytest.approx(0.0)
    assert completeness_gap(np.full((2, 2), 0.5), 3.0, 0.0) == pytest.approx(1 / 3)
    batch = completeness_gap(np.ones((2, 4)), np.array([5.0, 2.0]), np.array([1.0, 0.0]))
    assert batch == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="undefined"):
        completeness_gap(np.ones(3), 1.0, 1.0)


def test_similarity_measures():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16))
    assert ssim(a, a) == pytest.approx(1.0)
    assert spearman_correlation(a, 2 * a + 1) == pytest.approx(1.0)
    b = rng.random((16, 16))
    assert ssim(a, b) < 0.5
    assert abs(spearman_correlation(a, b)) < 0.3
    assert np.isnan(spearman_correlation(a, np.zeros((16, 16))))
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, b[:8])


def test_ssim_of_constant_maps_is_the_luminance_term():
    # no variance: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with C1 = (0.01 L)^2
    a, b = np.full((12, 12), 0.2), np.full((12, 12), 0.6)
    c1 = (0.01 * 0.4) ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert ssim(a, b, normalize=False) == pytest.approx(expected, rel=1e-9)
    assert ssim(a, 1.0 - a) == pytest.approx(1.0)  # both normalise to zeros


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh())
        self.head = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.head(self.body(x)).sum(dim=(1, 2, 3))


def _gradient_map(model: nn.Module) -> np.ndarray:
    x = torch.linspace(-1, 1, 144).view(1, 1, 12, 12).requires_grad_(True)
    model(x).sum().backward()
    return x.grad[0, 0].detach().numpy()


def test_randomization_check_lower_similarity_and_model_untouched():
    net = _Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    real = randomization_check(_gradient_map, net, ["body"], seed=0)
    assert real.layers == ["body"]
    assert real.spearman < 0.9 and real.ssim < 0.9
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    # a map that ignores the model passes the check perfectly: similarity 1
    constant = randomization_check(lambda m: np.arange(16.0).reshape(4, 4), net, 1)
    assert constant.spearman == pytest.approx(1.0) and constant.ssim == pytest.approx(1.0)
    assert constant.layers == ["head"]
    with pytest.raises(KeyError, match="nope"):
        randomization_check(_gradient_map, net, ["nope"])


# -- MPRT cascade -------------------------------------------------------------------------------


def test_mprt_cascade_from_the_top_model_untouched_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    from conceptlens.explain.metrics import MPRTCascade, mprt_cascade

    net = _Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = mprt_cascade(_gradient_map, net)
    assert isinstance(result, MPRTCascade)
    assert result.layers == ["head", "body"]  # top first, cumulative
    assert list(result.table["step"]) == [0, 1, 2]
    assert result.table["spearman"].iloc[0] == 1.0
    assert result.table["spearman"].iloc[-1] < 0.9 and result.table["ssim"].iloc[-1] < 0.9
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert len(result.maps) == 2 and result.maps[-1].shape == (12, 12)
    # an explanation that ignores the model stays at 1 all the way down
    constant = mprt_cascade(lambda m: np.arange(32.0).reshape(2, 4, 4), net, ["head", "body"])
    assert np.allclose(constant.table[["spearman", "ssim"]].to_numpy(), 1.0)
    ax = result.plot()
    assert len(ax.lines) >= 2 and [t.get_text() for t in ax.get_xticklabels()][0] == "original"
    assert "MPRT" in result._repr_html_()
    with pytest.raises(KeyError, match="nope"):
        mprt_cascade(_gradient_map, net, ["nope"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mprt_cascade_on_demo_model_saliency_decays(seed):
    # Measured (4 images, concept blue-whitish veil, seeds 0-2): Spearman 0.75-0.76 after the
    # top block, 0.69 after two, 0.24-0.25 after all three; SSIM 0.60-0.63 at the end.
    import warnings

    from conceptlens.demo import generate
    from conceptlens.explain.metrics import mprt_cascade
    from conceptlens.models import load_backbone
    from conceptlens.vocab import ConceptScorer, ConceptVocabulary

    backbone = load_backbone("demo")
    vocabulary = ConceptVocabulary.builtin("demo")
    data = generate(4, seed=3, concept_prob=1.0)

    def saliency(model):
        scorer = ConceptScorer(model, vocabulary, progress=False, reference=None)
        x = model.preprocess(list(data.images)).requires_grad_(True)
        scorer.score_tensor(x)[:, 1].sum().backward()
        return x.grad.abs().sum(1).numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = mprt_cascade(saliency, backbone, seed=seed)
    assert result.layers == [f"vision_model.encoder.layers.{i}" for i in (2, 1, 0)]
    rho = result.table["spearman"].to_numpy()
    assert rho[-1] < 0.5 and rho[-1] < rho[1] < 1.0
