"""benchmarks/shapes_protocol.py on a tiny random pipeline: its tables agree with the images it cached, split and
resumed runs make the same images as one run, and the test split needs the dev split's choice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nlg.shapes.data import TASKS
from nlg.shapes.geneval import load_prompts, score_image
from nlg.testing import save_tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    import benchmarks.shapes_protocol

    return benchmarks.shapes_protocol


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe")


def _run(bench, pipeline, out, cache, *extra):
    return bench.main(["--quick", "--pipeline", str(pipeline), "--out-dir", str(out), "--cache", str(cache),
                       "--resamples", "200", *extra])


def _pngs(folder: Path):
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


@pytest.mark.slow
def test_tables_agree_with_the_cached_images(tmp_path, pipeline):
    bench = _bench()
    assert _run(bench, pipeline, tmp_path / "out", tmp_path / "cache") == 0
    summary = json.loads((tmp_path / "out" / "shapes_protocol_dev.json").read_text())
    assert summary["best_cfg"] in (1.0, 3.0) and summary["images_per_prompt"] == 1
    rows = list(csv.DictReader((tmp_path / "out" / "shapes_protocol_dev.csv").open()))
    prompts = [p for t in TASKS for p in [q for q in load_prompts() if q["tag"] == t][:2]]
    keys = list(summary["configurations"])
    assert {"cfg1-s4", "cfg3-s4", "nlg-k2-cfg1-s4", "empty-k2-cfg1-s4", "shuffled-k2-cfg1-s4", "cfg1-s8"} <= set(keys)
    cache = next((tmp_path / "cache").glob("*/dev"))
    for key in keys:
        mine = [r for r in rows if r["key"] == key]
        assert len(mine) == len(prompts)
        for row in mine:  # every verdict is the scorer's on the cached image
            image = np.asarray(Image.open(next((cache / key).glob(f"{int(row['prompt']):04d}-0-*.png"))))
            assert int(row["correct"]) == int(score_image(image, prompts[int(row["prompt"])])["correct"])
        accuracy = {t: np.mean([int(r["correct"]) for r in mine if r["tag"] == t]) for t in TASKS}
        for task in TASKS:
            assert summary["configurations"][key]["accuracy"][task]["estimate"] == pytest.approx(accuracy[task])
        assert summary["configurations"][key]["accuracy"]["overall"]["estimate"] == pytest.approx(np.mean(list(accuracy.values())))
    baseline = summary["baseline"]
    for key, comparison in summary["versus_baseline"].items():
        first = np.array([int(r["correct"]) for r in rows if r["key"] == baseline])
        second = np.array([int(r["correct"]) for r in rows if r["key"] == key])
        assert (comparison["overall"]["b"], comparison["overall"]["c"]) == (int(np.sum((first == 0) & (second == 1))),
                                                                            int(np.sum((first == 1) & (second == 0))))
    markdown = (tmp_path / "out" / "shapes_protocol_dev.md").read_text()
    assert "Reproduce: `python -m benchmarks.shapes_protocol --quick" in markdown and "Failure reasons" in markdown
    assert (tmp_path / "out" / "shapes_protocol_dev.png").stat().st_size > 10_000

    # the test split refuses to run before the dev split has chosen the CFG scale, then uses other seeds
    with pytest.raises(SystemExit, match="dev"):
        _run(bench, pipeline, tmp_path / "elsewhere", tmp_path / "cache", "--split", "test")
    assert _run(bench, pipeline, tmp_path / "out", tmp_path / "cache", "--split", "test") == 0
    dev, test = _pngs(cache), _pngs(cache.parent / "test")
    assert dev.keys() == test.keys()
    assert all(not np.array_equal(dev[k], test[k]) for k in dev)
    chosen = (tmp_path / "out" / "shapes_protocol_test.md").read_text()
    assert f"best plain CFG scale (dev, 4 steps): {summary['best_cfg']:g};" in chosen

    # a scale given by --best-cfg is named as given, and --baseline changes what every configuration is paired with
    assert _run(bench, pipeline, tmp_path / "out", tmp_path / "cache", "--split", "test", "--best-cfg", "3",
                "--baseline", "cfg1-s4", "--tag", "given") == 0
    given = json.loads((tmp_path / "out" / "shapes_protocol_test_given.json").read_text())
    assert given["best_cfg"] == 3.0 and given["baseline"] == "cfg1-s4" and "cfg1-s4" not in given["versus_baseline"]
    assert "best plain CFG scale (--best-cfg): 3; baseline `cfg1-s4`." in (
        tmp_path / "out" / "shapes_protocol_test_given.md").read_text()
    with pytest.raises(SystemExit, match="baseline"):
        _run(bench, pipeline, tmp_path / "out", tmp_path / "cache", "--split", "test", "--baseline", "cfg9-s4")


@pytest.mark.slow
def test_split_and_resumed_runs_make_the_same_images(tmp_path, pipeline):
    bench = _bench()
    assert _run(bench, pipeline, tmp_path / "one", tmp_path / "single") == 0
    for shard in ("0/2", "1/2"):
        for setting in ("shuffled-k2-cfg1-s4", "nlg-k2-cfg1-s4"):
            assert _run(bench, pipeline, tmp_path / "split", tmp_path / "shared", "--settings", setting,
                        "--shard", shard, "--batch-size", "3") == 0
    assert not (tmp_path / "split").exists()  # partial runs write no tables
    single, shared = _pngs(tmp_path / "single"), _pngs(tmp_path / "shared")
    assert shared and set(shared) < set(single)
    # the same seeds; batched float arithmetic may move a pixel by one grey level, no more
    assert all(np.abs(single[k].astype(int) - shared[k].astype(int)).max() <= 1 for k in shared)
    # resumption: a lost image is made again, identically; nothing else is regenerated
    victim = next((tmp_path / "single").rglob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "single").rglob("*.png") if p != victim}
    expected = np.asarray(Image.open(victim))
    victim.unlink()
    assert _run(bench, pipeline, tmp_path / "one", tmp_path / "single") == 0
    assert np.array_equal(np.asarray(Image.open(victim)), expected)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    with pytest.raises(SystemExit, match="settings"):
        _run(bench, pipeline, tmp_path / "one", tmp_path / "single", "--settings", "no-such-config")


def test_no_controls_and_no_best_budgets_leave_those_configurations_out(capsys):
    bench = _bench()
    assert bench.main(["--list", "--split", "dev", "--scales", "1", "3", "--steps", "20", "--budgets", "4",
                       "--best-budgets", "--no-controls"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert listed[:3] == ["cfg1-s20", "cfg3-s20", "nlg-k4-cfg1-s20"]
    assert not any(key.startswith(("empty-", "shuffled-")) or key == "cfg1-s28" for key in listed)
    assert bench.main(["--list", "--split", "dev", "--scales", "1", "--steps", "20", "--budgets", "4"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert {"empty-k4-cfg1-s20", "shuffled-k4-cfg1-s20", "cfg1-s28"} <= set(listed)
    assert bench.main(["--list", "--split", "dev", "--scales", "1", "2", "--steps", "20", "--budgets", "--best-budgets",
                       "--no-controls"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert listed[:2] == ["cfg1-s20", "cfg2-s20"] and not any(key.startswith("nlg-") for key in listed)
