"""The scorer against 240 generated images labelled by eye, blind to the scorer (issue 19).

``benchmarks/results/shapes_labels``: 40 images per task from the v2 shapes model (seed 0), 20 DDIM steps, in
blocks of 10 at CFG 1, 3, 5 and CFG 1 + ``NoiseLevelGuidance.for_budget(4)``; every ``verdict`` was written by eye
before the scorer was run.  Measured agreement (share of images where scorer and human give the same verdict),
with the ``corners`` feature: single_object 0.875, two_object 0.850, counting 0.850, colors 0.850, position 0.925,
color_attr 0.925, overall 0.879 (Cohen's κ 0.752); on the held-out odd half, not used to choose the rule, 0.858
(fill-only scorer: 0.800; ``split.md``).  The floors sit a few points below, so a scorer change that moves away from the
human labels fails here; ``agreement.md`` beside the labels lists every disagreement.
"""

from pathlib import Path

import pytest

from nlg.shapes.data import TASKS
from nlg.shapes.labels import read_labels, score_labels

LABELS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "shapes_labels" / "labels.jsonl"
FLOORS = {"single_object": 0.82, "two_object": 0.80, "counting": 0.80, "colors": 0.80, "position": 0.90,
          "color_attr": 0.87, "overall": 0.84}


def test_every_committed_image_is_labelled_by_eye():
    rows = read_labels(LABELS)
    assert len(rows) == len(LABELS.read_text().splitlines()) >= 200
    assert all((LABELS.parent / row["image"]).is_file() for row in rows)


def test_scorer_agrees_with_the_human_labels_per_task_and_overall():
    table = score_labels(LABELS)["agreement"]
    assert list(table) == list(TASKS) + ["overall"]
    for group, floor in FLOORS.items():
        assert table[group]["accuracy"] >= floor, (group, table[group])


#: Three smaller sets, 12 images per task each, in blocks of 4 at CFG 1, CFG 2 and CFG 1 + ``for_budget(4)``, labelled by
#: eye before the scorer was run:
#:
#: * ``shapes_labels_v23``, the shipped v2.3 model: agreement 0.903 (κ 0.736); the scorer calls 53 correct where the
#:   labeller called 56 (it rejects three as garbage, one a square shading from cyan to green, and finds an object
#:   missing in two, one a circle cut by the frame), so on v2.3 it is, if anything, strict;
#: * ``shapes_labels_v22``, the v2.2 model: agreement 0.889 (κ 0.665); the scorer calls 59 correct where the
#:   labeller called 55 (circles that are octagons or ovals, objects cut by the frame), so on v2.2 it is about 5
#:   points lenient;
#: * ``shapes_position/more_position_data/labels``, the position experiment's model (44% position captions, no relation
#:   loss), whose position score reached 43% through the axis alone: agreement 0.875 (κ 0.727), position 9 of 12; 47 correct against 46.
#:
#: The floors and the leniency bounds sit at those values.
LABELLED_SETS = {
    "v2.3": (LABELS.parents[1] / "shapes_labels_v23" / "labels.jsonl", 0.90, 0),
    "v2.2": (LABELS.parents[1] / "shapes_labels_v22" / "labels.jsonl", 0.88, 4),
    "more position data": (LABELS.parents[1] / "shapes_position" / "more_position_data" / "labels" / "labels.jsonl", 0.87, 1),
}


@pytest.mark.parametrize("name", list(LABELLED_SETS))
def test_scorer_agrees_with_the_labels_of_later_models(name):
    labels, floor, leniency = LABELLED_SETS[name]
    rows = read_labels(labels)
    assert len(rows) == len(labels.read_text().splitlines()) == 72
    assert all((labels.parent / row["image"]).is_file() for row in rows)
    overall = score_labels(labels)["agreement"]["overall"]
    assert overall["accuracy"] >= floor, overall
    scorer_correct = overall["both_correct"] + overall["scorer_only"]
    human_correct = overall["both_correct"] + overall["human_only"]
    assert scorer_correct - human_correct <= leniency, overall
