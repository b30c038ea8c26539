"""Training-time noise: offset, pyramid and probabilistic offset noise, timestep samplers, Min-SNR-γ
weights, zero terminal SNR, and :func:`training_batch`, the one call a training loop makes.

Every random draw takes a ``torch.Generator`` or a list of them (one per sample), and every option
defaults to plain DDPM training.
"""

from .batch import TrainingBatch, training_batch, weighted_mse
from .min_snr import PREDICTION_TYPES, min_snr_weights
from .offset import offset_noise
from .probabilistic_offset import PRESETS, OffsetNoise, OffsetSchedule, initial_latents, posterior_mean, probabilistic_offset_noise
from .pyramid import pyramid_noise
from .timesteps import SAMPLER_ALIASES, TimestepSampler, sample_timesteps, weighted_curve
from .zero_snr import zero_snr_betas, zero_terminal_snr

__all__ = [
    "training_batch",
    "TrainingBatch",
    "weighted_mse",
    "offset_noise",
    "pyramid_noise",
    "OffsetSchedule",
    "OffsetNoise",
    "PRESETS",
    "probabilistic_offset_noise",
    "posterior_mean",
    "initial_latents",
    "TimestepSampler",
    "SAMPLER_ALIASES",
    "sample_timesteps",
    "weighted_curve",
    "min_snr_weights",
    "PREDICTION_TYPES",
    "zero_terminal_snr",
    "zero_snr_betas",
]
