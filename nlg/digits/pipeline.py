"""``DigitsPipeline``: class-conditional sampling from the digits UNet with classifier-free guidance.

    pipe = DigitsPipeline.from_pretrained()                      # the shipped weights
    images = pipe([3, 7], guidance_scale=2.0, generator=per_sample_generators(0, 2)).images
    images = NoiseLevelGuidance()(pipe, [3, 7], guidance_scale=0.0, generator=per_sample_generators(0, 2)).images

Classifier-free guidance (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598) at every sampler step:

.. math::
    \\hat\\epsilon = \\epsilon(x_t|\\varnothing) + s\\,(\\epsilon(x_t|c) - \\epsilon(x_t|\\varnothing)),

so ``s = 0`` samples the unconditional model and ``s = 1`` the conditional one.  The class label is the
prompt, the null class 10 the negative prompt.  ``nlg_adapter()`` hands :class:`nlg.NoiseLevelGuidance`
a :class:`nlg.digits.adapter.DigitsAdapter`, so NLG runs through the same model-agnostic
:func:`nlg.refine_noise` as for Stable Diffusion.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from diffusers import DDIMScheduler, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor
from tqdm.auto import tqdm

from .adapter import DigitsAdapter
from .data import IMAGE_SIZE, check_image_size
from .labels import Labels, encode_labels
from .model import load_digits_model
from ..utils.types import GeneratorLike

__all__ = ["DigitsPipeline", "DigitsPipelineOutput", "default_sampler", "DEFAULT_GUIDANCE_SCALE"]

DEFAULT_GUIDANCE_SCALE = 1.0
DEFAULT_INFERENCE_STEPS = 25


@dataclass
class DigitsPipelineOutput:
    """What :class:`DigitsPipeline` returns.

    Args:
        images (`torch.Tensor`): samples of shape ``(B, 1, 8, 8)`` in [-1, 1] (float32, CPU).
        labels (`torch.LongTensor`): the requested digit of each sample, shape ``(B,)``.
    """

    images: Tensor
    labels: Tensor


def default_sampler(train_scheduler: SchedulerMixin) -> DDIMScheduler:
    """Deterministic DDIM (η = 0) on the training schedule, ``trailing`` spacing, x̂₀ clipped to [-1, 1].

    ``trailing`` spacing makes the first step t = 999, the timestep at which NLG evaluates the model
    on the initial noise; clipping x̂₀ keeps pixel-space samples in range.
    """
    return DDIMScheduler.from_config(train_scheduler.config, timestep_spacing="trailing", clip_sample=True)


class DigitsPipeline:
    """Class-conditional CFG sampler for the digits UNet, usable with :class:`nlg.NoiseLevelGuidance`.

    Args:
        unet (`UNet2DModel`): a class-conditional UNet with ``num_class_embeds = 11`` on 8×8×1 images.
        scheduler (`SchedulerMixin`): any diffusers scheduler with ``alphas_cumprod`` (DDIM, DDPM,
            Euler, …), configured with the training schedule.
    """

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin) -> None:
        if not isinstance(unet, UNet2DModel):
            raise TypeError(f"unet must be a diffusers UNet2DModel, got {type(unet).__name__}")
        if unet.config.num_class_embeds is None or unet.config.num_class_embeds < 11:
            raise ValueError("unet must have num_class_embeds >= 11 (10 digits + the null class)")
        if getattr(scheduler, "alphas_cumprod", None) is None:
            raise TypeError(f"scheduler must be a diffusers DDPM-type scheduler, got {type(scheduler).__name__}")
        self.unet = unet.eval()
        self.scheduler = scheduler
        self.device = torch.device("cpu")
        self._step_takes_generator = "generator" in inspect.signature(scheduler.step).parameters

    @classmethod
    def from_pretrained(
        cls, directory: Union[str, Path, None] = None, *, scheduler: Optional[SchedulerMixin] = None
    ) -> "DigitsPipeline":
        """Load weights with :func:`nlg.digits.model.load_digits_model` (default: the shipped ones).

        Args:
            directory (`str` or `Path`, *optional*): folder with ``digits_unet.safetensors`` and ``.json``.
            scheduler (`SchedulerMixin`, *optional*): the sampler; defaults to :func:`default_sampler`.
        """
        unet, train_scheduler, _ = load_digits_model(directory)
        return cls(unet, scheduler if scheduler is not None else default_sampler(train_scheduler))

    def nlg_adapter(self) -> DigitsAdapter:
        """The :class:`nlg.adapters.GuidanceAdapter` that :class:`nlg.NoiseLevelGuidance` uses."""
        return DigitsAdapter(self)

    def prepare_latents(self, batch_size: int, generator: GeneratorLike) -> Tensor:
        """Unit-variance x_T of shape ``(B, 1, 8, 8)``, drawn with diffusers' ``randn_tensor``."""
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"generator is a list of {len(generator)} generators but the batch holds {batch_size} images")
        shape = (batch_size, self.unet.config.in_channels, IMAGE_SIZE, IMAGE_SIZE)
        return randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)

    def guided_epsilon(self, sample: Tensor, timestep: Any, labels: Tensor, negative_labels: Tensor, guidance_scale: float) -> Tensor:
        """``ε(x|∅) + s (ε(x|c) − ε(x|∅))``; one UNet call on the doubled batch (one call if ``s`` is 0 or 1)."""
        if guidance_scale == 0.0:
            return self.unet(sample, timestep, class_labels=negative_labels).sample
        if guidance_scale == 1.0:
            return self.unet(sample, timestep, class_labels=labels).sample
        out = self.unet(torch.cat([sample, sample]), timestep, class_labels=torch.cat([negative_labels, labels])).sample
        eps_uncond, eps_cond = out.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    @torch.inference_mode()
    def __call__(
        self,
        labels: Optional[Labels] = None,
        *,
        negative_labels: Optional[Labels] = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        latents: Optional[Tensor] = None,
        generator: GeneratorLike = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        progress: bool = True,
    ) -> DigitsPipelineOutput:
        """Sample digits.

        Args:
            labels (`int`, `List[int]` or `torch.LongTensor`): the digits to draw, 0…9 (the "prompt").
            negative_labels (*optional*): the "negative prompt", 0…10; defaults to the null class 10.
            num_images_per_prompt (`int`, defaults to 1): images per label.
            num_inference_steps (`int`, defaults to 25): sampler steps.
            guidance_scale (`float`, defaults to 1.0): CFG scale ``s``; 0 = unconditional, 1 = conditional.
            latents (`torch.Tensor`, *optional*): unit-variance x_T of shape ``(B, 1, 8, 8)``, e.g. from NLG;
                drawn with ``generator`` if omitted.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*): a list gives one
                generator per image, which makes every image independent of the batch it sits in.
            height, width (`int`, *optional*): must be 8 or None.
            progress (`bool`, defaults to True): show a tqdm bar over sampler steps.
        """
        if labels is None:
            raise TypeError("labels is required: the digit(s) to draw, e.g. pipe([3, 7])")
        check_image_size(height, width)
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
            raise TypeError(f"guidance_scale must be a number, got {type(guidance_scale).__name__}")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
        labels, negative_labels = encode_labels(labels, negative_labels, num_images_per_prompt=num_images_per_prompt)
        batch = labels.numel()
        if latents is None:
            latents = self.prepare_latents(batch, generator)
        else:
            expected = (batch, self.unet.config.in_channels, IMAGE_SIZE, IMAGE_SIZE)
            if not isinstance(latents, Tensor):
                raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
            if tuple(latents.shape) != expected:
                raise ValueError(f"latents must have shape {expected} (labels × num_images_per_prompt), got {tuple(latents.shape)}")
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"generator is a list of {len(generator)} generators but the batch holds {batch} images")

        self.scheduler.set_timesteps(num_inference_steps)
        sample = latents.to(self.device, torch.float32) * self.scheduler.init_noise_sigma
        step_kwargs = {"generator": generator} if self._step_takes_generator else {}
        for t in tqdm(self.scheduler.timesteps, desc="sampling digits", disable=not progress, leave=False):
            model_input = self.scheduler.scale_model_input(sample, t)
            eps = self.guided_epsilon(model_input, t, labels, negative_labels, float(guidance_scale))
            sample = self.scheduler.step(eps, t, sample, **step_kwargs).prev_sample
        return DigitsPipelineOutput(images=sample.clamp(-1.0, 1.0).clone(), labels=labels.clone())
