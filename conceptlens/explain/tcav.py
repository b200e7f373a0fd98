"""TCAV: how sensitive a class is to a concept learned from example images (Kim et al. 2018).

For a layer ``l`` with activations ``a = f_l(x)`` and a class score ``h_k(a)`` (here the
bottleneck's class logit, or any :mod:`~conceptlens.explain.targets` target):

* a **concept activation vector** (CAV) ``v_C`` is the unit normal of a linear classifier
  (logistic regression) separating the activations of the concept's example images from those
  of a random set of images;
* the **conceptual sensitivity** of input ``x`` is the directional derivative
  ``S_C,k(x) = grad_a h_k(f_l(x)) . v_C``;
* the **TCAV score** is the fraction of the class's inputs with ``S > 0``.

A CAV from one random set can point anywhere that separates, so the test is repeated:
``n_runs`` CAVs of the concept against ``n_runs`` different random sets, and ``n_runs``
*random* CAVs (one random set against another). The concept is **significant** when a
two-sided Welch t-test rejects equal mean TCAV scores of the concept and the random CAVs at
``alpha`` (Bonferroni-corrected over the concepts tested together, as Kim et al. advise for
several concepts) **and** its CAVs separate the examples from random images on held-out
images (mean accuracy >= ``min_cav_accuracy``, default 0.6). The second condition is needed
because a fixed set of random images used as a "concept" gives nearly the same (meaningless)
CAV in every run, hence a consistent TCAV score that a t-test against the varying random CAVs
can call significant: on the demo model a random 40-image "concept" did so in 2 of 4 seeds
(its CAV accuracy was 0.42-0.51, against 0.75-0.84 for the criteria). ``direction`` says
whether the concept raises or lowers the class score.

In the joint space the bottleneck's class logit is close to linear in the embedding, so every
input has nearly the same gradient and each CAV's TCAV score is 0 or 1; the random CAVs then
score 0 or 1 at random and the test compares proportions (the default 20 runs give adjusted
p ~ 1e-3 for a concept at 1.0 against random CAVs at 0.45).

Layers: ``layer="joint"`` (default) is the backbone's global image embedding in the joint
image-text space (what the concept scores are made from); any module of the backbone (an
``nn.Module`` or its qualified name, e.g. ``"vision_model.encoder.layers.1"``) uses that
module's output, flattened. The gradients of the class score with respect to the layer do not
depend on the CAV, so they are computed once per input and every CAV costs one dot product.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from conceptlens.errors import ConceptlensError

__all__ = ["TCAVError", "TCAVResult", "tcav"]


class TCAVError(ConceptlensError, ValueError):
    """TCAV cannot run: too few examples or random images, an unknown layer."""


@dataclass
class TCAVResult:
    """TCAV scores with random-concept runs and a significance test.

    Attributes:
        table: One row per concept: ``tcav_mean``, ``tcav_std`` (over runs), ``random_mean``,
            ``random_std``, ``t``, ``p_value``, ``p_adjusted`` (Bonferroni), ``significant``,
            ``direction`` (``"raises"`` / ``"lowers"``), ``cav_accuracy`` (mean held-out
            accuracy of the concept's CAVs) and ``magnitude_mean`` (the magnitude variant:
            sum of positive sensitivities over sum of absolute ones).
        runs: One row per CAV: ``concept`` (``"<random>"`` for random CAVs), ``run``,
            ``tcav``, ``magnitude``, ``cav_accuracy``.
        target: Description of the class score.
        layer: ``"joint"`` or the module name.
        n_inputs: Inputs of the class the scores are fractions of.
        alpha: Significance level (before the Bonferroni correction).
    """

    table: pd.DataFrame
    runs: pd.DataFrame
    target: str
    layer: str
    n_inputs: int
    alpha: float
    settings: dict[str, Any] = field(default_factory=dict)

    def plot(self, ax: Any = None) -> Any:
        """Bar chart: mean TCAV score per concept (error bars: SD over runs), the random
        CAVs' mean and SD as a band, ``*`` on significant concepts. Returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(self.table) + 2), 3.8))
        names = list(self.table.index)
        x = np.arange(len(names))
        colours = ["#2a6fb0" if s else "#9aa5b1" for s in self.table["significant"]]
        ax.bar(x, self.table["tcav_mean"], yerr=self.table["tcav_std"], color=colours, capsize=3,
               label="concept CAVs")
        mean, sd = float(self.table["random_mean"].iloc[0]), float(self.table["random_std"].iloc[0])
        ax.axhspan(mean - sd, mean + sd, color="#e0a040", alpha=0.25, label="random CAVs (mean +- SD)")
        ax.axhline(mean, color="#e0a040", lw=1)
        for xi, (_, row) in zip(x, self.table.iterrows(), strict=True):
            if row["significant"]:
                ax.text(xi, min(1.02, row["tcav_mean"] + row["tcav_std"] + 0.02), "*", ha="center",
                        fontsize=14)
        ax.set_xticks(x)
        ax.set_xticklabels([_short(n) for n in names], rotation=30, ha="right", fontsize="small")
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("TCAV score")
        ax.set_title(f"TCAV: {self.target} ({self.layer}; * p < {self.alpha} corrected)")
        ax.legend(loc="lower right", fontsize="small")
        ax.figure.tight_layout()
        return ax

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for a report's JSON twin)."""
        return {"target": self.target, "layer": self.layer, "n_inputs": self.n_inputs, "alpha": self.alpha,
                "settings": self.settings,
                "concepts": {str(k): {c: (bool(v) if isinstance(v, (bool, np.bool_)) else
                                          v if isinstance(v, str) else float(v))
                                      for c, v in row.items()}
                             for k, row in self.table.iterrows()}}

    def report_section(self) -> str:
        """An HTML section (heading, sentence, table) for a report page."""
        return (f"<section class='tcav'><h2>Concept sensitivity (TCAV)</h2>{self._repr_html_()}"
                "</section>")

    def report_sections(self, title: str = "Concept sensitivity (TCAV)") -> list[Any]:
        """Sections for a :class:`~conceptlens.explain.report.Report`: the per-concept table,
        the bar chart and the settings (collapsed); every number is in the report's JSON twin.

        Unlike :meth:`report_section` (an HTML string), these go through the report's
        autoescaped template::

            report = Report("TCAV")
            report.sections.extend(result.report_sections())   # or: for s in ...: report.add(s)
            report.save("out", "tcav")
        """
        from conceptlens.explain.report.document import Facts, Figures, Table

        n_sig = int(self.table["significant"].sum())
        caption = (f"Fraction of {self.n_inputs} inputs whose score for {self.target} rises along "
                   f"each concept's activation vector ({self.settings.get('n_runs', '?')} runs "
                   f"against random image sets). A concept is significant when it differs from "
                   f"random vectors at p < {self.alpha} after Bonferroni correction and its "
                   f"vectors separate its examples from random images. {n_sig} of "
                   f"{len(self.table)} concepts are significant.")
        columns = ["tcav_mean", "tcav_std", "random_mean", "random_std", "p_adjusted",
                   "significant", "direction", "cav_accuracy", "magnitude_mean"]
        frame = self.table[[c for c in columns if c in self.table.columns]].reset_index()
        frame = frame.rename(columns={frame.columns[0]: "concept"})
        frame["concept"] = frame["concept"].astype(str)
        ax = self.plot()
        data = {"concepts": [str(k) for k in self.table.index],
                "tcav_mean": self.table["tcav_mean"].tolist(),
                "tcav_std": self.table["tcav_std"].tolist(),
                "random_mean": float(self.table["random_mean"].iloc[0]),
                "random_std": float(self.table["random_std"].iloc[0]),
                "significant": [bool(s) for s in self.table["significant"]]}
        return [
            Table(title, caption=caption, frame=frame),
            Figures.from_matplotlib(f"{title}: plot", ax.figure, data=data,
                                    caption="Bars: mean TCAV score per concept (error bars: SD over "
                                            "runs); band: random vectors' mean +- SD; * significant.",
                                    alts=[f"TCAV bar chart for {self.target}"]),
            Facts(f"{title}: settings", facts={"target": self.target, "layer": self.layer,
                                               "inputs": self.n_inputs, "alpha": self.alpha,
                                               **self.settings}, collapsed=True),
        ]

    def __repr__(self) -> str:
        sig = [str(k) for k, s in self.table["significant"].items() if s]
        return f"TCAVResult({self.target}, layer={self.layer!r}, significant: {sig})"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(str(name))}</td><td>{r.tcav_mean:.2f} &plusmn; {r.tcav_std:.2f}</td>"
            f"<td>{r.random_mean:.2f} &plusmn; {r.random_std:.2f}</td><td>{r.p_adjusted:.2g}</td>"
            f"<td>{'yes, ' + html.escape(r.direction) if r.significant else 'no'}</td>"
            f"<td>{r.cav_accuracy:.2f}</td></tr>"
            for name, r in self.table.iterrows()
        )
        return (f"<p>TCAV of {html.escape(self.target)} at layer {html.escape(self.layer)}: fraction of "
                f"{self.n_inputs} inputs whose class score rises along each concept's CAV, "
                f"{self.settings.get('n_runs', '?')} runs against random sets; significant when a "
                f"t-test against random CAVs gives p &lt; {self.alpha} (Bonferroni).</p>"
                "<table><thead><tr><th>concept</th><th>TCAV</th><th>random</th><th>p (adj.)</th>"
                f"<th>significant</th><th>CAV accuracy</th></tr></thead><tbody>{rows}</tbody></table>")


def _short(name: str) -> str:
    return name if len(name) <= 26 else name[:23] + "..."


def _pixels(backbone: Any, images: Any) -> torch.Tensor:
    from conceptlens.vocab.sources import iter_image_sources

    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        return images
    loaded = [source.load().image for source in iter_image_sources(images)]
    if not loaded:
        raise TCAVError("no images given")
    return backbone.preprocess(loaded)


def _find_module(backbone: Any, layer: Any) -> torch.nn.Module:
    root = backbone.model if hasattr(backbone, "model") else backbone
    if isinstance(layer, torch.nn.Module):
        return layer
    try:
        return root.get_submodule(str(layer))
    except AttributeError:
        raise TCAVError(f"the backbone has no module {layer!r}; give a module name or 'joint'") from None


def _layer_name(backbone: Any, layer: Any) -> str:
    if isinstance(layer, str):
        return layer
    root = backbone.model if hasattr(backbone, "model") else backbone
    return next((n for n, m in root.named_modules() if m is layer), type(layer).__name__)


@contextmanager
def _capture(backbone: Any, layer: Any, store: dict[str, torch.Tensor]) -> Any:
    """Record the layer's activation of the latest forward pass in ``store["act"]`` (with
    gradients retained when they flow)."""
    if layer == "joint":
        original = backbone.forward_images

        def forward_images(pixel_values: torch.Tensor) -> Any:
            features = original(pixel_values)
            act = features.global_embeds
            if act.requires_grad:
                act.retain_grad()
            store["act"] = act
            return features

        backbone.forward_images = forward_images
        try:
            yield
        finally:
            del backbone.forward_images
        return
    module = _find_module(backbone, layer)

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        act = output[0] if isinstance(output, (tuple, list)) else output
        if act.requires_grad:
            act.retain_grad()
        store["act"] = act

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _activations(backbone: Any, pixels: torch.Tensor, layer: Any, batch_size: int) -> np.ndarray:
    store: dict[str, torch.Tensor] = {}
    out = []
    with _capture(backbone, layer, store), torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start:start + batch_size].to(device=backbone.device, dtype=backbone.dtype)
            backbone.forward_images(chunk)
            out.append(store["act"].detach().float().reshape(len(chunk), -1).cpu().numpy())
    return np.concatenate(out)


def _gradients(backbone: Any, fn: Any, pixels: torch.Tensor, layer: Any, batch_size: int) -> np.ndarray:
    store: dict[str, torch.Tensor] = {}
    out = []
    with _capture(backbone, layer, store):
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start:start + batch_size].to(device=backbone.device, dtype=backbone.dtype)
            chunk = chunk.detach().requires_grad_(True)  # so the graph reaches the layer
            store.clear()
            value = fn(chunk)
            act = store["act"]
            grad = torch.autograd.grad(value.sum(), act)[0]
            out.append(grad.detach().float().reshape(len(chunk), -1).cpu().numpy())
    return np.concatenate(out)


def _cav(x_pos: np.ndarray, x_neg: np.ndarray, rng: np.random.Generator, c: float) -> tuple[np.ndarray, float]:
    """Unit CAV (pointing to the positives) and its held-out accuracy (a third held out)."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([x_pos, x_neg])
    y = np.r_[np.ones(len(x_pos)), np.zeros(len(x_neg))]
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-8
    z = (x - mean) / scale
    order = rng.permutation(len(z))
    cut = max(1, len(z) // 3)
    test, train = order[:cut], order[cut:]
    model = LogisticRegression(C=c, max_iter=2000).fit(z[train], y[train])
    accuracy = float(model.score(z[test], y[test]))
    model = LogisticRegression(C=c, max_iter=2000).fit(z, y)
    # back to activation units: the decision is (a - mean) / scale . w, so its normal is w / scale
    direction = model.coef_[0] / scale
    return direction / max(float(np.linalg.norm(direction)), 1e-12), accuracy


def tcav(
    scorer: Any,
    bottleneck: Any,
    target: Any,
    inputs: Any,
    concepts: Mapping[str, Any],
    random_images: Any,
    *,
    layer: Any = "joint",
    n_runs: int = 20,
    n_random: int | None = None,
    alpha: float = 0.05,
    min_cav_accuracy: float = 0.6,
    regularization: float = 0.1,
    batch_size: int = 32,
    random_state: int = 0,
) -> TCAVResult:
    """Testing with concept activation vectors (module docstring).

    Args:
        scorer: The :class:`~conceptlens.vocab.ConceptScorer` (its backbone is the model).
        bottleneck: A fitted bottleneck for class targets (``None`` for concept / prompt
            targets).
        target: What to explain: a class label of the bottleneck, ``"concept:<id>"``, a
            :class:`~conceptlens.explain.targets.Target` (see ``resolve_target``).
        inputs: Images of the class (anything the scorer reads, or a pixel tensor); the TCAV
            score is a fraction of these.
        concepts: ``{name: example images}`` per concept (at least 5 images each).
        random_images: A pool of random images; each run draws a random set of the concept's
            size (or ``n_random``) from it, and the random CAVs pair two disjoint draws.
        layer: ``"joint"`` or a backbone module / its qualified name.
        n_runs: CAVs per concept (and random CAVs).
        n_random: Images per random set (default: the largest concept's example count,
            capped at half the pool).
        alpha: Significance level; Bonferroni-corrected over ``len(concepts)``.
        min_cav_accuracy: Least mean held-out accuracy of a concept's CAVs for it to count
            as significant (module docstring).
        regularization: Inverse L2 strength of the CAV logistic regressions (standardised
            activations).
        batch_size: Images per forward pass.
        random_state: Seed of the random draws and the CAV hold-outs.

    Returns:
        TCAVResult

    Raises:
        TCAVError: Fewer than 5 examples for a concept, a random pool smaller than twice a
            random set, or fewer than 2 runs.
    """
    from conceptlens.explain.targets import resolve_target

    if n_runs < 2:
        raise TCAVError(f"n_runs must be >= 2 for a significance test; got {n_runs}")
    backbone = scorer.backbone
    rng = np.random.default_rng(random_state)
    resolved = resolve_target(target, scorer=scorer, bottleneck=bottleneck)
    fn = resolved.build(backbone, scorer, bottleneck)
    layer_name = "joint" if layer == "joint" else _layer_name(backbone, layer)
    grads = _gradients(backbone, fn, _pixels(backbone, inputs), layer, batch_size)
    pool = _activations(backbone, _pixels(backbone, random_images), layer, batch_size)
    acts = {}
    for name, images in concepts.items():
        acts[str(name)] = _activations(backbone, _pixels(backbone, images), layer, batch_size)
        if len(acts[str(name)]) < 5:
            raise TCAVError(f"concept {name!r} has {len(acts[str(name)])} example images; TCAV needs >= 5")
    if not acts:
        raise TCAVError("no concepts given")
    size = n_random or max(len(a) for a in acts.values())
    size = min(size, len(pool) // 2)
    if size < 5:
        raise TCAVError(f"the random pool has {len(pool)} images; TCAV needs at least 10")

    def scores_of(direction: np.ndarray) -> tuple[float, float]:
        s = grads @ direction
        total = np.abs(s).sum()
        return float(np.mean(s > 0)), float(s[s > 0].sum() / total) if total > 0 else 0.5

    rows: list[dict[str, Any]] = []
    for run in range(n_runs):
        draw = rng.permutation(len(pool))
        random_set, other = pool[draw[:size]], pool[draw[size:2 * size]]
        for name, act in acts.items():
            direction, accuracy = _cav(act, random_set, rng, regularization)
            score, magnitude = scores_of(direction)
            rows.append({"concept": name, "run": run, "tcav": score, "magnitude": magnitude,
                         "cav_accuracy": accuracy})
        direction, accuracy = _cav(other, random_set, rng, regularization)
        score, magnitude = scores_of(direction)
        rows.append({"concept": "<random>", "run": run, "tcav": score, "magnitude": magnitude,
                     "cav_accuracy": accuracy})
    runs = pd.DataFrame(rows)
    null = runs.loc[runs["concept"] == "<random>", "tcav"].to_numpy()
    table_rows = {}
    for name in acts:
        own = runs.loc[runs["concept"] == name]
        values = own["tcav"].to_numpy()
        if np.ptp(values) == 0 and np.ptp(null) == 0:
            t, p = (0.0, 1.0) if values[0] == null[0] else (np.inf * np.sign(values[0] - null[0]), 0.0)
        else:
            with warnings.catch_warnings():  # near-identical 0/1 scores: scipy's precision note
                warnings.simplefilter("ignore", RuntimeWarning)
                test = stats.ttest_ind(values, null, equal_var=False)
            t, p = float(test.statistic), float(test.pvalue)
        adjusted = min(1.0, p * len(acts))
        table_rows[name] = {
            "tcav_mean": float(values.mean()), "tcav_std": float(values.std(ddof=1)),
            "random_mean": float(null.mean()), "random_std": float(null.std(ddof=1)),
            "t": float(t), "p_value": float(p), "p_adjusted": float(adjusted),
            "significant": bool(adjusted < alpha and own["cav_accuracy"].mean() >= min_cav_accuracy),
            "direction": "raises" if values.mean() > null.mean() else "lowers",
            "cav_accuracy": float(own["cav_accuracy"].mean()),
            "magnitude_mean": float(own["magnitude"].mean()),
        }
    table = pd.DataFrame.from_dict(table_rows, orient="index")
    table.index.name = "concept"
    return TCAVResult(table=table, runs=runs, target=resolved.describe(), layer=layer_name,
                      n_inputs=len(grads), alpha=alpha,
                      settings={"n_runs": n_runs, "min_cav_accuracy": min_cav_accuracy, "random_set_size": size, "pool": len(pool),
                                "regularization": regularization, "random_state": random_state})
