"""The committed protocol results (``benchmarks/results/shapes_protocol_*``) agree with their own per-image verdicts.

Every accuracy in a results JSON is recomputed from its CSV of per-image verdicts (GenEval's overall score is the
mean of the six task accuracies), every paired comparison's discordant counts are recounted and its McNemar p-value
is recomputed with scipy's exact binomial test; the shipped model's results name the shipped weights.
"""

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from nlg.shapes import DEFAULT_PIPELINE
from nlg.shapes.data import TASKS
from nlg.shapes.train import safetensors_sha256

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FILES = (sorted(RESULTS.glob("shapes_protocol_*.json")) + sorted(RESULTS.glob("shapes_v22/shapes_protocol_*.json"))
         + sorted(RESULTS.glob("shapes_position/*/shapes_protocol_*.json")))


def _verdicts(stem: Path):
    by_key = defaultdict(list)
    with stem.with_suffix(".csv").open() as handle:
        for row in csv.DictReader(handle):
            by_key[row["key"]].append(row)
    return by_key


def test_there_are_dev_and_test_results_for_the_shipped_model():
    names = {f.stem for f in FILES}
    assert {"shapes_protocol_dev", "shapes_protocol_test"} <= names
    shipped = safetensors_sha256(DEFAULT_PIPELINE)
    for name in ("shapes_protocol_dev", "shapes_protocol_test"):
        assert json.loads((RESULTS / f"{name}.json").read_text())["weights_sha256"] == shipped


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(RESULTS).with_suffix("")) for f in FILES])
def test_accuracies_and_paired_tests_follow_from_the_per_image_verdicts(path):
    summary = json.loads(path.read_text())
    rows = _verdicts(path)
    n = summary["prompts"] * summary["images_per_prompt"]
    for key, config in summary["configurations"].items():
        mine = rows[key]
        assert len(mine) == n
        task_accuracy = {t: np.mean([int(r["correct"]) for r in mine if r["tag"] == t]) for t in TASKS}
        for task in TASKS:
            a = config["accuracy"][task]
            assert a["estimate"] == pytest.approx(task_accuracy[task])
            assert a["low"] <= a["estimate"] <= a["high"]
        assert config["accuracy"]["overall"]["estimate"] == pytest.approx(np.mean(list(task_accuracy.values())))
    baseline = np.array([int(r["correct"]) for r in rows[summary["baseline"]]])
    for key, comparison in summary["versus_baseline"].items():
        other = np.array([int(r["correct"]) for r in rows[key]])
        b, c = int(np.sum((baseline == 0) & (other == 1))), int(np.sum((baseline == 1) & (other == 0)))
        overall = comparison["overall"]
        assert (overall["b"], overall["c"]) == (b, c)
        expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
        assert overall["p_value"] == pytest.approx(expected)
        assert overall["difference"] == pytest.approx(
            np.mean([np.mean(other[[r["tag"] == t for r in rows[key]]]) - np.mean(baseline[[r["tag"] == t for r in rows[key]]])
                     for t in TASKS]))
