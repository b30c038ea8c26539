r"""The parts one step of Noise Level Guidance is built from, each a small public function.

Noise Level Guidance (NLG), Mannering, Huang and Prugel-Bennett 2025, https://arxiv.org/abs/2509.13936,
Alg. 1, moves the initial latent ``n`` (shape ``(B, ...)``, ``D`` entries per sample) against a
guidance direction ``d``; with per-sample norms, one step is

.. math::
    n \leftarrow \Pi\bigl(n - \eta\,\mathrm{clip}_\tau(d) + \sqrt{\lambda}\,z\bigr), \qquad
    \mathrm{clip}_\tau(d) = d \min\!\left(1, \frac{\tau}{\lVert d\rVert_2}\right), \qquad
    \Pi(x) = x\,\frac{\sqrt{D}}{\lVert x\rVert_2},

with ``z ~ N(0, I)`` and ``Π`` optionally preceded by clamping to ``[−3, 3]`` (boundary control).
:func:`nlg.refine_noise` runs ``K`` of these steps; these parts let other schedules (a Heun
predictor-corrector, a varying ``η``) reuse exactly the same arithmetic, as k-diffusion's samplers
share ``to_d`` and ``get_ancestral_step``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..utils.types import GeneratorLike

__all__ = ["BOUNDARY", "per_sample_norm", "clip_direction", "project_to_sphere", "radial_share", "nlg_step", "randn_like"]

#: NLG's boundary control clamps every latent entry to this interval (paper, Sec. 3).
BOUNDARY = 3.0


def per_sample_norm(x: Tensor) -> Tensor:
    """``‖x_b‖₂`` over every axis but the first, shaped ``(B, 1, ..., 1)`` to broadcast against ``x``."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))


def clip_direction(direction: Tensor, clip_threshold: Optional[float], norm: Optional[Tensor] = None) -> Tensor:
    r"""Norm clipping of the guidance direction, per sample: :math:`d \min(1, \tau / \lVert d\rVert_2)`.

    NLG (arXiv 2509.13936, Alg. 1) bounds each step by ``τ`` (the paper: 0.5) so that one large
    direction cannot throw the latent off the data manifold.

    Args:
        direction (`torch.Tensor`): ``d``, shape ``(B, ...)``.
        clip_threshold (`float`, *optional*): ``τ`` > 0; ``None`` returns ``direction`` unchanged.
        norm (`torch.Tensor`, *optional*): ``‖d‖₂`` as :func:`per_sample_norm` returns it, if already known.

    Example:
        >>> import torch
        >>> clip_direction(torch.tensor([[3.0, 4.0], [0.3, 0.0]]), 1.0)
        tensor([[0.6000, 0.8000],
                [0.3000, 0.0000]])
    """
    if clip_threshold is None:
        return direction
    norm = per_sample_norm(direction) if norm is None else norm
    return direction * (clip_threshold / norm).clamp(max=1.0)


def project_to_sphere(latents: Tensor) -> Tensor:
    r"""Rescale each sample onto the sphere of radius :math:`\sqrt{D}`: :math:`x\,\sqrt{D}/\lVert x\rVert_2`.

    A ``D``-dimensional standard Gaussian has norm close to ``√D``; NLG (arXiv 2509.13936, Alg. 1)
    keeps the refined latent there so that the sampler still sees unit-variance noise.

    Args:
        latents (`torch.Tensor`): ``x``, shape ``(B, ...)``, no all-zero sample.

    Example:
        >>> import torch
        >>> project_to_sphere(torch.tensor([[3.0, 4.0, 0.0, 0.0]]))   # √D = 2
        tensor([[1.2000, 1.6000, 0.0000, 0.0000]])
    """
    return latents * (math.sqrt(latents[0].numel()) / per_sample_norm(latents))


def radial_share(direction: Tensor, latents: Tensor) -> Tensor:
    r"""Per sample, the cosine between the step ``−d`` and the latent: :math:`-\langle d, n\rangle / (\lVert d\rVert_2 \lVert n\rVert_2)`.

    The share of a step that :func:`project_to_sphere` cancels; the ``"radial"`` stopping rule
    (:class:`nlg.core.stopping.Radial`) thresholds it.  Shape ``(B,)``.
    """
    d, n = direction.flatten(1), latents.flatten(1)
    return -(d * n).sum(dim=1) / (d.norm(dim=1) * n.norm(dim=1)).clamp_min(1e-12)


def randn_like(x: Tensor, generator: GeneratorLike) -> Tensor:
    """Standard normal noise shaped like ``x``; with a list of generators, sample ``b`` from ``generator[b]`` alone.

    So a sample's noise does not depend on the batch it sits in.  Draws happen on the generator's
    device and are moved to ``x``'s device.
    """
    if isinstance(generator, (list, tuple)):
        draws = [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype).to(x.device) for g in generator]
        return torch.stack(draws)
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def nlg_step(
    latents: Tensor,
    direction: Tensor,
    *,
    step_size: float = 1.0,
    clip_threshold: Optional[float] = 0.5,
    noise: Optional[Tensor] = None,
    noise_level: float = 0.001,
    boundary_control: bool = False,
    normalize_latents: bool = True,
    norm: Optional[Tensor] = None,
) -> Tensor:
    r"""One step of NLG (arXiv 2509.13936, Alg. 1): :math:`\Pi(n - \eta\,\mathrm{clip}_\tau(d) + \sqrt{\lambda}\,z)`.

    Args:
        latents (`torch.Tensor`): ``n``, shape ``(B, ...)``.
        direction (`torch.Tensor`): ``d`` of the same shape, before clipping.
        step_size (`float`, defaults to 1.0): ``η``.
        clip_threshold (`float`, *optional*, defaults to 0.5): ``τ``; ``None`` disables clipping.
        noise (`torch.Tensor`, *optional*): ``z`` of the latents' shape; ``None`` adds no noise.
        noise_level (`float`, defaults to 0.001): ``λ``, the variance of the added noise.
        boundary_control (`bool`, defaults to False): clamp to ``[−3, 3]`` before ``Π``.
        normalize_latents (`bool`, defaults to True): apply ``Π`` (:func:`project_to_sphere`).
        norm (`torch.Tensor`, *optional*): ``‖d‖₂`` per sample, if already known.

    Example:
        >>> import torch
        >>> nlg_step(torch.ones(1, 4), torch.tensor([[1.0, 1.0, -1.0, -1.0]]), normalize_latents=False)
        tensor([[0.7500, 0.7500, 1.2500, 1.2500]])
    """
    x = latents - step_size * clip_direction(direction, clip_threshold, norm)
    if noise is not None and noise_level > 0:
        x = x + math.sqrt(noise_level) * noise
    if boundary_control:
        x = x.clamp(-BOUNDARY, BOUNDARY)
    return project_to_sphere(x) if normalize_latents else x
