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
from conceptlens.vocab.input_checks import WARNING_COLUMNS, empty_warnings

__all__ = ["ConceptScores"]

_META_KEY = b"conceptlens"


def _as_warnings(frame: Any) -> pd.DataFrame:
    """A warnings frame with exactly the columns ``image_id``, ``kind``, ``message`` (strings)."""
    if frame is None:
        return empty_warnings()
    frame = pd.DataFrame(frame)
    if len(frame) == 0:
        return empty_warnings()
    missing = [c for c in WARNING_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"warnings need the columns {', '.join(WARNING_COLUMNS)}; missing {', '.join(missing)}")
    return frame[list(WARNING_COLUMNS)].astype(str).reset_index(drop=True)


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
        warnings: One row per problem of a scored image the model should not be trusted on,
            columns exactly ``image_id``, ``kind`` and ``message`` (an empty frame with those
            columns when there are none). Kinds: ``too_small``, ``constant``, ``grayscale``,
            ``too_dark``, ``too_bright``, ``low_contrast``, ``out_of_distribution`` (see
            :mod:`conceptlens.vocab.input_checks`). The image's scores are still in
            :attr:`table`; :meth:`warnings_for` gives one image's warnings, e.g. to show them
            beside the image in a report. Kept by :meth:`save` / :meth:`load` (``.parquet``:
            in the file's metadata; ``.csv``: in a ``NAME.warnings.csv`` file beside it).

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
    warnings: pd.DataFrame = field(default_factory=empty_warnings)

    def __post_init__(self) -> None:
        self.warnings = _as_warnings(self.warnings)

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

    def warnings_for(self, image_id: str) -> list[dict[str, str]]:
        """The input warnings of one image, for showing beside it.

        Args:
            image_id: A row id of :attr:`table`.

        Returns:
            ``[{"kind": ..., "message": ...}, ...]`` in the order found; ``[]`` for a clean
            image (or an id without warnings).
        """
        rows = self.warnings[self.warnings["image_id"] == str(image_id)]
        return [{"kind": r.kind, "message": r.message} for r in rows.itertuples(index=False)]

    @property
    def flagged_ids(self) -> list[str]:
        """Ids of the images with at least one warning, in row order."""
        flagged = set(self.warnings["image_id"])
        return [i for i in self.image_ids if i in flagged]

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
            "warnings": self.warnings.to_dict(orient="records"),
        }

    def save(self, path: str | Path) -> Path:
        """Write the table to ``.parquet`` (metadata kept) or ``.csv`` (numbers only).

        A ``.csv`` keeps no metadata, except the warnings: they go to ``NAME.warnings.csv``
        beside it when there are any (a stale one from an earlier save is removed).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".csv":
            write_csv(self.table, path, index_label="image", what="score file")
            sidecar = _warnings_path(path)
            if len(self.warnings):
                write_csv(self.warnings, sidecar, index=False, what="warnings file")
            elif sidecar.exists():
                sidecar.unlink()
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
            sidecar = _warnings_path(path)
            warnings = read_table(sidecar, what="warnings file") if sidecar.exists() else None
            return cls(table=table, warnings=warnings)
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
            warnings=pd.DataFrame(meta.get("warnings") or [], columns=list(WARNING_COLUMNS)),
        )

    def __repr__(self) -> str:
        return (
            f"ConceptScores({len(self.table)} images x {self.table.shape[1]} concepts, "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings on "
            f"{len(set(self.warnings['image_id']))} images, config={self.config})"
        )

    def _repr_html_(self) -> str:
        head = html.escape(
            f"ConceptScores: {len(self.table)} images x {self.table.shape[1]} concepts, "
            f"{len(self.errors)} errors, {len(self.warnings)} input warnings"
        )
        body = self.named().head(20).to_html(float_format=lambda v: f"{v:.3f}", escape=True)
        errs = ""
        if len(self.errors):
            errs = "<p>Errors:</p>" + self.errors.to_html(index=False, escape=True)
        warns = ""
        if len(self.warnings):
            warns = ("<p>Input warnings (scores of these images should not be trusted):</p>"
                     + self.warnings.to_html(index=False, escape=True))
        return f"<div><p><b>{head}</b></p>{body}{errs}{warns}</div>"


def _warnings_path(path: Path) -> Path:
    return path.with_name(path.stem + ".warnings.csv")


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
