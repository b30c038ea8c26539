"""The one family of argument checks every layer uses.

Each check raises a ``TypeError`` (wrong kind of value) or a ``ValueError`` (right kind, bad value)
whose message starts with the parameter's name, and returns the value it checked, so a caller can
write ``self.steps = check_int(steps, "steps", minimum=1)``.  ``bool`` is never accepted as a number.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from .types import GeneratorLike

__all__ = ["check_bool", "check_int", "check_number", "check_generator", "check_tensor"]


def check_bool(value: Any, name: str) -> bool:
    """Raise a ``TypeError`` unless ``value`` is a ``bool`` (not 0, 1 or another truthy value); return it.

    Args:
        value (`Any`): the value to check.
        name (`str`): the parameter's name, used in the message.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_int(value: Any, name: str, *, minimum: Optional[int] = 0) -> int:
    """Raise unless ``value`` is an ``int`` (not a ``bool``) ≥ ``minimum``; return it.

    Args:
        value (`Any`): the value to check.
        name (`str`): the parameter's name, used in the message.
        minimum (`int`, *optional*, defaults to 0): the smallest allowed value; ``None`` for no bound.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_number(
    value: Any,
    name: str,
    *,
    minimum: Optional[float] = 0.0,
    strict: bool = False,
    maximum: Optional[float] = None,
    optional: bool = False,
) -> Optional[float]:
    """Raise unless ``value`` is a finite real number in the allowed range; return it as ``float``.

    Args:
        value (`Any`): the value to check.
        name (`str`): the parameter's name, used in the message.
        minimum (`float`, *optional*, defaults to 0.0): the lower bound; ``None`` for none.
        strict (`bool`, defaults to False): bounds are exclusive (``minimum < value < maximum``).
        maximum (`float`, *optional*, defaults to None): the upper bound; ``None`` for none.
        optional (`bool`, defaults to False): ``None`` is allowed (and returned).
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a number or None" if optional else "a number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    below = minimum is not None and (value <= minimum if strict else value < minimum)
    above = maximum is not None and (value >= maximum if strict else value > maximum)
    if below or above:
        bounds = [f"{'>' if strict else '>='} {minimum}"] if minimum is not None else []
        bounds += [f"{'<' if strict else '<='} {maximum}"] if maximum is not None else []
        raise ValueError(f"{name} must be {' and '.join(bounds)}{' (or None)' if optional else ''}, got {value}")
    return float(value)


def check_generator(
    generator: GeneratorLike, batch: Optional[int] = None, *, name: str = "generator", allow_tuple: bool = False
) -> GeneratorLike:
    """Raise unless ``generator`` is ``None``, a ``torch.Generator``, or a list of them holding ``batch``
    generators (any number if ``batch`` is None); return it.

    Args:
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*): the value to check.
        batch (`int`, *optional*): the required list length (the batch size).
        name (`str`, defaults to ``"generator"``): the parameter's name, used in the message.
        allow_tuple (`bool`, defaults to False): also accept a tuple of generators (:mod:`nlg.training`
            does; the pipelines follow diffusers, which takes a list).
    """
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    kinds = (list, tuple) if allow_tuple else list
    if not isinstance(generator, kinds) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"{name} must be a torch.Generator, a list of them, or None; got {type(generator).__name__}")
    if batch is not None and len(generator) != batch:
        raise ValueError(f"{name} is a list of {len(generator)} generators but the batch holds {batch} samples")
    return generator


def check_tensor(
    value: Any,
    name: str = "latents",
    *,
    rank: Optional[int] = None,
    min_rank: int = 0,
    finite: bool = True,
    nonzero_samples: bool = False,
) -> Tensor:
    """Raise unless ``value`` is a non-empty real floating-point tensor with data; return it.

    Args:
        value (`Any`): the value to check.
        name (`str`, defaults to ``"latents"``): the parameter's name, used in the message.
        rank (`int`, *optional*): the exact number of axes required (e.g. 4 for ``(B, C, H, W)``).
        min_rank (`int`, defaults to 0): the least number of axes required.
        finite (`bool`, defaults to True): refuse NaN and Inf.
        nonzero_samples (`bool`, defaults to False): refuse a sample (a slice along the first axis)
            that is all zeros, which cannot be rescaled to norm √D.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if rank is not None and value.ndim != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {tuple(value.shape)}")
    if value.ndim < min_rank:
        raise ValueError(f"{name} must have at least {min_rank} axes (a batch axis first), got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if value.device.type == "meta":
        raise ValueError(f"{name} are on the meta device (shape only, no data): move them to a real device")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contain NaN or Inf")
    if nonzero_samples and not bool((value.flatten(1).abs().amax(dim=1) > 0).all()):
        raise ValueError(f"{name} hold an all-zero sample, which cannot be rescaled to norm √D (normalize_latents=True)")
    return value
