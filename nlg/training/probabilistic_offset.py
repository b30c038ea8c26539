r"""Probabilistic (time-dependent) offset noise (Kutsuna, arXiv 2412.03134, https://arxiv.org/abs/2412.03134).

Forward chain.  One offset ξ ~ N(0, I) of shape (B, C, 1, 1) is drawn per sample and shared by all
steps; each step adds γ_t ξ on top of the usual DDPM step (paper indexing t = 1 … T; diffusers'
timestep k is t = k + 1, and tables here are indexed by k):

    q(x_t | x_{t−1}, ξ) = N(√α_t x_{t−1} + γ_t ξ, β_t I)

Closed-form marginal.  Unrolling, with ᾱ_t = ∏_{i≤t} α_i,

    x_t = √ᾱ_t x₀ + m_t ξ + √(1−ᾱ_t) ε,     m_t = Σ_{i≤t} √(ᾱ_t/ᾱ_i) γ_i = √α_t m_{t−1} + γ_t,
        = √ᾱ_t x₀ + √(1−ᾱ_t) (ε + φ_t ξ),   φ_t = m_t / √(1−ᾱ_t).

Posterior mean.  Given ξ, y_t = x_t − m_t ξ is a plain DDPM chain started at x₀ (because
m_t = √α_t m_{t−1} + γ_t), so q(x_{t−1} | x_t, x₀, ξ) has the DDPM posterior mean of y shifted by
m_{t−1} ξ.  Substituting m_{t−1} = (m_t − γ_t)/√α_t::

    μ_t = (1/√α_t) [x_t − β_t/√(1−ᾱ_t) · (ε + ψ_t ξ)],   ψ_t = √(1−ᾱ_t) γ_t / β_t.

So the model is fed x_t built with φ_t and regresses the target ε + ψ_t ξ; an unchanged DDPM
sampler then takes exactly the right mean step.  Sampling starts from the chain's own end,
x_T = √(1−ᾱ_T)(ε + φ_T ξ) with a fresh ξ (:func:`initial_latents`).  Plain offset noise is the
special case φ_t = ψ_t = s for every t, which no γ schedule produces: it is inconsistent.

Presets (:meth:`OffsetSchedule.preset`):

- ``"constant"``: φ_t = ψ_t = strength — plain offset noise (Guttenberg), inconsistent, no γ.
- ``"balanced"``: γ_t = c β_t / √ᾱ_t.  Then m_t = c (1−ᾱ_t)/√ᾱ_t (check: √α_t m_{t−1} + γ_t =
  c/√ᾱ_t [α_t(1−ᾱ_{t−1}) + β_t] = c(1−ᾱ_t)/√ᾱ_t), hence φ_t = ψ_t = c σ_t with
  σ_t = √((1−ᾱ_t)/ᾱ_t): input and target carry the same offset at every t, as plain offset noise
  does, but that offset grows with the noise level and the chain is consistent.  c is set so that
  ψ_T = strength; needs ᾱ_T > 0 (not with zero terminal SNR).
- ``"constant_target"``: γ_t = c β_t / √(1−ᾱ_t), so ψ_t = strength for every t (the target of
  plain offset noise) while φ_t follows from the chain.

Any other family: :meth:`OffsetSchedule.from_gamma`.
"""

from __future__ import annotations

import operator

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from ..utils.types import GeneratorLike
from ._checks import alphas_cumprod_of, check_generator, check_latents, check_number, draw

__all__ = ["OffsetSchedule", "OffsetNoise", "PRESETS", "probabilistic_offset_noise", "posterior_mean", "initial_latents"]

#: The named γ families of :meth:`OffsetSchedule.preset`.
PRESETS = ("constant", "balanced", "constant_target")


def _step_betas(alphas_cumprod: Tensor) -> Tensor:
    """β_t = 1 − ᾱ_t/ᾱ_{t−1}, with ᾱ_0 = 1 before the first step."""
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return 1.0 - alphas_cumprod / previous


def _as_table(values: Union[Tensor, Sequence[float]], name: str) -> Tensor:
    table = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if table.ndim != 1 or not torch.isfinite(table).all():
        raise ValueError(f"{name} must be a finite 1-D table, one value per training timestep")
    return table


@dataclass(frozen=True)
class OffsetSchedule:
    r"""The coefficients φ_t (input) and ψ_t (target) of probabilistic offset noise, per timestep.

    Args:
        phi (`torch.Tensor`):
            φ_t, shape (T,), float64: the noisy input is √ᾱ_t x₀ + √(1−ᾱ_t)(ε + φ_t ξ).
        psi (`torch.Tensor`):
            ψ_t, shape (T,), float64: the ε-space regression target is ε + ψ_t ξ.
        gamma (`torch.Tensor`, *optional*):
            The per-step offsets γ_t that produced φ and ψ; `None` for the inconsistent ``"constant"``
            preset.
        name (`str`, defaults to ``"custom"``):
            The preset's name, for logs.
    """

    phi: Tensor
    psi: Tensor
    gamma: Optional[Tensor] = None
    name: str = "custom"

    @property
    def consistent(self) -> bool:
        """Whether φ and ψ come from one forward chain (a γ schedule)."""
        return self.gamma is not None

    @property
    def num_train_timesteps(self) -> int:
        return int(self.phi.shape[0])

    @classmethod
    def from_gamma(cls, gamma: Union[Tensor, Sequence[float]], alphas_cumprod: Tensor, *, name: str = "custom") -> "OffsetSchedule":
        r"""φ and ψ from any per-step offset schedule γ_t.

        Args:
            gamma (`torch.Tensor` or sequence of `float`):
                γ_t for diffusers timesteps k = 0 … T−1.
            alphas_cumprod (`torch.Tensor`):
                The scheduler's ᾱ table, same length.

        Returns:
            `OffsetSchedule`: m_t = √α_t m_{t−1} + γ_t, φ_t = m_t/√(1−ᾱ_t), ψ_t = √(1−ᾱ_t) γ_t/β_t.
        """
        gamma = _as_table(gamma, "gamma")
        abar = _as_table(alphas_cumprod, "alphas_cumprod")
        if gamma.shape != abar.shape:
            raise ValueError(f"gamma has {gamma.shape[0]} entries but alphas_cumprod has {abar.shape[0]}")
        betas = _step_betas(abar)
        if not (betas > 0).all():
            raise ValueError("alphas_cumprod must be strictly decreasing (every β_t > 0)")
        m = torch.empty_like(gamma)
        previous = 0.0
        for k in range(gamma.shape[0]):
            previous = torch.sqrt(1.0 - betas[k]) * previous + gamma[k]
            m[k] = previous
        sigma_noise = torch.sqrt(1.0 - abar)
        return cls(phi=m / sigma_noise, psi=sigma_noise * gamma / betas, gamma=gamma, name=name)

    @classmethod
    def preset(cls, name: str, *, strength: float, alphas_cumprod: Tensor) -> "OffsetSchedule":
        r"""A named family, scaled so that ψ at the last timestep equals ``strength``.

        Args:
            name (`str`):
                One of ``"constant"``, ``"balanced"``, ``"constant_target"`` (see the module docstring).
            strength (`float`):
                ψ_T ≥ 0; 0 gives plain diffusion (φ = ψ = 0).
            alphas_cumprod (`torch.Tensor`):
                The scheduler's ᾱ table.
        """
        strength = check_number(strength, "strength")
        abar = _as_table(alphas_cumprod, "alphas_cumprod")
        if name == "constant":
            table = torch.full_like(abar, strength)
            return cls(phi=table, psi=table.clone(), gamma=None, name=name)
        betas = _step_betas(abar)
        if name == "balanced":
            if not abar[-1] > 0:
                raise ValueError("the 'balanced' preset needs a nonzero terminal ᾱ_T (it scales with √((1−ᾱ_t)/ᾱ_t)); got ᾱ_T = 0")
            c = strength / torch.sqrt((1.0 - abar[-1]) / abar[-1])
            return cls.from_gamma(c * betas / torch.sqrt(abar), abar, name=name)
        if name == "constant_target":
            return cls.from_gamma(strength * betas / torch.sqrt(1.0 - abar), abar, name=name)
        raise ValueError(f"unknown offset schedule preset {name!r}; expected one of {list(PRESETS)}")

    def coefficients(self, timesteps: Tensor, *, device: Any = None, dtype: torch.dtype = torch.float32) -> tuple:
        """(φ_t, ψ_t) for a batch of timesteps, each shaped (B, 1, 1, 1)."""
        index = timesteps.detach().to("cpu", torch.long).reshape(-1)
        if index.numel() and (index.min() < 0 or index.max() >= self.num_train_timesteps):
            raise ValueError(f"timesteps must lie in [0, {self.num_train_timesteps - 1}]")
        shape = (-1, 1, 1, 1)
        return (
            self.phi[index].to(device=device, dtype=dtype).reshape(shape),
            self.psi[index].to(device=device, dtype=dtype).reshape(shape),
        )

    def apply(self, noise: Tensor, xi: Tensor, timesteps: Tensor) -> tuple:
        """(input noise ε + φ_t ξ, target ε + ψ_t ξ) for given ε, ξ; no randomness."""
        phi, psi = self.coefficients(timesteps, device=noise.device, dtype=noise.dtype)
        return noise + phi * xi, noise + psi * xi


class OffsetNoise(NamedTuple):
    """What :func:`probabilistic_offset_noise` returns."""

    input_noise: Tensor  #: ε + φ_t ξ, to build x_t = √ᾱ_t x₀ + √(1−ᾱ_t) · input_noise
    target: Tensor  #: ε + ψ_t ξ, the ε-space regression target
    xi: Tensor  #: the shared offset ξ, shape (B, C, 1, 1)


def probabilistic_offset_noise(
    latents: Tensor,
    timesteps: Tensor,
    schedule: OffsetSchedule,
    *,
    generator: GeneratorLike = None,
    noise: Optional[Tensor] = None,
) -> OffsetNoise:
    r"""Draw ξ (and ε) and return the input noise ε + φ_t ξ and the target ε + ψ_t ξ.

    Args:
        latents (`torch.Tensor`):
            Clean latents (B, C, H, W); only shape, dtype and device are used.
        timesteps (`torch.Tensor`):
            One diffusers timestep per sample, shape (B,).
        schedule (`OffsetSchedule`):
            φ and ψ, e.g. ``OffsetSchedule.preset("balanced", strength=0.1, alphas_cumprod=...)``.
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
            Source of ε (unless ``noise`` is given) and then ξ; a list gives one generator per sample.
        noise (`torch.Tensor`, *optional*):
            The ε part, e.g. pyramid noise, instead of a fresh draw.
    """
    check_latents(latents)
    check_generator(generator, latents.shape[0])
    if not isinstance(schedule, OffsetSchedule):
        raise TypeError(f"schedule must be an OffsetSchedule, got {type(schedule).__name__}")
    b, c, h, w = latents.shape
    kw = dict(device=latents.device, dtype=latents.dtype)
    if noise is None:
        noise = draw("normal", (b, c, h, w), generator, **kw)
    xi = draw("normal", (b, c, 1, 1), generator, **kw)
    input_noise, target = schedule.apply(noise, xi, timesteps)
    return OffsetNoise(input_noise, target, xi)


def posterior_mean(sample: Tensor, target: Tensor, timesteps: Tensor, *, scheduler: Any) -> Tensor:
    r"""The DDPM posterior mean (1/√α_t)[x_t − β_t/√(1−ᾱ_t) · target] for an ε-space target.

    With ``target = ε + ψ_t ξ`` this is the exact mean of q(x_{t−1} | x_t, x₀, ξ) of the
    probabilistic-offset chain (see the module docstring); with plain ε it is DDPM's.

    Args:
        sample (`torch.Tensor`): x_t, (B, C, H, W).
        target (`torch.Tensor`): the ε-space quantity, same shape.
        timesteps (`torch.Tensor`): diffusers timesteps, shape (B,).
        scheduler: a diffusers scheduler with ``alphas_cumprod``.
    """
    abar = alphas_cumprod_of(scheduler)
    betas = _step_betas(abar)
    index = timesteps.detach().to("cpu", torch.long).reshape(-1)
    as_batch = lambda v: v[index].to(device=sample.device, dtype=sample.dtype).reshape(-1, 1, 1, 1)  # noqa: E731
    beta, one_minus_abar = as_batch(betas), as_batch(1.0 - abar)
    return (sample - beta / one_minus_abar.sqrt() * target) / (1.0 - beta).sqrt()


def initial_latents(
    shape: Sequence[int],
    scheduler: Any,
    schedule: OffsetSchedule,
    *,
    generator: GeneratorLike = None,
    timestep: Optional[int] = None,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""The starting latent of a sampler for a model trained with probabilistic offset noise.

    x_T = √(1−ᾱ_T) (ε + φ_T ξ), with ε ~ N(0, I) of ``shape`` and a fresh ξ ~ N(0, I) of shape
    (B, C, 1, 1).  The result is in the convention of a diffusers pipeline's ``latents=`` argument:
    pass it there, and the pipeline multiplies it by ``scheduler.init_noise_sigma`` as it does plain
    noise (1 for DDPM/DDIM, so x_T exactly; ≈ 1/√ᾱ_T for σ-space schedulers such as Euler, which
    maps x_T to their x/√ᾱ coordinates).  In a hand-written loop, multiply by it yourself.

    Args:
        shape (sequence of `int`):
            (B, C, H, W).
        scheduler:
            The sampling scheduler, with ``alphas_cumprod``; call ``set_timesteps`` first.
        schedule (`OffsetSchedule`):
            The schedule the model was trained with.
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
            Source of ε, then ξ; a list gives one generator per sample.
        timestep (`int`, *optional*):
            T, the first timestep of the sampling loop; defaults to ``scheduler.timesteps[0]``.
        device, dtype:
            Of the result.
    """
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints (B, C, H, W), got {shape!r}") from None
    if len(shape) != 4:
        raise ValueError(f"shape must have rank 4 (B, C, H, W), got {shape}")
    if min(shape) < 1:
        raise ValueError(f"shape must hold sizes >= 1, got {shape}")
    if timestep is not None and (isinstance(timestep, bool) or not isinstance(timestep, int)):
        raise TypeError(f"timestep must be an int or None, got {type(timestep).__name__}")
    try:
        device = torch.device(device) if device is not None else None
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device or device string, got {device!r}") from None
    if device is not None and device.type == "meta":
        raise ValueError("device must hold data, not 'meta'")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    abar = alphas_cumprod_of(scheduler)
    if timestep is None:
        timesteps = getattr(scheduler, "timesteps", None)
        timestep = int(timesteps[0]) if timesteps is not None and len(timesteps) else abar.shape[0] - 1
    if not 0 <= timestep < abar.shape[0]:
        raise ValueError(f"timestep must lie in [0, {abar.shape[0] - 1}], got {timestep}")
    check_generator(generator, shape[0])
    noise = draw("normal", shape, generator, device=device, dtype=dtype)
    xi = draw("normal", shape[:2] + (1, 1), generator, device=device, dtype=dtype)
    phi = float(schedule.phi[timestep])
    return float(torch.sqrt(1.0 - abar[timestep])) * (noise + phi * xi)
