"""Guidance directions for :func:`nlg.refine_noise`, and the conversions they need.

A direction is any callable ``latents -> Tensor`` of the same shape.  This module holds the pieces
adapters combine into one:

* :func:`to_epsilon` turns an ε-, v- or x₀-prediction into ε at one timestep.
* :func:`cfg_direction` is NLG's classifier-free direction ``ε(n|c) − ε(n|∅)`` (arXiv 2509.13936,
  Eq. 7), or the guidance-formula variant ``γ ε(n|c) + (1−γ) ε(n|∅)``.
"""

from __future__ import annotations

import math
from typing import Optional

from torch import Tensor

__all__ = ["PREDICTION_TYPES", "to_epsilon", "cfg_direction", "check_signal"]

#: The ``prediction_type`` values :func:`to_epsilon` converts (diffusers' names).
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_signal(alpha_bar: float, timestep: int) -> None:
    """Refuse a reference timestep whose ᾱ leaves no signal in x_t.

    With ᾱ_t = 0 (zero-terminal-SNR schedules at their last step) x_t is pure noise, every ε-prediction
    equals x_t whatever the prompt, and ε(n|c) − ε(n|∅) ≡ 0: refinement would silently do nothing.
    Schedulers clip that ᾱ to 2⁻²⁴ to keep σ finite, so anything below 1e-6 counts as zero here.
    """
    if not alpha_bar > 1e-6:
        raise ValueError(
            f"reference_timestep={timestep} has alphas_cumprod={alpha_bar:.3g}: the schedule has (numerically) "
            "zero terminal SNR, so x_t carries no signal and the NLG direction ε(n|c) − ε(n|∅) is identically "
            "zero. Pass an earlier reference_timestep (e.g. 900) where alphas_cumprod > 1e-6."
        )


def to_epsilon(model_output: Tensor, sample: Tensor, alpha_bar: float, prediction_type: str) -> Tensor:
    r"""Convert a model prediction at x_t = α x₀ + σ ε into the ε-prediction.

    With :math:`\alpha = \sqrt{\bar\alpha_t}`, :math:`\sigma = \sqrt{1-\bar\alpha_t}`:

    * ``epsilon``: ε as is;
    * ``v_prediction`` (Salimans & Ho 2022, https://arxiv.org/abs/2202.00512), v = α ε − σ x₀:
      :math:`\epsilon = \alpha v + \sigma x_t`;
    * ``sample`` (x̂₀-prediction): :math:`\epsilon = (x_t - \alpha \hat x_0)/\sigma`.

    Args:
        model_output (`torch.Tensor`): the raw model output.
        sample (`torch.Tensor`): the model input x_t.
        alpha_bar (`float`): ᾱ_t from the pipeline's own ``scheduler.alphas_cumprod``.
        prediction_type (`str`): one of ``"epsilon"``, ``"v_prediction"``, ``"sample"``.

    Example:
        With ᾱ = 0.36, α = 0.6 and σ = 0.8:

        >>> import torch
        >>> from nlg import to_epsilon
        >>> x = torch.tensor([0.8, 1.4])
        >>> to_epsilon(torch.tensor([1.0, 0.0]), x, 0.36, "v_prediction")   # α·v + σ·x
        tensor([1.2400, 1.1200])
        >>> eps = to_epsilon(torch.tensor([0.0, 1.0]), x, 0.36, "sample")   # (x − α·x̂₀)/σ
        >>> torch.allclose(eps, torch.tensor([1.0, 1.0]))
        True
        >>> to_epsilon(x, x, 0.36, "epsilon") is x
        True
    """
    if prediction_type == "epsilon":
        return model_output
    alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction_type == "v_prediction":
        return alpha * model_output + sigma * sample
    if prediction_type == "sample":
        if sigma == 0.0:
            raise ValueError("prediction_type='sample' needs alphas_cumprod < 1 at the reference timestep")
        return (sample - alpha * model_output) / sigma
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def cfg_direction(eps_cond: Tensor, eps_uncond: Tensor, gamma: Optional[float] = None) -> Tensor:
    r"""NLG's classifier-free direction (arXiv 2509.13936, Eq. 7).

    * ``gamma=None``: :math:`d = \epsilon(n|c) - \epsilon(n|\varnothing) \approx -\sigma \nabla_n \log p(c|n)`;
    * ``gamma=γ``: the guidance-formula variant :math:`d = \gamma\,\epsilon(n|c) + (1-\gamma)\,\epsilon(n|\varnothing)`.

    Args:
        eps_cond (`torch.Tensor`): ε-prediction with the condition (prompt, class).
        eps_uncond (`torch.Tensor`): ε-prediction with the null condition (empty prompt, null class).
        gamma (`float`, *optional*, defaults to None): the guidance-formula weight γ.

    Example:
        >>> import torch
        >>> from nlg import cfg_direction
        >>> eps_c, eps_u = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5])
        >>> cfg_direction(eps_c, eps_u)
        tensor([0.5000, 1.5000])
        >>> cfg_direction(eps_c, eps_u, gamma=3.0)   # 3·ε_c − 2·ε_u
        tensor([2., 5.])
    """
    if gamma is None:
        return eps_cond - eps_uncond
    return gamma * eps_cond + (1.0 - gamma) * eps_uncond
