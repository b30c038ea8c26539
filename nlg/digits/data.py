"""scikit-learn's bundled 8×8 digits, scaled to [-1, 1], with a fixed train / held-out split.

``sklearn.datasets.load_digits`` ships 1797 images of 8×8 pixels with integer intensities 0…16 (no
download).  Pixels map to the model's range by ``x = v / 8 − 1``.  The held-out split is fixed by a
rule rather than a random draw, so it never changes across library versions: within each class, in
dataset order, every 5th image (positions 0, 5, 10, …) is held out; that leaves 1433 training and
364 held-out images, 35–37 per class.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["NUM_CLASSES", "NULL_CLASS", "IMAGE_SIZE", "check_image_size", "HELD_OUT_EVERY", "SPLITS", "load_split", "to_model_range", "to_intensity"]

#: Digits 0–9.
NUM_CLASSES = 10
#: The class-free label used for classifier-free guidance (label dropout, the "negative prompt").
NULL_CLASS = 10
IMAGE_SIZE = 8
#: Within each class, every ``HELD_OUT_EVERY``-th image (in dataset order) is held out.
HELD_OUT_EVERY = 5
SPLITS = ("train", "test", "all")
_MAX_INTENSITY = 16.0


def check_image_size(height: Optional[int], width: Optional[int]) -> None:
    """The model is trained at 8×8 only: accept ``None`` or 8 for ``height`` and ``width``."""
    for name, value in (("height", height), ("width", width)):
        if value is not None and value != IMAGE_SIZE:
            raise ValueError(f"{name} must be {IMAGE_SIZE} (or None) for the digits model, got {value!r}")


def to_model_range(intensity: Tensor) -> Tensor:
    """Map sklearn intensities 0…16 to the model's range: ``x = v / 8 − 1`` ∈ [-1, 1]."""
    return intensity / (_MAX_INTENSITY / 2) - 1.0


def to_intensity(images: Tensor) -> Tensor:
    """Map model-range images to [0, 1] (0 = background), e.g. for plotting; clamps first."""
    return (images.clamp(-1.0, 1.0) + 1.0) / 2.0


@lru_cache(maxsize=1)
def _load_all() -> Tuple[Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = to_model_range(torch.tensor(bunch.images, dtype=torch.float32)).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    held_out = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(NUM_CLASSES):
        positions = torch.nonzero(labels == digit).flatten()
        held_out[positions[::HELD_OUT_EVERY]] = True
    return images, labels, held_out


def load_split(split: str = "train") -> Tuple[Tensor, Tensor]:
    """Load one split of the digits.

    Args:
        split (`str`, defaults to ``"train"``):
            ``"train"`` (1433 images: what the diffusion model and the evaluator learn from),
            ``"test"`` (364 held-out images: the reference for Fréchet distance and diversity), or
            ``"all"`` (all 1797).

    Returns:
        ``(images, labels)``: float32 images of shape ``(N, 1, 8, 8)`` in [-1, 1] and int64 labels
        ``(N,)`` in 0…9, in dataset order.  Fresh tensors on every call.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images, labels, held_out = _load_all()
    if split == "all":
        keep = torch.ones_like(held_out)
    else:
        keep = held_out if split == "test" else ~held_out
    return images[keep].clone(), labels[keep].clone()
