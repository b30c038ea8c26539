"""``RefineOptions``: validated once, round-trips through JSON, and is what every entry point holds."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nlg import NoiseLevelGuidance, RefineOptions
from nlg.digits.experiment import DigitsConfig
from nlg.shapes.sampling import SamplingConfig

# The paper's settings (arXiv 2509.13936, Sec. 4): K = 20, η = 1, τ = 0.5, λ = 0.001, renormalisation on.
PAPER = dict(refining_steps=20, step_size=1.0, clip_threshold=0.5, noise_level=0.001, normalize_latents=True,
             boundary_control=False, guidance_formula_gamma=None, reference_timestep=None, stop_tolerance=None,
             stop_window=3, stop_signal="norm_change")

CASES = [
    RefineOptions(),
    RefineOptions(refining_steps=4, step_size=(8.0, 6.0, 4.0, 2.0), clip_threshold=None, noise_level=0.0),
    RefineOptions(refining_steps=7, step_size=0.25, boundary_control=True, guidance_formula_gamma=3.0, reference_timestep=700),
    RefineOptions(stop_tolerance=-0.1, stop_window=1, stop_signal="radial", normalize_latents=False),
]


def test_defaults_are_the_papers():
    assert RefineOptions().to_dict() == PAPER
    assert NoiseLevelGuidance().options == RefineOptions()


@pytest.mark.parametrize("options", CASES, ids=range(len(CASES)))
def test_json_round_trip(options):
    text = options.to_json()
    assert isinstance(json.loads(text), dict)
    assert RefineOptions.from_json(text) == options
    assert RefineOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options


def test_per_step_sizes_and_path_length():
    options = CASES[1]
    assert options.step_sizes == (8.0, 6.0, 4.0, 2.0)
    assert options.path_length == 20.0
    assert RefineOptions(refining_steps=5, step_size=4.0).path_length == 20.0
    assert RefineOptions(refining_steps=3, step_size=[1.0, 2.0, 3.0]).step_size == (1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("refining_steps", -1, ValueError), ("refining_steps", 2.0, TypeError), ("refining_steps", True, TypeError),
        ("step_size", 0.0, ValueError), ("step_size", float("nan"), ValueError), ("step_size", "1", TypeError),
        ("step_size", (1.0, 2.0), ValueError), ("step_size", (1.0,) * 19 + (-1.0,), ValueError),
        ("clip_threshold", 0.0, ValueError), ("clip_threshold", float("inf"), ValueError),
        ("noise_level", -0.1, ValueError), ("noise_level", None, TypeError),
        ("guidance_formula_gamma", float("nan"), ValueError), ("guidance_formula_gamma", "3", TypeError),
        ("reference_timestep", -1, ValueError), ("reference_timestep", 1.5, ValueError),
        ("stop_tolerance", 0.0, ValueError), ("stop_tolerance", "0.1", TypeError),
        ("stop_window", 0, ValueError), ("stop_signal", "cosine", ValueError),
    ],
)
def test_bad_fields_are_named(field, value, error):
    with pytest.raises(error, match=field):
        RefineOptions(**{field: value})


def test_radial_tolerance_is_a_cosine():
    with pytest.raises(ValueError, match="stop_tolerance"):
        RefineOptions(stop_signal="radial", stop_tolerance=1.0)
    RefineOptions(stop_signal="radial", stop_tolerance=-0.5)


def test_frozen_and_unknown_keys():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RefineOptions().refining_steps = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="stop_threshold"):
        RefineOptions.from_dict({"stop_threshold": 0.1})
    with pytest.raises(ValueError, match="refining_steps"):
        RefineOptions().replace(refining_steps=-2)


def test_guidance_holds_options():
    nlg = NoiseLevelGuidance(refining_steps=4, step_size=5.0, noise_level=0.0, stop_tolerance=0.01)
    assert nlg.options == RefineOptions(refining_steps=4, step_size=5.0, noise_level=0.0, stop_tolerance=0.01)
    assert (nlg.refining_steps, nlg.step_size, nlg.noise_level, nlg.stop_tolerance) == (4, 5.0, 0.0, 0.01)
    assert NoiseLevelGuidance.for_budget(4, noise_level=0.0, stop_tolerance=0.01).options == nlg.options
    assert NoiseLevelGuidance.from_options(RefineOptions.from_json(nlg.options.to_json())).config == nlg.config
    with pytest.raises(AttributeError):
        nlg.refining_steps = 3  # read-only: build new options instead
    with pytest.raises(TypeError, match="options"):
        NoiseLevelGuidance.from_options({"refining_steps": 3})


def test_embedded_model_configs_build_options():
    assert DigitsConfig(refining_steps=3, clip_threshold=None).refine_options == RefineOptions(refining_steps=3, clip_threshold=None)
    assert DigitsConfig(refining_steps=3).guidance().options == RefineOptions(refining_steps=3)
    assert SamplingConfig(3.0, 2, 0.5).refine_options == RefineOptions(refining_steps=2, step_size=0.5)
    with pytest.raises(ValueError, match="step_size"):
        DigitsConfig(refining_steps=3, step_size=-1.0)
    with pytest.raises(ValueError, match="refining_steps"):
        SamplingConfig(3.0, -1)
