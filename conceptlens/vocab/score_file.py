"""Score tables written batch by batch: one Parquet row group per batch, memory stays flat.

The file is the same as :meth:`ConceptScores.save` writes (index ``image``, one column per
concept, the metadata under the ``conceptlens`` key), so :meth:`ConceptScores.load` reads it.
It is written under a temporary name and moved into place when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conceptlens.vocab.scores import _META_KEY

__all__ = ["ScoreFileWriter"]


class ScoreFileWriter:
    """Append score rows to a ``.parquet`` file; :meth:`close` adds the metadata and commits.

    Args:
        path: The ``.parquet`` file to write.
        concept_ids: Column order.

    Raises:
        ValueError: ``path`` does not end in ``.parquet``.
    """

    def __init__(self, path: str | os.PathLike, concept_ids: Sequence[str]) -> None:
        self.path = Path(path)
        if self.path.suffix != ".parquet":
            raise ValueError(f"incremental score files are .parquet, got {self.path}")
        self.concept_ids = list(concept_ids)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.rows = 0
        self._writer: Any = None
        self._pandas = b""

    def _table(self, ids: Sequence[str], values: np.ndarray) -> Any:
        import pyarrow as pa

        frame = pd.DataFrame(np.asarray(values, dtype=np.float64),
                             index=pd.Index([str(i) for i in ids], name="image", dtype=object),
                             columns=pd.Index(self.concept_ids, dtype=object))
        return pa.Table.from_pandas(frame)

    def write(self, ids: Sequence[str], values: np.ndarray) -> None:
        """Append one batch (a row group)."""
        import pyarrow.parquet as pq

        table = self._table(ids, values)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The metadata (errors, warnings) is known only at the end: the schema goes into the
            # file's key-value metadata at close, beside the pandas index description.
            self._writer = pq.ParquetWriter(self.tmp, table.schema, store_schema=False)
            self._pandas = (table.schema.metadata or {}).get(b"pandas", b"")
        self._writer.write_table(table)
        self.rows += len(ids)

    def close(self, metadata: dict[str, Any]) -> Path:
        """Write the metadata, close and move the file into place."""
        if self._writer is None:
            self.write([], np.empty((0, len(self.concept_ids))))
        self._writer.add_key_value_metadata({_META_KEY: json.dumps(metadata).encode(),
                                             b"pandas": self._pandas})
        self._writer.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file."""
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)
