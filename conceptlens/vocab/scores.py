"""The labelled table of concept scores that flows from the scorer to the bottlenecks."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conceptlens._io.tables import TableFormatError, line_of, read_table, to_numbers, write_csv

__all__ = ["ConceptScores"]

_META_KEY = b"conceptlens"


@dataclass
class ConceptScores:
    """Concept scores for a set of images: rows are images, columns are concept ids.

    Args:
        table: ``(n_images, n_concepts)`` DataFrame; the index holds image ids (file
            paths or names), the columns concept ids in vocabulary order.
        config: The scoring settings that produced the numbers (mode, alpha, calibration...).
        backbone: The backbone identity as a dict (see ``BackboneIdentity.to_dict``).
        vocabulary_hash: Content hash of the vocabulary the columns come from.
        concept_names: Concept id -> preferred name, for labels in plots and reports.
        errors: One row per image that could not be scored, columns ``image`` and ``reason``.

    Examples:
        >>> import pandas as pd
        >>> s = ConceptScores(pd.DataFrame({"C0001": [0.1, 0.9]}, index=["a.png", "b.png"]))
        >>> s.to_numpy().shape
        (2, 1)
    """

    table: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)
    backbone: dict[str, Any] | None = None
    vocabulary_hash: str | None = None
    concept_names: dict[str, str] = field(default_factory=dict)
    errors: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"image": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    )

    @property
    def concept_ids(self) -> list[str]:
        """Concept ids, in column order."""
        return [str(c) for c in self.table.columns]

    @property
    def image_ids(self) -> list[str]:
        """Image ids, in row order."""
        return [str(i) for i in self.table.index]

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_images, n_concepts)`` of :attr:`table`."""
        return self.table.shape

    def __len__(self) -> int:
        return len(self.table)

    def to_numpy(self, dtype: Any = np.float64) -> np.ndarray:
        """The scores as an ``(n_images, n_concepts)`` array."""
        return self.table.to_numpy(dtype=dtype)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.table.to_numpy(dtype=dtype)

    def named(self) -> pd.DataFrame:
        """The table with preferred names instead of ids as column labels."""
        return self.table.rename(columns=lambda c: self.concept_names.get(c, c))

    def metadata(self) -> dict[str, Any]:
        """Everything but the numbers, JSON-ready."""
        return {
            "config": self.config,
            "backbone": self.backbone,
            "vocabulary_hash": self.vocabulary_hash,
            "concept_names": self.concept_names,
            "errors": self.errors.to_dict(orient="records"),
        }

    def save(self, path: str | Path) -> Path:
        """Write the table to ``.parquet`` (metadata kept) or ``.csv`` (numbers only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".csv":
            write_csv(self.table, path, index_label="image", what="score file")
            return path
        if path.suffix != ".parquet":
            raise ValueError(f"unsupported score file suffix {path.suffix!r} for {path}: use .parquet or .csv")
        import pyarrow as pa
        import pyarrow.parquet as pq

        frame = self.table.copy()
        frame.index = frame.index.astype(str)
        frame.index.name = "image"
        arrow = pa.Table.from_pandas(frame)
        meta = dict(arrow.schema.metadata or {})
        meta[_META_KEY] = json.dumps(self.metadata()).encode()
        pq.write_table(arrow.replace_schema_metadata(meta), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConceptScores:
        """Read a table written by :meth:`save` (``.parquet`` or ``.csv``)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"score file not found: {path}")
        if path.suffix == ".csv":
            table = _read_score_csv(path)
            return cls(table=table)
        if path.suffix != ".parquet":
            raise ValueError(f"unsupported score file suffix {path.suffix!r} for {path}: use .parquet or .csv")
        import pyarrow.parquet as pq

        arrow = pq.read_table(path)
        raw = (arrow.schema.metadata or {}).get(_META_KEY)
        meta = json.loads(raw) if raw else {}
        table = arrow.to_pandas()
        errors = pd.DataFrame(meta.get("errors") or [], columns=["image", "reason"])
        return cls(
            table=table,
            config=meta.get("config") or {},
            backbone=meta.get("backbone"),
            vocabulary_hash=meta.get("vocabulary_hash"),
            concept_names=meta.get("concept_names") or {},
            errors=errors,
        )

    def __repr__(self) -> str:
        return (
            f"ConceptScores({len(self.table)} images x {self.table.shape[1]} concepts, "
            f"{len(self.errors)} errors, config={self.config})"
        )

    def _repr_html_(self) -> str:
        head = html.escape(
            f"ConceptScores: {len(self.table)} images x {self.table.shape[1]} concepts, "
            f"{len(self.errors)} errors"
        )
        body = self.named().head(20).to_html(float_format=lambda v: f"{v:.3f}", escape=True)
        errs = ""
        if len(self.errors):
            errs = "<p>Errors:</p>" + self.errors.to_html(index=False, escape=True)
        return f"<div><p><b>{head}</b></p>{body}{errs}</div>"


def _read_score_csv(path: Path) -> pd.DataFrame:
    """A score CSV: ids kept as written (``001`` stays ``001``), formula escapes undone,
    empty cells NaN; a duplicate id or a cell that is not a number names its line."""
    frame = read_table(path, what="score file")
    if frame.shape[1] == 0:
        raise TableFormatError(f"score file {str(path)!r} has no columns")
    key = frame.columns[0]
    seen: dict[str, int] = {}
    for position, image_id in enumerate(frame[key]):
        if image_id in seen:
            raise TableFormatError(
                f"score file {str(path)!r}, {line_of(frame, position)}: image {image_id!r} "
                f"appears twice (also {line_of(frame, seen[image_id])})"
            )
        seen[image_id] = position
    table = to_numbers(frame.drop(columns=[key]).replace("", "nan"), what="score file")
    table.index = pd.Index(list(frame[key]), dtype=object, name=key)
    table.attrs.clear()
    return table
