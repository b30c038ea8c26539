r"""The one function a training loop calls: :func:`training_batch`.

Given clean latents x₀ and a DDPM-family scheduler it draws timesteps t, builds the noise n (plain,
pyramid and/or offset), forms the noisy input and the regression target for the scheduler's
prediction type, and returns per-sample loss weights::

    x_t = √ᾱ_t x₀ + √(1−ᾱ_t) n
    target = e                               (epsilon)
           = √ᾱ_t e − √(1−ᾱ_t) x̂₀            (v_prediction, Salimans & Ho 2022)
           = x̂₀                              (sample)

where e = n and x̂₀ = x₀, except with probabilistic offset noise (:mod:`.probabilistic_offset`):
n = ε + φ_t ξ, e = ε + ψ_t ξ, and x̂₀ = (x_t − √(1−ᾱ_t) e)/√ᾱ_t = x₀ + √(1−ᾱ_t)/√ᾱ_t · (φ_t − ψ_t) ξ,
the x₀ for which a scheduler's usual v→ε / x₀→ε conversion returns e.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import torch
from torch import Tensor

from ..utils.types import GeneratorLike
from ._checks import (
    alphas_cumprod_of,
    check_generator,
    check_int,
    check_latents,
    check_number,
    check_timesteps,
)
from .min_snr import PREDICTION_TYPES, min_snr_weights
from .offset import offset_noise
from .probabilistic_offset import OffsetSchedule, probabilistic_offset_noise
from .pyramid import pyramid_noise
from .timesteps import TimestepSampler

__all__ = ["TrainingBatch", "training_batch", "weighted_mse"]


class TrainingBatch(NamedTuple):
    """What :func:`training_batch` returns; unpacks as ``noisy, timesteps, target, weights``."""

    noisy_latents: Tensor  #: x_t, shape and dtype of the clean latents
    timesteps: Tensor  #: long, shape (B,)
    target: Tensor  #: what the model should predict, shape of the latents
    loss_weights: Tensor  #: sampler weights × Min-SNR weights (ones by default), float32 of shape (B,)


def training_batch(
    latents: Tensor,
    scheduler: Any,
    *,
    generator: GeneratorLike = None,
    timesteps: Optional[Tensor] = None,
    timestep_sampler: Union[str, TimestepSampler] = "uniform",
    offset_strength: float = 0.0,
    offset_random_strength: bool = False,
    pyramid_iterations: int = 0,
    pyramid_discount: float = 0.4,
    offset_schedule: Optional[OffsetSchedule] = None,
    min_snr_gamma: Optional[float] = None,
    prediction_type: Optional[str] = None,
) -> TrainingBatch:
    r"""Noisy latents, timesteps, target and loss weights for one training step.

    With every option at its default this is the standard DDPM objective: uniform t, plain ε,
    target ε (or v), weights 1.

    Args:
        latents (`torch.Tensor`):
            Clean latents x₀, shape (B, C, H, W).
        scheduler:
            A DDPM-family diffusers scheduler (``alphas_cumprod``), e.g. ``DDPMScheduler``; its
            ``config.prediction_type`` is the default target.
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
            Source of every draw; a list gives one generator per sample.  Order per generator:
            timesteps, ε (or pyramid noise), the offset δ (and its strength u), then ξ.
        timesteps (`torch.Tensor`, *optional*):
            Use these instead of drawing; shape (B,).
        timestep_sampler (`str` or `TimestepSampler`, defaults to ``"uniform"``):
            How to draw t; a name (see :class:`~nlg.training.TimestepSampler`) or a configured sampler.
        offset_strength (`float`, defaults to 0.0):
            Plain offset noise ε + s·δ (:func:`~nlg.training.offset_noise`); 0 is off.
        offset_random_strength (`bool`, defaults to `False`):
            Scale the offset strength per sample by U(0, 1).
        pyramid_iterations (`int`, defaults to 0):
            Pyramid noise levels (:func:`~nlg.training.pyramid_noise`); 0 is off.
        pyramid_discount (`float`, defaults to 0.4):
            Pyramid noise discount per level.
        offset_schedule (`OffsetSchedule`, *optional*):
            Probabilistic offset noise (:mod:`~nlg.training.probabilistic_offset`); excludes
            ``offset_strength``.
        min_snr_gamma (`float`, *optional*):
            Multiply the loss weights by Min-SNR-γ weights (:func:`~nlg.training.min_snr_weights`).
        prediction_type (`str`, *optional*):
            ``"epsilon"``, ``"v_prediction"`` or ``"sample"``; defaults to the scheduler's.

    Returns:
        `TrainingBatch`: ``(noisy_latents, timesteps, target, loss_weights)``.
    """
    check_latents(latents)
    if not bool(torch.isfinite(latents).all()):
        raise ValueError("latents contain NaN or Inf")
    abar_table = alphas_cumprod_of(scheduler)
    batch = latents.shape[0]
    check_generator(generator, batch)
    offset_strength = check_number(offset_strength, "offset_strength")
    pyramid_iterations = check_int(pyramid_iterations, "pyramid_iterations")
    pyramid_discount = check_number(pyramid_discount, "pyramid_discount")
    if min_snr_gamma is not None:
        check_number(min_snr_gamma, "min_snr_gamma", strict=True)
    if offset_schedule is not None and offset_strength > 0:
        raise ValueError("use either offset_strength (plain offset noise) or offset_schedule (probabilistic), not both")
    if offset_schedule is not None and not isinstance(offset_schedule, OffsetSchedule):
        raise TypeError(f"offset_schedule must be an OffsetSchedule or None, got {type(offset_schedule).__name__}")
    if prediction_type is None:
        prediction_type = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {list(PREDICTION_TYPES)}")
    if offset_schedule is not None and offset_schedule.num_train_timesteps != abar_table.shape[0]:
        raise ValueError(f"offset_schedule has {offset_schedule.num_train_timesteps} timesteps, the scheduler {abar_table.shape[0]}")

    if timesteps is None:
        sampler = TimestepSampler(timestep_sampler) if isinstance(timestep_sampler, str) else timestep_sampler
        if not isinstance(sampler, TimestepSampler):
            raise TypeError(f"timestep_sampler must be a name or a TimestepSampler, got {type(sampler).__name__}")
        timesteps, weights = sampler(batch, num_train_timesteps=abar_table.shape[0], generator=generator, device=latents.device)
    else:
        timesteps = check_timesteps(timesteps, abar_table.shape[0]).to(latents.device).long().reshape(-1)
        if timesteps.shape[0] != batch:
            raise ValueError(f"timesteps must hold one entry per sample ({batch}), got {timesteps.shape[0]}")
        if timesteps.min() < 0 or timesteps.max() >= abar_table.shape[0]:
            raise ValueError(f"timesteps must lie in [0, {abar_table.shape[0] - 1}]")
        weights = torch.ones(batch, device=latents.device)

    noise = None
    if pyramid_iterations > 0:
        noise = pyramid_noise(latents, iterations=pyramid_iterations, discount=pyramid_discount, generator=generator)
    noise = offset_noise(latents, strength=offset_strength, random_strength=offset_random_strength, generator=generator, noise=noise)
    target_noise = noise
    if offset_schedule is not None:
        noise, target_noise, _ = probabilistic_offset_noise(latents, timesteps, offset_schedule, generator=generator, noise=noise)

    abar = abar_table[timesteps.cpu()].to(latents.device, latents.dtype).reshape(-1, 1, 1, 1)
    signal, sigma = abar.sqrt(), (1.0 - abar).sqrt()
    noisy = signal * latents + sigma * noise
    x0_hat = latents
    if target_noise is not noise:
        gap = noise - target_noise
        if prediction_type != "epsilon" and bool(((abar == 0) & (gap != 0).flatten(1).any(1).reshape(-1, 1, 1, 1)).any()):
            raise ValueError(
                f"prediction_type={prediction_type!r} is undefined where ᾱ_t = 0 and the offset_schedule has φ_t ≠ ψ_t "
                "(a schedule built from this scheduler's alphas_cumprod has φ_T = ψ_T there: was it built for another?)"
            )
        x0_hat = latents + torch.where(abar > 0, sigma / signal.clamp_min(torch.finfo(abar.dtype).tiny), 0.0) * gap
    if prediction_type == "epsilon":
        target = target_noise
    elif prediction_type == "v_prediction":
        target = signal * target_noise - sigma * x0_hat
    else:
        target = x0_hat

    if min_snr_gamma is not None:
        weights = weights * min_snr_weights(timesteps, scheduler, gamma=min_snr_gamma, prediction_type=prediction_type)
    if not (bool(torch.isfinite(noisy).all()) and bool(torch.isfinite(target).all())):
        raise ValueError(
            "the noisy latents or target overflowed: offset_strength, pyramid_discount or the latents' scale "
            f"is too large for {latents.dtype}"
        )
    return TrainingBatch(noisy, timesteps, target, weights.float())


def weighted_mse(prediction: Tensor, target: Tensor, loss_weights: Tensor) -> Tensor:
    r"""mean_b w_b · mean_{c,h,w} (prediction − target)², in float32.

    Args:
        prediction (`torch.Tensor`): the model output, (B, C, H, W).
        target (`torch.Tensor`): :attr:`TrainingBatch.target`.
        loss_weights (`torch.Tensor`): :attr:`TrainingBatch.loss_weights`, (B,).
    """
    per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)
    return (loss_weights.float() * per_sample).mean()
