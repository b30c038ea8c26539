"""Offset noise and pyramid noise: replayed recipes, variance laws, batch independence, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nlg.training import offset_noise, pyramid_noise


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spatial_mean_var(noise: torch.Tensor) -> float:
    return noise.mean(dim=(2, 3)).var().item()


# ---------------------------------------------------------------- offset noise


def test_offset_default_is_plain_gaussian_noise():
    x = torch.zeros(3, 4, 5, 6)
    assert torch.equal(offset_noise(x, generator=gen(1)), torch.randn(3, 4, 5, 6, generator=gen(1)))


def test_offset_replays_the_formula():
    x = torch.zeros(3, 4, 5, 6)
    g = gen(2)
    eps = torch.randn(3, 4, 5, 6, generator=g)
    delta = torch.randn(3, 4, 1, 1, generator=g)
    torch.testing.assert_close(offset_noise(x, strength=0.3, generator=gen(2)), eps + 0.3 * delta)


def test_offset_variance_of_the_channel_mean():
    # Var(mean over H·W pixels) = 1/(H·W) + s² (fixed s) or 1/(H·W) + s²/3 (s·U(0,1)).
    x = torch.zeros(40000, 1, 8, 8)
    s = 0.5
    fixed = spatial_mean_var(offset_noise(x, strength=s, generator=gen(3)))
    assert fixed == pytest.approx(1 / 64 + s**2, rel=0.03)
    rand = spatial_mean_var(offset_noise(x, strength=s, random_strength=True, generator=gen(4)))
    assert rand == pytest.approx(1 / 64 + s**2 / 3, rel=0.03)


@settings(max_examples=25, deadline=None)
@given(
    strength=st.floats(0.0, 5.0),
    b=st.integers(1, 3),
    c=st.integers(1, 4),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_offset_is_spatially_constant(strength, b, c, h, w, seed):
    x = torch.zeros(b, c, h, w, dtype=torch.float64)
    eps = torch.randn(b, c, h, w, generator=gen(seed), dtype=torch.float64)
    extra = offset_noise(x, strength=strength, generator=gen(seed)) - eps
    torch.testing.assert_close(extra, extra[:, :, :1, :1].expand_as(extra))


def test_offset_sample_does_not_depend_on_batch():
    x = torch.zeros(4, 2, 5, 5)
    batch = offset_noise(x, strength=0.2, random_strength=True, generator=[gen(10 + i) for i in range(4)])
    alone = offset_noise(x[:1], strength=0.2, random_strength=True, generator=[gen(12)])
    torch.testing.assert_close(batch[2:3], alone)


# ---------------------------------------------------------------- pyramid noise


def test_pyramid_zero_iterations_is_plain_noise():
    x = torch.zeros(2, 3, 16, 16)
    assert torch.equal(pyramid_noise(x, iterations=0, generator=gen(5)), torch.randn(2, 3, 16, 16, generator=gen(5)))


@pytest.mark.parametrize("height,width,iterations", [(64, 48, 10), (16, 16, 2), (8, 8, 6)])
def test_pyramid_replays_whitakers_recipe(height, width, iterations):
    x = torch.zeros(2, 3, height, width, dtype=torch.float64)
    g = gen(6)
    noise = torch.randn(2, 3, height, width, generator=g, dtype=torch.float64)
    for i in range(1, iterations + 1):
        r = 2 + 2 * torch.rand(1, generator=g, dtype=torch.float64).item()
        h, w = max(1, int(height / r**i)), max(1, int(width / r**i))
        up = F.interpolate(torch.randn(2, 3, h, w, generator=g, dtype=torch.float64), size=(height, width), mode="bilinear")
        noise = noise + 0.5**i * up
        if h == 1 or w == 1:
            break
    expected = torch.stack([n / n.std() for n in noise])
    torch.testing.assert_close(pyramid_noise(x, iterations=iterations, discount=0.5, generator=gen(6)), expected)


def test_pyramid_has_unit_std_and_more_low_frequency_power():
    x = torch.zeros(2000, 1, 16, 16)
    plain = torch.randn(2000, 1, 16, 16, generator=gen(7))
    pyr = pyramid_noise(x, iterations=6, discount=0.6, generator=gen(7))
    torch.testing.assert_close(pyr.std(dim=(1, 2, 3)), torch.ones(2000), rtol=1e-5, atol=1e-5)
    assert spatial_mean_var(plain) == pytest.approx(1 / 256, rel=0.1)
    assert spatial_mean_var(pyr) > 10 * spatial_mean_var(plain)
    neighbour = lambda n: torch.corrcoef(torch.stack([n[..., :-1].flatten(), n[..., 1:].flatten()]))[0, 1].item()  # noqa: E731
    assert abs(neighbour(plain)) < 0.02 and neighbour(pyr) > 0.15
    weaker = pyramid_noise(x, iterations=6, discount=0.2, generator=gen(7))
    assert neighbour(weaker) < neighbour(pyr)


def test_pyramid_sample_does_not_depend_on_batch():
    x = torch.zeros(3, 2, 16, 16)
    batch = pyramid_noise(x, generator=[gen(20), gen(21), gen(22)])
    alone = pyramid_noise(x[:1], generator=gen(21))
    torch.testing.assert_close(batch[1:2], alone)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,exc,name",
    [
        (lambda: offset_noise(torch.zeros(1, 1, 4, 4), strength=-0.1), ValueError, "strength"),
        (lambda: offset_noise(torch.zeros(1, 4, 4), strength=0.1), ValueError, "latents"),
        (lambda: pyramid_noise(torch.zeros(1, 1, 4, 4), discount=-0.5), ValueError, "discount"),
        (lambda: pyramid_noise(torch.zeros(1, 1, 4, 4), iterations=-1), ValueError, "iterations"),
        (lambda: pyramid_noise(torch.zeros(1, 1, 1, 4, 4)), ValueError, "latents"),
        (lambda: offset_noise(torch.zeros(2, 1, 4, 4), generator=[gen(0)]), ValueError, "generator"),
        (lambda: offset_noise(torch.zeros(1, 1, 4, 4), strength=math.nan), ValueError, "strength"),
    ],
)
def test_bad_input_names_the_parameter(call, exc, name):
    with pytest.raises(exc, match=name):
        call()
