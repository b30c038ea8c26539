"""Training-specific argument checks and random draws for :mod:`nlg.training` (the general checks are :mod:`nlg.utils.checks`).

Every random draw here takes a ``torch.Generator`` or a list of them, one per sample: with a list,
sample ``i`` is drawn from ``generator[i]`` alone, so its noise does not depend on the batch it sits
in.  Draws happen on the generator's device and are then moved to the requested device.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch
from torch import Tensor

from ..utils.checks import check_generator as _check_generator
from ..utils.checks import check_int, check_number, check_tensor
from ..utils.types import GeneratorLike

__all__ = ["check_latents", "check_timesteps", "alphas_cumprod_of", "draw", "check_generator", "check_int", "check_number"]


def check_latents(latents: Any, name: str = "latents") -> Tensor:
    """Raise unless ``latents`` is a floating-point tensor of shape (B, C, H, W) (:func:`nlg.utils.checks.check_tensor`)."""
    return check_tensor(latents, name, rank=4, finite=False)


def check_generator(generator: GeneratorLike, batch_size: int) -> GeneratorLike:
    """:func:`nlg.utils.checks.check_generator` for training, where a tuple of generators is accepted too."""
    return _check_generator(generator, batch_size, allow_tuple=True)


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


def alphas_cumprod_of(scheduler: Any) -> Tensor:
    """The scheduler's ᾱ_t table as float64 on the CPU; a ``TypeError`` naming ``scheduler`` if it has none."""
    table = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(table, Tensor) or table.ndim != 1:
        raise TypeError(
            f"scheduler must be a DDPM-family diffusers scheduler with an `alphas_cumprod` tensor "
            f"(e.g. DDPMScheduler, DDIMScheduler); {type(scheduler).__name__} has none"
        )
    return table.detach().to("cpu", torch.float64)


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
