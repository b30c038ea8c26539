r"""Noise-level-aware img2img: refine the noise ε that img2img adds to the image, not the noisy latent.

img2img starts at the timestep ``t_s`` picked by the denoising strength (:func:`nlg.schedule_point_for_strength`) from

.. math::
    x_{t_s} = \sqrt{\bar\alpha_{t_s}}\, x_0 + \sqrt{1-\bar\alpha_{t_s}}\, \epsilon .

Refining ``x_{t_s}`` directly would let the refinement edit the image term too.  Instead ``nlg``
keeps ``x₀`` fixed and refines ``ε`` with :func:`nlg.refine_noise` against the direction taken *at
the noise level the sampler starts from*:

.. math::
    d(\epsilon) = \epsilon(x_{t_s}(\epsilon), t_s \mid c) - \epsilon(x_{t_s}(\epsilon), t_s \mid \varnothing)
    \approx -\sqrt{1-\bar\alpha}\,\nabla_x \log p(c \mid x_{t_s}) = -\nabla_\epsilon \log p\bigl(c \mid x_{t_s}(\epsilon)\bigr),

(the last step because ``∂x_{t_s}/∂ε = √(1−ᾱ)``), so ``ε ← ε − η d`` climbs ``log p(c | x_{t_s})``
along ε alone, and ``refine_noise``'s renormalisation keeps ``‖ε‖ = √D``.  At strength 1 with
``t_s`` = the last training step this is text-to-image NLG.

**How the refined ε reaches ``StableDiffusionImg2ImgPipeline``.**  diffusers 0.42's img2img
``__call__`` has no ``noise=`` or ``latents=`` argument: ``prepare_latents`` VAE-encodes the image
(sampling the latent distribution with the caller's generator), draws ε with ``randn_tensor`` from the
same generator, and calls ``self.scheduler.add_noise(x₀, ε, t_s)`` exactly once.  The smallest
reproducible route is to wrap that one call for the duration of one pipeline call
(:func:`refined_add_noise`): the wrapper receives exactly ``(x₀, ε, t_s)`` as the pipeline made
them, refines ε, and passes the refined ε on.  Everything else — image preprocessing, VAE sampling,
the generator stream, the strength → timestep rule, every scheduler and ``num_images_per_prompt`` —
stays the pipeline's own, so ``refining_steps=0`` reproduces the plain pipeline bit for bit.  The
alternatives need more re-implementation: passing image latents and a pre-drawn ε would re-implement
VAE sampling and the generator order; a fake generator cannot feed ``torch.randn``; calling the
text-to-image pipeline from ``t_s`` breaks ``init_noise_sigma`` for Euler-type schedulers.  The
wrapper is set on the scheduler *instance* and removed in a ``finally`` block; do not share that
scheduler object between threads during the call.

Euler-type schedulers noise as ``x₀ + σ ε``; the UNet sees ``scale_model_input`` of it, which is the
formula above with ``ᾱ = 1/(1+σ²)``, so the direction is the same.  A non-integer ``t_s`` (Euler
``linspace`` spacing, Karras sigmas) is evaluated at the nearest training timestep.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from torch import Tensor

from .guidance import NoiseLevelGuidance
from .core.noise_levels import SchedulePoint, check_strength, schedule_point_for_strength
from .adapters.base import ENCODE_KWARGS
from .adapters.stable_diffusion import DiffusersAdapter
from .core.refine import DirectionFn, accepts_index, refine_noise
from .utils.checks import check_generator
from .utils.types import GeneratorLike

__all__ = ["img2img_direction", "refined_add_noise", "Img2ImgRefinement", "NoiseLevelImg2Img"]


def img2img_direction(direction_at: DirectionFn, clean: Tensor, alpha_bar: float) -> DirectionFn:
    r"""The direction on ε for img2img: ``ε ↦ direction_at(√ᾱ·x₀ + √(1−ᾱ)·ε)``, the image term fixed.

    Args:
        direction_at (`Callable`): the model's direction at ``t_s`` as a function of the model input
            ``x_{t_s}``, e.g. an adapter's ``direction_fn(..., reference_timestep=t_s)``.
        clean (`torch.Tensor`): the image (latents) ``x₀``, shape ``(B, ...)`` like ε.
        alpha_bar (`float`): ``ᾱ_{t_s}`` in (0, 1).

    Returns:
        ``direction(eps, index=None)`` for :func:`nlg.refine_noise`; ``index`` selects rows of ``x₀``
        (and is passed on) when adaptive stopping drops finished samples.
    """
    if not 0.0 < alpha_bar < 1.0:
        raise ValueError(f"alpha_bar must be in (0, 1), got {alpha_bar}")
    alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    pass_index = accepts_index(direction_at)

    def direction(eps: Tensor, index: Optional[Tensor] = None) -> Tensor:
        x0 = clean if index is None else clean[index.to(clean.device)]
        x = alpha * x0.to(eps.device, eps.dtype) + sigma * eps
        return direction_at(x, index=index) if pass_index and index is not None else direction_at(x)

    return direction


@contextmanager
def refined_add_noise(scheduler: Any, refine: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Iterator[List[int]]:
    """Within the block, the first ``scheduler.add_noise(x₀, ε, t)`` call uses ``refine(x₀, ε, t)`` as ε.

    The wrapper lives on the scheduler instance only and is removed on exit (also on errors).  Yields
    a list that records the calls (their count), so callers can check the pipeline made exactly one.
    """
    if not hasattr(scheduler, "add_noise"):
        raise TypeError(f"{type(scheduler).__name__} has no add_noise: not a DDPM- or Euler-type scheduler")
    had_own = "add_noise" in vars(scheduler)
    original = scheduler.add_noise
    calls: List[int] = []

    def add_noise(original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        if not calls:
            refined = refine(original_samples, noise, timesteps)
            if refined.shape != noise.shape:
                raise ValueError(f"refined noise has shape {tuple(refined.shape)}, expected {tuple(noise.shape)}")
            noise = refined.to(noise.dtype)
        calls.append(1)
        return original(original_samples, noise, timesteps)

    scheduler.add_noise = add_noise
    try:
        yield calls
    finally:
        if had_own:
            scheduler.add_noise = original
        else:
            del scheduler.add_noise


@dataclass
class Img2ImgRefinement:
    """What :class:`NoiseLevelImg2Img` did.

    Args:
        initial_noise (`torch.Tensor`): the ε the pipeline drew.
        noise (`torch.Tensor`): the refined ε it used instead.
        step_norms (`torch.Tensor`): ‖d‖₂ per step and image, shape ``(refining_steps, B)``.
        evaluations (`torch.Tensor`): batched UNet evaluations per image.
        level (`SchedulePoint`, *optional*): the start, from the strength (None with custom ``timesteps``/``sigmas``).
        timestep (`int`): the training timestep at which the direction was evaluated.
    """

    initial_noise: Tensor
    noise: Tensor
    step_norms: Tensor
    evaluations: Tensor
    level: Optional[SchedulePoint]
    timestep: int


class NoiseLevelImg2Img:
    r"""NLG for ``StableDiffusionImg2ImgPipeline``: refine the added noise at the start noise level.

    Args:
        guidance (`NoiseLevelGuidance`, *optional*): the refinement options (``refining_steps``,
            ``step_size``, ``clip_threshold``, ``noise_level``, ``guidance_formula_gamma``,
            ``stop_tolerance``, …); defaults to the paper's.  Its ``reference_timestep`` must be None:
            img2img evaluates at the start timestep ``t_s``.

    Example::

        nlg = NoiseLevelImg2Img(NoiseLevelGuidance(refining_steps=10))
        image = nlg(pipe, "a watercolour fox", image=init, strength=0.6, generator=torch.Generator().manual_seed(0)).images[0]
    """

    def __init__(self, guidance: Optional[NoiseLevelGuidance] = None) -> None:
        guidance = guidance if guidance is not None else NoiseLevelGuidance()
        if not isinstance(guidance, NoiseLevelGuidance):
            raise TypeError(f"guidance must be a NoiseLevelGuidance, got {type(guidance).__name__}")
        if guidance.reference_timestep is not None:
            raise ValueError("img2img evaluates the direction at the start timestep; leave reference_timestep=None")
        self.guidance = guidance

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.guidance!r})"

    def __call__(
        self, pipe: Any, prompt: Any, *, image: Any, strength: float = 0.8, return_refinement: bool = False,
        **pipeline_kwargs: Any,
    ) -> Any:
        """Run ``pipe(prompt, image=image, strength=strength, **pipeline_kwargs)`` with the refined noise.

        Returns the pipeline's output, or ``(output, Img2ImgRefinement)`` with ``return_refinement=True``.

        Raises:
            ValueError: if ``strength`` is outside (0, 1] or leaves no denoising step.
            TypeError: for SDXL img2img pipelines or ``prompt_embeds`` instead of a prompt.
        """
        check_strength(strength)
        if isinstance(image, Tensor) and (not image.is_floating_point() or not bool(torch.isfinite(image).all())):
            raise ValueError("image must be a finite floating-point tensor (it holds NaN/Inf or is not float)")
        adapter = DiffusersAdapter(pipe)
        if adapter.is_sdxl:
            raise TypeError("NoiseLevelImg2Img supports StableDiffusionImg2ImgPipeline (SD 1.x / 2.x), not SDXL")
        if pipeline_kwargs.get("prompt_embeds") is not None:
            raise TypeError("pass prompt (and negative_prompt), not prompt_embeds: NLG encodes them itself")
        level = None
        if pipeline_kwargs.get("timesteps") is None and pipeline_kwargs.get("sigmas") is None:
            level = schedule_point_for_strength(pipe.scheduler, strength, pipeline_kwargs.get("num_inference_steps", 50))
        options = self.guidance.options
        generator: GeneratorLike = pipeline_kwargs.get("generator")
        check_generator(generator)  # its length is the pipeline's to check
        encode_kwargs = {k: pipeline_kwargs[k] for k in ENCODE_KWARGS if k in pipeline_kwargs}
        _, conditioning = adapter.encode(
            prompt, num_images_per_prompt=pipeline_kwargs.get("num_images_per_prompt", 1), **encode_kwargs
        )
        record: Dict[str, Any] = {}

        def refine(clean: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
            t_ref = int(round(float(timesteps.flatten()[0])))
            alpha_bar = float(pipe.scheduler.alphas_cumprod[t_ref])
            direction_at = adapter.direction_fn(conditioning, gamma=options.guidance_formula_gamma, reference_timestep=t_ref)
            direction = img2img_direction(direction_at, clean, alpha_bar)
            result = refine_noise(noise, direction, options=options, generator=generator)
            record.update(initial_noise=noise.clone(), noise=result.latents, step_norms=result.step_norms,
                          evaluations=result.evaluations, timestep=t_ref)
            return result.latents

        with refined_add_noise(pipe.scheduler, refine) as calls:
            output = pipe(prompt, image=image, strength=strength, **pipeline_kwargs)
        if len(calls) != 1:
            raise RuntimeError(f"expected the pipeline to call scheduler.add_noise once, it called it {len(calls)} times")
        if not return_refinement:
            return output
        return output, Img2ImgRefinement(level=level, **record)
