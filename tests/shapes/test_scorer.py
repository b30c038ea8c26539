"""nlg.shapes.scorer: renders and VAE round trips scored right, garbage scored wrong, the rules' reasons."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nlg.shapes.data import COLOURS, PALETTE, SHAPES, SIZE_RANGES, TASKS, ShapeObject, _shape_mask, render, scene_from_seed
from nlg.shapes.geneval import build_prompts, distinct_prompts
from nlg.shapes.metadata import caption_metadata, scene_metadata
from nlg.shapes.scorer import (
    FAILURE_REASONS,
    MAX_OFF_PALETTE_SHARE,
    SHAPE_WINDOWS,
    UNRECOGNISED,
    Detection,
    _hull_lattice_points,
    analyse,
    classify_shape,
    evaluate,
    judge,
    score_image,
    shape_features,
)

TEST_SEEDS = range(5_000_000, 5_000_400)  # training draws from 1_000_000 up; nothing else uses these


def _same_objects(analysis, objects):
    return sorted((d.shape, d.colour) for d in analysis.objects) == sorted((o.shape, o.colour) for o in objects)


@pytest.mark.slow
def test_renders_are_scored_right_with_their_captions_metadata():
    right = found = 0
    for seed in TEST_SEEDS:
        scene = scene_from_seed(seed)
        analysis = analyse(render(scene.objects))
        right += judge(analysis, scene_metadata(scene))["correct"]
        found += _same_objects(analysis, scene.objects)
    assert right / len(TEST_SEEDS) >= 0.98 and found / len(TEST_SEEDS) >= 0.98, (right, found)


@pytest.mark.slow
def test_vae_round_trips_of_renders_are_scored_right():
    from nlg.shapes import load_pipeline

    vae = load_pipeline().vae
    scenes = [scene_from_seed(seed) for seed in TEST_SEEDS]
    pixels = torch.from_numpy(np.stack([render(s.objects) for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        decoded = torch.cat([vae.decode(vae.encode(batch).latent_dist.mean).sample for batch in pixels.split(100)])
    images = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    right = found = 0
    for scene, image in zip(scenes, images):
        analysis = analyse(image)
        right += judge(analysis, scene_metadata(scene))["correct"]
        found += _same_objects(analysis, scene.objects)
    assert right / len(scenes) >= 0.98 and found / len(scenes) >= 0.98, (right, found)


def _soft_render(objects, factor=4):
    """Drawn at ``factor``× and box-averaged down: every edge is a blend of a colour with white."""
    big = render([ShapeObject(o.shape, o.colour, o.x * factor, o.y * factor, o.size * factor) for o in objects],
                 image_size=32 * factor).astype(np.float64)
    return np.round(big.reshape(32, factor, 32, factor, 3).mean(axis=(1, 3))).astype(np.uint8)


@pytest.mark.slow
def test_soft_edges_are_neither_off_palette_nor_other_colours():
    right = soft = 0
    for seed in TEST_SEEDS[:200]:
        scene = scene_from_seed(seed)
        image = _soft_render(scene.objects)
        reference = np.array([(255, 255, 255)] + [PALETTE[c] for c in COLOURS])
        blended = (np.abs(image[:, :, None, :].astype(int) - reference).sum(axis=-1) > 0).all(axis=-1)
        soft += bool(blended.any())  # circles and triangles have soft edges, squares have none
        analysis = analyse(image)
        assert analysis.off_palette == 0.0 and analysis.garbage == ()
        right += judge(analysis, scene_metadata(scene))["correct"] and _same_objects(analysis, scene.objects)
    assert right / 200 >= 0.98 and soft >= 100, (right, soft)


@pytest.mark.parametrize("shape", SHAPES)
def test_rendered_features_match_their_derivation_and_only_their_window(shape):
    low = min(a for a, _ in SIZE_RANGES.values())
    high = max(b for _, b in SIZE_RANGES.values())
    for size in range(low, high + 1):
        mask = _shape_mask(shape, size)
        mask = mask[mask.any(axis=1)]  # the triangle's empty apex row is not in its box
        f = shape_features(mask)
        assert f["solidity"] == 1.0 and f["symmetry"] == 1.0  # digitised convex, mirror-symmetric shapes
        if shape == "square":
            assert f["fill"] == 1.0 and f["top"] == 0.5
        elif shape == "circle":
            assert abs(f["fill"] - math.pi / 4) < 0.07 and f["top"] == 0.5
        else:
            expected = size / (2 * (size - 1)) if size % 2 == 0 else (size * size + 1) / (2 * size * size)
            assert math.isclose(f["fill"], expected) and 0.25 <= f["top"] <= 0.32
        assert classify_shape(f) == (shape, "")
        assert [s for s in SHAPES if all(a <= f[n] <= b for n, (a, b) in SHAPE_WINDOWS[s].items())] == [shape]


def _brute_hull_points(mask):
    """Lattice points inside the convex hull of the pixel centres, by scipy's hull and a point-in-half-planes test."""
    from scipy.spatial import ConvexHull

    ys, xs = np.nonzero(mask)
    hull = ConvexHull(np.stack([xs, ys], axis=1).astype(float))
    gx, gy = np.meshgrid(np.arange(mask.shape[1]), np.arange(mask.shape[0]))
    grid = np.stack([gx.ravel(), gy.ravel(), np.ones(gx.size)], axis=1)
    return int((grid @ hull.equations.T <= 1e-9).all(axis=1).sum())


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), min_size=3, max_size=40))
def test_hull_lattice_points_match_a_brute_force_count(points):
    mask = np.zeros((12, 12), dtype=bool)
    for x, y in points:
        mask[y, x] = True
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], axis=1)
    if np.linalg.matrix_rank(pts[1:] - pts[0]) < 2:  # collinear: the segment's lattice points
        span = np.abs(pts.max(axis=0) - pts.min(axis=0))
        assert _hull_lattice_points(mask) == math.gcd(*span.tolist()) + 1
    else:
        assert _hull_lattice_points(mask) == _brute_hull_points(mask)


def test_a_component_that_fits_no_class_is_unrecognised_not_a_circle():
    yy, xx = np.mgrid[:16, :16] + 0.5
    ring = ((yy - 8) ** 2 + (xx - 8) ** 2 <= 64) & ((yy - 8) ** 2 + (xx - 8) ** 2 > 20)
    diamond = np.abs(yy - 8) + np.abs(xx - 8) <= 8
    for mask in (ring, diamond, np.ones((4, 16), bool)):
        assert classify_shape(shape_features(mask))[0] == UNRECOGNISED
        image = np.full((32, 32, 3), 255, np.uint8)
        image[4 : 4 + mask.shape[0], 4 : 4 + mask.shape[1]][mask] = (220, 30, 30)
        result = score_image(image, caption_metadata("a photo of a red circle"))
        assert not result["correct"] and result["reason"] == "garbage" and result["garbage"] == [UNRECOGNISED]


def test_off_palette_share_above_the_threshold_makes_the_image_wrong():
    metadata = caption_metadata("a photo of a red square")
    for dark_rows in range(0, 7):
        image = render([ShapeObject("square", "red", 10, 10, 12)])
        image[12 : 12 + dark_rows, 10:22] = (110, 15, 15)  # dark red: 112 from red, still inside the square
        share = 12 * dark_rows / 144
        result = score_image(image, metadata)
        assert math.isclose(result["off_palette"], share)
        assert result["correct"] == (share <= MAX_OFF_PALETTE_SHARE)
        assert result["reason"] == ("" if share <= MAX_OFF_PALETTE_SHARE else "garbage")
        assert ("off-palette" in result["garbage"]) == (share > MAX_OFF_PALETTE_SHARE)


def test_touching_colours_are_one_two_colour_object_and_a_gap_of_two_separates_them():
    metadata = caption_metadata("a photo of a red square and a blue circle")
    for gap, two_colour in ((0, True), (2, False)):
        image = render([ShapeObject("square", "red", 2, 10, 10), ShapeObject("circle", "blue", 12 + gap, 10, 10)])
        result = score_image(image, metadata)
        assert ("two-colour object" in result["garbage"]) == two_colour
        assert result["correct"] == (not two_colour)


def _det(shape, colour, x, y=0, size=8):
    return Detection(shape, colour, (float(x), float(y), float(x + size), float(y + size)), size * size)


def test_each_failure_reason_on_hand_made_detections():
    def reason(detections, caption):
        return evaluate(detections, caption_metadata(caption))

    assert reason([], "a photo of a circle") == (False, "empty")
    assert reason([_det("square", "red", 0)], "a photo of a circle") == (False, "missing object")
    assert reason([_det("circle", "red", 0)], "a photo of two circles") == (False, "wrong count")
    assert reason([_det("circle", "red", x) for x in (0, 10, 20)], "a photo of two circles") == (False, "wrong count")
    assert reason([_det("circle", "red", 0), _det("circle", "blue", 10)], "a photo of two circles") == (True, "")
    assert reason([_det("circle", "blue", 0)], "a photo of a red circle") == (False, "wrong colour")
    # the red circle is there, but a larger blue one is taken first (GenEval takes the most confident detection)
    assert reason([_det("circle", "blue", 0, size=10), _det("circle", "red", 12)], "a photo of a red circle") == (
        False, "extra object")
    left, right = _det("circle", "red", 0, 10), _det("square", "red", 20, 10)
    assert reason([left, right], "a photo of a circle left of a square") == (True, "")
    assert reason([left, right], "a photo of a circle right of a square") == (False, "wrong relation")
    # a larger circle on the wrong side displaces the one that stands right of the square
    assert reason([_det("circle", "red", 0, 10, 10), right, _det("circle", "red", 30, 10, 2)],
                  "a photo of a circle right of a square") == (False, "extra object")
    assert set(FAILURE_REASONS) == {"garbage", "empty", "missing object", "wrong count", "extra object", "wrong colour",
                                    "wrong relation"}


def test_garbage_outranks_every_other_reason_and_empty_needs_no_foreground():
    blank = np.full((32, 32, 3), 255, np.uint8)
    assert score_image(blank, caption_metadata("a photo of a circle"))["reason"] == "empty"
    grey = np.full((32, 32, 3), 128, np.uint8)
    result = score_image(grey, caption_metadata("a photo of a circle"))
    assert result["reason"] == "garbage" and "off-palette" in result["garbage"] and "empty" not in result["detail"]


def test_caption_metadata_inverts_the_prompt_builder_and_matches_scenes():
    for row in [r for task in TASKS for r in distinct_prompts(task)] + build_prompts():
        assert caption_metadata(row["prompt"]) == row
    generator = torch.Generator().manual_seed(3)
    for task, _ in itertools.product(TASKS, range(5)):
        from nlg.shapes.data import sample_scene

        scene = sample_scene(generator, task)
        metadata = scene_metadata(scene)
        assert metadata["tag"] == task and metadata["prompt"] == scene.caption
        wanted = sorted((r["class"], r.get("color")) for r in metadata["include"])
        have = [(o.shape, o.colour) for o in scene.objects]
        for cls, colour in wanted:  # every requested class (and colour) is in the scene
            assert any(s == cls and colour in (None, c) for s, c in have)
    with pytest.raises(ValueError, match="caption"):
        caption_metadata("a photo of a dog")
    with pytest.raises(TypeError, match="caption"):
        caption_metadata(3)


@pytest.mark.parametrize("size", [8, 9, 12, 15, 20, 31])
def test_corners_feature_is_zero_on_digitised_circles_and_one_on_squares(size):
    # Independent count: a box pixel is a corner pixel iff its centre lies outside the inscribed circle; a digitised
    # circle holds exactly the pixels whose centre lies inside, so it holds none of them, and a square holds all.
    centre = size / 2
    disc = np.array([[(x + 0.5 - centre) ** 2 + (y + 0.5 - centre) ** 2 <= centre**2 for x in range(size)]
                     for y in range(size)])
    assert shape_features(disc)["corners"] == 0.0
    assert shape_features(np.ones((size, size), bool))["corners"] == 1.0
    # A square with one corner pixel removed keeps (k - 1)/k of its k corner pixels, k counted by brute force.
    k = sum((x + 0.5 - centre) ** 2 + (y + 0.5 - centre) ** 2 > centre**2 for x in range(size) for y in range(size))
    notched = np.ones((size, size), bool)
    notched[0, 0] = False
    assert math.isclose(shape_features(notched)["corners"], (k - 1) / k)


def test_a_soft_square_keeps_the_corner_share_of_the_docstring_derivation():
    # Square of side 40 with corners rounded at radius rho * 40, rho = 0.4: continuous corner share 1 - 4 rho^2 = 0.36
    # while its fill 1 - (4 - pi) rho^2 = 0.863 is that of a small digitised circle.
    size, radius = 40, 16.0
    u, v = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    du = np.maximum(np.abs(u - size / 2) - (size / 2 - radius), 0)
    dv = np.maximum(np.abs(v - size / 2) - (size / 2 - radius), 0)
    soft = du**2 + dv**2 <= radius**2
    f = shape_features(soft)
    assert abs(f["fill"] - (1 - (4 - math.pi) * 0.16)) < 0.01 and abs(f["corners"] - 0.36) < 0.03
