r"""Min-SNR-γ loss weights (Hang et al. 2023, https://arxiv.org/abs/2303.09556).

With SNR_t = ᾱ_t / (1 − ᾱ_t), Min-SNR-γ weights the x₀-space loss by min(SNR_t, γ).  Written for the
target the model actually regresses (the MSE in ε-space is SNR_t times smaller than in x₀-space, in
v-space (SNR_t + 1) times):

    ε-prediction:  w_t = min(SNR_t, γ) / SNR_t = min(1, γ / SNR_t)
    v-prediction:  w_t = min(SNR_t, γ) / (SNR_t + 1)
    x₀-prediction: w_t = min(SNR_t, γ)

The ε form is written as min(1, γ/SNR) so that it stays finite (= 1) at zero terminal SNR; the v
form gives weight 0 there, as the formula says.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core.directions import PREDICTION_TYPES
from ._checks import alphas_cumprod_of, check_number, check_timesteps

__all__ = ["min_snr_weights", "PREDICTION_TYPES"]

#: Prediction types understood by :mod:`nlg.training`, as diffusers spells them.


def min_snr_weights(timesteps: Tensor, scheduler: Any, *, gamma: float = 5.0, prediction_type: str = "epsilon") -> Tensor:
    r"""Per-sample Min-SNR-γ loss weights.

    Args:
        timesteps (`torch.Tensor`):
            Diffusers timesteps, shape (B,).
        scheduler:
            A diffusers scheduler with ``alphas_cumprod``.
        gamma (`float`, defaults to 5.0):
            γ > 0; the paper's default is 5.
        prediction_type (`str`, defaults to ``"epsilon"``):
            ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.

    Returns:
        `torch.Tensor`: float32 weights of shape (B,), on ``timesteps``' device.
    """
    gamma = check_number(gamma, "gamma", strict=True)
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {list(PREDICTION_TYPES)}")
    table = alphas_cumprod_of(scheduler)
    if not isinstance(timesteps, Tensor):
        raise TypeError(f"timesteps must be a torch.Tensor, got {type(timesteps).__name__}")
    abar = table[check_timesteps(timesteps, table.shape[0]).detach().to("cpu", torch.long)]
    snr = abar / (1.0 - abar)
    if prediction_type == "epsilon":
        weights = torch.clamp(gamma / snr, max=1.0)
    elif prediction_type == "v_prediction":
        weights = torch.clamp(snr, max=gamma) / (snr + 1.0)
    else:
        weights = torch.clamp(snr, max=gamma)
    return weights.float().to(timesteps.device)
