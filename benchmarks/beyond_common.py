"""Shared pieces of the "beyond the paper" digits benchmarks: model loading, directions, img2img sampling, results.

Every benchmark uses the shipped digits model, per-sample generators (an image never depends on
its batch) and writes ``benchmarks/results/<name>.csv`` and ``.md`` (:func:`benchmarks.common.write_results`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from nlg.autoguidance import guidance_direction, unet_epsilon
from nlg.core.refine import DirectionFn
from nlg.digits import NULL_CLASS, DigitsPipeline, load_split
from nlg.digits.evaluator import frechet_distance, gaussian_stats
from nlg.digits.model import WEIGHTS_DIR, WEIGHTS_NAME
from nlg.utils.io import sha256_file

from .common import command as module_command
from .common import write_results

__all__ = ["load_pipe", "cfg_digits_direction", "sample_from", "unconditional_fd", "command", "write_results"]


def load_pipe(weights: Optional[str]) -> DigitsPipeline:
    """The shipped digits model (or the weights folder given), sampled with its default DDIM."""
    return DigitsPipeline.from_pretrained(weights)


def cfg_digits_direction(pipe: DigitsPipeline, labels: Tensor, reference_timestep: Optional[int] = None) -> DirectionFn:
    """NLG's CFG direction ``ε(n|c) − ε(n|∅)`` for the digits UNet, built from :mod:`nlg.autoguidance`.

    Unlike the digits adapter it takes ``index``, so adaptive stopping can drop finished samples.
    """
    null = torch.full_like(labels, NULL_CLASS)
    cond = unet_epsilon(pipe.unet, pipe.scheduler, reference_timestep=reference_timestep, class_labels=labels)
    uncond = unet_epsilon(pipe.unet, pipe.scheduler, reference_timestep=reference_timestep, class_labels=null)
    return guidance_direction(cond, uncond)


@torch.inference_mode()
def sample_from(
    pipe: DigitsPipeline, sample: Tensor, timesteps: Tensor, labels: Tensor, guidance_scale: float, generator: Any
) -> Tensor:
    """Run the pipeline's sampler over ``timesteps`` from ``sample`` (img2img: from ``x_{t_s}``)."""
    null = torch.full_like(labels, NULL_CLASS)
    step_kwargs = {"generator": generator} if pipe._step_takes_generator else {}
    for t in timesteps:
        eps = pipe.guided_epsilon(pipe.scheduler.scale_model_input(sample, t), t, labels, null, guidance_scale)
        sample = pipe.scheduler.step(eps, t, sample, **step_kwargs).prev_sample
    return sample.clamp(-1.0, 1.0)


def unconditional_fd(images: Tensor) -> float:
    """Pixel Fréchet distance of ``images`` to all held-out real digits (the unconditional FID analogue)."""
    real, _ = load_split("test")
    pixels = images.detach().double().clamp(-1, 1).flatten(1).numpy()
    return frechet_distance(*gaussian_stats(pixels), *gaussian_stats(real.double().flatten(1).numpy()))


def command() -> str:
    """Markdown: the command that produced the results (without ``--weights``) and the SHA-256 of the weights used."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg == "--weights":
            skip = not skip
            continue
        args.append(arg)
    weights = Path(sys.argv[sys.argv.index("--weights") + 1]) if "--weights" in sys.argv else WEIGHTS_DIR
    digest = sha256_file(weights / WEIGHTS_NAME)[:16]
    return f"`{module_command(Path(sys.argv[0]).stem, args)}` (digits weights sha256 {digest}…)"
