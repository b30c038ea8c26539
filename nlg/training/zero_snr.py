r"""Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
https://arxiv.org/abs/2305.08891), through diffusers' own rescale.

SD's schedule ends at ᾱ_T ≈ 0.0047: the last training input still holds √ᾱ_T ≈ 7% of the image,
in particular its mean brightness, while sampling starts from pure noise.  The model therefore
learns to keep whatever brightness x_T carries, and pure noise carries none: images stay mid-grey.
Rescaling the betas so that ᾱ_T = 0 removes that leak; the paper pairs it with v-prediction (ε is
undefined to predict at SNR 0), "trailing" timestep spacing (sampling really starts at t = T) and
CFG rescale (``guidance_rescale`` in diffusers pipelines).

Relation to offset noise: offset noise widens the brightness distribution of the noise so the model
must learn to move it; zero terminal SNR removes the train/test mismatch that made it necessary.
Relation to NLG: NLG (:func:`nlg.refine_noise`) refines the *initial* latent at the last training
timestep; with a zero-SNR model that timestep sees pure noise, exactly as at training, so the
guidance direction ε(n|c) − ε(n|∅) is measured where the model was trained.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor

__all__ = ["zero_terminal_snr", "zero_snr_betas"]


def zero_snr_betas(betas: Tensor) -> Tensor:
    """Betas rescaled to zero terminal SNR: diffusers' ``rescale_zero_terminal_snr``, unchanged."""
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    return rescale_zero_terminal_snr(betas)


def zero_terminal_snr(scheduler: Any, *, prediction_type: str = "v_prediction", timestep_spacing: str = "trailing") -> Any:
    r"""A copy of ``scheduler`` with zero terminal SNR, v-prediction and trailing spacing.

    Builds ``type(scheduler).from_config(scheduler.config, rescale_betas_zero_snr=True, ...)``, so the
    rescale is diffusers' own (``rescale_betas_zero_snr``); the input scheduler is untouched.

    Args:
        scheduler:
            A diffusers scheduler whose class takes ``rescale_betas_zero_snr`` (DDPM, DDIM, Euler,
            DPM-Solver++, UniPC, …).
        prediction_type (`str`, defaults to ``"v_prediction"``):
            The paper's choice; pass ``"epsilon"`` only if you know why.
        timestep_spacing (`str`, defaults to ``"trailing"``):
            So that sampling starts at the last training timestep.

    Returns:
        The new scheduler.
    """
    from_config = getattr(type(scheduler), "from_config", None)
    if from_config is None or "rescale_betas_zero_snr" not in inspect.signature(type(scheduler).__init__).parameters:
        raise TypeError(f"scheduler must be a diffusers scheduler supporting rescale_betas_zero_snr; {type(scheduler).__name__} does not")
    return from_config(
        scheduler.config, rescale_betas_zero_snr=True, prediction_type=prediction_type, timestep_spacing=timestep_spacing
    )
