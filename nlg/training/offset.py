"""Offset noise (Guttenberg 2023, https://www.crosslabs.org/blog/diffusion-with-offset-noise).

A diffusion model trained on ε ~ N(0, I) sees the per-channel mean of its noise shrink like
1/√(H·W), so the image-wide mean of the noisy input barely moves at high noise and the model never
learns to change it: generated images stay close to mid-grey.  Offset noise adds one shared value
per sample and channel:

    noise = ε + s·δ,   ε ~ N(0, I) of shape (B, C, H, W),   δ ~ N(0, I) of shape (B, C, 1, 1)

and the same ``noise`` is used both to build the noisy input and as the regression target.  With
``random_strength`` the strength is drawn per sample, s_b = s·u_b with u_b ~ U(0, 1).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..utils.types import GeneratorLike
from ._checks import check_generator, check_latents, check_number, draw

__all__ = ["offset_noise"]


def offset_noise(
    latents: Tensor,
    *,
    strength: float = 0.0,
    random_strength: bool = False,
    generator: GeneratorLike = None,
    noise: Optional[Tensor] = None,
) -> Tensor:
    r"""Noise shaped like ``latents`` with a per-sample, per-channel offset: ``ε + s·δ``.

    Args:
        latents (`torch.Tensor`):
            Clean latents of shape (B, C, H, W); only their shape, dtype and device are used.
        strength (`float`, defaults to 0.0):
            s ≥ 0.  Guttenberg used 0.1.  With 0 the result is plain ε and no offset is drawn.
        random_strength (`bool`, defaults to `False`):
            Scale the strength per sample by u ~ U(0, 1) (the offset is then s·u·δ).
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
            Source of every draw; a list gives one generator per sample.  Draw order (per generator):
            ε (unless ``noise`` is given), δ, then u.
        noise (`torch.Tensor`, *optional*):
            Base noise to offset instead of a fresh ε, e.g. :func:`~nlg.training.pyramid_noise`.

    Example:
        With a zero base noise only the offset ``s·δ`` remains, one value per sample and channel:

        >>> import torch
        >>> from nlg.training import offset_noise
        >>> latents = torch.zeros(2, 3, 4, 4)
        >>> n = offset_noise(latents, strength=0.1, noise=torch.zeros_like(latents),
        ...                  generator=torch.Generator().manual_seed(0))
        >>> n.shape
        torch.Size([2, 3, 4, 4])
        >>> delta = torch.randn(2, 3, 1, 1, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(n, (0.1 * delta).expand(2, 3, 4, 4))
        True

    Returns:
        `torch.Tensor`: the noise, same shape, dtype and device as ``latents``.
    """
    check_latents(latents)
    strength = check_number(strength, "strength")
    check_generator(generator, latents.shape[0])
    b, c, h, w = latents.shape
    kw = dict(device=latents.device, dtype=latents.dtype)
    if noise is not None and not isinstance(noise, Tensor):
        raise TypeError(f"noise must be a torch.Tensor or None, got {type(noise).__name__}")
    if noise is None:
        noise = draw("normal", (b, c, h, w), generator, **kw)
    elif tuple(noise.shape) != tuple(latents.shape):
        raise ValueError(f"noise must have the shape of latents {tuple(latents.shape)}, got {tuple(noise.shape)}")
    elif not bool(torch.isfinite(noise).all()):
        raise ValueError("noise contains NaN or Inf")
    if strength == 0.0:
        return noise
    delta = draw("normal", (b, c, 1, 1), generator, **kw)
    scale = strength * draw("uniform", (b, 1, 1, 1), generator, **kw) if random_strength else strength
    return noise + scale * delta
