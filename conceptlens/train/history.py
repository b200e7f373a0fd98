"""The record of a training run of :func:`~conceptlens.train.train_concept_model`."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

__all__ = ["TrainingHistory"]


class TrainingHistory(dict):
    """What :func:`~conceptlens.train.train_concept_model` records: a plain ``dict`` (``loss``
    and ``<name>_loss`` per step, ``config``, ``wall_time_s``) that also plots itself, renders
    in Jupyter and goes into a report (``extra=[history]``).

    Examples:
        >>> history = TrainingHistory(loss=[1.0, 0.5], config={"steps": 2}, wall_time_s=0.1)
        >>> history["loss"][-1], [s.title for s in history.report_sections()][0]
        (0.5, 'Concept-alignment training')
    """

    def losses(self) -> pd.DataFrame:
        """One row per step, one column per recorded loss (``loss`` is the weighted total)."""
        columns = {k: v for k, v in self.items() if (k == "loss" or k.endswith("_loss"))
                   and isinstance(v, list)}
        frame = pd.DataFrame(columns)
        frame.index.name = "step"
        return frame

    def plot(self, ax: Any = None) -> Any:
        """Loss curves per step (total and each term). Returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.0, 3.4), layout="constrained")
        frame = self.losses()
        for name in frame.columns:
            ax.plot(frame.index, frame[name], label=name.replace("_", " "),
                    lw=1.8 if name == "loss" else 1.0)
        ax.set(xlabel="step", ylabel="loss", title="Concept-alignment training")
        if len(frame.columns):
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        return ax

    def _facts(self) -> dict[str, Any]:
        frame = self.losses()
        facts: dict[str, Any] = {"steps": len(frame)}
        if "loss" in frame and len(frame):
            facts["first loss"] = float(frame["loss"].iloc[0])
            facts["last loss (mean of the last 10 steps)"] = float(frame["loss"].tail(10).mean())
        if self.get("wall_time_s") is not None:
            facts["wall time (s)"] = float(self["wall_time_s"])
        return facts

    def report_sections(self, title: str = "Concept-alignment training") -> list[Any]:
        """Sections for a :class:`~conceptlens.explain.report.Report`: the run's numbers, the
        loss curves and the configuration (collapsed)."""
        from conceptlens.explain.report.document import Facts, Figures

        frame = self.losses()
        sections: list[Any] = [Facts(title, facts=self._facts(),
                                     caption="The model's concept alignment was trained with "
                                             "conceptlens.train (global SigLIP loss, RC-Align's local "
                                             "loss and, with masks, a patch loss).")]
        if len(frame):
            sections.append(Figures.from_matplotlib(
                f"{title}: loss", self.plot().figure, alts=["Training loss per step"],
                caption="Loss per training step: the weighted total and each term.",
                data={c: [float(v) for v in frame[c]] for c in frame.columns}))
        if isinstance(self.get("config"), dict):
            sections.append(Facts(f"{title}: configuration", facts=dict(self["config"]), collapsed=True))
        return sections

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_short(v))}</td></tr>"
                       for k, v in self._facts().items())
        return f"<table><caption>Concept-alignment training</caption><tbody>{rows}</tbody></table>"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
