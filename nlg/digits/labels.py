"""Class labels as prompts: validation, per-image expansion, and per-sample generators.

For the digits model the class label plays the role of the prompt and the null class (10) the role
of the negative prompt.  A "negative label" may also be a digit ("anything but a 3").
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .data import NULL_CLASS, NUM_CLASSES

__all__ = ["Labels", "as_label_tensor", "encode_labels", "per_sample_generators"]

Labels = Union[int, Sequence[int], Tensor]


def as_label_tensor(labels: Any, *, name: str = "labels", allow_null: bool = False) -> Tensor:
    """Turn an int, a sequence of ints or a 1-D integer tensor into a LongTensor, checking every value.

    Args:
        labels (`int`, `Sequence[int]` or `torch.Tensor`): the digits.
        name (`str`, defaults to ``"labels"``): the parameter name used in error messages.
        allow_null (`bool`, defaults to False): also accept the null class 10.
    """
    if isinstance(labels, Tensor):
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"{name} must hold integers, got a tensor of dtype {labels.dtype}")
        if labels.ndim > 1:
            raise ValueError(f"{name} must be 0- or 1-dimensional, got shape {tuple(labels.shape)}")
        values = labels.detach().to("cpu", torch.long).reshape(-1)
    elif isinstance(labels, (int, np.integer)) and not isinstance(labels, bool):
        values = torch.tensor([int(labels)], dtype=torch.long)
    elif isinstance(labels, (list, tuple)):
        bad = [v for v in labels if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if bad:
            raise TypeError(f"{name} must be ints (digits), got {bad[0]!r} of type {type(bad[0]).__name__}")
        values = torch.tensor([int(v) for v in labels], dtype=torch.long)
    else:
        raise TypeError(f"{name} must be an int, a list of ints or an integer tensor, got {type(labels).__name__}")
    if values.numel() == 0:
        raise ValueError(f"{name} is empty")
    top = NULL_CLASS if allow_null else NUM_CLASSES - 1
    outside = values[(values < 0) | (values > top)]
    if outside.numel():
        hint = "" if allow_null else f" (the null class {NULL_CLASS} is only a negative label)"
        raise ValueError(f"{name} must be digits in 0…{top}, got {int(outside[0])}{hint}")
    return values


def encode_labels(
    labels: Labels, negative_labels: Optional[Labels] = None, *, num_images_per_prompt: int = 1
) -> Tuple[Tensor, Tensor]:
    """Validate and expand labels the way a text pipeline expands prompts.

    Args:
        labels (`int`, `Sequence[int]` or `torch.Tensor`): the requested digits 0…9 ("prompts").
        negative_labels (*optional*): one label per prompt, or one for all, in 0…10; defaults to the
            null class 10 ("empty negative prompt").
        num_images_per_prompt (`int`, defaults to 1): each label is repeated this many times, adjacently.

    Returns:
        ``(labels, negative_labels)``, two LongTensors of length ``len(labels) · num_images_per_prompt``.
    """
    if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be an int >= 1, got {num_images_per_prompt!r}")
    positive = as_label_tensor(labels)
    if negative_labels is None:
        negative = torch.full_like(positive, NULL_CLASS)
    else:
        negative = as_label_tensor(negative_labels, name="negative_labels", allow_null=True)
        if negative.numel() == 1:
            negative = negative.expand(positive.numel()).clone()
        elif negative.numel() != positive.numel():
            raise ValueError(f"negative_labels has {negative.numel()} entries but labels has {positive.numel()}")
    return (
        positive.repeat_interleave(num_images_per_prompt),
        negative.repeat_interleave(num_images_per_prompt),
    )


def per_sample_generators(seed: int, count: int, *, start: int = 0) -> List[torch.Generator]:
    """One CPU generator per sample, seeded from ``(seed, index)``, so a sample never depends on its batch.

    Seeds come from ``numpy.random.SeedSequence([seed, index])``, which is stable across versions.

    Args:
        seed (`int`): the run's seed.
        count (`int`): number of generators.
        start (`int`, defaults to 0): index of the first sample (to continue a run in chunks).
    """
    for name, value in (("seed", seed), ("count", count), ("start", start)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    generators = []
    for index in range(start, start + count):
        state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
        generators.append(torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1])))
    return generators
