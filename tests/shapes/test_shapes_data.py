"""nlg.shapes data and tokenizer: deterministic renders, captions true of their scenes, every template word one token."""

import json

import numpy as np
import pytest
import torch

from nlg.shapes.data import (
    BACKGROUND,
    COLOURS,
    MIN_GAP,
    PALETTE,
    SHAPES,
    TASK_WEIGHTS,
    TASKS,
    ShapeObject,
    check_task_weights,
    mirror_scene,
    relative_position,
    render,
    render_dataset,
    sample_scene,
    scene_from_seed,
)
from nlg.shapes.tokenizer import WORDS, build_tokenizer, build_vocab, byte_symbols, save_tokenizer_files

SEEDS = range(70_000, 70_300)  # used by this file only


def test_renders_are_deterministic_and_seeds_differ():
    a = [render(scene_from_seed(s).objects) for s in SEEDS[:50]]
    b = [render(scene_from_seed(s).objects) for s in SEEDS[:50]]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) == 50
    images, captions, scenes = render_dataset(list(SEEDS[:8]))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    expected = torch.from_numpy(np.stack(a[:8])).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(images, expected)
    assert captions == [scene_from_seed(s).caption for s in SEEDS[:8]]


def test_pixels_are_background_or_exact_palette_colours():
    allowed = {BACKGROUND} | set(PALETTE.values())
    for s in SEEDS[:100]:
        scene = scene_from_seed(s)
        image = render(scene.objects)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        colours = {tuple(int(v) for v in p) for p in image.reshape(-1, 3)}
        assert colours <= allowed
        assert colours - {BACKGROUND} == {PALETTE[o.colour] for o in scene.objects}


def test_shapes_are_drawn_by_pixel_centre_inclusion():
    size = 10
    image = render([ShapeObject("circle", "red", 3, 5, size), ShapeObject("triangle", "blue", 18, 18, size),
                    ShapeObject("square", "green", 18, 2, 7)])
    red = np.all(image == PALETTE["red"], axis=-1)
    blue = np.all(image == PALETTE["blue"], axis=-1)
    green = np.all(image == PALETTE["green"], axis=-1)
    for row in range(32):
        for col in range(32):
            u, v = col + 0.5, row + 0.5
            assert red[row, col] == ((u - 8) ** 2 + (v - 10) ** 2 <= 25)
            # triangle: apex (23, 18), base y = 28 from x = 18 to 28
            inside = 18 <= v <= 28 and abs(u - 23) <= (v - 18) / 2
            assert blue[row, col] == inside
            assert green[row, col] == (18 <= col < 25 and 2 <= row < 9)


def _relation(a, b):
    """GenEval's position rule, written out per axis (independent of nlg.shapes.data.relative_position)."""
    ca = ((a.x + a.x + a.size) / 2, (a.y + a.y + a.size) / 2)
    cb = ((b.x + b.x + b.size) / 2, (b.y + b.y + b.size) / 2)
    ox, oy = ca[0] - cb[0], ca[1] - cb[1]
    norm = (ox * ox + oy * oy) ** 0.5
    rx = max(abs(ox) - 0.1 * (a.size + b.size), 0.0)
    ry = max(abs(oy) - 0.1 * (a.size + b.size), 0.0)
    out = set()
    if 2 * rx > norm:
        out.add("left of" if ox < 0 else "right of")
    if 2 * ry > norm:
        out.add("above" if oy < 0 else "below")
    return out


@pytest.mark.parametrize("task", TASKS)
def test_captions_are_true_of_their_scenes(task):
    numbers = {"two": 2, "three": 3, "four": 4}
    generator = torch.Generator().manual_seed(TASKS.index(task))
    for _ in range(60):
        scene = sample_scene(generator, task)
        objs = scene.objects
        words = scene.caption.split()
        assert scene.task == task and words[:2] == ["a", "photo"] and 1 <= len(objs) <= 4
        for i, a in enumerate(objs):  # non-overlapping, at least MIN_GAP pixels apart, inside the image
            assert 0 <= a.x and a.x + a.size <= 32 and 0 <= a.y and a.y + a.size <= 32
            for b in objs[i + 1:]:
                gap_x = max(b.x - (a.x + a.size), a.x - (b.x + b.size))
                gap_y = max(b.y - (a.y + a.size), a.y - (b.y + b.size))
                assert max(gap_x, gap_y) >= MIN_GAP
        shapes = sorted(o.shape for o in objs)
        if task == "single_object":
            assert len(objs) == 1 and words[3:] == ["a", objs[0].shape]
        elif task == "colors":
            assert len(objs) == 1 and words[3:] == ["a", objs[0].colour, objs[0].shape]
        elif task == "counting":
            n, noun = numbers[words[3]], words[4]
            assert len(objs) == n and all(o.shape + "s" == noun for o in objs)
        elif task == "two_object":
            assert words[5:7] == ["and", "a"] and shapes == sorted([words[4], words[7]]) and words[4] != words[7]
        elif task == "color_attr":
            assert sorted((o.colour, o.shape) for o in objs) == sorted([(words[4], words[5]), (words[8], words[9])])
            assert words[4] != words[8] and words[5] != words[9]
        else:
            first, second = objs
            relation = " ".join(words[5:-2])
            assert words[4] == first.shape and words[-1] == second.shape
            assert _relation(first, second) == {relation}


def test_task_mix_covers_every_task_shape_and_colour():
    scenes = [scene_from_seed(s) for s in SEEDS]
    assert {s.task for s in scenes} == set(TASKS)
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    assert {o.colour for s in scenes for o in s.objects} == set(COLOURS)
    assert {len(s.objects) for s in scenes} == {1, 2, 3, 4}


def test_task_weights_set_the_task_frequencies():
    weights = (0.0, 0.1, 0.0, 0.0, 0.6, 0.3)
    scenes = [scene_from_seed(s, task_weights=weights) for s in range(3000)]
    counts = {task: sum(scene.task == task for scene in scenes) for task in TASKS}
    assert counts["single_object"] == counts["counting"] == counts["colors"] == 0  # weight 0: never drawn
    for task, weight in zip(TASKS, weights):  # binomial: 4.5 standard errors is a 1-in-100000 miss
        se = (weight * (1 - weight) / len(scenes)) ** 0.5
        assert abs(counts[task] / len(scenes) - weight) <= 4.5 * se + 1e-12, task
    # weights are relative: a multiple draws the same scenes
    assert scene_from_seed(7, task_weights=[10 * w for w in weights]) == scene_from_seed(7, task_weights=weights)


def test_the_default_task_weights_are_the_module_constant():
    images, captions, _ = render_dataset(range(40))
    again, same, _ = render_dataset(range(40), TASK_WEIGHTS)
    assert captions == same and torch.equal(images, again)
    assert [scene_from_seed(s) for s in range(40)] == [scene_from_seed(s, None, TASK_WEIGHTS) for s in range(40)]


@pytest.mark.parametrize("bad", [(0.1,) * 5, "uniform", (0.1, 0.1, 0.1, 0.1, 0.1, -0.1), (0.0,) * 6,
                                 (0.1, 0.1, 0.1, 0.1, 0.1, float("nan")), (0.1, 0.1, 0.1, 0.1, 0.1, True)])
def test_bad_task_weights_are_refused_by_name(bad):
    with pytest.raises((TypeError, ValueError), match="task_weights"):
        check_task_weights(bad)
    with pytest.raises((TypeError, ValueError), match="task_weights"):
        render_dataset(range(2), bad)


def test_a_mirror_twin_is_the_flipped_render_with_the_relation_word_swapped():
    seen = set()
    for seed in SEEDS:
        scene = scene_from_seed(seed)
        twin = mirror_scene(scene)
        assert np.array_equal(render(twin.objects), render(scene.objects)[:, ::-1])
        assert mirror_scene(twin) == scene
        if scene.task != "position":
            assert twin.caption == scene.caption
            continue
        relation = " ".join(twin.caption.split()[5:-2])
        seen.add((" ".join(scene.caption.split()[5:-2]), relation))
        assert relative_position(twin.objects[0].box, twin.objects[1].box) == {relation}  # the new caption is true
    assert seen == {("left of", "right of"), ("right of", "left of"), ("above", "above"), ("below", "below")}


def test_coloured_position_captions_name_the_colours_of_their_objects():
    scenes = [scene_from_seed(s, "position", coloured_position=0.5) for s in range(400)]
    coloured = [scene for scene in scenes if scene.caption.split()[4] in COLOURS]
    assert 0.5 - 4.5 * (0.25 / 400) ** 0.5 <= len(coloured) / 400 <= 0.5 + 4.5 * (0.25 / 400) ** 0.5  # binomial
    for scene in coloured:
        words = scene.caption.split()
        first, second = scene.objects
        assert words[4:6] == [first.colour, first.shape] and words[-2:] == [second.colour, second.shape]
        assert first.colour != second.colour
        assert relative_position(first.box, second.box) == {" ".join(words[6:-3])}
    # at 0 no extra draw is made: the GenEval captions and scenes of the default recipe
    assert [scene_from_seed(s, coloured_position=0.0) for s in range(50)] == [scene_from_seed(s) for s in range(50)]
    for bad, error in ((-0.1, ValueError), (1.5, ValueError), (True, TypeError), ("half", TypeError)):
        with pytest.raises(error, match="coloured_position"):
            scene_from_seed(1, coloured_position=bad)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="seed"):
        scene_from_seed(-1)
    with pytest.raises(ValueError, match="task"):
        sample_scene(torch.Generator(), "counting_sheep")
    with pytest.raises(ValueError, match="colour"):
        render([ShapeObject("circle", "pink", 0, 0, 8)])
    with pytest.raises(ValueError, match="fit"):
        render([ShapeObject("circle", "red", 30, 0, 8)])


def test_byte_table_is_a_bijection_onto_printable_characters():
    table = byte_symbols()
    assert len(set(table)) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == chr(256 + 32)  # space is the 33rd unprintable byte
    assert all(ch.isprintable() and not ch.isspace() for ch in table)


def test_every_template_word_is_one_token_and_unknown_words_still_tokenize(tmp_path):
    captions = {scene_from_seed(s).caption for s in SEEDS}
    assert {w for c in captions for w in c.split()} <= set(WORDS)
    vocab_path, merges_path = save_tokenizer_files(tmp_path)
    from transformers import CLIPTokenizer

    for tokenizer in (build_tokenizer(), CLIPTokenizer.from_pretrained(tmp_path, model_max_length=16)):
        for word in WORDS:
            ids = tokenizer(word, add_special_tokens=False).input_ids
            assert tokenizer.convert_ids_to_tokens(ids) == [word + "</w>"], word
        ids = tokenizer("A photo of a ZEBRA, 3 ü", add_special_tokens=False).input_ids
        pieces = tokenizer.convert_ids_to_tokens(ids)
        assert pieces[:4] == ["a</w>", "photo</w>", "of</w>", "a</w>"]
        assert tokenizer.unk_token_id not in ids  # byte fallback: nothing is unknown
        assert "".join(pieces[4:]).replace("</w>", "") == "zebra,3" + "".join(byte_symbols()[b] for b in "ü".encode())
        padded = tokenizer("a photo of two circles", padding="max_length", max_length=16).input_ids
        assert len(padded) == 16 and padded[0] == tokenizer.bos_token_id and padded[6] == tokenizer.eos_token_id
    vocab = json.loads(vocab_path.read_text())
    assert vocab == build_vocab()[0] and len(vocab) == len(set(vocab.values())) == max(vocab.values()) + 1
