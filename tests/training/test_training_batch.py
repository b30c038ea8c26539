"""training_batch against diffusers' own add_noise / get_velocity / step, zero terminal SNR, bad input."""

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler, PNDMScheduler

from nlg.training import (
    OffsetSchedule,
    TimestepSampler,
    min_snr_weights,
    training_batch,
    weighted_mse,
    zero_snr_betas,
    zero_terminal_snr,
)

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def latents(b: int = 6, seed: int = 100) -> torch.Tensor:
    return torch.randn(b, 4, 8, 8, generator=gen(seed))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_defaults_are_the_standard_objective(prediction_type):
    scheduler = DDPMScheduler(**SD, prediction_type=prediction_type)
    x0 = latents()
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    noisy, timesteps, target, weights = training_batch(x0, scheduler, timesteps=t, generator=gen(0))
    eps = torch.randn(x0.shape, generator=gen(0))  # plain ε, first draw of the generator
    torch.testing.assert_close(noisy, scheduler.add_noise(x0, eps, t))
    expected = {"epsilon": eps, "v_prediction": scheduler.get_velocity(x0, eps, t), "sample": x0}[prediction_type]
    torch.testing.assert_close(target, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(timesteps, t) and torch.equal(weights, torch.ones(6))


def test_drawn_timesteps_come_first_from_the_generator():
    scheduler = DDPMScheduler(**SD)
    batch = training_batch(latents(), scheduler, timestep_sampler="logit_normal", generator=gen(1))
    t, _ = TimestepSampler("logit_normal")(6, generator=gen(1))
    assert torch.equal(batch.timesteps, t)


def test_offset_noise_is_shared_by_input_and_target():
    scheduler = DDPMScheduler(**SD)
    x0 = latents()
    t = torch.full((6,), 700)
    noisy, _, target, _ = training_batch(x0, scheduler, timesteps=t, offset_strength=0.1, generator=gen(2))
    abar = scheduler.alphas_cumprod[700]
    used = (noisy - abar.sqrt() * x0) / (1 - abar).sqrt()
    torch.testing.assert_close(target, used, rtol=1e-4, atol=1e-5)
    extra = target - torch.randn(x0.shape, generator=gen(2))
    torch.testing.assert_close(extra, extra[..., :1, :1].expand_as(extra))
    assert extra.abs().max() > 0


@pytest.mark.parametrize("preset", ["balanced", "constant_target"])
def test_v_target_converts_back_to_the_epsilon_target(preset):
    """diffusers turns a v prediction into ε̂ = √ᾱ v + √(1−ᾱ) x_t: that must give ε + ψ_t ξ."""
    eps_sched = DDPMScheduler(**SD)
    v_sched = DDPMScheduler(**SD, prediction_type="v_prediction")
    schedule = OffsetSchedule.preset(preset, strength=0.5, alphas_cumprod=eps_sched.alphas_cumprod)
    x0, t = latents(), torch.tensor([3, 100, 400, 700, 950, 999])
    e = training_batch(x0, eps_sched, timesteps=t, offset_schedule=schedule, generator=gen(3))
    v = training_batch(x0, v_sched, timesteps=t, offset_schedule=schedule, generator=gen(3))
    torch.testing.assert_close(v.noisy_latents, e.noisy_latents)
    abar = eps_sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    eps_from_v = abar.sqrt() * v.target + (1 - abar).sqrt() * v.noisy_latents
    torch.testing.assert_close(eps_from_v, e.target, rtol=1e-4, atol=2e-5)
    # and a DDPM step gives the same result from either parameterisation
    for k in range(6):
        a = eps_sched.step(e.target[k : k + 1], int(t[k]), e.noisy_latents[k : k + 1], generator=gen(9)).prev_sample
        b = v_sched.step(v.target[k : k + 1], int(t[k]), v.noisy_latents[k : k + 1], generator=gen(9)).prev_sample
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)


def test_probabilistic_offset_input_and_target_use_phi_and_psi():
    scheduler = DDPMScheduler(**SD)
    schedule = OffsetSchedule.preset("constant_target", strength=0.3, alphas_cumprod=scheduler.alphas_cumprod)
    x0, t = latents(), torch.tensor([10, 200, 400, 600, 800, 999])
    noisy, _, target, _ = training_batch(x0, scheduler, timesteps=t, offset_schedule=schedule, generator=gen(4))
    g = gen(4)
    eps, xi = torch.randn(x0.shape, generator=g), torch.randn(6, 4, 1, 1, generator=g)
    phi = schedule.phi[t].float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(noisy, scheduler.add_noise(x0, eps + phi * xi, t))
    torch.testing.assert_close(target, eps + 0.3 * xi)


def test_pyramid_and_min_snr_options():
    scheduler = DDPMScheduler(**SD, prediction_type="v_prediction")
    x0 = latents()
    batch = training_batch(x0, scheduler, pyramid_iterations=4, min_snr_gamma=5.0, generator=gen(5))
    torch.testing.assert_close(batch.loss_weights, min_snr_weights(batch.timesteps, scheduler, gamma=5.0, prediction_type="v_prediction"))
    abar = scheduler.alphas_cumprod[batch.timesteps].reshape(-1, 1, 1, 1)
    noise = (batch.noisy_latents - abar.sqrt() * x0) / (1 - abar).sqrt()
    torch.testing.assert_close(noise.std(dim=(1, 2, 3)), torch.ones(6), rtol=1e-4, atol=1e-4)


def test_sample_does_not_depend_on_its_batch():
    scheduler = DDPMScheduler(**SD)
    schedule = OffsetSchedule.preset("balanced", strength=0.2, alphas_cumprod=scheduler.alphas_cumprod)
    options = dict(timestep_sampler="shift", pyramid_iterations=3, offset_schedule=schedule, min_snr_gamma=1.0)
    x0 = latents(4)
    batch = training_batch(x0, scheduler, generator=[gen(i) for i in range(4)], **options)
    alone = training_batch(x0[1:2], scheduler, generator=[gen(1)], **options)
    for a, b in zip(batch, alone):
        torch.testing.assert_close(a[1:2], b)


def test_weighted_mse_matches_a_plain_loop():
    p, q, w = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.tensor([0.5, 1.0, 2.0])
    expected = sum(w[i] * ((p[i] - q[i]) ** 2).mean() for i in range(3)) / 3
    torch.testing.assert_close(weighted_mse(p, q, w), expected)


def test_zero_terminal_snr_uses_the_paper_rescale():
    base = DDPMScheduler(**SD)
    zero = zero_terminal_snr(base)
    assert zero.config.prediction_type == "v_prediction" and zero.config.timestep_spacing == "trailing"
    assert zero.alphas_cumprod[-1] == 0.0 and base.alphas_cumprod[-1] > 0  # the input is untouched
    # Lin et al., Alg. 1: √ᾱ is mapped affinely so that √ᾱ_0 is kept and √ᾱ_T becomes 0
    old, new = base.alphas_cumprod.double().sqrt(), zero.alphas_cumprod.double().sqrt()
    expected = (old - old[-1]) * old[0] / (old[0] - old[-1])
    torch.testing.assert_close(new, expected, rtol=1e-4, atol=1e-6)
    betas = zero_snr_betas(base.betas)
    torch.testing.assert_close(torch.cumprod(1 - betas, 0), zero.alphas_cumprod)


def test_zero_snr_v_target_at_the_last_timestep_is_minus_x0():
    zero = zero_terminal_snr(DDPMScheduler(**SD))
    x0 = latents()
    batch = training_batch(x0, zero, timesteps=torch.full((6,), 999), offset_strength=0.1, generator=gen(6))
    torch.testing.assert_close(batch.target, -x0)


@pytest.mark.parametrize(
    "kwargs,exc,name",
    [
        (dict(x0=torch.zeros(2, 8, 8)), ValueError, "latents"),
        (dict(scheduler=FlowMatchEulerDiscreteScheduler()), TypeError, "scheduler"),
        (dict(offset_strength=-0.1), ValueError, "offset_strength"),
        (dict(pyramid_discount=-0.4, pyramid_iterations=2), ValueError, "pyramid_discount"),
        (dict(timestep_sampler="karras"), ValueError, "name"),
        (dict(timestep_sampler=TimestepSampler(min_timestep=10, max_timestep=2000)), ValueError, "max_timestep"),
        (dict(prediction_type="flow"), ValueError, "prediction_type"),
        (dict(timesteps=torch.tensor([1, 1000])), ValueError, "timesteps"),
        (dict(offset_strength=0.1, offset_schedule="constant"), ValueError, "offset_schedule"),
        (
            dict(
                scheduler=zero_terminal_snr(DDPMScheduler(**SD)),
                timesteps=torch.tensor([999, 5]),
                # built for SD's schedule (φ_T ≠ ψ_T), used with a zero-SNR one
                offset_schedule=OffsetSchedule.preset("constant_target", strength=0.1, alphas_cumprod=DDPMScheduler(**SD).alphas_cumprod),
            ),
            ValueError,
            "prediction_type",
        ),
    ],
)
def test_bad_input_names_the_parameter(kwargs, exc, name):
    x0 = kwargs.pop("x0", torch.zeros(2, 1, 8, 8))
    scheduler = kwargs.pop("scheduler", DDPMScheduler(**SD))
    with pytest.raises(exc, match=name):
        training_batch(x0, scheduler, generator=gen(0), **kwargs)


def test_zero_terminal_snr_rejects_schedulers_without_the_rescale():
    with pytest.raises(TypeError, match="scheduler"):
        zero_terminal_snr(PNDMScheduler())
