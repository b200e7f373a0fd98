"""Calibrated concept scores: Platt or isotonic calibration per concept from concept labels.

A concept score is a cosine or the model's own ``sigmoid(scale * cos + bias)``: neither is the
probability that the concept is present. :class:`ConceptCalibrator` fits, per concept, a map
from score to probability on images with concept labels:

* ``"platt"`` (Platt 1999): ``p = sigmoid(a * s + b)``, ``a`` and ``b`` by maximum likelihood
  (a logistic regression on the one score, with a very weak L2 penalty so that separable
  concepts stay finite);
* ``"isotonic"`` (Zadrozny and Elkan 2002): the non-decreasing step function of least squares
  (pool adjacent violators), evaluated with linear interpolation between its knots and clipped
  at the ends.

Hand it to the scorer (``ConceptScorer(..., calibrator=cal)``) and every score it returns --
the table of :meth:`~conceptlens.vocab.ConceptScorer.score` and the differentiable
:meth:`~conceptlens.vocab.ConceptScorer.score_tensor` -- is the calibrated probability. It
is saved as JSON (:meth:`ConceptCalibrator.save` / :meth:`ConceptCalibrator.load`), never
pickled.

:func:`expected_calibration_error` is the usual binned ECE (equal-width bins, weighted by the
bin's share of images); :func:`calibration_report` gives it per concept before and after,
with a reliability plot.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from conceptlens._html.document import Facts, Figures, Table
from conceptlens.errors import ConceptlensError

__all__ = [
    "CalibrationError",
    "CalibrationReport",
    "ConceptCalibrator",
    "calibration_report",
    "expected_calibration_error",
]

METHODS = ("platt", "isotonic")
_FORMAT = "conceptlens-concept-calibrator/1"


class CalibrationError(ConceptlensError, ValueError):
    """A calibrator cannot be fitted or applied (labels of one class only, unknown concepts,
    a file of the wrong format)."""


def _as_frame(scores: Any) -> pd.DataFrame:
    table = getattr(scores, "table", scores)
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"scores must be ConceptScores or a DataFrame, got {type(scores).__name__}")
    return table


def _labels_frame(labels: Any, table: pd.DataFrame) -> pd.DataFrame:
    if isinstance(labels, pd.DataFrame):
        missing = [c for c in table.columns if c not in labels.columns]
        if missing:
            raise CalibrationError(f"labels lack concept column(s) {missing[:5]}")
        frame = labels[list(table.columns)]
        if len(frame) == len(table) and not frame.index.equals(table.index):
            if set(frame.index) >= set(table.index):
                frame = frame.loc[table.index]
            else:
                frame = frame.set_axis(table.index)
        return frame
    array = np.asarray(labels)
    if array.shape != table.shape:
        raise CalibrationError(f"labels must have shape {table.shape}, got {array.shape}")
    return pd.DataFrame(array, index=table.index, columns=table.columns)


def expected_calibration_error(probabilities: Any, labels: Any, n_bins: int = 10) -> float:
    """Binned expected calibration error of probabilities against 0/1 labels.

    ``ECE = sum_b (n_b / n) |mean(y in b) - mean(p in b)|`` over ``n_bins`` equal-width bins of
    ``[0, 1]`` (the last bin closed). Probabilities outside ``[0, 1]`` are clipped.

    Args:
        probabilities: ``(n,)`` predicted probabilities.
        labels: ``(n,)`` 0/1 labels.
        n_bins: Number of bins.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), 0.0, 1.0)
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"probabilities and labels must be non-empty and of one length; got {p.shape}, {y.shape}")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            total += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return float(total)


class ConceptCalibrator:
    """Per-concept Platt or isotonic calibration of concept scores (scikit-learn style).

    Args:
        method: ``"platt"`` or ``"isotonic"``.

    Attributes:
        concept_ids_: Concept ids it was fitted on (column order).
        params_: Per concept: ``{"a": .., "b": ..}`` (Platt) or ``{"x": [..], "y": [..]}``
            (isotonic knots).
        score_config_: The score configuration of the fitted scores, if they carried one.
        evaluation_: The latest :func:`calibration_report` of this calibrator (ECE before and
            after on the images it was given), once one was made; not saved with it.
    """

    def __init__(self, method: str = "platt") -> None:
        self.method = method

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"method": self.method}

    def set_params(self, **params: Any) -> ConceptCalibrator:
        for key, value in params.items():
            setattr(self, key, value)
        return self

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "params_")

    def fit(self, scores: Any, labels: Any) -> ConceptCalibrator:
        """Fit one calibration map per concept.

        Args:
            scores: :class:`~conceptlens.vocab.ConceptScores` or an ``(n, K)`` DataFrame.
            labels: ``(n, K)`` 0/1 concept labels: a DataFrame with the concept ids as columns
                (rows matched by image id when the index allows) or an array in column order.

        Returns:
            self

        Raises:
            CalibrationError: A concept's labels hold only one class.
        """
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        table = _as_frame(scores)
        frame = _labels_frame(labels, table)
        params: dict[str, dict[str, Any]] = {}
        for cid in table.columns:
            s = table[cid].to_numpy(dtype=np.float64)
            y = frame[cid].to_numpy(dtype=np.float64)
            if not np.isin(y, (0.0, 1.0)).all():
                raise CalibrationError(f"labels of concept {cid!r} must be 0/1")
            if y.min() == y.max():
                raise CalibrationError(f"labels of concept {cid!r} hold one class only; cannot calibrate")
            params[str(cid)] = self._fit_one(s, y)
        self.concept_ids_ = [str(c) for c in table.columns]
        self.params_ = params
        self.__dict__.pop("evaluation_", None)  # an earlier evaluation was of other maps
        self.score_config_ = dict(getattr(scores, "config", {}) or {})
        return self

    def _fit_one(self, s: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        if self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            model = LogisticRegression(C=1e4, max_iter=5000).fit(s[:, None], y)
            return {"a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
        return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}

    def _check(self, concept_ids: list[str]) -> None:
        if not self.is_fitted:
            raise CalibrationError("the calibrator is not fitted; call fit(scores, labels) first")
        missing = [c for c in concept_ids if c not in self.params_]
        if missing:
            raise CalibrationError(
                f"the calibrator was not fitted on concept(s) {missing[:5]}; fit it on scores of "
                "the same vocabulary"
            )

    def transform_array(self, values: np.ndarray, concept_ids: list[str]) -> np.ndarray:
        """Calibrated ``(n, K)`` probabilities of raw scores whose columns are ``concept_ids``."""
        concept_ids = [str(c) for c in concept_ids]
        self._check(concept_ids)
        values = np.asarray(values, dtype=np.float64)
        out = np.empty_like(values)
        for j, cid in enumerate(concept_ids):
            p = self.params_[cid]
            if "a" in p:
                out[:, j] = 1.0 / (1.0 + np.exp(-(p["a"] * values[:, j] + p["b"])))
            else:
                out[:, j] = np.interp(values[:, j], p["x"], p["y"])
        return out

    def transform(self, scores: Any) -> Any:
        """Calibrated scores: a DataFrame for a DataFrame, :class:`ConceptScores` for scores."""
        table = _as_frame(scores)
        values = self.transform_array(table.to_numpy(), list(table.columns))
        frame = pd.DataFrame(values, index=table.index, columns=table.columns)
        if hasattr(scores, "table"):
            from dataclasses import replace

            return replace(scores, table=frame, config={**scores.config, "concept_calibration": self.method})
        return frame

    def transform_tensor(self, values: torch.Tensor, concept_ids: list[str]) -> torch.Tensor:
        """Differentiable version of :meth:`transform_array` for a ``(B, K)`` tensor."""
        concept_ids = [str(c) for c in concept_ids]
        self._check(concept_ids)
        columns = []
        for j, cid in enumerate(concept_ids):
            p = self.params_[cid]
            v = values[:, j]
            if "a" in p:
                columns.append(torch.sigmoid(p["a"] * v + p["b"]))
            else:
                columns.append(_interp(v, torch.tensor(p["x"], dtype=v.dtype, device=v.device),
                                       torch.tensor(p["y"], dtype=v.dtype, device=v.device)))
        return torch.stack(columns, dim=1)

    def fit_transform(self, scores: Any, labels: Any) -> Any:
        return self.fit(scores, labels).transform(scores)

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        self._check([])
        return {"format": _FORMAT, "method": self.method, "concept_ids": self.concept_ids_,
                "params": self.params_, "score_config": self.score_config_}

    def save(self, path: str | Path) -> Path:
        """Write the fitted calibrator as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConceptCalibrator:
        """Read a calibrator written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CalibrationError(f"{path}: cannot read a calibrator ({error})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise CalibrationError(f"{path}: not a conceptlens concept calibrator")
        new = cls(method=str(data["method"]))
        new.concept_ids_ = [str(c) for c in data["concept_ids"]]
        new.params_ = {str(k): dict(v) for k, v in data["params"].items()}
        new.score_config_ = dict(data.get("score_config") or {})
        return new

    def report_sections(self, title: str = "Concept calibration maps") -> list[Any]:
        """A table of the fitted map per concept for a :class:`~conceptlens.explain.report.Report`
        (for ECE before/after and the reliability plot use
        :meth:`CalibrationReport.report_sections` of :func:`calibration_report`)::

            report.sections.extend(calibrator.report_sections())   # or: report.add(...)
        """

        self._check([])
        rows = []
        for cid in self.concept_ids_:
            p = self.params_[cid]
            rows.append({"concept": cid, "a": p.get("a"), "b": p.get("b"),
                         "knots": len(p["x"]) if "x" in p else None})
        caption = (f"Each concept's score is mapped to a probability by {self.method} calibration "
                   "fitted on concept labels" + (": p = sigmoid(a * score + b)." if
                                                  self.method == "platt" else
                                                  " (a non-decreasing step function)."))
        return [Table(title, caption=caption, frame=pd.DataFrame(rows), collapsed=True)]

    def __repr__(self) -> str:
        fitted = f", {len(self.concept_ids_)} concepts" if self.is_fitted else ", not fitted"
        return f"ConceptCalibrator(method={self.method!r}{fitted})"

    def _repr_html_(self) -> str:
        if not self.is_fitted:
            return f"<p>{html.escape(repr(self))}</p>"
        rows = []
        for cid in self.concept_ids_:
            p = self.params_[cid]
            desc = (f"sigmoid({p['a']:.3g} s + {p['b']:.3g})" if "a" in p
                    else f"isotonic, {len(p['x'])} knots")
            rows.append(f"<tr><td>{html.escape(cid)}</td><td>{html.escape(desc)}</td></tr>")
        return (f"<table><caption>Concept calibrator ({html.escape(self.method)})</caption>"
                f"<tbody>{''.join(rows)}</tbody></table>")


def _interp(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``np.interp`` in torch (clipped at the ends, differentiable between knots)."""
    if len(x) == 1:
        return y.expand_as(v).clone()
    vc = v.clamp(x[0], x[-1])
    idx = torch.searchsorted(x, vc.detach().contiguous(), right=True).clamp(1, len(x) - 1)
    x0, x1, y0, y1 = x[idx - 1], x[idx], y[idx - 1], y[idx]
    width = (x1 - x0).clamp_min(1e-12)
    return y0 + (y1 - y0) * (vc - x0) / width


@dataclass
class CalibrationReport:
    """ECE per concept before and after calibration, with the data of a reliability plot.

    Attributes:
        table: One row per concept: ``ece_before``, ``ece_after``, ``n``, ``prevalence``.
        before: ``(n, K)`` raw scores (clipped to [0, 1] for the ECE).
        after: ``(n, K)`` calibrated probabilities.
        labels: ``(n, K)`` 0/1 labels.
        n_bins: Bins of the ECE and the plot.
        method: The calibrator's method.
    """

    table: pd.DataFrame
    before: pd.DataFrame
    after: pd.DataFrame
    labels: pd.DataFrame
    n_bins: int
    method: str

    @property
    def ece_before(self) -> float:
        """ECE of all concepts pooled, before."""
        return expected_calibration_error(self.before.to_numpy(), self.labels.to_numpy(), self.n_bins)

    @property
    def ece_after(self) -> float:
        """ECE of all concepts pooled, after."""
        return expected_calibration_error(self.after.to_numpy(), self.labels.to_numpy(), self.n_bins)

    def plot(self, ax: Any = None) -> Any:
        """Reliability diagram (pooled over concepts): mean label per bin of predicted
        probability, before and after, against the diagonal. Returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 4.5))
        y = self.labels.to_numpy(dtype=float).ravel()
        for name, frame, style in (("before", self.before, "o--"), ("after", self.after, "s-")):
            p = np.clip(frame.to_numpy(dtype=float).ravel(), 0, 1)
            bins = np.minimum((p * self.n_bins).astype(int), self.n_bins - 1)
            xs, ys = [], []
            for b in range(self.n_bins):
                inside = bins == b
                if inside.any():
                    xs.append(p[inside].mean())
                    ys.append(y[inside].mean())
            ece = expected_calibration_error(p, y, self.n_bins)
            ax.plot(xs, ys, style, label=f"{name} (ECE {ece:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="fraction with concept",
               title=f"Concept score reliability ({self.method})")
        ax.legend(loc="upper left", fontsize="small")
        return ax

    def report_sections(self, title: str = "Concept score calibration") -> list[Any]:
        """Sections for a :class:`~conceptlens.explain.report.Report`: pooled ECE before and
        after, ECE per concept and the reliability plot (numbers in the JSON twin)::

            summary = calibration_report(calibrator, held_out_scores, held_out_labels)
            report = Report("Calibration")
            report.sections.extend(summary.report_sections())   # or: for s in ...: report.add(s)
            report.save("out", "calibration")
        """

        before, after = self.ece_before, self.ece_after
        caption = (f"Expected calibration error (ECE, {self.n_bins} bins) of the concept scores "
                   f"against concept labels on {len(self.labels)} images, before and after "
                   f"{self.method} calibration: {before:.3f} before, {after:.3f} after, all "
                   "concepts pooled. Lower is better.")
        frame = self.table.reset_index()
        frame = frame.rename(columns={frame.columns[0]: "concept"})
        frame["concept"] = frame["concept"].astype(str)
        ax = self.plot()
        return [
            Facts(title, caption=caption, facts={"method": self.method, "images": len(self.labels),
                                                 "concepts": len(self.table), "bins": self.n_bins,
                                                 "ECE before": before, "ECE after": after}),
            Table(f"{title}: per concept", caption="ECE before and after, per concept.",
                  frame=frame),
            Figures.from_matplotlib(f"{title}: reliability", ax.figure,
                                    caption="Fraction of images with the concept per bin of "
                                            "predicted probability, before and after; the diagonal "
                                            "is perfect calibration.",
                                    alts=["Reliability diagram before and after calibration"],
                                    data={"ece_before": before, "ece_after": after,
                                          "n_bins": self.n_bins}),
        ]

    def __repr__(self) -> str:
        return (f"CalibrationReport({self.method}, {len(self.table)} concepts, ECE "
                f"{self.ece_before:.3f} -> {self.ece_after:.3f})")

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td>{html.escape(str(cid))}</td><td>{row.ece_before:.3f}</td>"
            f"<td>{row.ece_after:.3f}</td><td>{row.prevalence:.2f}</td></tr>"
            for cid, row in self.table.iterrows()
        )
        return (f"<p>Concept calibration ({html.escape(self.method)}): pooled ECE "
                f"{self.ece_before:.3f} before, {self.ece_after:.3f} after.</p><table><thead><tr>"
                "<th>concept</th><th>ECE before</th><th>ECE after</th><th>prevalence</th></tr>"
                f"</thead><tbody>{body}</tbody></table>")


def calibration_report(calibrator: ConceptCalibrator, scores: Any, labels: Any,
                       n_bins: int = 10) -> CalibrationReport:
    """ECE before and after ``calibrator`` on (held-out) raw ``scores`` with ``labels``.

    The result is also kept on the calibrator as ``calibrator.evaluation_`` (the latest
    evaluation), so that reports of a scorer using this calibrator show its ECE before and
    after and the reliability plot without being handed the report.
    """
    table = _as_frame(scores)
    frame = _labels_frame(labels, table).astype(float)
    after = pd.DataFrame(calibrator.transform_array(table.to_numpy(), list(table.columns)),
                         index=table.index, columns=table.columns)
    rows = {cid: {"ece_before": expected_calibration_error(table[cid], frame[cid], n_bins),
                  "ece_after": expected_calibration_error(after[cid], frame[cid], n_bins),
                  "n": len(table), "prevalence": float(frame[cid].mean())}
            for cid in table.columns}
    report = CalibrationReport(table=pd.DataFrame.from_dict(rows, orient="index"), before=table,
                               after=after, labels=frame, n_bins=n_bins, method=calibrator.method)
    calibrator.evaluation_ = report
    return report
