"""benchmarks.compare_results: a rerun table reproduces iff every non-timing cell is equal."""

import csv

from benchmarks.compare_results import compare_tables, main, timing_columns

HEADER = ["key", "accuracy", "refine_seconds", "wall_minutes", "evals"]


def _write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def test_timings_are_skipped_and_every_other_cell_must_match(tmp_path, capsys):
    old = _write(tmp_path / "old.csv", [["a", "0.967", "10.2", "3.1", "20"], ["b", "0.5", "1", "1", "0"]])
    rerun = _write(tmp_path / "rerun.csv", [["a", "0.9670", "2.3", "0.7", "20"], ["b", "0.5", "9", "9", "0"]])
    assert timing_columns(HEADER) == ["refine_seconds", "wall_minutes"]
    assert main([str(rerun), "--against", str(old)]) == 0
    assert "reproduces (2 rows" in capsys.readouterr().out

    moved = _write(tmp_path / "moved.csv", [["a", "0.968", "10.2", "3.1", "20"], ["b", "0.5", "1", "1", "0"]])
    assert main([str(moved), "--against", str(old)]) == 1
    assert "row 0 accuracy: '0.967' -> '0.968'" in capsys.readouterr().out
    short = _write(tmp_path / "short.csv", [["a", "0.967", "10.2", "3.1", "20"]])
    rows = lambda p: list(csv.DictReader(open(p)))  # noqa: E731
    assert compare_tables(rows(old), rows(short)) == ["2 rows vs 1"]
