"""The studies' data, detector and intervals, and their scripts' ``--quick`` runs end to end."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from nlg.finetune.studies import (NIGHT, brightness_scenes, concept_scenes, cross_mask, mean_interval, render_cross,
                                  shows_cross, write_image_folder)
from nlg.shapes.data import COLOURS, ShapeObject, render


def _script(name):
    return importlib.import_module(f"benchmarks.{name}")


@pytest.mark.parametrize("size", range(8, 21))
def test_the_detector_finds_every_rendered_cross_and_no_old_shape(size):
    for colour in COLOURS:
        assert shows_cross(render_cross(colour, 3, 2, size), colour)
        assert not shows_cross(render_cross(colour, 3, 2, size), COLOURS[(COLOURS.index(colour) + 1) % 6])
        for shape in ("circle", "square", "triangle"):
            assert not shows_cross(render([ShapeObject(shape, colour, 3, 2, size)]), colour)


def test_cross_mask_is_two_centred_bars_a_third_wide():
    mask = cross_mask(9)
    assert mask.sum() == 9 * 3 + 9 * 3 - 9  # two 3-wide bars, their 3×3 overlap counted once
    assert mask[4].all() and mask[:, 4].all() and not mask[0, 0] and (mask == mask.T).all() and (mask == mask[::-1]).all()


def test_concept_and_brightness_scenes_match_their_captions():
    images, captions = concept_scenes(12, seed=3)
    for image, caption in zip(images, captions):
        colour = caption.split()[4]
        assert caption == f"a photo of a {colour} cross" and shows_cross(image, colour)
    images, captions = brightness_scenes(6, seed=5)
    for image, caption in zip(images, captions):
        colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        background = tuple(int(v) for v in colours[counts.argmax()])
        assert background == (NIGHT if caption.endswith(" at night") else (255, 255, 255)), caption
        assert caption.startswith("a photo of a ")


def test_write_image_folder_round_trips_through_the_trainers_reader(tmp_path):
    from nlg.finetune import load_images, read_image_folder

    images, captions = concept_scenes(3, seed=1)
    pairs = read_image_folder(write_image_folder(tmp_path / "d", images, captions))
    assert [c for _, c in pairs] == captions
    back = load_images([p for p, _ in pairs], 32)
    assert np.array_equal(np.round((back.permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8), images)


def test_mean_interval_is_the_student_t_interval():
    from scipy import stats

    values = [0.2, 0.5, 0.35, 0.4]
    mean, low, high = mean_interval(values)
    reference = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(0.3625) and (low, high) == pytest.approx(reference)
    assert np.isnan(mean_interval([0.3])[1])


@pytest.mark.slow
def test_timestep_study_quick_run(tmp_path):
    path = _script("finetune_timesteps").main(["--quick", "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "work"), "--seeds", "2"])
    text = path.read_text()
    assert "SMOKE OUTPUT" in text and "| linear | 4 | 2 |" in text and "| sigmoid | 2 | 2 |" in text
    rows = (tmp_path / "finetune_timesteps_quick.csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + 2 * 2 * 2  # header, base model, 2 types × 2 seeds × 2 checkpoints
    _check_figure_only(_script("finetune_timesteps"), tmp_path, "finetune_timesteps_quick_samples.png", "linear-seed0")


def test_brightness_measures_on_the_training_images_themselves_are_perfect():
    """Scored against themselves, the renders are at W1 = 0, every image on its word's side of the midpoint, and
    every noon object recognised as the shape its caption names (a wrong caption parse would score 0)."""
    script = _script("finetune_brightness")
    images, captions = brightness_scenes(24, seed=5)
    out = script.evaluate(images.astype(np.float64) / 255.0, captions, images, captions)
    assert out["w1_night"] == pytest.approx(0, abs=1e-6) and out["w1_noon"] == pytest.approx(0, abs=1e-6)
    assert out["adherence_night"] == out["adherence_noon"] == out["geneval_noon"] == 1.0
    wrong = [c.replace("circle", "square") if "circle" in c else c.replace(c.split()[4], "circle") for c in captions]
    assert script.evaluate(images.astype(np.float64) / 255.0, wrong, images, captions)["geneval_noon"] == 0.0
    with pytest.raises(ValueError, match="not a caption"):
        script.caption_shape("a photo of a blue circle at noon")


@pytest.mark.slow
def test_brightness_study_quick_run(tmp_path):
    script = _script("finetune_brightness")
    path = script.main(["--quick", "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "work")])
    text = path.read_text()
    assert "SMOKE OUTPUT" in text and all(f"| {v} | 1 |" in text for v in script.VARIANTS)
    args = json.loads((tmp_path / "work" / "zero_snr-seed0" / "training_args.json").read_text())
    assert args["settings"]["zero_terminal_snr"] and args["prediction_type"] == "v_prediction"
    _check_figure_only(script, tmp_path, "finetune_brightness_quick_samples.png", "offset-seed0")


def _check_figure_only(script, tmp_path, name, lora):
    """The run drew its samples picture; --figure-only redraws it from the saved LoRAs, byte for byte, without
    training; a missing LoRA is refused by name and the picture already written is kept."""
    picture = tmp_path / name
    first = picture.read_bytes()
    weights = tmp_path / "work" / lora / "pytorch_lora_weights.safetensors"
    stamp = weights.stat().st_mtime_ns
    picture.unlink()
    script.main(["--quick", "--figure-only", "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "work")])
    assert picture.read_bytes() == first and weights.stat().st_mtime_ns == stamp
    weights.unlink()
    with pytest.raises(ValueError, match=lora):
        script.main(["--quick", "--figure-only", "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "work")])
    assert picture.read_bytes() == first


def test_both_studies_take_their_base_model_from_model(monkeypatch):
    from benchmarks.common import base_pipeline

    loaded = []
    monkeypatch.setattr("nlg.shapes.load_pipeline", lambda folder=None: loaded.append(folder) or folder)
    for name in ("finetune_brightness", "finetune_timesteps"):
        parse = _script(name).parse
        assert base_pipeline(parse(["--quick", "--model", "/models/shapes-v3"])) == "/models/shapes-v3"
        assert base_pipeline(parse(["--quick"])) is None  # the embedded model
    assert loaded == ["/models/shapes-v3", None] * 2
