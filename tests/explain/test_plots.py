import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import AxesImage
from PIL import Image

from conceptlens.explain.metrics import PerturbationCurve
from conceptlens.explain.plots import (
    plot_concept_bars,
    plot_concept_maps,
    plot_deletion_insertion,
    plot_intervention_curves,
    plot_overlay,
    plot_roc_curves,
    plot_weights,
    save_figure,
)
from tests.helpers.fakes import FakeConceptMaps

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _bar_labels_top_down(fig):
    ax = fig.axes[0]
    pairs = zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()], strict=True)
    return [label for _, label in sorted(pairs, reverse=True)]


def test_concept_bars_sorted_by_magnitude_and_top_k(tmp_path):
    values = pd.Series({"C1": 0.1, "C2": -0.9, "C3": 0.5, "C4": 0.05})
    fig = plot_concept_bars(values, names={"C2": "blue-white veil"}, top_k=3)
    assert len(fig.axes[0].patches) == 3
    assert _bar_labels_top_down(fig) == ["blue-white veil", "C3", "C1"]
    colours = {tuple(p.get_facecolor()) for p in fig.axes[0].patches}
    assert len(colours) == 2  # signed data: one colour per sign
    out = save_figure(fig, tmp_path / "sub" / "bars.png")
    assert out.exists() and out.stat().st_size > 0


def test_concept_bars_groups_and_array_input():
    fig = plot_concept_bars(np.array([3.0, 1.0, 2.0]), names=["a", "b", "c"], groups={"a": "x", "b": "y", "c": "x"})
    assert len(fig.axes[0].patches) == 3
    assert fig.axes[0].get_legend() is not None
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {"x", "y"}


def test_concept_bars_rejects_2d_and_bad_top_k():
    with pytest.raises(ValueError, match="one-dimensional"):
        plot_concept_bars(np.ones((2, 2)))
    with pytest.raises(ValueError, match="top_k"):
        plot_concept_bars({"a": 1.0}, top_k=0)


def test_concept_bars_draws_into_given_ax():
    fig, axes = plt.subplots(1, 2)
    out = plot_concept_bars({"a": 1.0, "b": 2.0}, ax=axes[1])
    assert out is fig and len(axes[1].patches) == 2 and len(axes[0].patches) == 0


def test_overlay_resizes_map_to_image_and_draws_contour(tmp_path):
    image = Image.new("RGB", (40, 30), color=(120, 80, 60))
    heat = np.random.default_rng(0).normal(size=(5, 5))
    mask = np.zeros((30, 40))
    mask[5:15, 10:20] = 1
    fig = plot_overlay(image, heat, mask=mask, alpha=0.4)
    ax = fig.axes[0]
    images = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    assert [im.get_array().shape[:2] for im in images] == [(30, 40), (30, 40)]
    assert images[1].get_alpha() == 0.4
    assert images[1].norm.vmin == -images[1].norm.vmax  # signed map: centred at 0
    assert len(fig.axes) == 2  # image axes + colour bar
    for suffix in ("svg", "pdf"):
        assert save_figure(fig, tmp_path / f"o.{suffix}").stat().st_size > 0


def test_overlay_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        plot_overlay(np.zeros((4, 4, 3)), np.zeros((4, 4)), alpha=2.0)


def test_concept_maps_grid_panel_count(tmp_path):
    fig = plot_concept_maps(FakeConceptMaps(), ncols=2, concepts=["C1", "C3", "C5"])
    assert len(fig.axes) == 3
    assert [a.get_title() for a in fig.axes] == ["pigment network", "C3", "C5"]
    save_figure(fig, tmp_path / "maps.png")


def test_concept_maps_from_dict_and_into_ax():
    maps = {f"c{i}": np.random.default_rng(i).random((6, 6)) for i in range(6)}
    fig, ax = plt.subplots()
    out = plot_concept_maps(maps, image=np.zeros((12, 12, 3)), ax=ax, ncols=4)
    assert out is fig and len(fig.axes) == 6
    with pytest.raises(KeyError, match="zz"):
        plot_concept_maps(maps, concepts=["zz"])
    with pytest.raises(KeyError, match="C9"):
        plot_concept_maps(FakeConceptMaps(), concepts=["C9"])


def test_weights_heatmap_centered_and_top_k():
    coef = pd.DataFrame([[1.0, -2.0, 0.1], [0.5, 0.2, -0.05]], index=["mel", "nev"], columns=["a", "b", "c"])
    fig = plot_weights(coef, top_k=2)
    mesh = fig.axes[0].collections[0]
    assert mesh.get_array().size == 4
    assert mesh.norm.vmin == -mesh.norm.vmax == -2.0
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["b", "a"]


def test_roc_curves_one_line_per_concept_and_skip_single_class():
    rng = np.random.default_rng(0)
    labels = pd.DataFrame({"a": [0, 1] * 10, "b": [1, 0] * 10, "c": [1] * 20})
    scores = labels + rng.normal(scale=0.5, size=labels.shape)
    with pytest.warns(UserWarning, match="c"):
        fig = plot_roc_curves(scores, labels)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(legend) == 2 and legend[0].startswith("a (AUC")


def test_intervention_curves_and_missing_column():
    frame = pd.DataFrame({"k": [0, 1, 2] * 2, "accuracy": [0.5, 0.6, 0.7, 0.5, 0.55, 0.6],
                          "policy": ["random"] * 3 + ["uncertainty"] * 3})
    fig = plot_intervention_curves(frame)
    assert len(fig.axes[0].get_lines()) >= 2
    with pytest.raises(KeyError, match="policy"):
        plot_intervention_curves(frame.drop(columns="policy"))


def test_deletion_insertion_plot():
    fr = np.linspace(0, 1, 5)
    d = PerturbationCurve("deletion", fr, 1 - fr, 0.5, "blur")
    i = PerturbationCurve("insertion", fr, fr, 0.5, "blur")
    fig = plot_deletion_insertion([d, i])
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["deletion (AUC 0.500)", "insertion (AUC 0.500)"]


def test_save_figure_bad_suffix(tmp_path):
    fig = plot_concept_bars({"a": 1.0})
    with pytest.raises(ValueError, match=r"\.png"):
        save_figure(fig, tmp_path / "x.jpg")
