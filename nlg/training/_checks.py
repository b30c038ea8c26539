"""Shared argument checks and random draws for :mod:`nlg.training`.

Every random draw here takes a ``torch.Generator`` or a list of them, one per sample: with a list,
sample ``i`` is drawn from ``generator[i]`` alone, so its noise does not depend on the batch it sits
in.  Draws happen on the generator's device and are then moved to the requested device.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Union

import torch
from torch import Tensor

GeneratorLike = Union[torch.Generator, List[torch.Generator], None]


def check_latents(latents: Any, name: str = "latents") -> Tensor:
    """Raise unless ``latents`` is a floating-point tensor of shape (B, C, H, W)."""
    if not isinstance(latents, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(latents).__name__}")
    if latents.ndim != 4:
        raise ValueError(f"{name} must have rank 4 (B, C, H, W), got shape {tuple(latents.shape)}")
    if not latents.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {latents.dtype}")
    if latents.device.type == "meta":
        raise ValueError(f"{name} are on the meta device (shape only, no data): move them to a real device")
    if latents.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(latents.shape)}")
    return latents


def check_timesteps(timesteps: Any, num_train_timesteps: int, name: str = "timesteps") -> Tensor:
    """Raise unless ``timesteps`` is a tensor (or sequence) of integer timesteps in ``[0, num_train_timesteps)``."""
    try:
        timesteps = torch.as_tensor(timesteps)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor of integer timesteps, got {type(timesteps).__name__}") from None
    if timesteps.is_complex() or timesteps.dtype == torch.bool or timesteps.device.type == "meta":
        raise TypeError(f"{name} must be a tensor of integer timesteps, got {timesteps.dtype} on {timesteps.device}")
    if timesteps.numel() and (
        not bool(torch.isfinite(timesteps).all()) or timesteps.min() < 0 or timesteps.max() >= num_train_timesteps
    ):
        raise ValueError(f"{name} must lie in [0, {num_train_timesteps - 1}]")
    return timesteps


def check_number(value: Any, name: str, *, minimum: Optional[float] = 0.0, strict: bool = False) -> float:
    """Raise unless ``value`` is a finite real number ≥ ``minimum`` (> if ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return float(value)


def check_int(value: Any, name: str, *, minimum: int = 0) -> int:
    """Raise unless ``value`` is an int ≥ ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def alphas_cumprod_of(scheduler: Any) -> Tensor:
    """The scheduler's ᾱ_t table as float64 on the CPU; a ``TypeError`` naming ``scheduler`` if it has none."""
    table = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(table, Tensor) or table.ndim != 1:
        raise TypeError(
            f"scheduler must be a DDPM-family diffusers scheduler with an `alphas_cumprod` tensor "
            f"(e.g. DDPMScheduler, DDIMScheduler); {type(scheduler).__name__} has none"
        )
    return table.detach().to("cpu", torch.float64)


def check_generator(generator: GeneratorLike, batch_size: int) -> None:
    """Raise unless ``generator`` is None, a generator, or a list of ``batch_size`` generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch_size:
            raise ValueError(f"generator is a list of {len(generator)} generators but the batch holds {batch_size} samples")
        if not all(isinstance(g, torch.Generator) for g in generator):
            raise TypeError("generator must be a torch.Generator or a list of them")
        return
    raise TypeError(f"generator must be a torch.Generator, a list of them, or None; got {type(generator).__name__}")


def draw(
    kind: str,
    shape: Sequence[int],
    generator: GeneratorLike,
    *,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``torch.randn`` (``kind="normal"``) or ``torch.rand`` (``kind="uniform"``) of ``shape``.

    With a list of generators, ``shape[0]`` is the batch and row ``i`` comes from ``generator[i]``.
    """
    fn = {"normal": torch.randn, "uniform": torch.rand}[kind]
    shape = tuple(int(s) for s in shape)
    if isinstance(generator, (list, tuple)):
        check_generator(generator, shape[0])
        rows = [fn((1,) + shape[1:], generator=g, device=g.device, dtype=dtype).to(device) for g in generator]
        return torch.cat(rows) if rows else torch.empty(shape, dtype=dtype, device=device)
    source = generator.device if generator is not None else device
    return fn(shape, generator=generator, device=source, dtype=dtype).to(device)
