"""Reading and writing user files safely: one place for each hazard.

* :mod:`~conceptlens._io.files`: turning operating-system errors into one-line messages
  that name the file (``FileAccessError``), and size-limited text reads.
* :mod:`~conceptlens._io.safe_yaml`: YAML with the safe loader plus limits on size, depth
  and alias expansion (no "billion laughs").
* :mod:`~conceptlens._io.tables`: the one CSV writer (spreadsheet formulas neutralised) and
  the one CSV / TSV / Parquet reader (every cell kept as text, so ids are never rewritten).
* :mod:`~conceptlens._io.image_keys`: matching the rows of a labels / decisions table to
  the image ids of a score table (by id, relative path or file name; ambiguity is an error).

This package imports nothing from conceptlens but :mod:`conceptlens.errors`: every layer
may use it.
"""
