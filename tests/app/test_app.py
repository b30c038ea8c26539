"""The web demo's callbacks, called directly (no browser, no server): validation, errors, columns, progress."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr
import numpy as np
import pytest
import torch

from nlg.app.backends import DIGIT_SCALE, Backend, DigitsBackend, ModelLoadError, StableDiffusionBackend
from nlg.app.callbacks import generate
from nlg.app.cli import load_backend, main
from nlg.app.settings import FIELDS, MAX_SEED, SettingsError, parse_settings
from nlg.app.ui import build_app

#: Valid page values for the digits model: condition, negative prompt, seed, number of seeds, CFG,
#: sampler steps, K, η, τ, λ (the order of the page's inputs).
DIGITS_VALUES: Dict[str, Any] = dict(
    condition="7", negative_prompt="", seed=0, num_seeds=2, guidance_scale=1.0, num_inference_steps=5,
    refining_steps=5, step_size=1.0, clip_threshold=0.5, noise_level=0.001,
)


def call(backend: Backend, progress: Any = None, **changes: Any) -> Any:
    values = {**DIGITS_VALUES, **changes}
    return generate(backend, *(values[name] for name in FIELDS), progress=progress)


def pixels(column: List[Tuple[Any, str]]) -> List[np.ndarray]:
    return [np.asarray(image) for image, _ in column]


@pytest.fixture(scope="module")
def digits() -> DigitsBackend:
    return DigitsBackend()


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("condition", "12", "digit must be one of 0…9"),
        ("condition", None, "digit must be one of 0…9"),
        ("seed", -1, "seed must be a whole number between 0"),
        ("seed", 2.5, "seed must be a whole number"),
        ("seed", None, "seed is empty"),
        ("seed", "abc", "seed must be a number"),
        ("num_seeds", 0, "number of seeds must be between 1 and 8"),
        ("num_seeds", 9, "number of seeds must be between 1 and 8"),
        ("refining_steps", 2.5, "refining steps K must be a whole number"),
        ("refining_steps", -1, "refining steps K must be between 0 and 100"),
        ("step_size", 0.0, "step size η must be between"),
        ("noise_level", float("nan"), "noise level λ must be a finite number"),
        ("guidance_scale", 1e9, "CFG scale must be between"),
        ("num_inference_steps", 0, "sampler steps must be between 1 and 100"),
    ],
)
def test_bad_setting_is_a_readable_page_error(name: str, value: Any, message: str) -> None:
    """Each bad value becomes a gr.Error (a toast on the page) naming the setting, before any model runs."""

    class Untouchable(Backend):
        kind = "digits"

        def plain(self, settings: Any, seed: int) -> Any:
            raise AssertionError("the model must not run on bad settings")

    with pytest.raises(gr.Error) as caught:
        call(Untouchable(), **{name: value})
    assert message in caught.value.message
    assert "Traceback" not in caught.value.message
    assert caught.value.title == "Invalid setting"


def test_settings_parse_page_values() -> None:
    """Slider floats become ints, clip 0 turns clipping off, seeds count up from the first seed."""
    assert set(DIGITS_VALUES) == set(FIELDS)
    with pytest.raises(TypeError, match="page values"):
        generate(Backend(), "7")
    settings = parse_settings(kind="digits", **{**DIGITS_VALUES, "seed": 5.0, "num_seeds": 3.0, "clip_threshold": 0})
    assert settings.condition == 7 and settings.seeds == (5, 6, 7)
    assert settings.clip_threshold is None and settings.nlg_options()["clip_threshold"] is None
    assert isinstance(settings.num_inference_steps, int) and isinstance(settings.refining_steps, int)
    with pytest.raises(SettingsError, match="lower the seed"):
        parse_settings(kind="digits", **{**DIGITS_VALUES, "seed": MAX_SEED})
    sd = parse_settings(kind="sd", **{**DIGITS_VALUES, "condition": "  a cat ", "negative_prompt": " "})
    assert sd.condition == "a cat" and sd.negative_prompt is None
    with pytest.raises(SettingsError, match="prompt is empty"):
        parse_settings(kind="sd", **{**DIGITS_VALUES, "condition": "   "})


def test_unexpected_failure_is_one_line_not_a_traceback() -> None:
    class Broken(Backend):
        kind = "digits"

        def plain(self, settings: Any, seed: int) -> Any:
            raise RuntimeError("out of memory")

    with pytest.raises(gr.Error) as caught:
        call(Broken())
    assert caught.value.message.startswith("Generation failed (RuntimeError: out of memory)")
    assert "Traceback" not in caught.value.message and "\n" not in caught.value.message


# -- the digits model ------------------------------------------------------------------------------


def test_digits_columns_identical_without_refinement_and_different_with(digits: DigitsBackend) -> None:
    """K = 0 reproduces the plain pipeline pixel for pixel; K > 0 changes every seed's image."""
    same = call(digits, refining_steps=0)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(same.plain), pixels(same.guided)))
    changed = call(digits, refining_steps=5)
    assert pixels(changed.plain)[0].shape == (8 * DIGIT_SCALE, 8 * DIGIT_SCALE)
    # the plain column does not depend on NLG's settings at all
    assert all(np.array_equal(a, b) for a, b in zip(pixels(same.plain), pixels(changed.plain)))
    assert all(not np.array_equal(a, b) for a, b in zip(pixels(changed.plain), pixels(changed.guided)))


def test_digits_outputs_norms_probabilities_and_progress(digits: DigitsBackend) -> None:
    steps: List[Tuple[float, str]] = []
    out = call(digits, seed=3, num_seeds=3, refining_steps=4, progress=lambda f, desc=None: steps.append((f, desc)))
    comparison = out.comparison
    assert [pair.seed for pair in comparison.pairs] == [3, 4, 5]
    # norms: K finite, positive values per seed; one plotted line per seed with K points
    for pair in comparison.pairs:
        assert pair.step_norms.shape == (4,) and bool((pair.step_norms > 0).all())
    lines = [line for line in out.norms.axes[0].get_lines() if line.get_label().startswith("seed")]
    assert len(lines) == 3 and all(len(line.get_xdata()) == 4 for line in lines)
    # probabilities: distributions over the 10 digits; the mean Label is the mean of the per-seed rows
    for column, guided in ((out.probabilities_plain, False), (out.probabilities_guided, True)):
        rows = np.stack([(p.guided if guided else p.plain).probabilities for p in comparison.pairs])
        assert rows.shape == (3, 10) and np.allclose(rows.sum(axis=1), 1.0)
        assert np.allclose([column[str(d)] for d in range(10)], rows.mean(axis=0))
    table = out.probability_table
    assert [row[0] for row in table] == [3, 4, 5] and all(0 <= row[1] <= 1 and 0 <= row[2] <= 1 for row in table)
    # progress: before each of the 6 images, then 1.0, never backwards
    fractions = [f for f, _ in steps]
    assert len(fractions) == 7 and fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert "Done in" in out.status and "K = 4" in out.status


def test_digit_image_does_not_depend_on_the_other_seeds(digits: DigitsBackend) -> None:
    """Each image has its own generator: seed 4 in a grid of seeds 3–4 equals seed 4 alone."""
    grid = call(digits, seed=3, num_seeds=2)
    alone = call(digits, seed=4, num_seeds=1)
    assert np.array_equal(pixels(grid.guided)[1], pixels(alone.guided)[0])
    assert np.array_equal(pixels(grid.plain)[1], pixels(alone.plain)[0])


# -- Stable Diffusion through --model -------------------------------------------------------------


def test_model_folder_served_through_from_pretrained(tmp_path: Path) -> None:
    """``--model PATH`` loads a saved SD pipeline offline; K = 0 matches the plain pipeline, K > 0 does not."""
    from nlg.testing import save_tiny_pipeline

    backend = load_backend(str(save_tiny_pipeline(tmp_path / "tiny-sd", "sd15")), "cpu")
    assert isinstance(backend, StableDiffusionBackend) and backend.kind == "sd"
    values = dict(condition="a red cube", negative_prompt="", num_seeds=1, num_inference_steps=2)
    same = call(backend, **values, refining_steps=0)
    changed = call(backend, **values, refining_steps=2)
    assert pixels(same.plain)[0].shape == (32, 32, 3)
    assert np.array_equal(pixels(same.plain)[0], pixels(same.guided)[0])
    assert not np.array_equal(pixels(changed.plain)[0], pixels(changed.guided)[0])
    assert changed.probabilities_plain is None and changed.probability_table is None
    with pytest.raises(gr.Error, match="prompt is empty"):
        call(backend, **{**values, "condition": ""})
    page = {block.elem_id for block in build_app(backend).blocks.values() if getattr(block, "elem_id", None)}
    assert {"prompt", "negative-prompt", "generate", "gallery-plain", "gallery-nlg"} <= page and "digit" not in page


def test_bad_model_is_refused_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_backend(str(tmp_path))
    with pytest.raises(ModelLoadError, match="could not load the digits weights"):
        load_backend(None, weights=tmp_path)
    with pytest.raises(ModelLoadError, match="must be a Stable Diffusion pipeline"):
        StableDiffusionBackend(torch.nn.Linear(2, 2), "a linear layer")
    with pytest.raises(SystemExit) as exited:
        main(["--model", str(tmp_path / "missing"), "--port", "7860"])
    assert "not a diffusers pipeline folder" in str(exited.value.code)
    with pytest.raises(SystemExit):
        main(["--port", "0"])
    assert "--port must be in 1…65535" in capsys.readouterr().err
