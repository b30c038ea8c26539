"""strength ↔ start timestep ↔ σ ↔ SNR, checked against the img2img pipelines' own rules and the schedules' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nlg.core.noise_levels import (
    noise_level_at,
    noise_level_for_strength,
    strength_for_noise_level,
    strength_table,
)
from nlg.testing import make_scheduler

STRENGTHS = (0.3, 0.5, 0.7, 0.9, 1.0)


@pytest.mark.parametrize("name", ["ddim", "dpm++", "euler", "pndm"])
def test_start_timestep_is_the_sd_img2img_pipelines(name):
    from diffusers import StableDiffusionImg2ImgPipeline

    from nlg.testing import tiny_sd_pipeline

    pipe = StableDiffusionImg2ImgPipeline(**tiny_sd_pipeline(scheduler=name).components)
    for strength in STRENGTHS:
        pipe.scheduler.set_timesteps(20)
        timesteps, steps = pipe.get_timesteps(20, strength, "cpu")
        level = noise_level_for_strength(pipe.scheduler, strength, 20)
        assert level.timestep == pytest.approx(float(timesteps[0])) and level.denoising_steps == steps


def test_ddim_coefficients_are_the_alphas_cumprod():
    sched = make_scheduler("ddim")
    ac = sched.alphas_cumprod.double()
    for strength in STRENGTHS:
        level = noise_level_for_strength(sched, strength, 10)
        t = 1000 // 10 * (int(10 * strength) - 1) + 1  # leading spacing, steps_offset = 1
        assert level.timestep == t
        assert level.signal_scale == pytest.approx(math.sqrt(ac[t]), rel=1e-6)
        assert level.noise_scale == pytest.approx(math.sqrt(1 - ac[t]), rel=1e-6)
        assert level.alpha_bar == pytest.approx(float(ac[t]), rel=1e-6)
        assert level.snr == pytest.approx(float(ac[t] / (1 - ac[t])), rel=1e-6)
        assert level.sigma == pytest.approx(float(((1 - ac[t]) / ac[t]).sqrt()), rel=1e-6)


def test_euler_sigma_is_the_karras_sigma_and_matches_ddpm_alpha_bar():
    sched = make_scheduler("euler")
    ac = sched.alphas_cumprod.double().numpy()
    ve = np.sqrt((1 - ac) / ac)
    for strength in STRENGTHS:
        level = noise_level_for_strength(sched, strength, 10)
        expected = np.interp(level.timestep, np.arange(1000), ve)
        assert level.signal_scale == 1.0
        assert level.sigma == pytest.approx(expected, rel=1e-5)
        assert level.alpha_bar == pytest.approx(1 / (1 + expected**2), rel=1e-5)
    # At a training timestep, every parameterisation gives the same ᾱ.
    assert noise_level_at(make_scheduler("euler"), 999).alpha_bar == pytest.approx(float(ac[999]), rel=1e-5)
    assert noise_level_at(make_scheduler("ddim"), 999).alpha_bar == pytest.approx(float(ac[999]), rel=1e-5)


def test_flow_matching_follows_the_sd3_rule():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    for strength in (0.35, 0.5, 0.9, 1.0):
        ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
        ref.set_timesteps(10)
        sigma = float(ref.sigmas[int(10 - 10 * strength)])
        level = noise_level_for_strength(sched, strength, 10)
        assert level.noise_scale == pytest.approx(sigma, rel=1e-6)
        assert level.signal_scale == pytest.approx(1 - sigma, abs=1e-6)
        assert level.timestep == pytest.approx(sigma * 1000, rel=1e-5)
    assert noise_level_at(sched, 940).snr == pytest.approx((0.06 / 0.94) ** 2, rel=1e-6)


def test_table_is_monotone_and_inverse_round_trips():
    sched = make_scheduler("dpm++")
    table = strength_table(sched, 8)
    sigmas = [level.sigma for level in table]
    assert [level.strength for level in table] == [k / 8 for k in range(1, 9)]
    assert all(a < b for a, b in zip(sigmas, sigmas[1:]))
    for level in table:
        assert strength_for_noise_level(sched, level.sigma, 8) == level
    assert strength_for_noise_level(sched, 1e-9, 8) == table[0]
    assert sched.num_inference_steps is None  # the scheduler passed in is never set up


@pytest.mark.parametrize("strength", [0.0, -0.5, 1.0001, float("nan"), True])
def test_bad_strength_is_refused(strength):
    with pytest.raises((ValueError, TypeError), match="strength"):
        noise_level_for_strength(make_scheduler("ddim"), strength, 10)


def test_strength_below_one_step_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="no denoising step"):
        noise_level_for_strength(make_scheduler("ddim"), 0.05, 10)
    with pytest.raises(ValueError, match="num_inference_steps"):
        noise_level_for_strength(make_scheduler("ddim"), 0.5, 0)
    with pytest.raises(ValueError, match="sigma"):
        strength_for_noise_level(make_scheduler("ddim"), -1.0, 10)
    with pytest.raises(ValueError, match="timestep"):
        noise_level_at(make_scheduler("ddim"), 1000)
