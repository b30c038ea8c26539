"""Adaptive stopping on the ``radial`` signal: ``refine_noise`` against a straightforward per-sample loop.

The reference below re-implements the documented rule one sample at a time in plain Python (no
batching, no index bookkeeping): evaluate d, compute ρ = −⟨d, n⟩ / (‖d‖ ‖n‖) at the latent d was
evaluated on, count consecutive evaluations with ρ ≥ tolerance; once the count reaches the window,
stop and keep n (the step is not taken); otherwise take the clipped, noised, normalised step.
"""

import math

import pytest
import torch

from nlg import NoiseLevelGuidance, refine_noise
from nlg.digits import DigitsPipeline, per_sample_generators

SHAPE = (1, 4, 4)


def synthetic_field(seed: int = 0):
    """A smooth, sample-dependent direction: d(n) = A n + b_c, with its own (A, b_c) per sample row."""
    g = torch.Generator().manual_seed(seed)
    dim = math.prod(SHAPE)
    A = 0.05 * torch.randn(dim, dim, generator=g)
    bias = 0.3 * torch.randn(6, dim, generator=g)  # one "condition" per sample

    def direction(n: torch.Tensor, index=None) -> torch.Tensor:
        rows = bias if index is None else bias[index]
        flat = n.flatten(1) @ A.T + rows
        return flat.view_as(n)

    def single(n: torch.Tensor, i: int) -> torch.Tensor:
        return (A @ n.flatten() + bias[i]).view(SHAPE)

    return direction, single


def reference_run(n0, single, i, *, steps, eta, tau, lam, tol, window, gen):
    """One sample, the documented rule written out directly."""
    n = n0.clone()
    streak = 0
    evals = 0
    for _ in range(steps):
        d = single(n, i)
        evals += 1
        rho = -float((d * n).sum()) / (float(d.norm()) * float(n.norm()))
        streak = streak + 1 if rho >= tol else 0
        if streak >= window:
            break
        norm = float(d.norm())
        if tau is not None and norm > tau:
            d = d * (tau / norm)
        n = n - eta * d
        if lam > 0:
            n = n + math.sqrt(lam) * torch.randn(n.shape, generator=gen)
        n = n * (math.sqrt(n.numel()) / float(n.norm()))
    return n, evals


@pytest.mark.parametrize("window,tol", [(1, 0.3), (2, 0.3), (3, 0.45)])
def test_radial_stop_matches_a_per_sample_loop(window, tol):
    direction, single = synthetic_field()
    n0 = torch.randn((6, *SHAPE), generator=torch.Generator().manual_seed(1))
    options = dict(steps=25, eta=1.5, tau=0.8, lam=0.002)
    out = refine_noise(
        n0, direction, refining_steps=options["steps"], step_size=options["eta"], clip_threshold=options["tau"],
        noise_level=options["lam"], generator=[torch.Generator().manual_seed(10 + i) for i in range(6)],
        stop_tolerance=tol, stop_window=window, stop_signal="radial",
    )
    expected_evals = []
    for i in range(6):
        ref_n, ref_evals = reference_run(n0[i], single, i, tol=tol, window=window,
                                         gen=torch.Generator().manual_seed(10 + i), **options)
        expected_evals.append(ref_evals)
        torch.testing.assert_close(out.latents[i], ref_n, rtol=1e-5, atol=1e-5)
    assert out.evaluations.tolist() == expected_evals
    assert len(set(expected_evals)) > 1, "the field must make samples stop at different steps"


def test_radial_without_tolerance_changes_nothing():
    direction, _ = synthetic_field(3)
    n0 = torch.randn((6, *SHAPE), generator=torch.Generator().manual_seed(2))
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(6)]  # noqa: E731
    plain = refine_noise(n0, direction, refining_steps=7, generator=gens())
    radial = refine_noise(n0, direction, refining_steps=7, generator=gens(), stop_signal="radial")
    torch.testing.assert_close(plain.latents, radial.latents, rtol=0, atol=0)
    assert radial.evaluations.tolist() == [7] * 6


def test_radial_share_is_the_cosine_between_step_and_latent():
    """With d = −c·n the step points straight out (ρ = 1): every sample stops after `window` evaluations,
    having taken `window − 1` steps, which the projection undoes (n is unchanged)."""
    n0 = torch.randn((3, *SHAPE), generator=torch.Generator().manual_seed(4))
    n0 = n0 * (4.0 / n0.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)  # on the sphere ‖n‖ = √16
    out = refine_noise(n0, lambda n: -0.1 * n, refining_steps=10, noise_level=0.0,
                       stop_tolerance=0.99, stop_window=2, stop_signal="radial")
    assert out.evaluations.tolist() == [2, 2, 2]
    torch.testing.assert_close(out.latents, n0, rtol=1e-5, atol=1e-5)
    # And d ⟂ n (ρ = 0) never stops.
    def tangent(n):
        t = torch.roll(n, 1, dims=-1)
        t = t - (t.flatten(1) * n.flatten(1)).sum(1).view(-1, 1, 1, 1) / n.flatten(1).pow(2).sum(1).view(-1, 1, 1, 1) * n
        return t
    out = refine_noise(n0, tangent, refining_steps=6, noise_level=0.0, stop_tolerance=0.01, stop_window=1, stop_signal="radial")
    assert out.evaluations.tolist() == [6, 6, 6]


@pytest.mark.parametrize("kwargs,match", [
    (dict(stop_signal="cosine", stop_tolerance=0.1), "stop_signal"),
    (dict(stop_signal="radial", stop_tolerance=1.0), "stop_tolerance"),
    (dict(stop_signal="radial", stop_tolerance=-1.0), "stop_tolerance"),
])
def test_bad_stop_options_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        refine_noise(torch.zeros(1, *SHAPE) + 1, lambda n: n, refining_steps=2, **kwargs)
    with pytest.raises(ValueError, match=match):
        NoiseLevelGuidance(**kwargs)


def test_samples_above_the_gate_at_the_first_evaluation_are_left_untouched():
    """A threshold between the samples' first ρ values: those above stop at once with their input noise."""
    direction, _ = synthetic_field(5)
    n0 = torch.randn((6, *SHAPE), generator=torch.Generator().manual_seed(6))
    d0 = direction(n0)
    rho0 = -(d0.flatten(1) * n0.flatten(1)).sum(1) / (d0.flatten(1).norm(dim=1) * n0.flatten(1).norm(dim=1))
    gate = float(rho0.median())
    out = refine_noise(n0, direction, refining_steps=5, stop_tolerance=gate, stop_window=1, stop_signal="radial",
                       generator=[torch.Generator().manual_seed(i) for i in range(6)])
    above = rho0 >= gate
    assert 0 < int(above.sum()) < 6
    torch.testing.assert_close(out.latents[above], n0[above], rtol=0, atol=0)
    assert out.evaluations[above].tolist() == [1] * int(above.sum())
    assert (out.latents[~above] - n0[~above]).flatten(1).norm(dim=1).min() > 1e-3


def test_digits_radial_stop_matches_per_image_loop_through_the_pipeline():
    """NoiseLevelGuidance(stop_signal='radial') on the digits model: each image's step count equals a
    one-image loop over the same adapter direction, and its latents equal a fixed-K run of that length."""
    pipe = DigitsPipeline.from_pretrained()
    labels = [0, 2, 5, 8, 3, 6]
    nlg = NoiseLevelGuidance(refining_steps=12, step_size=2.0, stop_tolerance=0.3, stop_window=1, stop_signal="radial")
    out = nlg.refine(pipe, labels, generator=per_sample_generators(7, len(labels)))
    adapter = pipe.nlg_adapter()
    for i, label in enumerate(labels):
        _, cond = adapter.encode([label])
        single = adapter.direction_fn(cond, gamma=None, reference_timestep=None)
        gen = per_sample_generators(7, len(labels))[i]
        n0 = pipe.prepare_latents(1, [gen])[0]
        ref_n, ref_evals = reference_run(n0, lambda n, _i: single(n[None])[0], i, steps=12, eta=2.0, tau=0.5,
                                         lam=0.001, tol=0.3, window=1, gen=gen)
        assert int(out.evaluations[i]) == ref_evals
        torch.testing.assert_close(out.latents[i], ref_n, rtol=1e-4, atol=1e-4)
    assert len(set(out.evaluations.tolist())) > 1, "the labels/seeds must stop at different steps"
