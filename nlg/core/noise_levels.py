r"""One knob, four names: denoising strength ↔ start timestep ↔ σ ↔ SNR, for any scheduler.

img2img starts from ``x_{t_s} = a·x₀ + b·ε`` at a start timestep ``t_s`` that the *strength* picks.
A :class:`SchedulePoint` is such a point of the scheduler's forward process.  (Until this release it
was called ``NoiseLevel``, and the functions ``noise_level_at``, ``noise_level_for_strength`` and
``strength_for_noise_level``; those names still work for one release with a ``DeprecationWarning``:
``noise_level`` now means only NLG's added-noise variance λ.)  The schedulers write the forward
process in three ways:

* DDPM-type (DDIM, DDPM, PNDM, DPM-Solver, UniPC, …): ``a = √ᾱ_t``, ``b = √(1−ᾱ_t)``;
* Euler-type / Karras (Euler, Euler-ancestral, LMS, Heun, …): ``a = 1``, ``b = σ_t = √((1−ᾱ_t)/ᾱ_t)``;
* flow matching (SD3, FLUX): ``a = 1−σ_t``, ``b = σ_t``.

:class:`SchedulePoint` reports all of them on one scale (Kingma et al. 2021, https://arxiv.org/abs/2107.00630;
Karras et al. 2022, https://arxiv.org/abs/2206.00364):

.. math::
    \mathrm{SNR} = a^2 / b^2, \qquad \sigma = b / a = \mathrm{SNR}^{-1/2}, \qquad
    \bar\alpha = \mathrm{SNR} / (1 + \mathrm{SNR}),

where σ is the variance-exploding (EDM / k-diffusion) noise level and ᾱ the variance-preserving
``alphas_cumprod`` that carries the same SNR.  ``a`` and ``b`` are read off the scheduler's *own*
``add_noise`` (``scale_noise`` for flow matching) by noising a unit image with zero noise and a zero
image with unit noise, so the mapping is exact for every diffusers scheduler and spacing, including
Karras sigmas and shifted flow schedules.

Strength maps to ``t_s`` exactly as diffusers' img2img pipelines do it: after
``set_timesteps(N)``, ``t_s = timesteps[t_start·order]`` with ``t_start = N − int(N·strength)``
(Stable Diffusion img2img) or ``t_start = int(N − N·strength)`` (the SD3 and FLUX img2img pipelines,
used for flow-matching schedulers).  The scheduler passed in is never modified: a fresh copy is built
from its config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional

import torch

from ..utils.deprecation import deprecated_attributes, deprecated_function

__all__ = [
    "SchedulePoint",
    "check_strength",
    "schedule_point_at",
    "schedule_point_for_strength",
    "strength_table",
    "strength_for_sigma",
]


@dataclass(frozen=True)
class SchedulePoint:
    """Where an img2img run starts, in every parameterisation.

    Args:
        strength (`float`, *optional*): the denoising strength, if the level came from one.
        timestep (`float`): the start timestep ``t_s`` as the scheduler hands it to the model.
        signal_scale (`float`): ``a`` in ``x_{t_s} = a·x₀ + b·ε`` as the scheduler's ``add_noise`` builds it.
        noise_scale (`float`): ``b`` in the same formula.
        denoising_steps (`int`, *optional*): sampler steps actually run from ``t_s``.
    """

    strength: Optional[float]
    timestep: float
    signal_scale: float
    noise_scale: float
    denoising_steps: Optional[int] = None

    @property
    def snr(self) -> float:
        """Signal-to-noise ratio ``a² / b²``."""
        return self.signal_scale**2 / self.noise_scale**2 if self.noise_scale > 0 else math.inf

    @property
    def sigma(self) -> float:
        """The variance-exploding noise level ``σ = b / a`` (Euler/Karras σ; ``σ_t/(1−σ_t)`` for flow matching)."""
        return self.noise_scale / self.signal_scale if self.signal_scale > 0 else math.inf

    @property
    def alpha_bar(self) -> float:
        """The variance-preserving ``ᾱ = SNR/(1+SNR)`` (``alphas_cumprod[t_s]`` for DDPM-type schedulers)."""
        a2, b2 = self.signal_scale**2, self.noise_scale**2
        return a2 / (a2 + b2)


def check_strength(strength: float) -> None:
    """Raise a ``TypeError``/``ValueError`` unless ``strength`` is a number in (0, 1]."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(f"strength must be a number in (0, 1], got {type(strength).__name__}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")


def _fresh(scheduler: Any) -> Any:
    if not hasattr(scheduler, "set_timesteps") or not hasattr(scheduler, "config"):
        raise TypeError(f"scheduler must be a diffusers scheduler, got {type(scheduler).__name__}")
    return type(scheduler).from_config(scheduler.config)


def _is_flow(scheduler: Any) -> bool:
    return hasattr(scheduler, "scale_noise") and not hasattr(scheduler, "add_noise")


def _coefficients(scheduler: Any, timestep: torch.Tensor) -> "tuple[float, float]":
    """``(a, b)`` of the scheduler's forward process at ``timestep``, read off its own noising function."""
    ones, zeros = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    t = timestep.reshape(1)
    if _is_flow(scheduler):
        a, b = scheduler.scale_noise(ones, t, zeros), scheduler.scale_noise(zeros, t, ones)
    else:
        a, b = scheduler.add_noise(ones, zeros, t), scheduler.add_noise(zeros, ones, t)
    return float(a), float(b)


def schedule_point_for_strength(scheduler: Any, strength: float, num_inference_steps: int) -> SchedulePoint:
    """The start of an img2img run with ``strength`` and ``num_inference_steps``, as diffusers computes it.

    Args:
        scheduler (`SchedulerMixin`): the pipeline's scheduler (not modified).
        strength (`float`): denoising strength in (0, 1].
        num_inference_steps (`int`): the pipeline's ``num_inference_steps``.

    Raises:
        ValueError: if ``strength`` is outside (0, 1] or so small that no denoising step would run.
    """
    check_strength(strength)
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
    sched = _fresh(scheduler)
    sched.set_timesteps(num_inference_steps)
    n = num_inference_steps
    t_start = int(max(n - n * strength, 0)) if _is_flow(sched) else max(n - min(int(n * strength), n), 0)
    begin = t_start * sched.order
    if begin >= len(sched.timesteps):
        raise ValueError(
            f"strength={strength} with num_inference_steps={n} leaves no denoising step; "
            f"use strength >= {1.0 / n:.3g} or more steps"
        )
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(begin)
    timestep = sched.timesteps[begin]
    a, b = _coefficients(sched, timestep)
    return SchedulePoint(strength=float(strength), timestep=float(timestep), signal_scale=a, noise_scale=b,
                      denoising_steps=n - t_start)


def schedule_point_at(scheduler: Any, timestep: float) -> SchedulePoint:
    """The point of the forward process at one timestep of the training schedule (e.g. NLG's reference timestep 999).

    For DDPM-type schedulers this is ``ᾱ = alphas_cumprod[timestep]``; for flow matching
    ``σ_t = timestep / num_train_timesteps``.  Euler-type schedulers interpolate σ between training
    steps as their own ``set_timesteps`` does.

    Example:
        A two-step schedule with ᾱ₀ = 0.64 and ᾱ₁ = 0.5, i.e. σ = √((1−ᾱ)/ᾱ) = 0.75 and 1:

        >>> from diffusers import DDPMScheduler
        >>> from nlg import schedule_point_at
        >>> scheduler = DDPMScheduler(num_train_timesteps=2, trained_betas=[0.36, 0.21875])
        >>> level = schedule_point_at(scheduler, 0)
        >>> round(level.signal_scale, 6), round(level.noise_scale, 6), round(level.sigma, 6), round(level.alpha_bar, 6)
        (0.8, 0.6, 0.75, 0.64)
        >>> round(schedule_point_at(scheduler, 0.5).sigma, 6)   # σ interpolated between training steps
        0.875
    """
    sched = _fresh(scheduler)
    if _is_flow(sched):
        sigma_t = float(timestep) / sched.config.num_train_timesteps
        if not 0.0 <= sigma_t <= 1.0:
            raise ValueError(f"timestep must be in [0, {sched.config.num_train_timesteps}], got {timestep}")
        return SchedulePoint(strength=None, timestep=float(timestep), signal_scale=1.0 - sigma_t, noise_scale=sigma_t)
    alphas_cumprod = getattr(sched, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise TypeError(f"{type(scheduler).__name__} has neither alphas_cumprod nor a flow-matching scale_noise")
    last = len(alphas_cumprod) - 1
    if not 0.0 <= float(timestep) <= last:
        raise ValueError(f"timestep must be in [0, {last}], got {timestep}")
    ve_sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt().double()
    lo = int(math.floor(float(timestep)))
    hi = min(lo + 1, last)
    w = float(timestep) - lo
    sigma = float((1.0 - w) * ve_sigmas[lo] + w * ve_sigmas[hi])
    alpha = 1.0 / math.sqrt(1.0 + sigma**2)
    return SchedulePoint(strength=None, timestep=float(timestep), signal_scale=alpha, noise_scale=sigma * alpha)


def strength_table(scheduler: Any, num_inference_steps: int) -> List[SchedulePoint]:
    """Every distinct start an img2img run with ``num_inference_steps`` can have, strength k/N for k = 1 … N."""
    return [schedule_point_for_strength(scheduler, k / num_inference_steps, num_inference_steps)
            for k in range(1, num_inference_steps + 1)]


def strength_for_sigma(scheduler: Any, sigma: float, num_inference_steps: int) -> SchedulePoint:
    """The achievable strength whose start σ (``b/a``) is nearest to ``sigma`` in log σ.

    Strengths are quantised to ``k/N``; the returned :class:`SchedulePoint` says which start you get.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    return min(strength_table(scheduler, num_inference_steps), key=lambda level: abs(math.log(level.sigma / sigma)))


# Deprecated names (one release): ``noise_level`` means NLG's λ everywhere else.
noise_level_at = deprecated_function(schedule_point_at, "noise_level_at", "nlg.schedule_point_at")
noise_level_for_strength = deprecated_function(schedule_point_for_strength, "noise_level_for_strength", "nlg.schedule_point_for_strength")
strength_for_noise_level = deprecated_function(strength_for_sigma, "strength_for_noise_level", "nlg.strength_for_sigma")
__getattr__ = deprecated_attributes(__name__, {"NoiseLevel": ("nlg.SchedulePoint", lambda: SchedulePoint)})
