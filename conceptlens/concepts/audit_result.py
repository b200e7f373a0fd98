"""The result object of :func:`conceptlens.concepts.audit`."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from conceptlens._jsonable import jsonable

__all__ = ["AuditResult"]

_TABLES = (
    "reliance", "spurious", "unused_expected", "association", "surrogate_fidelity",
    "surrogate_coefficients", "errors", "slices", "reliance_tests", "group_reliance",
)


def _frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): jsonable(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


@dataclass
class AuditResult:
    """Everything an audit found, as DataFrames (see :func:`audit` for the columns).

    Attributes:
        summary: Headline numbers: sample and concept counts, classes, accuracy of the
            decisions (when labels were given), the surrogate's held-out ``fidelity``, the
            number of flagged spurious concepts.
        reliance: One row per concept, sorted by how much the surrogate relies on it.
        spurious: Concepts marked irrelevant, with reliance, association, ``flagged`` and the
            test that produced the flag (``test, statistic, p_value, q_value``).
        unused_expected: Concepts marked expected, with ``unused`` when the decisions do not
            seem to depend on them.
        association: Concept-decision association (effect size, p, FDR q) per class.
        surrogate_fidelity: Agreement of the surrogate with the decisions, train and held out.
        surrogate_coefficients: The surrogate's standardised weights (classes x concepts).
        errors: Concepts enriched among false positives / false negatives (needs labels).
        slices: Concept-defined subgroups with the worst accuracy (needs labels).
        reliance_tests: Conditional likelihood-ratio tests per test, class and concept
            (``conditional``; with labels also ``beyond_labels`` and ``label_conditional``),
            with effect, statistic, p and q; the flags in ``spurious`` come from these rows.
        surrogate: The fitted surrogate bottleneck itself.
        group_reliance: Reliance and drop-group likelihood-ratio tests per concept group
            (with ``concept_groups``; empty otherwise).
    """

    summary: dict[str, Any]
    reliance: pd.DataFrame
    spurious: pd.DataFrame
    unused_expected: pd.DataFrame
    association: pd.DataFrame
    surrogate_fidelity: pd.DataFrame
    surrogate_coefficients: pd.DataFrame
    errors: pd.DataFrame
    slices: pd.DataFrame
    reliance_tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    surrogate: Any = field(default=None, repr=False)
    group_reliance: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def fidelity(self) -> float:
        """Held-out agreement of the surrogate with the decisions (NaN without a held-out set)."""
        value = self.summary.get("fidelity")
        return float("nan") if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``summary`` plus every table as a list of records (NaN -> None)."""
        out: dict[str, Any] = {"summary": jsonable(self.summary)}
        for name in _TABLES:
            frame = getattr(self, name)
            if name == "surrogate_coefficients":
                frame = frame.reset_index()
            out[name] = _frame_records(frame)
        return out

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"AuditResult({s.get('n_samples')} samples x {s.get('n_concepts')} concepts, "
            f"fidelity={s.get('fidelity')!r}, flagged={s.get('n_flagged_spurious')})"
        )

    def _repr_html_(self) -> str:
        parts = ["<div><h3>Concept audit</h3><ul>"]
        for k, v in self.summary.items():
            if isinstance(v, float):
                v = f"{v:.3f}"
            parts.append(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>")
        parts.append("</ul>")
        # reliance per concept group right after the reliance per concept
        order = ["reliance", "group_reliance", *[t for t in _TABLES if t not in {"reliance", "group_reliance"}]]
        for name in order:
            frame = getattr(self, name)
            if frame.empty:
                continue
            if name == "group_reliance" and "concepts" in frame:
                frame = frame.assign(concepts=[", ".join(map(str, c)) if isinstance(c, (list, tuple))
                                               else str(c) for c in frame["concepts"]])
            parts.append(f"<h4>{html.escape(name.replace('_', ' '))}</h4>")
            parts.append(
                frame.head(15).to_html(escape=True, float_format=lambda v: f"{v:.3g}",
                                       index=name == "surrogate_coefficients")
            )
        parts.append("</div>")
        return "".join(parts)
