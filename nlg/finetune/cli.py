"""The command line of :mod:`nlg.finetune`: ``python -m nlg.finetune --model M --data_dir D --output_dir O [options]``.

Every option is a field of :class:`~nlg.finetune.FinetuneConfig` with the same name.  Bad input (an unknown
option, a bad number, an empty folder, images without captions, a non-SD model) ends with one line
``nlg.finetune: error: ...`` naming the problem, before any training starts and before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..training import PRESETS, SAMPLER_ALIASES
from ..training.min_snr import PREDICTION_TYPES
from .config import MIXED_PRECISION, QUICK_OVERRIDES, FinetuneConfig

__all__ = ["build_parser", "config_from_args", "main"]

_HELP = {
    "model": "diffusers SD 1.x/2.x pipeline folder or Hub id, or 'shapes' (the embedded model)",
    "data_dir": "images with captions: metadata.jsonl (file_name, text) or a .txt beside each image",
    "output_dir": "where the LoRA, training_args.json and the resumable checkpoint go; rerunning the same "
                  "command resumes automatically from output_dir/checkpoint.pt",
    "resolution": "training side in pixels (default: the UNet's sample_size x the VAE scale factor)",
    "rank": "LoRA rank r (default 4)",
    "alpha": "LoRA alpha; the update is scaled by alpha/r (default: rank)",
    "train_text_encoder": "also train a LoRA on the text encoder's attention",
    "steps": "optimiser steps (default 500)",
    "lr": "peak learning rate, warm-up + cosine (default 1e-4)",
    "warmup_steps": "linear warm-up steps (default 5%% of steps)",
    "batch_size": "images per micro-batch (default 1)",
    "gradient_accumulation_steps": "micro-batches per optimiser step (default 1)",
    "max_grad_norm": "clip the gradient norm to this (default 1.0)",
    "seed": "seed of the LoRA initialisation and of every draw (default 0)",
    "checkpoint_every": "steps between resumable checkpoints (default 100)",
    "save_every": "also save the LoRA every N steps into output_dir/step-N",
    "caption_dropout": "probability of training a caption as the empty prompt (default 0)",
    "timestep_type": "timestep sampler: " + ", ".join(sorted(SAMPLER_ALIASES)) + " (default uniform)",
    "timestep_shift": "s of u -> s u / (1 + (s-1) u); default 3 for 'shift', else none",
    "logit_mean": "mean of the logit-normal sampler (default 0)",
    "logit_std": "std of the logit-normal sampler (default 1)",
    "offset_noise": "offset-noise strength s: noise = eps + s delta (default 0: off)",
    "offset_noise_random_strength": "scale the offset strength by U(0, 1) per sample",
    "pyramid_noise": "pyramid-noise iterations (default 0: off)",
    "pyramid_discount": "pyramid-noise discount per level (default 0.4)",
    "probabilistic_offset": "probabilistic offset noise preset: " + ", ".join(PRESETS),
    "probabilistic_offset_strength": "psi_T of the probabilistic offset preset (default 0.1)",
    "min_snr_gamma": "Min-SNR-gamma loss weights, e.g. 5 (default: off)",
    "zero_terminal_snr": "rescale the betas to zero terminal SNR (v-prediction models only)",
    "prediction_type": "train this target instead of the model's: " + ", ".join(PREDICTION_TYPES),
    "mixed_precision": "accelerate mixed precision: " + ", ".join(MIXED_PRECISION) + " (default no)",
    "local_files_only": "never reach the Hugging Face Hub",
}
_CHOICES = {"timestep_type": sorted(SAMPLER_ALIASES), "probabilistic_offset": list(PRESETS),
            "prediction_type": list(PREDICTION_TYPES), "mixed_precision": list(MIXED_PRECISION)}
_REQUIRED = ("model", "data_dir", "output_dir")


def _type_of(field: dataclasses.Field) -> Any:
    annotation = str(field.type)
    if "Path" in annotation:
        return Path
    if "int" in annotation:
        return int
    if "float" in annotation:
        return float
    return str


def build_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser: one option per :class:`FinetuneConfig` field, plus ``--quick`` and ``--no_progress``."""
    parser = argparse.ArgumentParser(
        prog="nlg.finetune",
        description="LoRA fine-tuning of a Stable Diffusion 1.x/2.x pipeline with noise-level control "
                    "(offset, pyramid and probabilistic offset noise, timestep samplers, Min-SNR, zero terminal SNR).",
    )
    for field in dataclasses.fields(FinetuneConfig):
        flag = f"--{field.name}"
        if field.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=None, help=_HELP[field.name])
        else:
            parser.add_argument(flag, type=_type_of(field), default=None, choices=_CHOICES.get(field.name),
                                required=field.name in _REQUIRED, help=_HELP[field.name])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK_OVERRIDES.items())
                             + " unless given explicitly")
    parser.add_argument("--no_progress", action="store_true", help="no tqdm bar (for log files)")
    return parser


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The :class:`FinetuneConfig` of parsed arguments (``--quick`` fills what was not given)."""
    given: Dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)
                             if getattr(args, f.name) is not None}
    if args.quick:
        given = {**QUICK_OVERRIDES, **given}
    return FinetuneConfig(**given)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Parse, check everything (options, data, model), then train; returns the written metadata."""
    from .train import finetune, prepare

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        prepared = prepare(config)
    except (TypeError, ValueError) as err:
        parser.error(str(err).splitlines()[0])
    meta = finetune(config, prepared=prepared, progress=not args.no_progress)
    print(f"wrote {config.output_dir / meta['lora_weights']} ({meta['trainable_parameters']} LoRA parameters, "
          f"{meta['wall_minutes']} min); load it with pipe.load_lora_weights({str(config.output_dir)!r})", flush=True)
    return meta
