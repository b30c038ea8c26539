"""Check that rerun benchmark tables reproduce the committed ones, ignoring wall-time columns.

    python -m benchmarks.compare_results benchmarks/results/img2img_digits.csv ...      # against git HEAD
    python -m benchmarks.compare_results new.csv --against old.csv

A rerun rewrites ``benchmarks/results/<name>.csv``; this compares it with the committed version (``git show
HEAD:<path>``) or with ``--against``, cell by cell.  Columns whose name contains ``second``, ``time`` or ``wall``
are timings, which differ run to run, and are skipped; every other cell must be equal, numbers to a relative
1e-9.  Rows are matched on the ``key`` column where a table has one (a resumed run writes rows in another
order), else by position.  Exit status 1 if any file differs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nlg.utils.tables import csv_rows, read_csv

__all__ = ["TIMING_MARKERS", "timing_columns", "compare_tables", "main"]

#: A column whose name contains one of these is a wall-time measurement.
TIMING_MARKERS = ("second", "time", "wall")


def timing_columns(columns: Sequence[str]) -> List[str]:
    """The columns of ``columns`` that hold timings (see :data:`TIMING_MARKERS`)."""
    return [c for c in columns if any(marker in c.lower() for marker in TIMING_MARKERS)]


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))


def compare_tables(old: List[Dict[str, str]], new: List[Dict[str, str]]) -> List[str]:
    """Differences between two tables (rows as dicts), timing columns skipped; empty if they reproduce.

    Tables with a ``key`` column are matched row by row on it, so a resumed run that wrote its rows in another
    order still reproduces; rows whose key is in only one table are differences.  Other tables are matched by position.
    """
    columns = list(old[0]) if old else []
    if new and list(new[0]) != columns:
        return [f"columns differ: {columns} vs {list(new[0])}"]
    skipped = set(timing_columns(columns))
    if "key" in columns:
        before, after = {row["key"]: row for row in old}, {row["key"]: row for row in new}
        problems = [f"key {k!r} is repeated" for table in (old, new)
                    for k, n in sorted(Counter(r["key"] for r in table).items()) if n > 1]
        problems += [f"row {k!r} is missing" for k in before if k not in after]
        problems += [f"row {k!r} is new" for k in after if k not in before]
        pairs = [(f"row {k!r}", before[k], after[k]) for k in before if k in after]
    else:
        problems = [f"{len(old)} rows vs {len(new)}"] if len(old) != len(new) else []
        pairs = [(f"row {i}", a, b) for i, (a, b) in enumerate(zip(old, new))]
    for name, a, b in pairs:
        problems += [f"{name} {c}: {a[c]!r} -> {b[c]!r}" for c in columns if c not in skipped and not _same(a[c], b[c])]
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, nargs="+", help="rerun tables")
    parser.add_argument("--against", type=Path, default=None, help="the reference table (default: git HEAD's version)")
    args = parser.parse_args(argv)
    if args.against is not None and len(args.csv) != 1:
        parser.error("--against takes one table to compare")
    failed = 0
    for path in args.csv:
        if args.against is not None:
            reference = args.against.read_text()
        else:
            shown = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True)
            if shown.returncode:
                parser.error(f"{path} is not committed at HEAD: {shown.stderr.strip()}")
            reference = shown.stdout
        old, new = csv_rows(reference), read_csv(path)
        problems = compare_tables(old, new)
        skipped = timing_columns(list(old[0]) if old else [])
        print(f"{path}: " + (f"reproduces ({len(new)} rows; timings skipped: {', '.join(skipped) or 'none'})" if not problems
                             else f"DIFFERS in {len(problems)} places: " + "; ".join(problems[:5])))
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
