"""Pyramid (multi-resolution) noise (Whitaker 2023, https://wandb.ai/johnowhitaker/multires_noise/reports/Multi-Resolution-Noise-for-Diffusion-Model-Training--VmlldzozNjYyOTU2).

Plain ε has almost no power at low spatial frequencies; pyramid noise adds coarser and coarser
Gaussian fields, bilinearly upsampled, with geometrically decaying weights::

    noise ← ε
    for i = 1 … iterations:
        r ~ U(2, 4)
        (h, w) ← (max(1, ⌊H / rⁱ⌋), max(1, ⌊W / rⁱ⌋))
        noise ← noise + discountⁱ · upsample_bilinear(N(0, I) of shape (B, C, h, w), (H, W))
        stop once h = 1 or w = 1
    noise ← noise / std(noise)

Here the std is taken per sample (over C, H, W), so a sample's noise does not depend on its batch.
With one generator, r is shared by the batch at each level (as in Whitaker's recipe); with a list of
generators every sample draws its own r.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.types import GeneratorLike
from ._checks import check_generator, check_int, check_latents, check_number, draw

__all__ = ["pyramid_noise"]


def pyramid_noise(
    latents: Tensor,
    *,
    iterations: int = 6,
    discount: float = 0.4,
    generator: GeneratorLike = None,
    noise: Optional[Tensor] = None,
) -> Tensor:
    r"""Multi-resolution noise shaped like ``latents``, normalised to unit std per sample.

    Args:
        latents (`torch.Tensor`):
            Clean latents of shape (B, C, H, W); only their shape, dtype and device are used.
        iterations (`int`, defaults to 6):
            Number of coarser levels to add (fewer if a side reaches 1 first).  With 0 the result is
            plain ε, unnormalised.
        discount (`float`, defaults to 0.4):
            Weight decay per level, ≥ 0: level i is scaled by discountⁱ.  kohya's scripts suggest
            0.1–0.3 with 6–10 iterations; Whitaker's write-up used up to 0.9.
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
            Source of every draw; a list gives one generator per sample.  Draw order (per
            generator): ε (unless ``noise`` is given), then per level r and the coarse field.
        noise (`torch.Tensor`, *optional*):
            Base fine-scale noise instead of a fresh ε.

    Returns:
        `torch.Tensor`: the noise, same shape, dtype and device as ``latents``.
    """
    check_latents(latents)
    iterations = check_int(iterations, "iterations")
    discount = check_number(discount, "discount")
    check_generator(generator, latents.shape[0])
    if iterations > 0 and latents[0].numel() < 2:
        raise ValueError(f"latents need >= 2 values per sample to normalise pyramid noise, got shape {tuple(latents.shape)}")
    if noise is not None and not isinstance(noise, Tensor):
        raise TypeError(f"noise must be a torch.Tensor or None, got {type(noise).__name__}")
    if noise is not None and tuple(noise.shape) != tuple(latents.shape):
        raise ValueError(f"noise must have the shape of latents {tuple(latents.shape)}, got {tuple(noise.shape)}")
    if isinstance(generator, (list, tuple)):
        return torch.cat(
            [
                pyramid_noise(
                    latents[i : i + 1],
                    iterations=iterations,
                    discount=discount,
                    generator=g,
                    noise=None if noise is None else noise[i : i + 1],
                )
                for i, g in enumerate(generator)
            ]
        )
    b, c, height, width = latents.shape
    kw = dict(device=latents.device, dtype=latents.dtype)
    if noise is None:
        noise = draw("normal", (b, c, height, width), generator, **kw)
    if iterations == 0:
        return noise
    for i in range(1, iterations + 1):
        r = 2.0 + 2.0 * float(draw("uniform", (1,), generator, dtype=latents.dtype))
        h, w = max(1, int(height / r**i)), max(1, int(width / r**i))
        coarse = draw("normal", (b, c, h, w), generator, **kw)
        try:
            weight = discount**i
        except OverflowError:
            raise ValueError(f"discount={discount} overflows at level {i}: use a discount <= 1") from None
        noise = noise + weight * F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
        if h == 1 or w == 1:
            break
    return noise / noise.std(dim=(1, 2, 3), keepdim=True)
