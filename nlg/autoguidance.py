r"""Any guidance as NLG's direction: builders of ``direction_fn`` for :func:`nlg.refine_noise`.

NLG (arXiv 2509.13936, Sec. 3) refines the initial noise against an *edit direction* that is the
difference of two denoiser outputs on the same input, ``d = D₁(x|y₁) − D₀(x|y₀)``.  Written with
ε-predictions at the reference timestep (``ε ≈ −σ ∇ log p``), the step ``n ← n − η d`` climbs
``log p₁(n) − log p₀(n)``:

* **CFG** (:func:`nlg.cfg_direction`): one model, prompt vs. null prompt,
  ``d = ε(n|c) − ε(n|∅) ≈ −σ ∇ log p(c|n)``; or the guidance formula ``γ ε(n|c) + (1−γ) ε(n|∅)``.
* **Autoguidance** (Karras et al. 2024, https://arxiv.org/abs/2406.02507): a good model vs. a weaker
  version of itself (smaller or less trained) on the same input and condition,
  ``d = ε_good(n|c) − ε_weak(n|c) ≈ −σ ∇ log (p_good(n|c) / p_weak(n|c))``.  With the null condition
  this is NLG's variant for **unconditional** models (paper, Sec. 3: ``D₁`` high-quality, ``D₀``
  low-quality model).
* **A user callable**: anything ``latents -> Tensor`` of the same shape goes straight into
  :func:`nlg.refine_noise`; if it takes an ``index`` keyword it receives the batch positions of
  the samples still refining (adaptive stopping).  :func:`guidance_direction` builds one from any two
  ε-callables.

:func:`unet_epsilon` turns a diffusers UNet (``UNet2DModel`` or ``UNet2DConditionModel``, any
prediction type) into the ε-callable at a reference timestep that these builders take, and
:class:`AutoGuidance` packages good model, weak model and conditioning.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from .core.directions import PREDICTION_TYPES, cfg_direction, to_epsilon
from .core.schedule import reference_alpha_bar
from .core.refine import DirectionFn, RefineOutput, accepts_index, refine_noise

__all__ = ["EpsilonFn", "guidance_direction", "autoguidance_direction", "unet_epsilon", "AutoGuidance"]

#: ``eps(latents, index=None) -> Tensor``: an ε-prediction at a fixed reference timestep.
EpsilonFn = Callable[..., Tensor]


def _call(fn: EpsilonFn, latents: Tensor, index: Optional[Tensor]) -> Tensor:
    if index is not None and accepts_index(fn):
        return fn(latents, index=index)
    return fn(latents)


def guidance_direction(
    positive: EpsilonFn, negative: EpsilonFn, *, gamma: Optional[float] = None, names: tuple = ("positive", "negative")
) -> DirectionFn:
    r"""NLG's general edit direction from two ε-callables on the same input (arXiv 2509.13936, Sec. 3).

    .. math::
        d(n) = \epsilon_+(n) - \epsilon_-(n) \quad\text{or, with } \gamma:\quad
        d(n) = \gamma\,\epsilon_+(n) + (1-\gamma)\,\epsilon_-(n).

    Args:
        positive (`Callable`): ``ε₊(latents[, index])``, the output to move towards (prompt, good model).
        negative (`Callable`): ``ε₋(latents[, index])``, the output to move away from (null prompt, weak model).
        gamma (`float`, *optional*, defaults to None): the guidance-formula weight γ.
        names (`tuple`, defaults to ``("positive", "negative")``): how errors name the two callables.

    Returns:
        ``direction(latents, index=None)`` for :func:`nlg.refine_noise`; ``index`` is passed on to
        the callables that accept it.

    Raises:
        ValueError: (when called) if the two outputs differ in shape.
    """
    if not callable(positive) or not callable(negative):
        raise TypeError(f"{names[0]} and {names[1]} must be callables latents -> ε of the same shape")

    def direction(latents: Tensor, index: Optional[Tensor] = None) -> Tensor:
        eps_pos, eps_neg = _call(positive, latents, index), _call(negative, latents, index)
        if eps_pos.shape != eps_neg.shape:
            raise ValueError(
                f"the {names[1]} output has shape {tuple(eps_neg.shape)} but the {names[0]} output has "
                f"{tuple(eps_pos.shape)}; both must predict ε for the same latents"
            )
        return cfg_direction(eps_pos, eps_neg.to(eps_pos.dtype), gamma)

    return direction


def autoguidance_direction(good: EpsilonFn, weak: EpsilonFn, *, gamma: Optional[float] = None) -> DirectionFn:
    r"""Autoguidance as the NLG direction: ``d = ε_good(n) − ε_weak(n)`` (Karras et al. 2024, arXiv 2406.02507).

    Both callables see the same latents and the same condition (the null condition for
    unconditional models, NLG's unconditional variant).  Refining ``n ← n − η d`` raises
    ``log p_good(n) − log p_weak(n)``: it moves the noise away from where the weak model's errors
    differ from the good model's.

    Args:
        good (`Callable`): ε-prediction of the good model at the reference timestep.
        weak (`Callable`): ε-prediction of the weak (smaller / less-trained) model, same input and condition.
        gamma (`float`, *optional*, defaults to None): the guidance-formula weight γ
            (``γ ε_good + (1−γ) ε_weak``).

    Raises:
        ValueError: (when called) if the weak model's output shape differs from the good model's.
    """
    return guidance_direction(good, weak, gamma=gamma, names=("good model", "weak model"))


def unet_epsilon(
    unet: Any, scheduler: Any, *, reference_timestep: Optional[int] = None, **conditioning: Any
) -> EpsilonFn:
    r"""A diffusers UNet as an ε-callable at the reference timestep (default: the last training step).

    The UNet sees the latents as ``x_{t_ref}`` itself (NLG's convention); v- and x̂₀-predictions are
    converted with the scheduler's ``alphas_cumprod[t_ref]`` (:func:`nlg.to_epsilon`).

    Args:
        unet (`UNet2DModel` or `UNet2DConditionModel`): the model.
        scheduler (`SchedulerMixin`): supplies ``alphas_cumprod`` and ``prediction_type``.
        reference_timestep (`int`, *optional*, defaults to None): ``t_ref``; ``None`` = last training step.
        **conditioning: per-sample keyword inputs of the UNet, e.g. ``class_labels`` (shape ``(B,)``) or
            ``encoder_hidden_states`` (``(B, L, C)``); rows are selected by ``index`` when adaptive
            stopping drops finished samples.  Dicts (``added_cond_kwargs``) are selected entry-wise.

    Returns:
        ``eps(latents, index=None) -> Tensor`` in the latents' dtype and device.
    """
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
    t_ref, alpha_bar = reference_alpha_bar(scheduler, reference_timestep)
    param = next(unet.parameters())

    def select(value: Any, index: Optional[Tensor]) -> Any:
        if isinstance(value, dict):
            return {k: select(v, index) for k, v in value.items()}
        if index is None or not isinstance(value, Tensor):
            return value
        return value[index.to(value.device)]

    def epsilon(latents: Tensor, index: Optional[Tensor] = None) -> Tensor:
        sample = latents.to(param.device, param.dtype)
        timestep = torch.tensor(t_ref, device=param.device)
        kwargs: Dict[str, Any] = {k: select(v, index) for k, v in conditioning.items()}
        out = unet(sample, timestep, return_dict=False, **kwargs)[0]
        eps = to_epsilon(out.float(), sample.float(), alpha_bar, prediction_type)
        return eps.to(latents.device, latents.dtype)

    return epsilon


class AutoGuidance:
    r"""NLG with autoguidance: refine initial noise with ``d = ε_good(n|c) − ε_weak(n|c)`` at ``t_ref``.

    Karras et al. 2024 (https://arxiv.org/abs/2406.02507) guide a diffusion model with a bad version of
    itself; NLG (arXiv 2509.13936) uses the same difference, at the reference timestep, as the
    direction that refines the initial noise.  With ``class_labels`` set to the null class (or an
    empty-prompt embedding) this is NLG's unconditional variant.

    Args:
        good (`UNet2DModel` or `UNet2DConditionModel`): the model you sample with.
        weak (same type as ``good``): a smaller or less-trained version; must output the same shape.
        scheduler (`SchedulerMixin`): the training noise schedule (``alphas_cumprod``, ``prediction_type``).
        reference_timestep (`int`, *optional*, defaults to None): ``t_ref``; ``None`` = last training step.
        gamma (`float`, *optional*, defaults to None): the guidance-formula weight γ.

    Example (digits, unconditional; see ``benchmarks/autoguidance_digits.py``)::

        ag = AutoGuidance(pipe.unet, weak_unet, pipe.scheduler)
        null = torch.full((B,), NULL_CLASS)
        out = ag(pipe.prepare_latents(B, gens), conditioning={"class_labels": null}, generator=gens)
        images = pipe(labels, guidance_scale=0.0, latents=out.latents, generator=gens).images
    """

    def __init__(
        self, good: Any, weak: Any, scheduler: Any, *, reference_timestep: Optional[int] = None,
        gamma: Optional[float] = None,
    ) -> None:
        for name, model in (("good", good), ("weak", weak)):
            if not callable(model) or not hasattr(model, "parameters"):
                raise TypeError(f"{name} must be a diffusers UNet (torch module), got {type(model).__name__}")
        good_out = getattr(getattr(good, "config", None), "out_channels", None)
        weak_out = getattr(getattr(weak, "config", None), "out_channels", None)
        if good_out is not None and weak_out is not None and good_out != weak_out:
            raise ValueError(f"the weak model outputs {weak_out} channels but the good model {good_out}; they must match")
        self.good, self.weak, self.scheduler = good, weak, scheduler
        self.reference_timestep = reference_timestep
        self.gamma = gamma
        reference_alpha_bar(scheduler, reference_timestep)  # fail early on a bad or zero-SNR t_ref

    def direction_fn(self, **conditioning: Any) -> DirectionFn:
        """The direction callable for :func:`nlg.refine_noise`; ``conditioning`` goes to both models."""
        good = unet_epsilon(self.good, self.scheduler, reference_timestep=self.reference_timestep, **conditioning)
        weak = unet_epsilon(self.weak, self.scheduler, reference_timestep=self.reference_timestep, **conditioning)
        return autoguidance_direction(good, weak, gamma=self.gamma)

    def __call__(self, latents: Tensor, *, conditioning: Optional[Dict[str, Any]] = None, **options: Any) -> RefineOutput:
        """Refine ``latents``: :func:`nlg.refine_noise` with this direction and ``options``
        (``refining_steps``, ``step_size``, ``clip_threshold``, ``generator``, ``stop_tolerance``, …).

        ``conditioning`` holds the UNet keyword inputs (e.g. ``{"class_labels": labels}``).
        """
        return refine_noise(latents, self.direction_fn(**(conditioning or {})), **options)
