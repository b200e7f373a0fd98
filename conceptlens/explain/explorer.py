"""An interactive explorer for Jupyter: pick an image, read its concepts, toggle concept maps
on the image, intervene on a concept and watch the decision change.

The state lives in :class:`Explorer` and is driven through its Python API (``select``,
``toggle_map``, ``intervene``, ``reset``); :meth:`Explorer.widget` wraps it in ipywidgets
(the optional ``explorer`` extra: ``pip install conceptlens[explorer]``), whose controls call
the same methods, so what a notebook user clicks and what a test sets are one code path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Explorer"]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class Explorer:
    """Browse images, their concept scores / contributions, maps and interventions.

    Args:
        scorer: The :class:`~conceptlens.vocab.ConceptScorer` (scores and concept maps).
        images: Image id -> image (PIL, array or path).
        bottleneck: A fitted concept bottleneck; without it there is no decision to intervene on.
        scores: ``ConceptScores`` of ``images`` when already computed (else they are scored).
        top_k: Concepts listed and drawn as bars.

    Examples:
        >>> ex = Explorer(scorer, images, bottleneck)                 # doctest: +SKIP
        >>> ex.select("img_003"); ex.toggle_map("derm7pt:blue_whitish_veil")  # doctest: +SKIP
        >>> ex.intervene("derm7pt:blue_whitish_veil", 0.0).prediction  # doctest: +SKIP
        'benign'
        >>> ex.widget()                                               # doctest: +SKIP
    """

    def __init__(self, scorer: Any, images: Mapping[str, Any], bottleneck: Any = None, *,
                 scores: Any = None, top_k: int = 8) -> None:
        if not images:
            raise ValueError("Explorer needs at least one image")
        self.scorer = scorer
        self.images = dict(images)
        self.bottleneck = bottleneck
        self.scores = scores if scores is not None else scorer.score(self.images)
        self.top_k = int(top_k)
        self.names: dict[str, str] = dict(getattr(self.scores, "concept_names", {}) or {})
        self.image_ids: list[str] = [str(i) for i in self.scores.table.index]
        self.image_id: str = self.image_ids[0]
        self.shown_maps: list[str] = []
        self.interventions: dict[str, float] = {}
        self.widgets: dict[str, Any] = {}
        self._maps: dict[str, dict[str, np.ndarray]] = {}
        self._syncing = False

    # ------------------------------------------------------------------ state
    @property
    def row(self) -> pd.Series:
        """The current image's concept scores (before interventions)."""
        return self.scores.table.loc[self.image_id]

    def name(self, concept_id: str) -> str:
        """Preferred name of a concept id."""
        return self.names.get(concept_id, concept_id)

    def select(self, image_id: str) -> Explorer:
        """Show another image; its interventions and map toggles start afresh."""
        if image_id not in self.image_ids:
            raise KeyError(f"unknown image id {image_id!r}")
        self.image_id = image_id
        self.interventions = {}
        self.shown_maps = []
        self._refresh()
        return self

    def concepts(self) -> pd.DataFrame:
        """The current image's top concepts: score and, with a bottleneck, the signed
        contribution to the predicted class (after interventions)."""
        row = self._row_after()
        frame = pd.DataFrame({"concept": [self.name(c) for c in row.index], "score": row.to_numpy()},
                             index=row.index)
        if self.bottleneck is not None:
            pred = self.decision()["prediction"]
            contrib = self.bottleneck.contributions(row.to_frame().T).for_class(pred).iloc[0]
            frame["contribution"] = contrib.reindex(row.index).to_numpy()
            order = frame["contribution"].abs().sort_values(ascending=False).index
        else:
            order = frame["score"].sort_values(ascending=False).index
        return frame.loc[order].head(self.top_k)

    def toggle_map(self, concept_id: str, on: bool | None = None) -> list[str]:
        """Show (``on=True``), hide (``False``) or flip (``None``) a concept's map on the image;
        returns the concepts whose maps are shown."""
        if concept_id not in self.scores.table.columns:
            raise KeyError(f"unknown concept id {concept_id!r}")
        visible = concept_id in self.shown_maps
        want = (not visible) if on is None else bool(on)
        if want and not visible:
            self.shown_maps.append(concept_id)
        elif not want and visible:
            self.shown_maps.remove(concept_id)
        self._refresh()
        return list(self.shown_maps)

    def concept_map(self, concept_id: str) -> np.ndarray:
        """The ``(H, W)`` map of a concept on the current image (cached per image)."""
        cache = self._maps.setdefault(self.image_id, {})
        if concept_id not in cache:
            maps = self.scorer.concept_maps(self._image(), concepts=[concept_id])
            cache[concept_id] = np.asarray(maps.upsampled(concept_id))
        return cache[concept_id]

    def intervene(self, concept_id: str, value: float | None) -> dict[str, Any]:
        """Set a concept's score to ``value`` (``None`` removes the intervention) and return
        the decision after all interventions (see :meth:`decision`)."""
        if concept_id not in self.scores.table.columns:
            raise KeyError(f"unknown concept id {concept_id!r}")
        if value is None:
            self.interventions.pop(concept_id, None)
        else:
            self.interventions[concept_id] = float(value)
        self._refresh()
        return self.decision()

    def reset(self) -> Explorer:
        """Remove every intervention and hide every map."""
        self.interventions = {}
        self.shown_maps = []
        self._refresh()
        return self

    def decision(self, *, original: bool = False) -> dict[str, Any]:
        """``{"prediction", "probabilities", "changed"}`` for the current image, after the
        interventions (``original=True``: before them). Needs a bottleneck."""
        if self.bottleneck is None:
            raise ValueError("no bottleneck: there is no decision to explain or change")
        row = self.row if original else self._row_after()
        frame = row.to_frame().T
        proba = self.bottleneck.predict_proba(frame)[0]
        classes = [_plain(c) for c in self.bottleneck.classes_]
        prediction = classes[int(np.argmax(proba))]
        out = {"prediction": prediction, "probabilities": dict(zip(map(str, classes), map(float, proba),
                                                                   strict=True))}
        if not original:
            out["changed"] = prediction != self.decision(original=True)["prediction"]
        return out

    def _row_after(self) -> pd.Series:
        row = self.row.copy()
        for concept, value in self.interventions.items():
            row[concept] = value
        return row

    def _image(self) -> Any:
        from PIL import Image

        source = self.images[self.image_id]
        if isinstance(source, Image.Image):
            return source
        if isinstance(source, np.ndarray):
            return Image.fromarray(source)
        from conceptlens.models.images import load_image

        return load_image(source).image

    # ------------------------------------------------------------------ drawing
    def figure(self) -> Any:
        """The current view as a matplotlib figure: the image with the shown maps (their mean)
        and the concept bars (contributions after interventions, or scores)."""
        import matplotlib.pyplot as plt

        from conceptlens.explain.plots import plot_concept_bars, plot_overlay

        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [1, 1.4]})
        image = self._image()
        if self.shown_maps:
            heat = np.mean([self.concept_map(c) for c in self.shown_maps], axis=0)
            plot_overlay(image, heat, ax=left, colorbar=False,
                         title=", ".join(self.name(c) for c in self.shown_maps)[:50])
        else:
            left.imshow(image)
            left.set_title(self.image_id)
            left.axis("off")
        table = self.concepts()
        signed = "contribution" in table
        values = table["contribution"] if signed else table["score"]
        title = None
        if self.bottleneck is not None:
            d = self.decision()
            title = f"{d['prediction']} ({d['probabilities'][str(d['prediction'])]:.2f})"
            if self.interventions:
                title += " after intervention"
        plot_concept_bars(values, names=self.names, top_k=self.top_k, signed=signed, ax=right, title=title,
                          xlabel="contribution" if signed else "concept score")
        fig.tight_layout()
        return fig

    def decision_text(self) -> str:
        """The decision in words, with what the interventions changed."""
        if self.bottleneck is None:
            return f"{self.image_id}: no bottleneck, concept scores only"
        before, after = self.decision(original=True), self.decision()
        p = after["probabilities"][str(after["prediction"])]
        text = f"{self.image_id}: {after['prediction']} (probability {p:.2f})"
        if self.interventions:
            set_to = ", ".join(f"{self.name(c)} = {v:.2f}" for c, v in self.interventions.items())
            was = before["probabilities"][str(before["prediction"])]
            text += (f" with {set_to}; before: {before['prediction']} ({was:.2f})"
                     + (" - the decision changed" if after["changed"] else ""))
        return text

    # ------------------------------------------------------------------ widgets
    def widget(self) -> Any:
        """The ipywidgets view: image picker, map toggles, intervention slider, decision, figure.

        Raises:
            ImportError: ipywidgets is not installed (``pip install conceptlens[explorer]``).
        """
        try:
            import ipywidgets as w
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("the explorer needs ipywidgets: pip install 'conceptlens[explorer]'") from error

        options = [(self.name(c), c) for c in self.scores.table.columns]
        lo = float(np.nanmin(self.scores.table.to_numpy()))
        hi = float(np.nanmax(self.scores.table.to_numpy()))
        self.widgets = {
            "image": w.Dropdown(options=self.image_ids, value=self.image_id, description="image"),
            "maps": w.SelectMultiple(options=options, value=tuple(self.shown_maps), rows=min(8, len(options)),
                                     description="maps"),
            "concept": w.Dropdown(options=options, description="intervene"),
            "value": w.FloatSlider(min=min(lo, 0.0), max=max(hi, 1.0), step=0.01, description="set to",
                                   continuous_update=False),
            "apply": w.Button(description="apply"),
            "reset": w.Button(description="reset"),
            "decision": w.HTML(),
            "figure": w.Output(),
        }
        ws = self.widgets
        ws["image"].observe(lambda change: self._from_widget("image", change["new"]), names="value")
        ws["maps"].observe(lambda change: self._from_widget("maps", change["new"]), names="value")
        ws["concept"].observe(lambda change: self._from_widget("concept", change["new"]), names="value")
        ws["apply"].on_click(lambda _: self.intervene(ws["concept"].value, ws["value"].value))
        ws["reset"].on_click(lambda _: self.reset())
        if self.bottleneck is None:
            for key in ("concept", "value", "apply"):
                ws[key].disabled = True
        self._refresh()
        controls = w.VBox([ws["image"], ws["maps"], w.HBox([ws["concept"], ws["value"]]),
                           w.HBox([ws["apply"], ws["reset"]])])
        return w.VBox([w.HBox([controls, ws["decision"]]), ws["figure"]])

    def _from_widget(self, which: str, value: Any) -> None:
        if self._syncing:
            return
        if which == "image":
            self.select(value)
        elif which == "maps":
            self.shown_maps = list(value)
            self._refresh()
        elif which == "concept":
            self._syncing = True
            try:
                self.widgets["value"].value = float(self.interventions.get(value, self.row[value]))
            finally:
                self._syncing = False

    def _refresh(self) -> None:
        """Bring the widgets (if any) in line with the state and redraw."""
        ws = self.widgets
        if not ws:
            return
        import html

        import matplotlib.pyplot as plt

        self._syncing = True
        try:
            ws["image"].value = self.image_id
            ws["maps"].value = tuple(self.shown_maps)
            concept = ws["concept"].value
            ws["value"].value = float(self.interventions.get(concept, self.row[concept]))
        finally:
            self._syncing = False
        ws["decision"].value = f"<b>{html.escape(self.decision_text())}</b>"
        ws["figure"].clear_output(wait=True)
        with ws["figure"]:
            fig = self.figure()
            from IPython.display import display

            display(fig)
            plt.close(fig)

    def _repr_html_(self) -> str:
        import html

        return (f"<p>Explorer of {len(self.image_ids)} images: {html.escape(self.decision_text())}. "
                "Call <code>.widget()</code> for the interactive view.</p>")

    def __repr__(self) -> str:
        return (f"Explorer({len(self.image_ids)} images, image={self.image_id!r}, "
                f"maps={self.shown_maps}, interventions={self.interventions})")
