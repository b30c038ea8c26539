"""``nlg.utils``: the lowest layer: shared types and atomic file writes, with no model code.

- :mod:`~nlg.utils.types`: ``GeneratorLike`` and ``PathLike``, defined once;
- :mod:`~nlg.utils.io`: :func:`~nlg.utils.io.atomic_write` and its helpers, the one implementation every
  long job uses so that a killed run never leaves a half-written file;
- :mod:`~nlg.utils.tables`: :func:`~nlg.utils.tables.markdown_table`, :func:`~nlg.utils.tables.write_csv` and
  :func:`~nlg.utils.tables.read_csv`, the one writer and reader of result tables.
"""

from .io import DISK_FULL, TMP_SUFFIX, atomic_save_figure, atomic_save_torch, atomic_write, atomic_write_json, atomic_write_text, sha256_file
from .tables import csv_rows, csv_text, markdown_table, read_csv, write_csv
from .types import GeneratorLike, PathLike

__all__ = [
    "GeneratorLike",
    "PathLike",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_torch",
    "atomic_save_figure",
    "sha256_file",
    "DISK_FULL",
    "TMP_SUFFIX",
    "markdown_table",
    "csv_text",
    "write_csv",
    "csv_rows",
    "read_csv",
]
