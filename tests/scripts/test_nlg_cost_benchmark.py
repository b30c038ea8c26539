"""``python -m benchmarks.nlg_cost --quick``: runs end to end, writes CSV + Markdown + PNG, and resumes without recomputing."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(out_dir: Path, *extra: str) -> str:
    cmd = [sys.executable, "-m", "benchmarks.nlg_cost", "--quick", "--sections", "cost", "--samples-per-class", "2",
           "--out-dir", str(out_dir), *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rows(path: Path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_quick_run_writes_results_and_resumes(tmp_path):
    first = _run(tmp_path)
    rows = _rows(tmp_path / "nlg_cost.csv")
    # 2 scales × (plain, K = 20, 4, 1) + the noise-scaled K = 1 at scale 0: every row once, 20 images each.
    assert len(rows) == 9 and len({r["key"] for r in rows}) == 9
    assert {r["samples"] for r in rows} == {"20"}
    for row in rows:
        k = int(row["steps"])
        expected = 0 if row["kind"] == "none" else k
        assert float(row["mean_evals"]) == expected
        if row["kind"] != "none":
            assert float(row["path_length"]) == pytest.approx(20.0)
        assert 0.0 <= float(row["accuracy"]) <= 1.0
    assert (tmp_path / "nlg_cost.md").read_text().count("| ") > 10
    assert (tmp_path / "nlg_cost.png").stat().st_size > 1000
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.lock"))
    # A rerun finds every key done: nothing is sampled again and the CSV is unchanged.
    second = _run(tmp_path)
    assert "acc " in first and "acc " not in second
    assert _rows(tmp_path / "nlg_cost.csv") == rows



@pytest.mark.slow
def test_quick_flow_run_records_the_flow_model(tmp_path):
    # The committed table's flow rows come from `--model flow`: its model must load under `python -m`.
    _run(tmp_path, "--model", "flow")
    rows = _rows(tmp_path / "nlg_cost.csv")
    assert rows and {r["model"] for r in rows} == {"flow"}
    assert all(len(r["weights_sha256"]) == 64 for r in rows)
    assert {float(r["mean_evals"]) for r in rows if r["kind"] != "none"} <= {20.0, 4.0, 1.0}

def test_append_row_merges_rows_written_by_another_process(tmp_path):
    from benchmarks.nlg_cost import append_row, read_rows

    path = tmp_path / "nlg_cost.csv"
    append_row(path, {"key": "a", "model": "digits", "accuracy": 0.5})
    append_row(path, {"key": "b", "model": "flow", "accuracy": 0.25})
    append_row(path, {"key": "a", "model": "digits", "accuracy": 0.75})  # a rerun replaces its own row
    rows = read_rows(path)
    assert [(r["key"], r["accuracy"]) for r in rows] == [("b", "0.25"), ("a", "0.75")]
