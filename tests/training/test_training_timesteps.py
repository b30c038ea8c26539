"""Timestep samplers against their analytic densities (χ², fixed seed), bounds, aliases, Min-SNR-γ."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import logit

from nlg.training import TimestepSampler, min_snr_weights, sample_timesteps

N, T, BINS = 100_000, 1000, 25


def draws(sampler: TimestepSampler, seed: int = 0, n: int = N):
    t, w = sampler(n, num_train_timesteps=T, generator=torch.Generator().manual_seed(seed))
    return t.numpy(), w.numpy()


def chi2_against_cdf(t, cdf, lo: int, hi: int) -> float:
    """χ² p-value of integer draws on [lo, hi] against a continuous CDF of u ∈ [0, 1],
    where t = lo + ⌊u·n⌋ (so t ∈ [a, b] ⇔ u ∈ [(a−lo)/n, (b+1−lo)/n))."""
    n = hi - lo + 1
    edges = np.linspace(lo, hi + 1, BINS + 1).round().astype(int)
    observed = np.histogram(t, bins=edges)[0]
    expected = np.diff(cdf((edges - lo) / n)) * len(t)
    return stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue


def chi2_against_pmf(t, pmf: np.ndarray) -> float:
    edges = np.linspace(0, T, BINS + 1).round().astype(int)
    observed = np.histogram(t, bins=edges)[0]
    expected = np.add.reduceat(pmf, edges[:-1]) * len(t)
    keep = expected > 0
    assert observed[~keep].sum() == 0
    return stats.chisquare(observed[keep], expected[keep]).pvalue


def shifted_inverse(u, s):
    """Inverse of u ↦ s·u / (1 + (s−1)·u)."""
    return u / (s - (s - 1) * u)


CASES = {
    "uniform": (TimestepSampler("uniform"), lambda u: u, 0, T - 1),
    "uniform bounded": (TimestepSampler("linear", min_timestep=200, max_timestep=799), lambda u: u, 200, 799),
    "logit_normal": (
        TimestepSampler("logit_normal", mean=0.3, std=0.8),
        lambda u: stats.norm.cdf((logit(np.clip(u, 1e-12, 1 - 1e-12)) - 0.3) / 0.8),
        0,
        T - 1,
    ),
    "sigmoid bounded": (
        TimestepSampler("sigmoid", mean=-0.5, std=1.2, min_timestep=100),
        lambda u: stats.norm.cdf((logit(np.clip(u, 1e-12, 1 - 1e-12)) + 0.5) / 1.2),
        100,
        T - 1,
    ),
    "shift 3": (TimestepSampler("shift"), lambda u: shifted_inverse(u, 3.0), 0, T - 1),
    "shift 0.5": (TimestepSampler("shift", shift=0.5, max_timestep=499), lambda u: shifted_inverse(u, 0.5), 0, 499),
    "logit_normal shifted": (
        TimestepSampler("logit_normal", shift=2.0),
        lambda u: stats.norm.cdf(logit(np.clip(shifted_inverse(u, 2.0), 1e-12, 1 - 1e-12))),
        0,
        T - 1,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_histogram_matches_analytic_density(case):
    sampler, cdf, lo, hi = CASES[case]
    t, w = draws(sampler)
    assert t.min() >= lo and t.max() <= hi
    assert np.all(w == 1.0)
    assert chi2_against_cdf(t, cdf, lo, hi) > 1e-3
    # and the test has power: the draws are far from uniform unless the density is uniform
    if case.startswith(("logit", "sigmoid", "shift")):
        assert chi2_against_cdf(t, lambda u: u, lo, hi) < 1e-6


def test_weighted_builtin_curve_density():
    t, w = draws(TimestepSampler("weighted"))
    u = (np.arange(T) + 0.5) / T
    pmf = 0.2 + stats.beta.pdf(u, 3, 2)  # the documented curve: 0.2 + 12 u²(1−u)
    assert chi2_against_pmf(t, pmf / pmf.sum()) > 1e-3
    assert np.all(w == 1.0)
    # medium-to-high noise is favoured, both ends taper
    hist = np.histogram(t, bins=[0, 100, 550, 850, 1000])[0] / N / np.array([100, 450, 300, 150])
    assert hist[2] > hist[1] > hist[0] and hist[2] > hist[3]


def test_weighted_table_with_bounds_is_truncated():
    table = torch.linspace(1.0, 3.0, T) ** 2
    t, _ = draws(TimestepSampler("weighted", weights=table, min_timestep=300, max_timestep=899))
    pmf = table.numpy().astype(np.float64)
    pmf[:300] = 0
    pmf[900:] = 0
    assert chi2_against_pmf(t, pmf / pmf.sum()) > 1e-3


def test_weighted_loss_mode_samples_uniformly_and_returns_normalised_weights():
    table = np.cos(np.linspace(0, 3, T)) + 1.5
    t, w = draws(TimestepSampler("weighted", weights=table.tolist(), weighting="loss", min_timestep=10, max_timestep=989))
    assert chi2_against_cdf(t, lambda u: u, 10, 989) > 1e-3
    np.testing.assert_allclose(w, table[t] / table[10:990].mean(), rtol=1e-5)


def test_aliases_draw_identically():
    for alias, name in (("linear", "uniform"), ("sigmoid", "logit_normal")):
        a, _ = draws(TimestepSampler(alias), seed=3, n=500)
        b, _ = draws(TimestepSampler(name), seed=3, n=500)
        np.testing.assert_array_equal(a, b)


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(["uniform", "logit_normal", "shift", "weighted"]),
    lo=st.integers(0, 999),
    width=st.integers(0, 999),
    seed=st.integers(0, 1000),
)
def test_bounds_hold_for_every_sampler(name, lo, width, seed):
    hi = min(999, lo + width)
    t, _ = sample_timesteps(300, TimestepSampler(name, min_timestep=lo, max_timestep=hi), generator=torch.Generator().manual_seed(seed))
    assert t.dtype == torch.long and int(t.min()) >= lo and int(t.max()) <= hi


def test_per_sample_generators_make_draws_batch_independent():
    sampler = TimestepSampler("logit_normal")
    batch, _ = sampler(4, generator=[torch.Generator().manual_seed(i) for i in range(4)])
    alone, _ = sampler(1, generator=[torch.Generator().manual_seed(2)])
    assert batch[2] == alone[0]


def test_min_snr_weights_match_the_paper_formulas():
    gamma = 5.0
    # SD's scaled_linear schedule computed here from its definition, not read from the scheduler
    betas = np.linspace(0.00085**0.5, 0.012**0.5, T) ** 2
    abar = np.cumprod(1 - betas)
    snr = abar / (1 - abar)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    t = torch.arange(T)
    np.testing.assert_allclose(min_snr_weights(t, scheduler, gamma=gamma).numpy(), np.minimum(snr, gamma) / snr, rtol=2e-4)
    np.testing.assert_allclose(
        min_snr_weights(t, scheduler, gamma=gamma, prediction_type="v_prediction").numpy(), np.minimum(snr, gamma) / (snr + 1), rtol=2e-4
    )
    np.testing.assert_allclose(
        min_snr_weights(t, scheduler, gamma=gamma, prediction_type="sample").numpy(), np.minimum(snr, gamma), rtol=2e-4
    )


def test_min_snr_weights_stay_finite_at_zero_terminal_snr():
    scheduler = DDPMScheduler(rescale_betas_zero_snr=True)
    eps = min_snr_weights(torch.tensor([0, 999]), scheduler)
    v = min_snr_weights(torch.tensor([0, 999]), scheduler, prediction_type="v_prediction")
    assert torch.isfinite(eps).all() and eps[1] == 1.0 and v[1] == 0.0


@pytest.mark.parametrize(
    "make,exc,name",
    [
        (lambda: TimestepSampler("cosmap"), ValueError, "name"),
        (lambda: TimestepSampler("uniform", min_timestep=600, max_timestep=500), ValueError, "min_timestep"),
        (lambda: TimestepSampler("uniform", max_timestep=1000)(4, num_train_timesteps=1000), ValueError, "max_timestep"),
        (lambda: TimestepSampler("uniform", min_timestep=-1), ValueError, "min_timestep"),
        (lambda: TimestepSampler("logit_normal", std=-1.0), ValueError, "std"),
        (lambda: TimestepSampler("shift", shift=0.0), ValueError, "shift"),
        (lambda: TimestepSampler("weighted", weights=[-1.0] * 1000)(4), ValueError, "weights"),
        (lambda: TimestepSampler("weighted", weighting="both"), ValueError, "weighting"),
        (lambda: sample_timesteps(4, "lognorm"), ValueError, "name"),
        (lambda: min_snr_weights(torch.tensor([1]), DDPMScheduler(), gamma=-1.0), ValueError, "gamma"),
    ],
)
def test_bad_input_names_the_parameter(make, exc, name):
    with pytest.raises(exc, match=name):
        make()
