"""Models for ``python -m benchmarks.nlg_cost``: the shipped digits model and a cached flow-matching digits model.

The flow model is the one ``python -m benchmarks.flow_digits`` trains (its ``flow_batch``, seed 0, 1 thread),
saved once to ``outputs/nlg_cost/flow_<steps>/`` (git-ignored) so a killed or repeated run reuses it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Tuple

import torch

from nlg.digits import load_digits_model, load_split, save_digits_model, train_digits
from nlg.digits.model import WEIGHTS_DIR, WEIGHTS_NAME
from nlg.utils.io import sha256_file

from .flow_digits import flow_batch

CACHE = Path(__file__).resolve().parents[1] / "outputs" / "nlg_cost"

__all__ = ["CACHE", "weights_sha256", "flow_model", "digits_weights_dir"]


def weights_sha256(directory: Path) -> str:
    """Full SHA-256 of ``directory/digits_unet.safetensors``."""
    return sha256_file(Path(directory) / WEIGHTS_NAME)


def digits_weights_dir() -> Path:
    """The folder of the shipped digits weights."""
    return Path(WEIGHTS_DIR)


def flow_model(train_steps: int, cache: Path = CACHE) -> Tuple[Any, Path]:
    """The flow-matching digits UNet trained ``train_steps`` steps (seed 0), from the cache or trained and cached.

    Returns ``(unet, weights_folder)``.  Training writes to a temporary folder and renames it, so a
    killed run never leaves half-written weights.
    """
    folder = Path(cache) / f"flow_{train_steps}"
    if not (folder / WEIGHTS_NAME).is_file():
        images, labels = load_split("train")
        start = time.perf_counter()
        unet = train_digits(images, labels, steps=train_steps, seed=0, batch_fn=flow_batch, progress=False)
        print(f"trained the flow model for {train_steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
        tmp = folder.with_name(folder.name + ".partial")
        save_digits_model(unet, tmp, training=dict(steps=train_steps, seed=0, objective="flow matching (benchmarks/flow_digits.py flow_batch)"))
        tmp.rename(folder)
    unet, _, _ = load_digits_model(folder)
    return unet.eval(), folder


if __name__ == "__main__":
    torch.set_num_threads(1)
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    _, path = flow_model(steps)
    print(path, weights_sha256(path))
