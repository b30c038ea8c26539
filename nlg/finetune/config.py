r"""The settings of a LoRA fine-tune, validated once, and the one function that draws a training batch.

Every noise and timestep option is handed to :func:`nlg.training.training_batch` unchanged
(:func:`batch_options` builds its keyword arguments); nothing here re-implements a formula:

=================================  =====================================================================
option                             ``training_batch`` argument
=================================  =====================================================================
``timestep_type``                  ``timestep_sampler=TimestepSampler(name, mean, std, shift)``
``offset_noise``                   ``offset_strength`` (ε + s·δ, Guttenberg 2023)
``offset_noise_random_strength``   ``offset_random_strength`` (s·u·δ, u ~ U(0, 1))
``pyramid_noise``                  ``pyramid_iterations``, with ``pyramid_discount`` (Whitaker 2023)
``probabilistic_offset``           ``offset_schedule=OffsetSchedule.preset(name, strength, ᾱ)`` (arXiv 2412.03134)
``min_snr_gamma``                  ``min_snr_gamma`` (Hang et al. 2023, arXiv 2303.09556)
``prediction_type``                ``prediction_type`` (defaults to the model's)
=================================  =====================================================================

``zero_terminal_snr`` changes the scheduler itself (:func:`nlg.training.zero_terminal_snr`, Lin et al. 2024,
arXiv 2305.08891), so ᾱ_T = 0 reaches every option above through the scheduler they are given.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional

import torch
from torch import Tensor

from ..training import PRESETS, SAMPLER_ALIASES, OffsetSchedule, TimestepSampler, TrainingBatch, training_batch
from ..training.min_snr import PREDICTION_TYPES
from ..utils.checks import check_bool

__all__ = ["FinetuneConfig", "QUICK_OVERRIDES", "MIXED_PRECISION", "batch_options", "FinetuneBatch", "draw_batch"]

#: ``--mixed_precision`` values: fp16 needs a gradient scaler, which the shared loop does not own.
MIXED_PRECISION = ("no", "bf16")
#: What ``--quick`` changes (explicit options still win): a smoke run of the whole recipe.
QUICK_OVERRIDES: Dict[str, Any] = {"steps": 6, "checkpoint_every": 3, "batch_size": 2}


def _number(name: str, value: Any, *, low: float = 0.0, strict: bool = False, high: float = math.inf,
            high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    ok = (value > low if strict else value >= low) and (value < high if high_open else value <= high)
    if not (math.isfinite(value) and ok):
        lo, hi = ("(" if strict else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value}")


def _integer(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :func:`nlg.finetune.finetune`; each field is the command-line option of the same name.

    Args:
        model (`str`): a diffusers SD 1.x/2.x pipeline folder or Hub id, or ``"shapes"`` (the embedded model).
        data_dir (`Path`): images with captions (``metadata.jsonl`` or a ``.txt`` beside each image).
        output_dir (`Path`): where the LoRA, ``training_args.json`` and the resumable checkpoint go.
        resolution (`int`, *optional*): training side in pixels; defaults to the UNet's ``sample_size`` × the VAE
            scale factor.
        rank (`int`, defaults to 4): LoRA rank r.
        alpha (`float`, *optional*): LoRA α (the update is scaled by α/r); defaults to ``rank``.
        train_text_encoder (`bool`, defaults to False): also put LoRA on the text encoder's attention.
        steps (`int`, defaults to 500): optimiser steps.
        lr (`float`, defaults to 1e-4): peak learning rate (warm-up + cosine, :func:`nlg.training.loop.warmup_cosine`).
        warmup_steps (`int`, *optional*): defaults to 5% of ``steps``.
        batch_size (`int`, defaults to 1): images per micro-batch.
        gradient_accumulation_steps (`int`, defaults to 1): micro-batches per optimiser step.
        max_grad_norm (`float`, defaults to 1.0): gradient-norm clipping.
        seed (`int`, defaults to 0): LoRA initialisation and every draw.
        checkpoint_every (`int`, defaults to 100): steps between resumable checkpoints.
        save_every (`int`, *optional*): also save the LoRA every this many steps into ``output_dir/step-N``.
        caption_dropout (`float`, defaults to 0.0): probability of training a caption as ``""``.
        timestep_type (`str`, defaults to ``"uniform"``): ``uniform``/``linear``, ``logit_normal``/``sigmoid``,
            ``shift`` or ``weighted`` (:class:`nlg.training.TimestepSampler`).
        timestep_shift (`float`, *optional*): s of the ``shift`` map (default 3); also allowed with uniform and
            logit-normal.
        logit_mean (`float`, defaults to 0.0): location of ``logit_normal``.
        logit_std (`float`, defaults to 1.0): scale of ``logit_normal``.
        offset_noise (`float`, defaults to 0.0): offset-noise strength s (0: off).
        offset_noise_random_strength (`bool`, defaults to False): scale s by U(0, 1) per sample.
        pyramid_noise (`int`, defaults to 0): pyramid-noise iterations (0: off).
        pyramid_discount (`float`, defaults to 0.4): pyramid-noise discount per level.
        probabilistic_offset (`str`, *optional*): a preset of :data:`nlg.training.PRESETS`.
        probabilistic_offset_strength (`float`, defaults to 0.1): ψ_T of the preset.
        min_snr_gamma (`float`, *optional*): Min-SNR-γ loss weights.
        zero_terminal_snr (`bool`, defaults to False): rescale the betas to ᾱ_T = 0 (v-prediction only).
        prediction_type (`str`, *optional*): train this target instead of the model's (``epsilon``,
            ``v_prediction``, ``sample``).
        mixed_precision (`str`, defaults to ``"no"``): ``"no"`` or ``"bf16"`` (Accelerate's autocast).
        local_files_only (`bool`, defaults to False): never reach the Hub.
    """

    model: str
    data_dir: Path
    output_dir: Path
    resolution: Optional[int] = None
    rank: int = 4
    alpha: Optional[float] = None
    train_text_encoder: bool = False
    steps: int = 500
    lr: float = 1e-4
    warmup_steps: Optional[int] = None
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    save_every: Optional[int] = None
    caption_dropout: float = 0.0
    timestep_type: str = "uniform"
    timestep_shift: Optional[float] = None
    logit_mean: float = 0.0
    logit_std: float = 1.0
    offset_noise: float = 0.0
    offset_noise_random_strength: bool = False
    pyramid_noise: int = 0
    pyramid_discount: float = 0.4
    probabilistic_offset: Optional[str] = None
    probabilistic_offset_strength: float = 0.1
    min_snr_gamma: Optional[float] = None
    zero_terminal_snr: bool = False
    prediction_type: Optional[str] = None
    mixed_precision: str = "no"
    local_files_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a pipeline folder, a Hub id or 'shapes', got {self.model!r}")
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        for name in ("rank", "steps", "batch_size", "gradient_accumulation_steps", "checkpoint_every"):
            _integer(name, getattr(self, name))
        for name in ("resolution", "save_every"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name))
        _integer("seed", self.seed, minimum=0)
        _integer("pyramid_noise", self.pyramid_noise, minimum=0)
        if self.warmup_steps is not None:
            _integer("warmup_steps", self.warmup_steps, minimum=0)
        if self.alpha is not None:
            _number("alpha", self.alpha, strict=True)
        _number("lr", self.lr, strict=True)
        _number("max_grad_norm", self.max_grad_norm, strict=True)
        _number("caption_dropout", self.caption_dropout, high=1.0, high_open=True)
        _number("offset_noise", self.offset_noise)
        _number("pyramid_discount", self.pyramid_discount, strict=True)
        _number("probabilistic_offset_strength", self.probabilistic_offset_strength)
        _number("logit_mean", self.logit_mean, low=-math.inf)
        _number("logit_std", self.logit_std, strict=True)
        if self.timestep_shift is not None:
            _number("timestep_shift", self.timestep_shift, strict=True)
        if self.min_snr_gamma is not None:
            _number("min_snr_gamma", self.min_snr_gamma, strict=True)
        if self.timestep_type not in SAMPLER_ALIASES:
            raise ValueError(f"timestep_type must be one of {sorted(SAMPLER_ALIASES)}, got {self.timestep_type!r}")
        canonical = SAMPLER_ALIASES[self.timestep_type]
        if canonical == "weighted" and self.timestep_shift is not None:
            raise ValueError("timestep_shift does not apply to timestep_type 'weighted'")
        if canonical != "logit_normal" and (self.logit_mean != 0.0 or self.logit_std != 1.0):
            raise ValueError(f"logit_mean and logit_std apply only to timestep_type 'logit_normal'/'sigmoid', not {self.timestep_type!r}")
        if self.probabilistic_offset is not None and self.probabilistic_offset not in PRESETS:
            raise ValueError(f"probabilistic_offset must be one of {list(PRESETS)}, got {self.probabilistic_offset!r}")
        if self.probabilistic_offset is not None and self.offset_noise > 0:
            raise ValueError("use either offset_noise (plain) or probabilistic_offset, not both")
        if self.offset_noise_random_strength and self.offset_noise == 0:
            raise ValueError("offset_noise_random_strength needs offset_noise > 0")
        if self.prediction_type is not None and self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}, got {self.prediction_type!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {list(MIXED_PRECISION)}, got {self.mixed_precision!r} "
                "(fp16 needs a gradient scaler the shared training loop does not run; use bf16)"
            )
        for name in ("train_text_encoder", "offset_noise_random_strength", "zero_terminal_snr", "local_files_only"):
            check_bool(getattr(self, name), name)

    @property
    def lora_alpha(self) -> float:
        """α actually used (``rank`` when not given)."""
        return float(self.rank if self.alpha is None else self.alpha)

    def to_dict(self) -> Dict[str, Any]:
        """The settings as JSON-able values (paths as strings)."""
        out = dataclasses.asdict(self)
        out["data_dir"], out["output_dir"] = str(self.data_dir), str(self.output_dir)
        return out

    def timestep_sampler(self) -> TimestepSampler:
        """The :class:`~nlg.training.TimestepSampler` of ``timestep_type`` and its parameters."""
        return TimestepSampler(self.timestep_type, mean=self.logit_mean, std=self.logit_std, shift=self.timestep_shift)


def batch_options(config: FinetuneConfig, scheduler: Any) -> Dict[str, Any]:
    """The keyword arguments of :func:`nlg.training.training_batch` that ``config`` asks for.

    Args:
        config (`FinetuneConfig`): the settings.
        scheduler: the training scheduler (its ᾱ table sizes the probabilistic-offset schedule).
    """
    schedule = None
    if config.probabilistic_offset is not None:
        schedule = OffsetSchedule.preset(
            config.probabilistic_offset, strength=config.probabilistic_offset_strength,
            alphas_cumprod=scheduler.alphas_cumprod,
        )
    return dict(
        timestep_sampler=config.timestep_sampler(),
        offset_strength=config.offset_noise,
        offset_random_strength=config.offset_noise_random_strength,
        pyramid_iterations=config.pyramid_noise,
        pyramid_discount=config.pyramid_discount,
        offset_schedule=schedule,
        min_snr_gamma=config.min_snr_gamma,
        prediction_type=config.prediction_type,
    )


class FinetuneBatch(NamedTuple):
    """What :func:`draw_batch` returns."""

    index: Tensor  #: which training images (long, (B,))
    dropped: Tensor  #: whose caption is replaced by ``""`` (bool, (B,))
    batch: TrainingBatch  #: noisy latents, timesteps, target, loss weights


def draw_batch(
    latents: Tensor,
    scheduler: Any,
    options: Dict[str, Any],
    *,
    batch_size: int,
    caption_dropout: float,
    generator: torch.Generator,
) -> FinetuneBatch:
    """One micro-batch, every draw from ``generator`` in this order: the images (``randint``), the caption
    dropout (``rand``), then :func:`nlg.training.training_batch` of their latents with ``options``.

    Args:
        latents (`torch.Tensor`): the cached latents of every training image, (N, C, H, W).
        scheduler: the training scheduler.
        options (`dict`): :func:`batch_options`.
        batch_size (`int`): B.
        caption_dropout (`float`): probability of an empty caption.
        generator (`torch.Generator`): the training loop's generator.
    """
    index = torch.randint(0, latents.shape[0], (batch_size,), generator=generator)
    dropped = torch.rand(batch_size, generator=generator) < caption_dropout
    batch = training_batch(latents[index.to(latents.device)], scheduler, generator=generator, **options)
    return FinetuneBatch(index, dropped, batch)
