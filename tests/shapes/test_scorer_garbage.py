"""The committed garbage set: what nlg.shapes.garbage builds, covering the kinds of issue 19, all scored wrong."""

from pathlib import Path

import numpy as np

from nlg.shapes.garbage import garbage_images, load_garbage_set, write_garbage_set
from nlg.shapes.metadata import caption_metadata
from nlg.shapes.scorer import score_image

COMMITTED = Path(__file__).resolve().parents[1] / "data" / "shapes_garbage"
#: Issue 19's kinds, each with at least one committed image.
KINDS = ("uniform_noise", "flat_black", "flat_grey", "flat_light_grey", "thin_line", "bar", "ring", "l_shape",
         "two_tone_block", "cross", "noisy_blob", "half_disc", "cut_square", "cut_triangle", "pacman")


def test_committed_set_is_what_the_library_builds(tmp_path):
    committed = load_garbage_set(COMMITTED)
    assert [k for k, _, _ in committed] == [k for k, _, _ in garbage_images()]
    for (kind, prompt, image), (_, prompt2, built) in zip(committed, garbage_images()):
        assert prompt == prompt2 and np.array_equal(image, built), kind
    write_garbage_set(tmp_path)
    assert (tmp_path / "garbage.jsonl").read_text() == (COMMITTED / "garbage.jsonl").read_text()
    assert all((p.stat().st_size < 4_000) for p in COMMITTED.glob("*.png"))


def test_the_set_covers_every_kind_and_pairs_each_with_a_prompt_of_its_look():
    rows = {kind: prompt for kind, prompt, _ in load_garbage_set(COMMITTED)}
    assert set(KINDS) <= set(rows)
    for kind, prompt in rows.items():
        caption_metadata(prompt)  # a prompt the scorer can judge


def test_every_garbage_image_is_scored_wrong():
    for kind, prompt, image in load_garbage_set(COMMITTED):
        result = score_image(image, caption_metadata(prompt))
        assert not result["correct"], (kind, result)
        assert result["reason"] == "garbage" and result["garbage"], (kind, result)
