"""Every noise/timestep option of ``python -m nlg.finetune`` changes the training batch exactly as
``nlg.training.training_batch`` defines it: the batch the trainer draws equals ``training_batch`` called
directly, with hand-written arguments, from the same generator state."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler

from nlg.finetune import batch_options, draw_batch, training_scheduler
from nlg.finetune.cli import build_parser, config_from_args
from nlg.training import OffsetSchedule, TimestepSampler, training_batch, zero_terminal_snr
from nlg.testing import make_scheduler

#: Stable Diffusion's training schedule, written out independently of the tiny pipeline's scheduler.
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def _config(*flags):
    return config_from_args(build_parser().parse_args(["--model", "m", "--data_dir", "d", "--output_dir", "o", *flags]))


def tiny_sd_pipeline(prediction_type="epsilon"):
    """Only the pipeline's scheduler matters to the training scheduler: the tiny pipelines' DDIM."""
    return SimpleNamespace(scheduler=make_scheduler("ddim", prediction_type))


def _sd_scheduler(**overrides):
    return DDPMScheduler(**SD, **overrides)


CASES = [
    ([], {}),
    (["--timestep_type", "linear"], {"timestep_sampler": "uniform"}),
    (["--timestep_type", "sigmoid"], {"timestep_sampler": TimestepSampler("logit_normal")}),
    (["--timestep_type", "logit_normal", "--logit_mean", "0.5", "--logit_std", "2"],
     {"timestep_sampler": TimestepSampler("logit_normal", mean=0.5, std=2.0)}),
    (["--timestep_type", "shift"], {"timestep_sampler": TimestepSampler("shift", shift=3.0)}),
    (["--timestep_type", "uniform", "--timestep_shift", "2"], {"timestep_sampler": TimestepSampler("uniform", shift=2.0)}),
    (["--timestep_type", "weighted"], {"timestep_sampler": "weighted"}),
    (["--offset_noise", "0.1"], {"offset_strength": 0.1}),
    (["--offset_noise", "0.3", "--offset_noise_random_strength"], {"offset_strength": 0.3, "offset_random_strength": True}),
    (["--pyramid_noise", "3", "--pyramid_discount", "0.5"], {"pyramid_iterations": 3, "pyramid_discount": 0.5}),
    (["--pyramid_noise", "2", "--offset_noise", "0.1"], {"pyramid_iterations": 2, "offset_strength": 0.1}),
    (["--probabilistic_offset", "balanced", "--probabilistic_offset_strength", "0.2"],
     {"offset_schedule": ("balanced", 0.2)}),
    (["--probabilistic_offset", "constant_target"], {"offset_schedule": ("constant_target", 0.1)}),
    (["--min_snr_gamma", "0.5"], {"min_snr_gamma": 0.5}),
    (["--prediction_type", "v_prediction"], {"prediction_type": "v_prediction"}),
    (["--prediction_type", "v_prediction", "--zero_terminal_snr", "--min_snr_gamma", "1"],
     {"prediction_type": "v_prediction", "min_snr_gamma": 1.0, "zero_snr": True}),
]


@pytest.mark.parametrize("flags, expected", CASES, ids=[" ".join(f) or "defaults" for f, _ in CASES])
def test_each_option_draws_the_batch_training_batch_defines(flags, expected):
    config = _config(*flags)
    scheduler = training_scheduler(tiny_sd_pipeline(), config)
    expected = dict(expected)
    reference_scheduler = _sd_scheduler()
    if expected.pop("zero_snr", False):
        reference_scheduler = zero_terminal_snr(reference_scheduler, prediction_type="v_prediction")
        assert float(scheduler.alphas_cumprod[-1]) == 0.0
    torch.testing.assert_close(scheduler.alphas_cumprod, reference_scheduler.alphas_cumprod, rtol=0, atol=0)
    if "offset_schedule" in expected:
        name, strength = expected["offset_schedule"]
        expected["offset_schedule"] = OffsetSchedule.preset(name, strength=strength, alphas_cumprod=reference_scheduler.alphas_cumprod)

    latents = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    got = draw_batch(latents, scheduler, batch_options(config, scheduler), batch_size=6, caption_dropout=0.0,
                     generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    index = torch.randint(0, 5, (6,), generator=g)
    torch.rand(6, generator=g)  # the caption-dropout draw
    want = training_batch(latents[index], reference_scheduler, generator=g, **expected)
    assert torch.equal(got.index, index)
    for a, b in zip(got.batch, want):
        assert torch.equal(a, b)

    g = torch.Generator().manual_seed(3)
    index = torch.randint(0, 5, (6,), generator=g)
    torch.rand(6, generator=g)
    plain = training_batch(latents[index], _sd_scheduler(), generator=g)
    changed = any(not torch.equal(a, b) for a, b in zip(got.batch, plain))
    same_as_default = not flags or flags == ["--timestep_type", "linear"]  # "linear" is an alias of the default
    assert changed != same_as_default


def test_caption_dropout_empties_the_captions_its_uniform_draw_selects():
    config = _config("--caption_dropout", "0.4")
    scheduler = training_scheduler(tiny_sd_pipeline(), config)
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    got = draw_batch(latents, scheduler, batch_options(config, scheduler), batch_size=64,
                     caption_dropout=config.caption_dropout, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    torch.randint(0, 3, (64,), generator=g)
    u = torch.rand(64, generator=g)
    assert torch.equal(got.dropped, u < 0.4)
    assert 0 < int(got.dropped.sum()) < 64


def test_zero_terminal_snr_is_refused_on_an_epsilon_model_naming_the_fix():
    with pytest.raises(ValueError, match="zero_terminal_snr needs v-prediction.*--prediction_type v_prediction"):
        training_scheduler(tiny_sd_pipeline(), _config("--zero_terminal_snr"))
    v_scheduler = training_scheduler(tiny_sd_pipeline("v_prediction"), _config("--zero_terminal_snr"))
    assert v_scheduler.config.prediction_type == "v_prediction" and float(v_scheduler.alphas_cumprod[-1]) == 0.0
