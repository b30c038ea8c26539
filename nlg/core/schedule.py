"""Noise-schedule helpers shared by every adapter: the reference timestep and ᾱ there."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from .directions import check_signal

__all__ = ["STABLE_DIFFUSION_SCHEDULE", "reference_alpha_bar"]

#: Stable Diffusion's training noise schedule as diffusers scheduler options (``scaled_linear`` betas
#: 0.00085 → 0.012 over 1000 steps, ε-prediction, so ᾱ₉₉₉ ≈ 0.0047); the embedded models use it too.
STABLE_DIFFUSION_SCHEDULE: Dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
)


def reference_alpha_bar(scheduler: Any, reference_timestep: Optional[int]) -> Tuple[int, float]:
    """The reference timestep (default: the last training timestep) and ᾱ there, from the scheduler itself.

    Reads ``scheduler.alphas_cumprod``, which is fixed at construction: it does not depend on
    ``set_timesteps``, ``init_noise_sigma`` or any sampling state.
    """
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod: NLG needs a DDPM-type noise schedule")
    num_train = len(alphas_cumprod)
    t_ref = num_train - 1 if reference_timestep is None else reference_timestep
    if isinstance(t_ref, bool) or not isinstance(t_ref, int) or not 0 <= t_ref < num_train:
        raise ValueError(f"reference_timestep must be an int in [0, {num_train - 1}], got {t_ref!r}")
    alpha_bar = float(alphas_cumprod[t_ref])
    check_signal(alpha_bar, t_ref)
    return t_ref, alpha_bar
