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
    assert "row 'a' accuracy: '0.967' -> '0.968'" in capsys.readouterr().out
    short = _write(tmp_path / "short.csv", [["a", "0.967", "10.2", "3.1", "20"]])
    assert compare_tables(_rows(old), _rows(short)) == ["row 'b' is missing"]


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_rows_are_matched_on_key_so_a_resumed_run_in_another_order_reproduces(tmp_path):
    old = _write(tmp_path / "old.csv", [["a", "0.967", "10.2", "3.1", "20"], ["b", "0.5", "1", "1", "0"]])
    swapped = _write(tmp_path / "swapped.csv", [["b", "0.5", "4", "4", "0"], ["a", "0.967", "1.0", "0.2", "20"]])
    assert compare_tables(_rows(old), _rows(swapped)) == []
    renamed = _write(tmp_path / "renamed.csv", [["b", "0.5", "4", "4", "0"], ["c", "0.967", "1.0", "0.2", "20"]])
    assert compare_tables(_rows(old), _rows(renamed)) == ["row 'a' is missing", "row 'c' is new"]
    twice = _write(tmp_path / "twice.csv", [["a", "0.967", "1", "1", "20"], ["a", "0.967", "1", "1", "20"], ["b", "0.5", "1", "1", "0"]])
    assert compare_tables(_rows(old), _rows(twice)) == ["key 'a' is repeated"]


def test_tables_without_a_key_are_compared_by_position(tmp_path):
    header = ["name", "accuracy"]
    old = [dict(zip(header, r)) for r in (["x", "1"], ["y", "2"])]
    assert compare_tables(old, list(reversed(old))) == ["row 0 name: 'x' -> 'y'", "row 0 accuracy: '1' -> '2'",
                                                        "row 1 name: 'y' -> 'x'", "row 1 accuracy: '2' -> '1'"]
    assert compare_tables(old, old[:1]) == ["2 rows vs 1"]
