r"""NLG for flow-matching models (Stable Diffusion 3, FLUX-style rectified flows).

Flow matching (Lipman et al. 2023, https://arxiv.org/abs/2210.02747; SD3: Esser et al. 2024,
https://arxiv.org/abs/2403.03206) interpolates linearly,

.. math::
    x_\sigma = (1-\sigma)\,x_0 + \sigma\,\epsilon, \qquad \sigma \in [0, 1],

and the network predicts the velocity :math:`v = dx_\sigma/d\sigma = \epsilon - x_0`.  From ``x`` and
``v`` follow :math:`\hat x_0 = x - \sigma v` and :math:`\hat\epsilon = x + (1-\sigma) v`.

**Why not at σ = 1.**  There :math:`x_1 = \epsilon` carries no signal, :math:`\hat\epsilon = x_1`
whatever the prompt, and NLG's ε-difference is identically zero — the flow analogue of a
zero-terminal-SNR schedule.  NLG therefore evaluates the model at a reference level ``σ_r < 1``.

**The direction.**  The initial noise ``n`` is the ε of the path; at ``σ_r`` its noise part is
``σ_r n``, and with the image term at its mean (0 for centred latents) the model sees
:math:`x = \sigma_r n` at timestep ``σ_r · num_train_timesteps``.  Tweedie's formula for this path,
:math:`\nabla_x \log p_\sigma(x) = -\mathbb E[\epsilon \mid x] / \sigma`, gives for the
conditional-minus-unconditional ε-predictions

.. math::
    d = \hat\epsilon(x|c) - \hat\epsilon(x|\varnothing) = (1-\sigma_r)\,\bigl(v(x|c) - v(x|\varnothing)\bigr)
      = -\sigma_r \nabla_x \log p_{\sigma_r}(c \mid x) = -\nabla_n \log p_{\sigma_r}(c \mid \sigma_r n),

so :func:`nlg.refine_noise`'s step ``n ← n − η d`` climbs ``log p(c | x)`` exactly as in Stable
Diffusion (where ``d = ε(n|c) − ε(n|∅) ≈ −σ ∇ log p(c|n)`` at t = 999).  The x̂₀-difference,
:math:`\hat x_0(x|c) - \hat x_0(x|\varnothing) = -\sigma_r (v_c - v_u)`, and the velocity difference
are parallel to it; only the length differs, which matters for ``clip_threshold``:
``target="epsilon"`` (default) uses ``(1−σ_r)(v_c − v_u)``, ``target="velocity"`` uses ``v_c − v_u``.

**Default σ_r = 0.94**: the level whose SNR, :math:`((1-\sigma)/\sigma)^2 \approx 0.0041`, is close to
Stable Diffusion's at its last training step (ᾱ₉₉₉ / (1 − ᾱ₉₉₉) ≈ 0.0047), where NLG was designed.

:class:`FlowMatchingAdapter` plugs ``StableDiffusion3Pipeline`` into :class:`nlg.NoiseLevelGuidance`
(``get_adapter`` picks it for pipelines with a ``transformer`` and a flow-matching scheduler);
``reference_timestep=t`` there means ``σ_r = t / num_train_timesteps``, the transformer's own
timestep convention.  Other flow models (FLUX packs its latents) use :func:`flow_direction` in
their own ``direction_fn``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from ..core.directions import cfg_direction
from ..core.refine import DirectionFn
from ..utils.types import GeneratorLike
from .base import EMBEDDING_KWARGS, prompt_batch_size

__all__ = [
    "DEFAULT_REFERENCE_SIGMA",
    "FLOW_TARGETS",
    "check_reference_sigma",
    "flow_epsilon",
    "flow_direction",
    "FlowMatchingAdapter",
]

#: ``σ_r`` whose SNR is close to Stable Diffusion's at t = 999 (see the module docstring).
DEFAULT_REFERENCE_SIGMA = 0.94
FLOW_TARGETS = ("epsilon", "velocity")


def check_reference_sigma(sigma: float) -> float:
    """Return ``sigma`` as a float if it lies in the open interval (0, 1), else raise a ``ValueError``."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"reference sigma must be a number in (0, 1), got {type(sigma).__name__}")
    if not 0.0 < sigma < 1.0:
        hint = " (at σ = 1 the ε-difference is identically zero)" if sigma == 1.0 else ""
        raise ValueError(f"reference sigma must be in the open interval (0, 1), got {sigma}{hint}")
    return float(sigma)


def flow_epsilon(velocity: Tensor, sample: Tensor, sigma: float) -> Tensor:
    r"""The ε-prediction implied by a flow-matching velocity: :math:`\hat\epsilon = x_\sigma + (1-\sigma)\,v`."""
    return sample + (1.0 - sigma) * velocity


def flow_direction(
    v_cond: Tensor, v_uncond: Tensor, sample: Tensor, sigma: float, *, target: str = "epsilon",
    gamma: Optional[float] = None,
) -> Tensor:
    r"""NLG's direction from conditional and unconditional velocities at ``x = sample``, level ``σ``.

    * ``target="epsilon"``: :math:`d = \hat\epsilon_c - \hat\epsilon_u = (1-\sigma)(v_c - v_u)`;
      with ``gamma``, :math:`\gamma\hat\epsilon_c + (1-\gamma)\hat\epsilon_u`.
    * ``target="velocity"``: :math:`d = v_c - v_u` (or :math:`\gamma v_c + (1-\gamma) v_u`).

    Args:
        v_cond (`torch.Tensor`): velocity with the condition.
        v_uncond (`torch.Tensor`): velocity with the null condition.
        sample (`torch.Tensor`): the model input ``x_σ``.
        sigma (`float`): the level ``σ`` in (0, 1) at which the model was evaluated.
        target (`str`, defaults to ``"epsilon"``): ``"epsilon"`` or ``"velocity"``.
        gamma (`float`, *optional*, defaults to None): the guidance-formula weight γ.
    """
    sigma = check_reference_sigma(sigma)
    if target == "epsilon":
        return cfg_direction(flow_epsilon(v_cond, sample, sigma), flow_epsilon(v_uncond, sample, sigma), gamma)
    if target == "velocity":
        return cfg_direction(v_cond, v_uncond, gamma)
    raise ValueError(f"target must be one of {FLOW_TARGETS}, got {target!r}")


def _stacked_rows(negative: Tensor, positive: Tensor, index: Optional[Tensor]) -> Tensor:
    """``[negative; positive]`` restricted to the images at ``index`` (all if None)."""
    if index is not None:
        negative, positive = negative[index.to(negative.device)], positive[index.to(positive.device)]
    return torch.cat([negative, positive])


class FlowMatchingAdapter:
    """The :class:`nlg.adapters.GuidanceAdapter` for diffusers' ``StableDiffusion3Pipeline``.

    Args:
        pipe (`StableDiffusion3Pipeline`): a pipeline with a ``transformer``, ``encode_prompt`` and a
            flow-matching scheduler (``FlowMatchEulerDiscreteScheduler``).
        reference_sigma (`float`, defaults to 0.94): ``σ_r`` in (0, 1) when NLG gives no reference timestep.
        target (`str`, defaults to ``"epsilon"``): see :func:`flow_direction`.
    """

    def __init__(self, pipe: Any, *, reference_sigma: float = DEFAULT_REFERENCE_SIGMA, target: str = "epsilon") -> None:
        if getattr(pipe, "transformer", None) is None or not hasattr(pipe, "encode_prompt"):
            raise TypeError(f"pipe must be a flow-matching pipeline with a transformer, got {type(pipe).__name__}")
        scheduler = getattr(pipe, "scheduler", None)
        if not hasattr(scheduler, "scale_noise") or hasattr(scheduler, "alphas_cumprod"):
            raise TypeError(f"pipe.scheduler must be a flow-matching scheduler, got {type(scheduler).__name__}")
        if target not in FLOW_TARGETS:
            raise ValueError(f"target must be one of {FLOW_TARGETS}, got {target!r}")
        self.pipe = pipe
        self.reference_sigma = check_reference_sigma(reference_sigma)
        self.target = target
        self.device = getattr(pipe, "_execution_device", None) or pipe.device

    def encode(self, prompt: Union[str, List[str]], *, num_images_per_prompt: int = 1, **encode_kwargs: Any) -> Tuple[int, Dict[str, Any]]:
        """Encode prompt and negative prompt with the pipeline's own ``encode_prompt`` (CLIP ×2 + T5).

        ``joint_attention_kwargs["scale"]`` is the LoRA scale of the text encoders (``lora_scale``, as
        ``pipe.__call__`` passes it); ``joint_attention_kwargs`` is returned in the conditioning, so every
        refinement transformer call and the pipeline receive it.
        """
        refused = sorted(k for k in EMBEDDING_KWARGS + ("cross_attention_kwargs",) if encode_kwargs.get(k) is not None)
        if refused:
            raise TypeError(f"NLG for flow-matching pipelines takes a prompt; {refused} are not supported")
        batch_size = prompt_batch_size(prompt, num_images_per_prompt, encode_kwargs.get("negative_prompt"))
        options = {k: v for k, v in encode_kwargs.items() if v is not None}
        attention = options.pop("joint_attention_kwargs", None)
        if attention is not None and not isinstance(attention, dict):
            raise TypeError(f"joint_attention_kwargs must be a dict or None, got {type(attention).__name__}")
        pe, npe, pooled, npooled = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=options.pop("prompt_2", None), prompt_3=options.pop("prompt_3", None),
            device=self.device, num_images_per_prompt=num_images_per_prompt, do_classifier_free_guidance=True,
            lora_scale=None if attention is None else attention.get("scale"), **options,
        )
        cond: Dict[str, Any] = dict(prompt_embeds=pe, negative_prompt_embeds=npe, pooled_prompt_embeds=pooled,
                                    negative_pooled_prompt_embeds=npooled)
        if attention is not None:
            cond["joint_attention_kwargs"] = dict(attention)
        return batch_size * num_images_per_prompt, cond

    def latent_shape(self, batch_size: int, height: Optional[int], width: Optional[int]) -> Tuple[int, ...]:
        """The shape ``pipe.prepare_latents`` uses: ``(B, C, height // s, width // s)``."""
        pipe = self.pipe
        scale = pipe.vae_scale_factor
        multiple = scale * pipe.transformer.config.patch_size
        default = pipe.default_sample_size * scale
        height = default if height is None else height
        width = default if width is None else width
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % multiple:
                raise ValueError(f"{name} must be a positive multiple of {multiple}, got {value!r}")
        return (batch_size, pipe.transformer.config.in_channels, height // scale, width // scale)

    def initial_latents(self, shape: Tuple[int, ...], generator: GeneratorLike, dtype: torch.dtype) -> Tensor:
        """Draw x₁ = ε exactly as ``pipe.prepare_latents`` would (``randn_tensor``)."""
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)

    def direction_fn(
        self, conditioning: Dict[str, Any], *, gamma: Optional[float], reference_timestep: Optional[int],
        height: Optional[int] = None, width: Optional[int] = None, **unused: Any,
    ) -> DirectionFn:
        """The flow direction at ``σ_r``: one batched transformer call on ``[σ_r n, σ_r n]`` with (negative, prompt).

        ``joint_attention_kwargs`` in ``conditioning`` (e.g. the LoRA ``scale``) reach every transformer call.
        """
        if unused:
            raise TypeError(f"flow-matching pipelines take no size conditioning, got {sorted(unused)}")
        transformer = self.pipe.transformer
        num_train = self.pipe.scheduler.config.num_train_timesteps
        if reference_timestep is None:
            sigma = self.reference_sigma
        else:
            if isinstance(reference_timestep, bool) or not isinstance(reference_timestep, (int, float)):
                raise TypeError(f"reference_timestep must be a number, got {type(reference_timestep).__name__}")
            sigma = check_reference_sigma(reference_timestep / num_train)
        timestep_value = sigma * num_train
        target = self.target
        attention = conditioning.get("joint_attention_kwargs")
        cond = {k: v.to(self.device) for k, v in conditioning.items() if k != "joint_attention_kwargs"}

        def direction(latents: Tensor, index: Optional[Tensor] = None) -> Tensor:
            sample = (sigma * latents).to(self.device, transformer.dtype)
            sample = torch.cat([sample, sample])
            timestep = torch.full((sample.shape[0],), timestep_value, device=self.device, dtype=transformer.dtype)
            velocity = transformer(
                hidden_states=sample,
                timestep=timestep,
                encoder_hidden_states=_stacked_rows(cond["negative_prompt_embeds"], cond["prompt_embeds"], index),
                pooled_projections=_stacked_rows(
                    cond["negative_pooled_prompt_embeds"], cond["pooled_prompt_embeds"], index
                ),
                joint_attention_kwargs=attention,
                return_dict=False,
            )[0]
            v_uncond, v_cond = velocity.float().chunk(2)
            x = sample.float().chunk(2)[0]
            return flow_direction(v_cond, v_uncond, x, sigma, target=target, gamma=gamma).to(latents.device)

        return direction
