"""Train the digits diffusion model: a reusable, seeded CPU loop and the command that made the shipped weights.

    python -m nlg.digits.train                  # the shipped weights: 4000 steps at batch 128, seed 0
    python -m nlg.digits.train --quick --out /tmp/digits    # a 200-step smoke run

The loop minimises the DDPM ε-objective (Ho et al. 2020, https://arxiv.org/abs/2006.11239) with
classifier-free label dropout (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598):

.. math::
    \\mathcal L = \\frac1B \\sum_b w_b \\,\\frac1D \\lVert f_\\theta(x_{t_b}, t_b, c_b) - y_b \\rVert_2^2,
    \\qquad c_b = \\varnothing \\text{ with probability } p_{\\text{drop}},

where ``(x_t, t, y, w)`` come from ``batch_fn``: by default :func:`ddpm_batch`, i.e. ``t ~ U{0…999}``,
``x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε``, ``y = ε``, ``w = 1``.  Training-time noise variants (offset noise,
timestep samplers, :mod:`nlg.training`) plug in through ``batch_fn``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch import Tensor

from ..training.batch import training_batch
from ..training.loop import LoopConfig, command_line, train_loop
from .data import NULL_CLASS, NUM_CLASSES, load_split
from .model import WEIGHTS_DIR, build_unet, save_digits_model, sd_scheduler

__all__ = ["BatchFn", "ddpm_batch", "train_digits", "DEFAULT_TRAINING", "main"]

#: ``batch_fn(clean, labels, scheduler, generator) -> (noisy, timesteps, target, loss_weights)``.
BatchFn = Callable[[Tensor, Tensor, DDPMScheduler, torch.Generator], Tuple[Tensor, Tensor, Tensor, Tensor]]

#: The settings that produced the shipped weights.
DEFAULT_TRAINING: Dict[str, Any] = dict(steps=4000, batch_size=128, lr=1e-3, seed=0, label_dropout=0.15)


def ddpm_batch(
    clean: Tensor, labels: Tensor, scheduler: DDPMScheduler, generator: torch.Generator
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Plain DDPM: ``t ~ U{0, …, T−1}``, ``x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε``, target per the scheduler's prediction type, weights 1.

    :func:`nlg.training.training_batch` with every option off, given timesteps drawn by ``torch.randint``:
    the draws the shipped weights were trained with (``t`` by ``randint``, then ε by ``randn``, from one
    generator), where ``training_batch``'s own uniform sampler maps ``torch.rand`` to ``t`` and so draws other
    timesteps.  Bit-identical to ``scheduler.add_noise`` / ``scheduler.get_velocity`` on the same draws.

    Args:
        clean (`torch.Tensor`): clean images x₀, shape ``(B, C, H, W)``.
        labels (`torch.LongTensor`): their class labels (unused by plain DDPM).
        scheduler (`DDPMScheduler`): supplies ``alphas_cumprod`` and the prediction type.
        generator (`torch.Generator`): source of ``t`` and ε.
    """
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator)
    return training_batch(clean, scheduler, generator=generator, timesteps=timesteps)


def _check_data(images: Any, labels: Any) -> None:
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a floating-point torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise ValueError(f"images must have shape (N, 1, 8, 8), got {tuple(images.shape)}")
    if not isinstance(labels, Tensor) or labels.dtype != torch.long:
        raise TypeError("labels must be a torch.LongTensor")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("images and labels are empty")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"labels must be digits in 0…{NUM_CLASSES - 1}, got values in {int(labels.min())}…{int(labels.max())}")


def _check_batch(out: Any, batch: int, shape: torch.Size) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    if not isinstance(out, tuple) or len(out) != 4:
        raise TypeError("batch_fn must return (noisy, timesteps, target, loss_weights)")
    noisy, timesteps, target, weights = out
    if noisy.shape != shape or target.shape != shape:
        raise ValueError(f"batch_fn must return noisy and target of shape {tuple(shape)}, got {tuple(noisy.shape)} and {tuple(target.shape)}")
    if timesteps.shape != (batch,) or weights.shape != (batch,):
        raise ValueError(f"batch_fn must return timesteps and loss_weights of shape ({batch},)")
    return noisy, timesteps, target, weights


def train_digits(
    images: Tensor,
    labels: Tensor,
    *,
    steps: int = DEFAULT_TRAINING["steps"],
    batch_size: int = DEFAULT_TRAINING["batch_size"],
    lr: float = DEFAULT_TRAINING["lr"],
    seed: int = DEFAULT_TRAINING["seed"],
    scheduler: Optional[DDPMScheduler] = None,
    batch_fn: Optional[BatchFn] = None,
    label_dropout: float = DEFAULT_TRAINING["label_dropout"],
    progress: bool = True,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> UNet2DModel:
    """Train a fresh digits UNet (:func:`nlg.digits.model.build_unet`) on CPU, deterministically.

    Every random draw (batch indices, label dropout, and whatever ``batch_fn`` draws) comes from one
    ``torch.Generator`` seeded with ``seed``, which also seeds the initial weights.  The optimisation is
    :func:`nlg.training.loop.train_loop`'s: AdamW with a linear warm-up over the first 5% of steps, then
    cosine decay to 0; gradients clipped to norm 1.  The result is bit-exact for a fixed seed and thread
    count (the CLI uses 1 thread by default).

    Args:
        images (`torch.Tensor`): training images, shape ``(N, 1, 8, 8)``, values in [-1, 1].
        labels (`torch.LongTensor`): their digits, shape ``(N,)``, values 0…9.
        steps (`int`, defaults to 4000): optimiser steps.
        batch_size (`int`, defaults to 128): images per step, drawn with replacement.
        lr (`float`, defaults to 1e-3): peak learning rate.
        seed (`int`, defaults to 0): seeds the weights and every draw.
        scheduler (`DDPMScheduler`, *optional*): the noise schedule; defaults to SD's
            (:func:`nlg.digits.model.sd_scheduler`, ε-prediction).
        batch_fn (`Callable`, *optional*): ``(clean, labels, scheduler, generator) -> (noisy, timesteps,
            target, loss_weights)``; receives the true labels; defaults to :func:`ddpm_batch`.
        label_dropout (`float`, defaults to 0.15): probability of replacing a label by the null class 10.
        progress (`bool`, defaults to True): show a tqdm bar.
        on_step (`Callable[[int, float], None]`, *optional*): called with (step, loss) after each step.

    Returns:
        The trained ``UNet2DModel`` in eval mode.
    """
    _check_data(images, labels)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    scheduler = scheduler if scheduler is not None else sd_scheduler()
    batch_fn = batch_fn if batch_fn is not None else ddpm_batch
    unet = build_unet(seed=seed)
    images = images.float()

    def loss_fn(step: int, generator: torch.Generator) -> Tensor:
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        clean, true_labels = images[index], labels[index]
        drop = torch.rand(batch_size, generator=generator) < label_dropout
        class_labels = torch.where(drop, torch.full_like(true_labels, NULL_CLASS), true_labels)
        noisy, timesteps, target, weights = _check_batch(
            batch_fn(clean, true_labels, scheduler, generator), batch_size, clean.shape
        )
        prediction = unet(noisy, timesteps, class_labels=class_labels).sample
        per_sample = F.mse_loss(prediction, target, reduction="none").flatten(1).mean(dim=1)
        return (weights.to(per_sample.dtype) * per_sample).mean()

    callback = None if on_step is None else (lambda info: on_step(info["step"] - 1, info["loss"]))
    train_loop({"unet": unet}, loss_fn, LoopConfig(steps=steps, lr=lr), generator=torch.Generator().manual_seed(seed),
               progress=progress, desc="training digits UNet", callback=callback)
    return unet.eval().requires_grad_(False)


def main(argv: Optional[list] = None) -> None:
    """Command line: train on the training split and save weights + config."""
    parser = argparse.ArgumentParser(description="Train the class-conditional digits diffusion model (CPU, seeded).")
    parser.add_argument("--quick", action="store_true", help="a 200-step smoke run (default --out ./digits-quick)")
    parser.add_argument("--steps", type=int, default=None, help=f"optimiser steps (default {DEFAULT_TRAINING['steps']})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_TRAINING["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULT_TRAINING["lr"])
    parser.add_argument("--seed", type=int, default=DEFAULT_TRAINING["seed"])
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: bit-exact per thread count, and robust on a shared CPU, where 2 "
        "oversubscribed threads ran up to ~10x slower than 1)",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {WEIGHTS_DIR})")
    args = parser.parse_args(argv)
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--threads", args.threads)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a finite number > 0, got {args.lr}")
    steps = args.steps if args.steps is not None else (200 if args.quick else DEFAULT_TRAINING["steps"])
    out = args.out if args.out is not None else (Path("digits-quick") if args.quick else WEIGHTS_DIR)

    torch.set_num_threads(args.threads)
    images, labels = load_split("train")
    losses = []
    start = time.perf_counter()
    unet = train_digits(
        images, labels, steps=steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        on_step=lambda step, loss: losses.append(loss),
    )
    wall = time.perf_counter() - start
    tail = losses[-min(200, len(losses)):]
    record = dict(
        steps=steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, label_dropout=DEFAULT_TRAINING["label_dropout"],
        threads=args.threads, train_images=len(images), final_loss_mean_last_200=round(sum(tail) / len(tail), 5),
        wall_seconds=round(wall, 1), torch=torch.__version__, parameters=sum(p.numel() for p in unet.parameters()),
        command=command_line(),
    )
    weights_path, config_path = save_digits_model(unet, out, training=record)
    print(f"trained {record['parameters']:,} parameters for {steps} steps in {wall / 60:.1f} min; "
          f"mean loss over the last {len(tail)} steps {record['final_loss_mean_last_200']}")
    print(f"wrote {weights_path} and {config_path}")


if __name__ == "__main__":
    main()
