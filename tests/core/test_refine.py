"""refine_noise against an independent float64 loop, plus property tests of its invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nlg import refine_noise


def reference_refine(n0, direction, k, eta, tau, lam, normalize, boundary, noise_draws):
    """The paper's Algorithm 1 written out per sample in float64 numpy, one line per step."""
    n = np.array(n0, dtype=np.float64)
    norms = np.zeros((k, n.shape[0]))
    for step in range(k):
        d = direction(n)
        for b in range(n.shape[0]):
            norm = math.sqrt(float((d[b] ** 2).sum()))
            norms[step, b] = norm
            if tau is not None and norm > tau:
                d[b] = d[b] * tau / norm
        n = n - eta * d
        if lam > 0:
            n = n + math.sqrt(lam) * noise_draws[step]
        if boundary:
            n = np.clip(n, -3.0, 3.0)
        if normalize:
            for b in range(n.shape[0]):
                n[b] = n[b] * math.sqrt(n[b].size) / math.sqrt(float((n[b] ** 2).sum()))
    return n, norms


def quadratic_direction(target):
    """d(n) = 0.7·(n − target): a smooth, state-dependent direction."""
    return lambda n: 0.7 * (n - target)


@pytest.mark.parametrize("tau", [None, 0.5, 50.0])
@pytest.mark.parametrize("normalize,boundary", [(True, False), (False, True), (True, True)])
def test_matches_independent_loop(tau, normalize, boundary):
    gen = torch.Generator().manual_seed(3)
    n0 = torch.randn(3, 2, 5, 5, generator=gen, dtype=torch.float64) * 1.7
    target = torch.randn(3, 2, 5, 5, generator=gen, dtype=torch.float64)
    k, eta, lam = 6, 0.8, 0.01
    # The refinement noise drawn from a generator with seed 11: replay the same draws for the reference.
    replay = torch.Generator().manual_seed(11)
    draws = [torch.randn(n0.shape, generator=replay, dtype=torch.float64).numpy() for _ in range(k)]

    out = refine_noise(
        n0, quadratic_direction(target), refining_steps=k, step_size=eta, clip_threshold=tau, noise_level=lam,
        normalize_latents=normalize, boundary_control=boundary, generator=torch.Generator().manual_seed(11),
    )
    tn = target.numpy()
    ref_n, ref_norms = reference_refine(
        n0.numpy(), lambda n: 0.7 * (n - tn), k, eta, tau, lam, normalize, boundary, draws
    )
    np.testing.assert_allclose(out.latents.numpy(), ref_n, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.step_norms.numpy(), ref_norms, rtol=1e-6)
    assert out.step_norms.shape == (k, 3)


def test_zero_steps_is_identity_and_records_nothing():
    n0 = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    calls = []
    out = refine_noise(n0, lambda n: calls.append(1) or n, refining_steps=0)
    assert torch.equal(out.latents, n0) and out.step_norms.shape == (0, 2) and not calls


def test_generator_list_makes_samples_batch_independent():
    """Sample i's result depends only on its own latent and generator, not on its batch mates."""
    gen = torch.Generator().manual_seed(5)
    n0 = torch.randn(3, 1, 4, 4, generator=gen)
    direction = lambda n: torch.sin(n)  # elementwise: no coupling across the batch
    kw = dict(refining_steps=4, noise_level=0.05)
    full = refine_noise(n0, direction, generator=[torch.Generator().manual_seed(s) for s in (7, 8, 9)], **kw)
    alone = refine_noise(n0[1:2], direction, generator=[torch.Generator().manual_seed(8)], **kw)
    torch.testing.assert_close(full.latents[1:2], alone.latents, rtol=0, atol=1e-6)


def test_same_seed_same_result_different_seed_different_result():
    n0 = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    run = lambda seed: refine_noise(n0, torch.cos, refining_steps=3, generator=torch.Generator().manual_seed(seed)).latents
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_half_precision_latents_do_not_overflow_the_norm():
    """‖n‖² = D = 65536 overflows float16 (max 65504); refinement must still land on the √D sphere."""
    n0 = torch.randn(2, 4, 128, 128, generator=torch.Generator().manual_seed(0)).half()
    out = refine_noise(n0, lambda n: torch.zeros_like(n), refining_steps=1, noise_level=0.0)
    assert out.latents.dtype == torch.float16
    norms = out.latents.float().flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((2,), 256.0), rtol=1e-3, atol=0)


def test_output_is_a_normal_tensor_without_autograd_graph():
    n0 = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = refine_noise(n0, lambda n: n * 2, refining_steps=2)
    assert not out.latents.requires_grad and out.latents.grad_fn is None
    out.latents.add_(1.0)  # an inference tensor would refuse an in-place update here


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(refining_steps=-1), "refining_steps"),
        (dict(refining_steps=2.0), "refining_steps"),
        (dict(step_size=0.0), "step_size"),
        (dict(step_size=-1.0), "step_size"),
        (dict(clip_threshold=0.0), "clip_threshold"),
        (dict(clip_threshold=-0.5), "clip_threshold"),
        (dict(noise_level=-1e-3), "noise_level"),
        (dict(step_size=float("nan")), "step_size"),
    ],
)
def test_bad_options_name_the_parameter(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        refine_noise(torch.zeros(1, 1, 2, 2), torch.sin, **kwargs)


def test_bad_direction_and_generators():
    n0 = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="shape"):
        refine_noise(n0, lambda n: n[:1])
    with pytest.raises(ValueError, match="generator"):
        refine_noise(n0, torch.sin, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="latents"):
        refine_noise(torch.zeros(4), torch.sin)


def test_non_finite_direction_names_the_step():
    calls = {"n": 0}

    def direction(n):
        calls["n"] += 1
        return torch.full_like(n, float("nan")) if calls["n"] == 3 else torch.sin(n)

    with pytest.raises(ValueError, match="step 3 of 5"):
        refine_noise(torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(0)), direction, refining_steps=5)


# ---- property tests ---------------------------------------------------------------------------------

shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), steps=st.integers(1, 4), scale=st.floats(0.01, 100.0))
def test_normalisation_puts_every_sample_on_the_sqrt_d_sphere(shape, seed, steps, scale):
    gen = torch.Generator().manual_seed(seed)
    n0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    out = refine_noise(n0, lambda n: scale * torch.tanh(n), refining_steps=steps, clip_threshold=None,
                       generator=gen, normalize_latents=True)
    d = math.prod(shape[1:])
    np.testing.assert_allclose(out.latents.flatten(1).norm(dim=1).numpy(), math.sqrt(d), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16), tau=st.floats(0.01, 10.0), eta=st.floats(0.01, 5.0),
       scale=st.one_of(st.just(0.0), st.floats(1e-3, 100.0)))
def test_clipped_step_moves_exactly_eta_times_min_norm_tau(shape, seed, tau, eta, scale):
    """Without noise and normalisation, ‖n₁ − n₀‖ = η·min(‖d‖, τ), and the step is parallel to −d."""
    gen = torch.Generator().manual_seed(seed)
    n0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    d = scale * torch.randn(shape, generator=gen, dtype=torch.float64)
    out = refine_noise(n0, lambda n: d, refining_steps=1, step_size=eta, clip_threshold=tau, noise_level=0.0,
                       normalize_latents=False)
    moved = (n0 - out.latents).flatten(1)
    dn = d.flatten(1).norm(dim=1)
    np.testing.assert_allclose(moved.norm(dim=1).numpy(), (eta * torch.minimum(dn, torch.tensor(tau, dtype=torch.float64))).numpy(),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.step_norms[0].numpy(), dn.numpy(), rtol=1e-6)
    cos = (moved * d.flatten(1)).sum(1) / (moved.norm(dim=1) * dn).clamp_min(1e-300)
    assert bool(((cos > 1 - 1e-9) | (dn == 0)).all())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), eta=st.floats(0.01, 5.0), k=st.integers(1, 5))
def test_unclipped_steps_are_linear_in_step_size(seed, eta, k):
    """With a constant direction, no clip, no noise and no normalisation: n_K = n₀ − K·η·d."""
    gen = torch.Generator().manual_seed(seed)
    n0 = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    d = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    out = refine_noise(n0, lambda n: d, refining_steps=k, step_size=eta, clip_threshold=None, noise_level=0.0,
                       normalize_latents=False)
    torch.testing.assert_close(out.latents, n0 - k * eta * d, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.1, 100.0))
def test_boundary_control_keeps_entries_within_three(seed, scale):
    gen = torch.Generator().manual_seed(seed)
    n0 = scale * torch.randn(2, 1, 5, 5, generator=gen, dtype=torch.float64)
    out = refine_noise(n0, lambda n: -n, refining_steps=2, clip_threshold=None, boundary_control=True,
                       normalize_latents=False, noise_level=0.0)
    assert float(out.latents.abs().max()) <= 3.0


# ---- adaptive stopping ------------------------------------------------------------------------------

def test_adaptive_stopping_drops_settled_samples_from_later_calls():
    """Sample 0's direction is constant (settles at once); sample 1's norm keeps growing 50% a step."""
    n0 = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []

    def direction(n, index=None):
        idx = torch.arange(2) if index is None else index
        seen.append(idx.tolist())
        calls = len(seen)
        scale = torch.tensor([1.0, 1.5**calls], dtype=n.dtype)[idx].view(-1, 1, 1, 1)
        return scale * torch.ones_like(n)

    out = refine_noise(n0, direction, refining_steps=8, clip_threshold=None, noise_level=0.0,
                       normalize_latents=False, stop_tolerance=1e-3, stop_window=2)
    # Norm changes of sample 0 are 0 from step 2 on: after steps 1, 2, 3 the window of 2 changes is full.
    assert seen[:3] == [[0, 1]] * 3 and seen[3:] == [[1]] * 5
    assert out.evaluations.tolist() == [3, 8]
    assert torch.isnan(out.step_norms[3:, 0]).all() and torch.isfinite(out.step_norms[:, 1]).all()
    # A stopped sample keeps its last value: three unit steps against d = 1.
    torch.testing.assert_close(out.latents[0], n0[0] - 3.0)
    torch.testing.assert_close(out.latents[1], n0[1] - sum(1.5**k for k in range(1, 9)))


def test_adaptive_stopping_passes_subsets_to_plain_callables_and_keeps_generators_per_sample():
    n0 = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    sizes = []

    def direction(n):
        sizes.append(n.shape[0])
        return torch.zeros_like(n)  # ‖d‖ = 0 → "no change" from the second step on

    out = refine_noise(n0, direction, refining_steps=5, stop_tolerance=0.1, stop_window=1,
                       generator=[torch.Generator().manual_seed(s) for s in range(3)])
    assert sizes == [3, 3] and out.evaluations.tolist() == [2, 2, 2]


@pytest.mark.parametrize("kwargs,match", [(dict(stop_tolerance=0.0), "stop_tolerance"),
                                          (dict(stop_tolerance=-1.0), "stop_tolerance"),
                                          (dict(stop_tolerance=0.1, stop_window=0), "stop_window")])
def test_bad_stopping_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        refine_noise(torch.zeros(1, 1, 2, 2), torch.sin, **kwargs)
