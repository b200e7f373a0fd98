"""Figures for concept explanations: bars, overlays, map grids, weights, curves.

Every function takes an optional ``ax`` (a matplotlib Axes to draw into; a new figure
is made when it is ``None``) and returns the :class:`matplotlib.figure.Figure`.
Palettes are colour-blind safe: seaborn's ``"colorblind"`` for categories, ``"viridis"``
for unsigned maps and ``"RdBu_r"`` (ColorBrewer, diverging, centred at 0) for signed data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from conceptlens.explain._spatial import (
    resize_map,
    to_display_image,
    to_numpy_2d,
)

__all__ = [
    "DIVERGING_CMAP",
    "SEQUENTIAL_CMAP",
    "plot_concept_bars",
    "plot_concept_maps",
    "plot_decision_parts",
    "plot_deletion_insertion",
    "plot_intervention_curves",
    "plot_overlay",
    "plot_residual_share",
    "plot_roc_curves",
    "plot_weights",
    "save_figure",
]

SEQUENTIAL_CMAP = "viridis"
"""Default colormap for unsigned maps (perceptually uniform, colour-blind safe)."""

DIVERGING_CMAP = "RdBu_r"
"""Default colormap for signed data (ColorBrewer diverging, colour-blind safe), red = positive."""

_SAVE_SUFFIXES = (".png", ".svg", ".pdf")


def _palette(n: int) -> list[tuple[float, float, float]]:
    return list(sns.color_palette("colorblind", n_colors=max(n, 1)))


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax.figure, ax


def _as_series(values: Any, names: Mapping[str, str] | Sequence[str] | None) -> pd.Series:
    if isinstance(values, pd.DataFrame):
        if values.shape[0] != 1:
            raise ValueError(
                f"values must be one-dimensional; got a DataFrame with {values.shape[0]} rows "
                "(pass one row, e.g. frame.iloc[0])"
            )
        values = values.iloc[0]
    if isinstance(values, pd.Series):
        series = values.astype(float)
    elif isinstance(values, Mapping):
        series = pd.Series({str(k): float(v) for k, v in values.items()}, dtype=float)
    else:
        arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=float)
        if arr.ndim != 1:
            raise ValueError(f"values must be one-dimensional, got shape {arr.shape}")
        series = pd.Series(arr, index=[str(i) for i in range(arr.size)])
    series.index = [str(i) for i in series.index]
    if names is None:
        return series
    if isinstance(names, Mapping):
        series.index = [str(names.get(i, i)) for i in series.index]
    else:
        names = [str(n) for n in names]
        if len(names) != len(series):
            raise ValueError(f"names has {len(names)} entries but values has {len(series)}")
        series.index = names
    return series


def plot_concept_bars(
    values: Any,
    *,
    names: Mapping[str, str] | Sequence[str] | None = None,
    top_k: int | None = 10,
    signed: bool | None = None,
    groups: Mapping[str, str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str | None = None,
) -> Figure:
    """Horizontal bar chart of concept scores or signed contributions, largest first.

    Args:
        values: One value per concept: a pandas Series (index = concept ids), a dict
            ``{concept_id: value}``, a one-row DataFrame or a 1-D array / tensor.
        names: Concept id -> display name, or a sequence of names aligned with ``values``.
        top_k: Keep the ``top_k`` concepts with the largest ``|value|``; ``None`` keeps all.
        signed: Colour bars by sign (red positive, blue negative) and draw a zero line.
            ``None`` means "signed if any value is negative".
        groups: Concept id (or display name) -> group label; bars are then coloured by
            group with a legend instead of by sign.
        ax: Axes to draw into; a new figure when ``None``.
        title: Axes title.
        xlabel: Label of the value axis (default ``"contribution"`` when signed, else ``"score"``).

    Returns:
        The figure holding the chart (one bar per kept concept).

    Examples:
        >>> fig = plot_concept_bars({"C1": 0.8, "C2": -0.3, "C3": 0.1}, top_k=2)
        >>> len(fig.axes[0].patches)
        2
    """
    raw_ids = _as_series(values, None).index.tolist()
    series = _as_series(values, names)
    if series.empty:
        raise ValueError("values is empty: nothing to plot")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
    display_to_id = dict(zip(series.index, raw_ids, strict=True))
    order = series.abs().sort_values(ascending=False, kind="stable").index
    series = series.loc[order]
    if top_k is not None:
        series = series.iloc[:top_k]
    if signed is None:
        signed = bool((series < 0).any())

    fig, ax = _new_axes(ax, (6.0, 0.4 * len(series) + 1.2))
    labels = list(series.index)
    y = np.arange(len(series))[::-1]
    if groups is not None:
        group_of = [str(groups.get(display_to_id.get(lab, lab), groups.get(lab, "other"))) for lab in labels]
        unique = list(dict.fromkeys(group_of))
        colours = dict(zip(unique, _palette(len(unique)), strict=True))
        ax.barh(y, series.to_numpy(), color=[colours[g] for g in group_of])
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[g]) for g in unique]
        ax.legend(handles, unique, title="group", loc="best", fontsize="small")
    elif signed:
        pal = sns.color_palette(DIVERGING_CMAP, 7)
        pos, neg = pal[-1], pal[0]
        ax.barh(y, series.to_numpy(), color=[pos if v >= 0 else neg for v in series])
    else:
        ax.barh(y, series.to_numpy(), color=_palette(1)[0])
    if signed:
        ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel or ("contribution" if signed else "score"))
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


def _imshow_map(
    ax: Axes, heatmap: np.ndarray, *, alpha: float, cmap: str | None, signed: bool | None
) -> Any:
    if signed is None:
        signed = bool(np.nanmin(heatmap) < 0 < np.nanmax(heatmap))
    if signed:
        bound = float(np.nanmax(np.abs(heatmap))) or 1.0
        return ax.imshow(
            heatmap, cmap=cmap or DIVERGING_CMAP, alpha=alpha, norm=TwoSlopeNorm(0.0, -bound, bound)
        )
    return ax.imshow(heatmap, cmap=cmap or SEQUENTIAL_CMAP, alpha=alpha)


def _draw_overlay(
    ax: Axes,
    image: Any,
    heatmap: Any,
    *,
    alpha: float,
    cmap: str | None,
    mask: Any,
    signed: bool | None,
) -> Any:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    picture = to_display_image(image)
    h, w = picture.shape[:2]
    heat = to_numpy_2d(heatmap, name="heatmap")
    if heat.shape != (h, w):
        heat = resize_map(heat, (h, w))
    ax.imshow(picture)
    artist = _imshow_map(ax, heat, alpha=alpha, cmap=cmap, signed=signed)
    if mask is not None:
        m = to_numpy_2d(mask, name="mask")
        if m.shape != (h, w):
            m = resize_map(m, (h, w), mode="nearest")
        ax.contour(m > 0.5, levels=[0.5], colors="white", linewidths=1.5)
    ax.set_axis_off()
    return artist


def plot_overlay(
    image: Any,
    heatmap: Any,
    *,
    alpha: float = 0.5,
    cmap: str | None = None,
    mask: Any = None,
    signed: bool | None = None,
    colorbar: bool = True,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a heat map over an image, in the image's own pixel coordinates.

    A ``heatmap`` whose shape differs from the image (a patch grid, or a map at the
    model's input size) is resized bilinearly to the image's ``(H, W)`` before drawing;
    pass maps already in original-image coordinates (``Attribution.map``) to avoid it.

    Args:
        image: PIL image, ``(H, W[, 3])`` array or ``(3, H, W)`` tensor.
        heatmap: ``(h, w)`` array or tensor.
        alpha: Opacity of the heat map, in ``[0, 1]``.
        cmap: Colormap name; default ``"viridis"`` (unsigned) or ``"RdBu_r"`` centred at 0 (signed).
        mask: Optional ``(h, w)`` binary mask drawn as a white contour (resized like the map).
        signed: Treat the map as signed; ``None`` means "signed if it has both signs".
        colorbar: Add a colour bar.
        ax: Axes to draw into; a new figure when ``None``.
        title: Axes title.

    Returns:
        The figure.
    """
    fig, ax = _new_axes(ax, (5.0, 4.5))
    artist = _draw_overlay(ax, image, heatmap, alpha=alpha, cmap=cmap, mask=mask, signed=signed)
    if colorbar:
        fig.colorbar(artist, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    return fig


def _maps_from_input(
    maps: Any, image: Any, concepts: Sequence[str] | None
) -> tuple[Any, list[tuple[str, np.ndarray]]]:
    if hasattr(maps, "upsampled") and hasattr(maps, "concept_ids"):
        ids = list(concepts) if concepts is not None else [str(c) for c in maps.concept_ids]
        known = {str(c) for c in maps.concept_ids}
        missing = [c for c in ids if c not in known]
        if missing:
            raise KeyError(f"concepts not in these concept maps: {missing}")
        raw_names = getattr(maps, "concept_names", None) or getattr(maps, "names", None) or {}
        if isinstance(raw_names, Mapping):
            names = {str(k): str(v) for k, v in raw_names.items()}
        else:  # a list aligned with concept_ids
            names = {str(c): str(n) for c, n in zip(maps.concept_ids, raw_names, strict=True)}
        panels = [(str(names.get(c, c)), to_numpy_2d(maps.upsampled(c), name=c)) for c in ids]
        return (image if image is not None else getattr(maps, "image", None)), panels
    if isinstance(maps, Mapping):
        keys = list(concepts) if concepts is not None else list(maps)
        missing = [k for k in keys if k not in maps]
        if missing:
            raise KeyError(f"concepts not in maps: {missing}")
        return image, [(str(k), to_numpy_2d(maps[k], name=str(k))) for k in keys]
    raise TypeError(
        "maps must be a ConceptMaps-like object (with .upsampled and .concept_ids) or a dict "
        f"name -> (H, W) array; got {type(maps).__name__}"
    )


def plot_concept_maps(
    maps: Any,
    *,
    image: Any = None,
    concepts: Sequence[str] | None = None,
    ncols: int = 4,
    alpha: float = 0.5,
    cmap: str | None = None,
    shared_scale: bool = False,
    ax: Axes | None = None,
    title: str | None = None,
    panel_size: float = 2.6,
) -> Figure:
    """A grid of concept maps, one panel per concept, each over the image when given.

    Args:
        maps: The scorer's concept maps (any object with ``.concept_ids``,
            ``.upsampled(concept_id) -> (H, W)``, optional ``.concept_names`` dict and ``.image``),
            or a dict ``name -> (H, W) array``.
        image: Image to draw under the maps (default: ``maps.image`` when present).
            Without an image the maps are drawn alone.
        concepts: Which concepts to show, in order (default: all).
        ncols: Panels per row.
        alpha: Map opacity when drawn over an image.
        cmap: Colormap (default ``"viridis"``).
        shared_scale: Use one colour range for all panels (compare concepts) instead of
            one per panel (see each concept's shape).
        ax: If given, the grid fills this Axes' slot in its figure (the Axes is removed).
        title: Figure title.
        panel_size: Panel edge in inches for a new figure.

    Returns:
        The figure; it holds exactly one image panel per requested concept.
    """
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    base, panels = _maps_from_input(maps, image, concepts)
    if not panels:
        raise ValueError("no concept maps to plot")
    n = len(panels)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    if ax is None:
        fig = plt.figure(figsize=(panel_size * ncols, panel_size * nrows + 0.4), layout="constrained")
        grid = fig.add_gridspec(nrows, ncols)
    else:
        fig = ax.figure
        grid = ax.get_subplotspec().subgridspec(nrows, ncols)
        ax.remove()
    vmin = vmax = None
    if shared_scale:
        vmin = min(float(np.nanmin(m)) for _, m in panels)
        vmax = max(float(np.nanmax(m)) for _, m in panels)
    for i, (name, heat) in enumerate(panels):
        panel = fig.add_subplot(grid[i // ncols, i % ncols])
        if base is not None:
            picture = to_display_image(base)
            if heat.shape != picture.shape[:2]:
                heat = resize_map(heat, picture.shape[:2])
            panel.imshow(picture)
            panel.imshow(heat, cmap=cmap or SEQUENTIAL_CMAP, alpha=alpha, vmin=vmin, vmax=vmax)
        else:
            panel.imshow(heat, cmap=cmap or SEQUENTIAL_CMAP, vmin=vmin, vmax=vmax)
        panel.set_title(name, fontsize="medium")
        panel.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def _coef_frame(coef: Any) -> pd.DataFrame:
    if isinstance(coef, pd.DataFrame):
        return coef.astype(float)
    if hasattr(coef, "coef_"):
        w = np.atleast_2d(np.asarray(coef.coef_, dtype=float))
        classes = [str(c) for c in getattr(coef, "classes_", range(w.shape[0]))]
        if w.shape[0] == 1 and len(classes) == 2:
            classes = [classes[1]]
        columns = [str(c) for c in getattr(coef, "feature_names_in_", range(w.shape[1]))]
        return pd.DataFrame(w, index=classes, columns=columns)
    arr = np.asarray(coef, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"coefficients must be a 2-D (classes x concepts) table, got shape {arr.shape}")
    return pd.DataFrame(arr)


def plot_weights(
    coef_frame: Any,
    *,
    names: Mapping[str, str] | None = None,
    top_k: int | None = 30,
    annotate: bool | None = None,
    cmap: str = DIVERGING_CMAP,
    ax: Axes | None = None,
    title: str | None = "class x concept weights",
) -> Figure:
    """Heat map of a bottleneck's class x concept weights, diverging and centred at 0.

    Args:
        coef_frame: DataFrame (rows = classes, columns = concept ids), a fitted estimator
            with ``coef_`` (and ``classes_`` / ``feature_names_in_``) or a 2-D array.
        names: Concept id -> display name for the column labels.
        top_k: Keep the ``top_k`` concepts with the largest absolute weight in any class.
        annotate: Write the numbers in the cells (default: only when the table is small).
        cmap: Diverging colormap.
        ax: Axes to draw into; a new figure when ``None``.
        title: Axes title.

    Returns:
        The figure.
    """
    frame = _coef_frame(coef_frame)
    if frame.empty:
        raise ValueError("coefficient table is empty")
    if top_k is not None and frame.shape[1] > top_k:
        keep = frame.abs().max(axis=0).sort_values(ascending=False, kind="stable").index[:top_k]
        frame = frame.loc[:, list(keep)]
    if names:
        frame = frame.rename(columns=lambda c: names.get(str(c), str(c)))
    if annotate is None:
        annotate = frame.size <= 120
    # room for the rotated concept names below the cells, so a one-row (binary) map keeps its height
    longest = max((len(str(c)) for c in frame.columns), default=0)
    fig, ax = _new_axes(ax, (0.45 * frame.shape[1] + 3.0, 0.45 * frame.shape[0] + 0.065 * longest + 1.8))
    bound = float(np.nanmax(np.abs(frame.to_numpy()))) or 1.0
    sns.heatmap(
        frame, ax=ax, cmap=cmap, center=0.0, vmin=-bound, vmax=bound, annot=annotate, fmt=".2f",
        linewidths=0.5, cbar_kws={"label": "weight"},
    )
    ax.set_xlabel("concept")
    ax.set_ylabel("class")
    for label in ax.get_xticklabels():
        label.set_rotation(60)
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    if title:
        ax.set_title(title)
    return fig


def plot_roc_curves(
    scores: Any,
    labels: Any,
    concepts: Sequence[str] | None = None,
    *,
    names: Mapping[str, str] | None = None,
    ax: Axes | None = None,
    title: str | None = "concept ROC curves",
) -> Figure:
    """Per-concept ROC curves of concept scores against binary concept labels.

    Args:
        scores: ``(n_images, n_concepts)`` DataFrame or ``ConceptScores`` (its ``.table``).
        labels: Binary DataFrame with the same index and (a superset of) the concept columns.
        concepts: Which concept columns to draw (default: those present in both).
        names: Concept id -> legend name (default: ``scores.concept_names`` when present).
        ax: Axes to draw into; a new figure when ``None``.
        title: Axes title.

    Returns:
        The figure, one curve per concept that has both positive and negative labels
        (the others are listed in a warning and skipped).
    """
    import warnings

    from sklearn.metrics import roc_auc_score, roc_curve

    if names is None:
        names = getattr(scores, "concept_names", None) or {}
    table = scores.table if hasattr(scores, "table") else scores
    if not isinstance(table, pd.DataFrame) or not isinstance(labels, pd.DataFrame):
        raise TypeError("scores and labels must be DataFrames (or ConceptScores for scores)")
    if concepts is None:
        concepts = [c for c in table.columns if c in labels.columns]
    missing = [c for c in concepts if c not in table.columns or c not in labels.columns]
    if missing:
        raise KeyError(f"concepts missing from scores or labels: {missing}")
    common = table.index.intersection(labels.index)
    if len(common) == 0:
        raise ValueError("scores and labels share no image ids (their indexes do not overlap)")
    fig, ax = _new_axes(ax, (5.5, 5.0))
    palette = _palette(min(len(concepts), 10))
    styles = ["-", "--", ":", "-."]
    skipped = []
    drawn = 0
    for c in concepts:
        y = labels.loc[common, c].to_numpy(dtype=float)
        s = table.loc[common, c].to_numpy(dtype=float)
        ok = ~(np.isnan(y) | np.isnan(s))
        y, s = y[ok], s[ok]
        if len(np.unique(y)) < 2:
            skipped.append(c)
            continue
        fpr, tpr, _ = roc_curve(y, s)
        auc = roc_auc_score(y, s)
        ax.plot(
            fpr, tpr, color=palette[drawn % len(palette)], linestyle=styles[(drawn // 10) % 4],
            label=f"{names.get(c, c)} (AUC {auc:.2f})",
        )
        drawn += 1
    if skipped:
        warnings.warn(f"skipped concepts with a single label class: {skipped}", stacklevel=2)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_aspect("equal")
    if drawn:
        ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_intervention_curves(
    frame: pd.DataFrame,
    *,
    x: str = "k",
    y: str = "accuracy",
    hue: str = "policy",
    ax: Axes | None = None,
    title: str | None = "test-time interventions",
) -> Figure:
    """Accuracy against the number of intervened concepts, one line per policy.

    Args:
        frame: Long DataFrame with columns ``x`` (number of concepts corrected),
            ``y`` (metric) and ``hue`` (policy name); repeated rows are averaged with a band.
        x: Column for the x axis.
        y: Column for the y axis.
        hue: Column naming the policy.
        ax: Axes to draw into; a new figure when ``None``.
        title: Axes title.

    Returns:
        The figure.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in (x, y, hue) if c not in frame.columns]
    if missing:
        raise KeyError(f"intervention frame lacks columns {missing}; it has {list(frame.columns)}")
    fig, ax = _new_axes(ax, (5.5, 4.0))
    n = frame[hue].nunique()
    sns.lineplot(data=frame, x=x, y=y, hue=hue, style=hue, markers=True, dashes=False,
                 palette=_palette(n), ax=ax)
    ax.set_xlabel("concepts intervened on" if x == "k" else x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


def plot_deletion_insertion(
    result: Any,
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Deletion / insertion curves: model score against the fraction of pixels changed.

    Args:
        result: One curve result (with ``.fractions``, ``.scores``, ``.auc`` and
            optionally ``.kind``), a sequence of them, or a dict ``label -> result``.
        ax: Axes to draw into; a new figure when ``None``.
        title: Axes title.

    Returns:
        The figure, one line per curve, the AUC in the legend.
    """
    if isinstance(result, Mapping):
        items = [(str(k), v) for k, v in result.items()]
    elif isinstance(result, Sequence) and not hasattr(result, "fractions"):
        items = [(str(getattr(r, "kind", f"curve {i}")), r) for i, r in enumerate(result)]
    else:
        items = [(str(getattr(result, "kind", "curve")), result)]
    if not items:
        raise ValueError("no curves to plot")
    fig, ax = _new_axes(ax, (5.0, 4.0))
    palette = _palette(len(items))
    for (label, r), colour in zip(items, palette, strict=True):
        if not (hasattr(r, "fractions") and hasattr(r, "scores")):
            raise TypeError(f"curve {label!r} lacks .fractions / .scores")
        fr, sc = np.asarray(r.fractions, dtype=float), np.asarray(r.scores, dtype=float)
        auc = getattr(r, "auc", None)
        ax.plot(fr, sc, color=colour, marker="o", markersize=3,
                label=f"{label} (AUC {auc:.3f})" if auc is not None else label)
        ax.fill_between(fr, sc, alpha=0.15, color=colour)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of pixels removed / inserted")
    ax.set_ylabel("model score")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_decision_parts(
    contributions: Any,
    residual: float,
    intercept: float | None = None,
    *,
    names: Mapping[str, str] | Sequence[str] | None = None,
    top_k: int = 8,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str = "contribution to the decision value",
) -> Figure:
    """One decision of a hybrid bottleneck (PCBM-h) split into its parts, as horizontal bars.

    The ``top_k`` largest concept contributions, the remaining concepts summed as one bar, the
    residual on the image embedding (hatched, grey: what the concepts do not explain) and the
    intercept; their sum is the decision value, shown with the residual share in the title.

    Args:
        contributions: One signed contribution per concept (anything :func:`plot_concept_bars`
            accepts).
        residual: The residual's term of the decision.
        intercept: The decision at the reference point (``None``: not drawn).
        names: Concept id -> display name, or names aligned with ``contributions``.
        top_k: Concepts drawn one by one; the rest are summed into one bar.
        ax: Axes to draw into; a new figure when ``None``.
        title: Axes title (default: the decision value and the residual share).
        xlabel: Label of the value axis.

    Returns:
        The figure.

    Examples:
        >>> fig = plot_decision_parts({"C1": 1.5, "C2": -0.5, "C3": 0.1}, residual=0.7,
        ...                           intercept=-0.2, top_k=2)
        >>> len(fig.axes[0].patches)  # C1, C2, other concepts, residual, intercept
        5
    """
    series = _as_series(contributions, names)
    if series.empty:
        raise ValueError("contributions is empty: nothing to plot")
    if top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    order = series.abs().sort_values(ascending=False, kind="stable").index
    series = series.loc[order]
    shown, rest = series.iloc[:top_k], series.iloc[top_k:]
    labels = [str(i) if len(str(i)) <= 48 else str(i)[:47] + "\u2026" for i in shown.index]
    heights = [float(v) for v in shown]
    kinds = ["concept"] * len(shown)
    if len(rest):
        labels.append(f"{len(rest)} other concepts")
        heights.append(float(rest.sum()))
        kinds.append("concept")
    labels.append("residual (image embedding)")
    heights.append(float(residual))
    kinds.append("residual")
    if intercept is not None:
        labels.append("intercept")
        heights.append(float(intercept))
        kinds.append("intercept")
    concepts = float(series.abs().sum())
    share = abs(float(residual)) / (concepts + abs(float(residual))) if concepts + abs(residual) > 0 else 0.0
    decision = float(series.sum()) + float(residual) + float(intercept or 0.0)

    fig, ax = _new_axes(ax, (6.0, 0.4 * len(labels) + 1.3))
    pal = sns.color_palette(DIVERGING_CMAP, 7)
    y = np.arange(len(labels))[::-1]
    for yi, h, kind in zip(y, heights, kinds, strict=True):
        if kind == "concept":
            ax.barh(yi, h, color=pal[-1] if h >= 0 else pal[0])
        elif kind == "residual":
            ax.barh(yi, h, color="0.55", hatch="//", edgecolor="0.25")
        else:
            ax.barh(yi, h, color="0.82", edgecolor="0.5")
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title if title is not None else
                 f"decision {decision:+.3g}; residual share {share:.0%}")
    return fig


def plot_residual_share(
    shares: Any,
    groups: Any = None,
    *,
    ax: Axes | None = None,
    title: str | None = "Residual share of each decision",
    bins: int = 20,
) -> Figure:
    """Distribution of a hybrid bottleneck's residual share over decisions.

    The residual share of a decision is ``|residual| / (|residual| + sum_j |contribution_j|)``:
    the part of it the concepts do not explain (0: all concepts, 1: all residual). One
    histogram per group (e.g. the predicted class), stacked, on ``[0, 1]``, with the median
    of each group marked.

    Args:
        shares: One share per decision (Series, array or list), each in ``[0, 1]``.
        groups: One group label per decision (e.g. the predicted class); ``None``: one group.
        ax: Axes to draw into; a new figure when ``None``.
        title: Axes title.
        bins: Equal-width bins on ``[0, 1]``.

    Returns:
        The figure.

    Examples:
        >>> fig = plot_residual_share([0.1, 0.2, 0.5], groups=["a", "b", "a"])
        >>> [float(v) for v in fig.axes[0].get_xlim()]
        [0.0, 1.0]
    """
    values = np.asarray(shares, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("shares is empty: nothing to plot")
    if np.any((values < -1e-9) | (values > 1 + 1e-9)):
        raise ValueError("residual shares must lie in [0, 1]")
    labels = (np.full(values.size, "all decisions", dtype=object) if groups is None
              else np.asarray(groups, dtype=object).astype(str))
    if len(labels) != values.size:
        raise ValueError(f"groups has {len(labels)} entries but shares has {values.size}")
    unique = list(dict.fromkeys(labels))
    colours = _palette(len(unique))
    fig, ax = _new_axes(ax, (6.0, 3.2))
    edges = np.linspace(0.0, 1.0, bins + 1)
    data = [values[labels == g] for g in unique]
    ax.hist(data, bins=edges, stacked=True, color=colours[: len(unique)],
            label=[f"{g} (median {np.median(d):.0%}, n={len(d)})" for g, d in zip(unique, data, strict=True)])
    for d, colour in zip(data, colours, strict=False):
        ax.axvline(float(np.median(d)), color=colour, linestyle="--", linewidth=1.2)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("residual share (0: explained by the concepts, 1: by the residual)")
    ax.set_ylabel("decisions")
    ax.legend(fontsize="small", loc="best")
    if title:
        ax.set_title(title)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Save a figure to ``.png``, ``.svg`` or ``.pdf``, creating parent folders.

    Args:
        fig: The figure (a returned Axes is accepted too; its figure is saved).
        path: Output file; the suffix picks the format.
        dpi: Resolution for raster output.

    Returns:
        The path written.

    Raises:
        ValueError: For any other suffix.
    """
    path = Path(path)
    if path.suffix.lower() not in _SAVE_SUFFIXES:
        raise ValueError(
            f"cannot save a figure as {path.name!r}: the suffix must be one of {', '.join(_SAVE_SUFFIXES)}"
        )
    if isinstance(fig, Axes):
        fig = fig.figure
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
