"""Result tables: one Markdown table writer and one CSV writer for the library, the experiments and the benchmarks.

A Markdown table here is a GitHub-flavoured pipe table::

    | a | b |
    |---|---:|
    | 1 | 2 |

Cells are written as given (``str(cell)``): callers format their numbers first.  CSV files are written
through :func:`nlg.utils.io.atomic_write`, so a killed job never leaves half a table.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from .io import atomic_write_text
from .types import PathLike

__all__ = ["markdown_table", "csv_text", "write_csv", "csv_rows", "read_csv"]

_RULES = {"left": "---", "right": "---:", "center": ":---:"}


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, align: Optional[Sequence[str]] = None) -> str:
    """A Markdown pipe table, without a final newline.

    Args:
        columns (`Sequence[str]`): the header cells.
        rows (`Iterable[Sequence]`): one sequence of cells per row, each as long as ``columns``.
        align (`Sequence[str]`, *optional*, defaults to `None`): per column ``"left"``, ``"right"`` or
            ``"center"``; `None` writes the plain ``---`` rule (left) for every column.

    Example:
        >>> print(markdown_table(["k", "accuracy"], [[1, "91.0%"], [20, "96.5%"]], align=["left", "right"]))
        | k | accuracy |
        |---|---:|
        | 1 | 91.0% |
        | 20 | 96.5% |
    """
    columns = [str(c) for c in columns]
    if not columns:
        raise ValueError("columns must name at least one column")
    align = ["left"] * len(columns) if align is None else list(align)
    if len(align) != len(columns) or any(a not in _RULES for a in align):
        raise ValueError(f"align must give one of {sorted(_RULES)} per column ({len(columns)}), got {align!r}")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(_RULES[a] for a in align) + "|"]
    for index, row in enumerate(rows):
        cells = [str(cell) for cell in row]
        if len(cells) != len(columns):
            raise ValueError(f"rows[{index}] has {len(cells)} cells for {len(columns)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(rows: Iterable[Mapping[str, Any]], fieldnames: Optional[Sequence[str]] = None, *,
             extrasaction: str = "raise") -> str:
    """``rows`` as CSV text (``csv.DictWriter``: a header, ``\\r\\n`` line ends, missing cells empty).

    Args:
        rows (`Iterable[Mapping[str, Any]]`): the records.
        fieldnames (`Sequence[str]`, *optional*, defaults to `None`): the columns in order; `None` takes
            every key of ``rows`` in order of first appearance.
        extrasaction (`str`, defaults to ``"raise"``): ``"raise"`` refuses a key outside ``fieldnames``,
            ``"ignore"`` drops it.
    """
    rows = list(rows)
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), restval="", extrasaction=extrasaction)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Optional[Sequence[str]] = None, *,
              extrasaction: str = "raise") -> None:
    """Write :func:`csv_text` of ``rows`` to ``path`` atomically (:func:`nlg.utils.io.atomic_write_text`)."""
    atomic_write_text(path, csv_text(rows, fieldnames, extrasaction=extrasaction))


def csv_rows(text: str) -> List[Dict[str, str]]:
    """The records of CSV ``text`` (the inverse of :func:`csv_text`): one dict of strings per row, keyed by the header."""
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_csv(path: PathLike) -> List[Dict[str, str]]:
    """:func:`csv_rows` of the file ``path`` (UTF-8), as written by :func:`write_csv`."""
    return csv_rows(Path(path).read_text(encoding="utf-8"))
