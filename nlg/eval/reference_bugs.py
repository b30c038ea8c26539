"""Emulation of the public reference script's two bugs, to reproduce its numbers exactly (``docs/guides/reproducing.md``).

* σ bug (``--reference_sigma_bug``): the reference converts NLG's v-prediction into ε with
  ``σ = scheduler.sigmas[0]``, read before ``set_timesteps`` on its first batch (:func:`reference_sigma_alpha_bars`,
  :func:`reference_sigma_override`, applied per batch by :func:`alpha_bar_at`);
* noise bug (``--reference_noise_bug``): it adds the same NumPy draw at every NLG step, one row per position in
  a batch (:func:`reference_noise`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import torch

from .captions import Caption

__all__ = ["reference_sigma_alpha_bars", "reference_sigma_override", "reference_noise", "alpha_bar_at"]


def reference_sigma_alpha_bars(scheduler: Any, inference_steps: int) -> Tuple[float, float]:
    """The ᾱ the reference script's v→ε conversion implies on its first batch and on every later one.

    The reference converts NLG's model output with ``σ = scheduler.sigmas[0]`` (``α = 1/√(1+σ²)``,
    i.e. ``ᾱ = 1/(1+σ²)``) instead of the reference timestep's own σ.  Before the first pipeline call
    ``set_timesteps`` has not run, so its first batch reads the *training* schedule's ``sigmas[0]``,
    the σ of t = 0 (≈ 0.029 for Stable Diffusion: ε ≈ v); later batches read the first sampling σ
    (σ of t = 999 for DPM-Solver++ with ``linspace`` spacing, the correct value).

    Returns:
        ``(first_batch, later_batches)`` values of ᾱ.

    Raises:
        ValueError: if the scheduler has no ``sigmas`` before ``set_timesteps``.
    """
    fresh = type(scheduler).from_config(scheduler.config)
    sigmas = getattr(fresh, "sigmas", None)
    if sigmas is None or len(sigmas) == 0:
        raise ValueError(f"{type(scheduler).__name__} has no sigmas before set_timesteps; the reference's σ bug needs "
                         "a scheduler that has them (--scheduler dpm++, the reference's)")
    first = float(sigmas[0])
    fresh.set_timesteps(inference_steps)
    later = float(fresh.sigmas[0])
    return 1.0 / (1.0 + first**2), 1.0 / (1.0 + later**2)


@contextmanager
def alpha_bar_at(scheduler: Any, timestep: Optional[int], alpha_bar: Optional[float]) -> Iterator[None]:
    """Within the block, ``scheduler.alphas_cumprod[timestep]`` reads ``alpha_bar`` (nothing if None)."""
    if alpha_bar is None:
        yield
        return
    original = scheduler.alphas_cumprod
    patched = original.clone()
    patched[len(original) - 1 if timestep is None else timestep] = alpha_bar
    scheduler.alphas_cumprod = patched
    try:
        yield
    finally:
        scheduler.alphas_cumprod = original


def reference_sigma_override(pipe: Any, selection: Sequence[Caption], *, inference_steps: int,
                             batch_size: int) -> Callable[[int], float]:
    """Caption id → the ᾱ the reference's conversion implies: its first batch (the first ``batch_size``
    selected captions) reads ``sigmas[0]`` before ``set_timesteps``, later batches after it.

    Args:
        pipe: the pipeline; its scheduler must predict ``v_prediction``.
        selection (`Sequence[Caption]`): every caption of the run, in the reference's order.
        inference_steps (`int`): sampler steps N.
        batch_size (`int`): the reference's images per batch.

    Raises:
        ValueError: if the model does not predict v.
    """
    prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
    if prediction_type != "v_prediction":
        raise ValueError(f"--reference_sigma_bug reproduces the reference's v-prediction conversion; "
                         f"the model predicts {prediction_type!r}")
    first, later = reference_sigma_alpha_bars(pipe.scheduler, inference_steps)
    first_ids = {c.id for c in selection[:batch_size]}
    return lambda caption_id: first if caption_id in first_ids else later


def reference_noise(pipe: Any, selection: Sequence[Caption], *, batch_size: int, height: Optional[int] = None,
                    width: Optional[int] = None) -> Callable[[int], torch.Tensor]:
    """Caption id → the one NLG noise z the reference adds at every step: it restores NumPy's random state
    around its draw, so the i-th image of every batch gets row i of ``RandomState(0).randn(B, C, h, w)``.

    Args:
        pipe: the pipeline (its adapter gives the latent shape).
        selection (`Sequence[Caption]`): every caption of the run, in the reference's order.
        batch_size (`int`): the reference's images per batch B.
        height, width (`int`, *optional*): image size in pixels (default: the model's).
    """
    import numpy as np

    from ..adapters import get_adapter

    shape = get_adapter(pipe).latent_shape(batch_size, height, width)
    table = torch.from_numpy(np.random.RandomState(0).randn(*shape)).float()
    position = {c.id: i % batch_size for i, c in enumerate(selection)}
    return lambda caption_id: table[position[caption_id]]
