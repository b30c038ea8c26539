"""Probabilistic offset noise: the closed form against a simulated forward chain, the posterior mean
against exact Gaussian conditioning, the presets against their analytic forms."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from scipy import stats

from nlg.training import OffsetSchedule, initial_latents, posterior_mean, probabilistic_offset_noise

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def small_chain(T: int = 40, seed: int = 0):
    """A short chain with its own betas and a random positive γ schedule (float64)."""
    betas = torch.linspace(0.01, 0.25, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    gamma = 0.3 * torch.rand(T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return betas, abar, gamma


def test_forward_chain_simulation_matches_closed_form_marginal():
    betas, abar, gamma = small_chain()
    schedule = OffsetSchedule.from_gamma(gamma, abar)
    g = torch.Generator().manual_seed(1)
    n, x0 = 200_000, 0.7
    xi = torch.randn(n, generator=g, dtype=torch.float64)
    x = torch.full((n,), x0, dtype=torch.float64)
    for t in range(len(betas)):
        # q(x_t | x_{t-1}, ξ) = N(√α_t x_{t-1} + γ_t ξ, β_t)
        x = torch.sqrt(1 - betas[t]) * x + gamma[t] * xi + torch.sqrt(betas[t]) * torch.randn(n, generator=g, dtype=torch.float64)
        if t % 13 == 0 or t == len(betas) - 1:
            # closed form: x_t = √ᾱ x0 + √(1−ᾱ)(ε + φ_t ξ), ε ⟂ ξ, ε ~ N(0, 1)
            eps = (x - abar[t].sqrt() * x0) / (1 - abar[t]).sqrt() - schedule.phi[t] * xi
            assert abs(eps.mean().item()) < 5 / math.sqrt(n)
            assert eps.var().item() == pytest.approx(1.0, abs=0.015)
            assert abs(torch.corrcoef(torch.stack([eps, xi]))[0, 1].item()) < 5 / math.sqrt(n)
            assert stats.kstest(eps[:20000].numpy(), "norm").pvalue > 1e-3


def test_phi_and_psi_match_the_direct_sums():
    betas, abar, gamma = small_chain(seed=3)
    schedule = OffsetSchedule.from_gamma(gamma, abar)
    for t in range(len(betas)):
        m = sum(math.sqrt(abar[t] / abar[i]) * float(gamma[i]) for i in range(t + 1))
        assert schedule.phi[t].item() == pytest.approx(m / math.sqrt(1 - abar[t]), rel=1e-10)
        assert schedule.psi[t].item() == pytest.approx(math.sqrt(1 - abar[t]) * float(gamma[t] / betas[t]), rel=1e-10)


def test_posterior_mean_matches_exact_gaussian_conditioning():
    betas, abar, gamma = small_chain(seed=4)
    schedule = OffsetSchedule.from_gamma(gamma, abar)
    scheduler = DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist())
    g = torch.Generator().manual_seed(5)
    for t in (1, 7, 20, 39):
        x0, xi, x_t = (torch.randn(6, 1, 1, 1, generator=g, dtype=torch.float64) for _ in range(3))
        m = lambda k: sum(math.sqrt(abar[k] / abar[i]) * gamma[i] for i in range(k + 1))  # noqa: E731
        # joint Gaussian of (x_{t-1}, x_t) given x0, ξ; condition on x_t
        mean_prev = abar[t - 1].sqrt() * x0 + m(t - 1) * xi
        var_prev = 1 - abar[t - 1]
        alpha = 1 - betas[t]
        mean_t = alpha.sqrt() * mean_prev + gamma[t] * xi
        cov, var_t = alpha.sqrt() * var_prev, alpha * var_prev + betas[t]
        exact = mean_prev + cov / var_t * (x_t - mean_t)
        # the formula: ε from the closed form, target ε + ψ_t ξ
        eps = (x_t - abar[t].sqrt() * x0) / (1 - abar[t]).sqrt() - schedule.phi[t] * xi
        _, target = schedule.apply(eps, xi, torch.full((6,), t))
        # (the scheduler keeps ᾱ in float32, hence the tolerance)
        got = posterior_mean(x_t, target, torch.full((6,), t), scheduler=scheduler)
        torch.testing.assert_close(got, exact, rtol=1e-4, atol=1e-5)


def test_balanced_preset_is_consistent_with_phi_equal_psi_proportional_to_sigma():
    abar = DDPMScheduler(**SD).alphas_cumprod.double()
    schedule = OffsetSchedule.preset("balanced", strength=0.2, alphas_cumprod=abar)
    sigma = ((1 - abar) / abar).sqrt()
    torch.testing.assert_close(schedule.psi, 0.2 * sigma / sigma[-1])
    torch.testing.assert_close(schedule.phi, schedule.psi)
    assert schedule.consistent and schedule.psi[-1].item() == pytest.approx(0.2)


def test_constant_target_and_constant_presets():
    abar = DDPMScheduler(**SD).alphas_cumprod.double()
    target = OffsetSchedule.preset("constant_target", strength=0.1, alphas_cumprod=abar)
    torch.testing.assert_close(target.psi, torch.full_like(abar, 0.1))
    assert target.consistent and target.phi[-1] > target.psi[-1]
    plain = OffsetSchedule.preset("constant", strength=0.1, alphas_cumprod=abar)
    assert not plain.consistent
    torch.testing.assert_close(plain.phi, torch.full_like(abar, 0.1))
    torch.testing.assert_close(plain.psi, torch.full_like(abar, 0.1))
    off = OffsetSchedule.preset("balanced", strength=0.0, alphas_cumprod=abar)
    assert torch.count_nonzero(off.phi) == 0 and torch.count_nonzero(off.psi) == 0


def test_noise_replays_eps_then_xi_and_is_batch_independent():
    abar = DDPMScheduler(**SD).alphas_cumprod
    schedule = OffsetSchedule.preset("constant_target", strength=0.3, alphas_cumprod=abar)
    x = torch.zeros(3, 2, 4, 4)
    t = torch.tensor([0, 500, 999])
    out = probabilistic_offset_noise(x, t, schedule, generator=[torch.Generator().manual_seed(i) for i in range(3)])
    g = torch.Generator().manual_seed(2)
    eps, xi = torch.randn(1, 2, 4, 4, generator=g), torch.randn(1, 2, 1, 1, generator=g)
    torch.testing.assert_close(out.input_noise[2:], eps + float(schedule.phi[999]) * xi)
    torch.testing.assert_close(out.target[2:], eps + 0.3 * xi)


def test_initial_latents_formula_and_channel_mean_variance():
    scheduler = DDIMScheduler(**SD)
    scheduler.set_timesteps(20)
    T = int(scheduler.timesteps[0])
    schedule = OffsetSchedule.preset("balanced", strength=0.5, alphas_cumprod=scheduler.alphas_cumprod)
    latents = initial_latents((20000, 1, 8, 8), scheduler, schedule, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    eps, xi = torch.randn(20000, 1, 8, 8, generator=g), torch.randn(20000, 1, 1, 1, generator=g)
    abar_T, phi_T = float(scheduler.alphas_cumprod[T]), float(schedule.phi[T])
    torch.testing.assert_close(latents, math.sqrt(1 - abar_T) * (eps + phi_T * xi))
    # Var of the channel mean: (1 − ᾱ_T)(1/64 + φ_T²)
    assert latents.mean(dim=(2, 3)).var().item() == pytest.approx((1 - abar_T) * (1 / 64 + phi_T**2), rel=0.03)


@pytest.mark.parametrize(
    "call,exc,name",
    [
        (lambda a: OffsetSchedule.preset("nope", strength=0.1, alphas_cumprod=a), ValueError, "preset"),
        (lambda a: OffsetSchedule.preset("balanced", strength=-0.1, alphas_cumprod=a), ValueError, "strength"),
        (lambda a: OffsetSchedule.from_gamma(torch.ones(3), a), ValueError, "gamma"),
        (
            lambda a: OffsetSchedule.preset(
                "balanced", strength=0.1, alphas_cumprod=DDPMScheduler(rescale_betas_zero_snr=True).alphas_cumprod
            ),
            ValueError,
            "terminal",
        ),
        (
            lambda a: initial_latents((2, 1, 8), DDPMScheduler(), OffsetSchedule.preset("constant", strength=0.1, alphas_cumprod=a)),
            ValueError,
            "shape",
        ),
        (
            lambda a: initial_latents((1, 1, 8, 8), object(), OffsetSchedule.preset("constant", strength=0.1, alphas_cumprod=a)),
            TypeError,
            "scheduler",
        ),
    ],
)
def test_bad_input_names_the_parameter(call, exc, name):
    with pytest.raises(exc, match=name):
        call(DDPMScheduler().alphas_cumprod)


def test_any_chain_ending_at_zero_snr_has_phi_equal_psi_at_the_last_step():
    # ᾱ_T = 0 ⇒ α_T = 0, β_T = 1, m_T = γ_T ⇒ φ_T = ψ_T = γ_T, so the v-target stays defined.
    abar = DDPMScheduler(rescale_betas_zero_snr=True, **SD).alphas_cumprod.double()
    gamma = 0.05 + torch.rand(1000, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    schedule = OffsetSchedule.from_gamma(gamma, abar)
    assert schedule.phi[-1].item() == pytest.approx(gamma[-1].item()) == pytest.approx(schedule.psi[-1].item())
