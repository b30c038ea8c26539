"""The mini-GenEval: prompt file, the scorer on held-out renders, GenEval's rules against independent truth."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nlg.shapes.data import COLOURS, SHAPES, TASKS, ShapeObject, relative_position, render, sample_scene, scene_from_seed
from nlg.shapes.geneval import (
    GENEVAL_TASK_SIZES,
    PROMPTS_PATH,
    Detection,
    assign_pixels,
    build_prompts,
    detect_objects,
    distinct_prompts,
    evaluate,
    load_prompts,
    score_image,
    task_accuracies,
)

HELD_OUT = range(90_000_000, 90_000_400)  # seeds used by nothing else


def _matches(detections, objects):
    """Same (shape, colour) multiset; boxes equal (a triangle's apex row may be empty: top edge within 1 px)."""
    if sorted((d.shape, d.colour) for d in detections) != sorted((o.shape, o.colour) for o in objects):
        return False
    for o in objects:
        ok = False
        for d in detections:
            x1, y1, x2, y2 = d.box
            if (d.shape, d.colour) == (o.shape, o.colour) and (x1, x2, y2) == (o.x, o.x + o.size, o.y + o.size):
                ok = ok or (y1 == o.y or (o.shape == "triangle" and y1 == o.y + 1))
        if not ok:
            return False
    return True


def test_scorer_detects_held_out_renders_at_least_99_percent():
    hits = 0
    for seed in HELD_OUT:
        scene = scene_from_seed(seed)
        detections, off = detect_objects(render(scene.objects))
        assert off == 0.0
        hits += _matches(detections, scene.objects)
    assert hits / len(HELD_OUT) >= 0.99, hits


def test_scorer_survives_pixel_noise():
    generator = torch.Generator().manual_seed(5)
    hits = 0
    for seed in HELD_OUT[:100]:
        scene = scene_from_seed(seed)
        image = render(scene.objects).astype(np.int16)
        noise = torch.randint(-25, 26, image.shape, generator=generator).numpy()
        noisy = np.clip(image + noise, 0, 255).astype(np.uint8)
        hits += _matches(detect_objects(noisy)[0], scene.objects)
        assert detect_objects(noisy.astype(np.float32) / 255.0)[0] == detect_objects(noisy)[0]
    assert hits >= 99


def _soft_render(objects, factor=4):
    """The scene drawn at ``factor``× the size and box-averaged down: every edge is a blend with white."""
    big = render([ShapeObject(o.shape, o.colour, o.x * factor, o.y * factor, o.size * factor) for o in objects],
                 image_size=32 * factor).astype(np.float64)
    return np.round(big.reshape(32, factor, 32, factor, 3).mean(axis=(1, 3))).astype(np.uint8)


def test_scorer_reads_soft_edges_as_the_object_not_as_other_colours():
    # half red + half white is nearer to yellow than to red: a nearest-colour rule would see a yellow ring
    blend = ((np.array([220, 30, 30]) + 255) / 2).round()
    assert np.linalg.norm(blend - [240, 200, 20]) < np.linalg.norm(blend - [220, 30, 30])
    for colour in COLOURS:
        image = _soft_render([ShapeObject("square", colour, 3, 5, 9)], factor=2)
        assert [(d.shape, d.colour) for d in detect_objects(image)[0]] == [("square", colour)], colour
    hits = 0
    for seed in HELD_OUT[:200]:
        scene = scene_from_seed(seed)
        detections, _ = detect_objects(_soft_render(scene.objects))
        hits += sorted((d.shape, d.colour) for d in detections) == sorted((o.shape, o.colour) for o in scene.objects)
    assert hits / 200 >= 0.99, hits


def test_float_images_outside_zero_one_are_refused():
    image = render([ShapeObject("circle", "blue", 4, 4, 12)]).astype(np.float32)  # 0-255 floats, a common slip
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detect_objects(image)


def test_off_palette_share_counts_far_pixels():
    image = render([ShapeObject("square", "red", 2, 2, 10)])
    image[0, :8] = (128, 128, 128)  # grey: far from white and from every colour
    image[31, :4] = (225, 35, 30)  # near red: not off-palette
    labels, off = assign_pixels(image)
    # the share is of the foreground (100 red + 4 near-red + 8 grey pixels), not of the whole image
    assert off.sum() == 8 and math.isclose(detect_objects(image)[1], 8 / (100 + 4 + 8))
    assert (labels[31, :4] == 1 + COLOURS.index("red")).all() and (labels[5, 5] == 1 + COLOURS.index("red"))


def _truth(objects, metadata):
    """Whether a rendered scene satisfies a prompt, from the scene itself (training scenes have at most one object per shape
    except counting scenes)."""
    shapes = [o.shape for o in objects]
    tag, inc = metadata["tag"], metadata["include"]
    if tag == "single_object":
        return inc[0]["class"] in shapes
    if tag == "counting":
        return shapes.count(inc[0]["class"]) == inc[0]["count"]
    if tag == "colors":
        return (objects[0].shape, objects[0].colour) == (inc[0]["class"], inc[0]["color"])
    if tag == "two_object":
        return inc[0]["class"] in shapes and inc[1]["class"] in shapes
    if tag == "color_attr":
        pairs = {(o.shape, o.colour) for o in objects}
        return all((r["class"], r["color"]) in pairs for r in inc)
    target, mover = inc
    if target["class"] not in shapes or mover["class"] not in shapes:
        return False
    a, b = objects[shapes.index(mover["class"])], objects[shapes.index(target["class"])]
    return mover["position"][0] in _relation(a.box, b.box)


@pytest.mark.parametrize("task", TASKS)
def test_geneval_decisions_on_renders_match_the_truth(task):
    prompts = list({p["prompt"]: p for p in load_prompts() if p["tag"] == task}.values())  # each distinct prompt once
    generator = torch.Generator().manual_seed(1000 + TASKS.index(task))
    agree = total = positives = 0
    for _ in range(40):
        scene = sample_scene(generator, task)
        detections, _ = detect_objects(render(scene.objects))
        for metadata in prompts:
            truth = _truth(scene.objects, metadata)
            agree += evaluate(detections, metadata)[0] == truth
            positives += truth
            total += 1
        own = [p for p in prompts if p["prompt"] == scene.caption]
        for metadata in own:  # a scene is always correct for its own caption
            assert evaluate(detections, metadata)[0], (scene, metadata)
    assert agree == total and 0 < positives < total


def test_counting_means_exactly_n_and_colour_takes_the_largest():
    def det(shape, colour, x, size=8):
        return Detection(shape, colour, (x, 0.0, x + size, float(size)), size * size)

    two = {"tag": "counting", "include": [{"class": "circle", "count": 2}], "exclude": [{"class": "circle", "count": 3}]}
    assert evaluate([det("circle", "red", 0), det("circle", "blue", 10)], two)[0]
    assert not evaluate([det("circle", "red", 0), det("circle", "blue", 10), det("circle", "red", 20)], two)[0]
    assert not evaluate([det("circle", "red", 0)], two)[0]
    red = {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}]}
    assert evaluate([det("square", "red", 0, 10), det("square", "blue", 12, 6)], red)[0]
    assert not evaluate([det("square", "red", 0, 6), det("square", "blue", 12, 10)], red)[0]


def _relation(box_a, box_b):
    """GenEval's rule per axis: shrink |offset| by 0.1·(size_a + size_b), keep a relation if it exceeds half the offset norm."""
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = box_a, box_b
    ox = (ax1 + ax2) / 2 - (bx1 + bx2) / 2
    oy = (ay1 + ay2) / 2 - (by1 + by2) / 2
    norm = math.hypot(ox, oy)
    rx = max(abs(ox) - 0.1 * ((ax2 - ax1) + (bx2 - bx1)), 0.0)
    ry = max(abs(oy) - 0.1 * ((ay2 - ay1) + (by2 - by1)), 0.0)
    out = set()
    if norm > 0 and 2 * rx > norm:
        out.add("left of" if ox < 0 else "right of")
    if norm > 0 and 2 * ry > norm:
        out.add("above" if oy < 0 else "below")
    return out


boxes = st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 16), st.integers(1, 16)).map(
    lambda t: (float(t[0]), float(t[1]), float(t[0] + t[2]), float(t[1] + t[3]))
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(boxes, boxes)
def test_position_rule_matches_an_independent_computation(box_a, box_b):
    assert relative_position(box_a, box_b) == _relation(box_a, box_b)
    flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
    assert relative_position(box_b, box_a) == {flip[r] for r in relative_position(box_a, box_b)}


def test_position_rule_examples():
    assert relative_position((0, 10, 8, 18), (20, 10, 28, 18)) == {"left of"}
    assert relative_position((10, 0, 18, 8), (10, 20, 18, 28)) == {"above"}
    assert relative_position((0, 0, 8, 8), (20, 20, 28, 28)) == {"left of", "above"}
    # a 2-pixel offset between 10-pixel boxes is inside the 0.1·(10 + 10) margin: no relation
    assert relative_position((0, 0, 10, 10), (2, 0, 12, 10)) == set()


def test_prompt_file_is_the_generated_genEval_sized_set():
    rows = load_prompts(PROMPTS_PATH)
    assert rows == build_prompts()
    assert [len(load_prompts(tasks=[t])) for t in TASKS] == [80, 99, 80, 94, 100, 100]  # GenEval's 553
    assert [len(load_prompts(tasks=[t])) for t in TASKS] == [GENEVAL_TASK_SIZES[t] for t in TASKS]
    for row in rows:
        assert set(row) <= {"tag", "include", "exclude", "prompt"} and row["tag"] in TASKS
        assert row in distinct_prompts(row["tag"])
        for req in row["include"]:
            assert req["class"] in SHAPES and req["count"] >= 1 and req.get("color", "red") in COLOURS
            assert req["class"] in row["prompt"] and req.get("color", "") in row["prompt"]
    singles = [r["prompt"] for r in rows if r["tag"] == "single_object"]
    assert sorted(singles.count(f"a photo of a {s}") for s in SHAPES) == [26, 27, 27]  # every class equally often
    assert json.loads(PROMPTS_PATH.read_text().splitlines()[0])["tag"] == "single_object"
    with pytest.raises(ValueError, match="tasks"):
        load_prompts(tasks=["spelling"])


def test_a_broken_prompt_file_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text(PROMPTS_PATH.read_text().splitlines()[0] + "\n\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"path: .* line 3 is not a JSON object"):
        load_prompts(path)
    path.write_text('{"tag": "single_object"\n')
    with pytest.raises(ValueError, match=r"path: .* line 1 is not JSON"):
        load_prompts(path)


def test_distinct_prompts_enumerate_each_template_space():
    n_shapes, n_colours = len(SHAPES), len(COLOURS)
    expected = {"single_object": n_shapes, "two_object": n_shapes * (n_shapes - 1), "counting": n_shapes * 3,
                "colors": n_colours * n_shapes, "position": n_shapes * (n_shapes - 1) * 4,
                "color_attr": n_shapes * (n_shapes - 1) * n_colours * (n_colours - 1)}
    for task in TASKS:
        space = distinct_prompts(task)
        assert len(space) == expected[task] and len({p["prompt"] for p in space}) == len(space)
    with pytest.raises(ValueError, match="task"):
        distinct_prompts("spelling")


def test_prompts_are_drawn_uniformly_with_replacement_and_seeded():
    rows = build_prompts(sizes={"colors": 18_000}, seed=7)
    counts = np.array([sum(r["prompt"] == p["prompt"] for r in rows) for p in distinct_prompts("colors")])
    # Binomial(18000, 1/18): mean 1000, sd ≈ 30.6; 5 sd either side
    assert counts.sum() == 18_000 and counts.min() > 1000 - 153 and counts.max() < 1000 + 153
    assert build_prompts(seed=7) == build_prompts(seed=7) != build_prompts(seed=8)
    with pytest.raises(ValueError, match="sizes"):
        build_prompts(sizes={"spelling": 3})


def test_task_accuracies_average_tasks_not_images():
    acc = task_accuracies(["colors"] * 4 + ["counting"], [True, True, True, False, True])
    assert acc == {"counting": 1.0, "colors": 0.75, "overall": 0.875}
    result = score_image(render(scene_from_seed(HELD_OUT[0]).objects), {"tag": "single_object", "include": []})
    assert result["correct"] and result["off_palette"] == 0.0
