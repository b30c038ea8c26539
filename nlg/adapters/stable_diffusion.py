"""The diffusers adapter: turns a Stable Diffusion pipeline into NLG's direction callable.

Everything diffusers-specific lives here: prompt encoding through the pipeline's own
``encode_prompt``, the SDXL added conditioning (pooled text embeddings and time ids), the
prediction-type conversion with the pipeline's own ``alphas_cumprod``, and drawing the initial noise
exactly as ``pipe.prepare_latents`` does.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from ..core.refine import DirectionFn
from ..utils.types import GeneratorLike
from .base import (EMBEDDING_KWARGS, Prompt, cfg_output_direction, cfg_rows, check_prompt_embeds, prompt_batch_size,
                   reference_point)

__all__ = ["DiffusersAdapter", "check_text_to_image"]

#: Encoding keywords of other model families (SD3's T5 encoder and joint attention), refused here by name.
_FOREIGN_ENCODE_KWARGS = ("prompt_3", "negative_prompt_3", "max_sequence_length", "joint_attention_kwargs")


def _control_component(pipe: Any) -> Optional[str]:
    """The name of the component that adds residuals to every UNet call (ControlNet, T2I-Adapter), if any."""
    for name in ("controlnet", "adapter"):
        if getattr(pipe, name, None) is not None:
            return name
    return None


def check_text_to_image(pipe: Any) -> None:
    """Refuse pipelines that do not sample from pure noise with the bare UNet, naming the class.

    ControlNet / T2I-Adapter pipelines (a ``controlnet`` or ``adapter`` component) add control residuals to
    every UNet call, so a direction from the bare UNet would not be the model that samples.  Img2img,
    inpainting and other image-conditioned pipelines (a ``__call__`` taking ``image``) start from a noised
    image, not from the noise NLG refines: :class:`nlg.img2img.NoiseLevelImg2Img` is the method for img2img.

    Raises:
        TypeError: naming the pipeline class and what to use instead.
    """
    cls = type(pipe).__name__
    control = _control_component(pipe)
    if control is not None:
        kind = "ControlNet" if control == "controlnet" else "T2I-Adapter"
        raise TypeError(
            f"{cls} is not supported: its {kind} ({control!r}) adds control residuals to every UNet call, and "
            "NoiseLevelGuidance refines with the bare UNet; use the text-to-image pipeline without control"
        )
    call = getattr(pipe, "__call__", None)
    try:
        parameters = inspect.signature(call).parameters if callable(call) else {}
    except (TypeError, ValueError):
        return
    if "image" in parameters or "mask_image" in parameters:
        raise TypeError(
            f"{cls} is an image-conditioned (img2img / inpainting) pipeline; NoiseLevelGuidance refines the pure "
            "noise of text-to-image sampling. For img2img use nlg.img2img.NoiseLevelImg2Img "
            "(StableDiffusionImg2ImgPipeline); inpainting is not supported"
        )


class DiffusersAdapter:
    """NLG for diffusers' ``StableDiffusionPipeline`` (ε and v prediction) and ``StableDiffusionXLPipeline``.

    Args:
        pipe (`DiffusionPipeline`):
            A pipeline with ``unet``, ``text_encoder``, ``scheduler`` and ``encode_prompt``.  SDXL is
            recognised by its ``text_encoder_2`` component.
    """

    def __init__(self, pipe: Any) -> None:
        missing = [name for name in ("unet", "text_encoder", "scheduler") if getattr(pipe, name, None) is None]
        if getattr(pipe, "text_encoder", None) is None and getattr(pipe, "text_encoder_2", None) is not None:
            missing.remove("text_encoder")  # SDXL refiner-style pipelines have only the second encoder
        if missing or not hasattr(pipe, "encode_prompt"):
            raise TypeError(
                f"pipe must be a Stable Diffusion pipeline with a UNet, a text encoder and a scheduler; "
                f"{type(pipe).__name__} lacks {missing or ['encode_prompt']}"
            )
        control = _control_component(pipe)
        if control is not None:
            check_text_to_image(pipe)  # raises, naming the class
        in_channels, out_channels = pipe.unet.config.in_channels, pipe.unet.config.out_channels
        if in_channels > out_channels:  # e.g. 9 = 4 latent + 1 mask + 4 masked-image channels, predicting 4
            raise TypeError(
                f"{type(pipe).__name__}'s UNet takes {in_channels} input channels but predicts {out_channels}: an "
                "inpainting (or other image-conditioned) UNet, whose extra channels need an image; NoiseLevelGuidance "
                "refines the pure noise of a text-to-image UNet"
            )
        self.pipe = pipe
        self.is_sdxl = hasattr(pipe, "text_encoder_2")
        self.device = getattr(pipe, "_execution_device", None) or pipe.device

    # -- prompt ---------------------------------------------------------------------------------
    def encode(self, prompt: Optional[Prompt], *, num_images_per_prompt: int = 1, **encode_kwargs: Any) -> Tuple[int, Dict[str, Any]]:
        """Encode prompt and negative prompt once with the pipeline's own ``encode_prompt``.

        Precomputed embeddings (``prompt_embeds`` and the others in :data:`~nlg.adapters.base.EMBEDDING_KWARGS`)
        replace the prompt exactly as in ``pipe(...)``: ``encode_prompt`` repeats them per image and encodes the
        negative prompt (default: the empty prompt; zeros for SDXL with ``force_zeros_for_empty_prompt``) when
        no negative embeddings are given.  ``cross_attention_kwargs["scale"]`` is the LoRA scale of the text
        encoders (``lora_scale``, as ``pipe.__call__`` passes it); ``cross_attention_kwargs`` is returned in
        the conditioning so the refinement UNet calls and the pipeline both receive it.
        """
        foreign = sorted(k for k in _FOREIGN_ENCODE_KWARGS if encode_kwargs.get(k) is not None)
        if foreign:
            raise TypeError(f"{type(self.pipe).__name__} takes no {foreign} (Stable Diffusion 3 options)")
        negative = encode_kwargs.get("negative_prompt")
        embedded_batch = check_prompt_embeds(prompt, encode_kwargs, pooled=self.is_sdxl)
        if embedded_batch is None:
            batch_size = prompt_batch_size(prompt, num_images_per_prompt, negative)
        else:
            prompt_batch_size("", num_images_per_prompt)  # checks num_images_per_prompt
            batch_size = embedded_batch
            if isinstance(negative, list) and len(negative) != batch_size:
                raise ValueError(f"negative_prompt has {len(negative)} entries but prompt_embeds has {batch_size}")
        attention = encode_kwargs.get("cross_attention_kwargs")
        if attention is not None and not isinstance(attention, dict):
            raise TypeError(f"cross_attention_kwargs must be a dict or None, got {type(attention).__name__}")
        embeds = {k: encode_kwargs[k] for k in EMBEDDING_KWARGS if encode_kwargs.get(k) is not None}
        common = dict(
            device=self.device,
            num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=True,
            negative_prompt=negative,
            prompt_embeds=embeds.get("prompt_embeds"),
            negative_prompt_embeds=embeds.get("negative_prompt_embeds"),
            lora_scale=None if attention is None else attention.get("scale"),
            clip_skip=encode_kwargs.get("clip_skip"),
        )
        if self.is_sdxl:
            pe, npe, pooled, npooled = self.pipe.encode_prompt(
                prompt=prompt,
                prompt_2=encode_kwargs.get("prompt_2"),
                negative_prompt_2=encode_kwargs.get("negative_prompt_2"),
                pooled_prompt_embeds=embeds.get("pooled_prompt_embeds"),
                negative_pooled_prompt_embeds=embeds.get("negative_pooled_prompt_embeds"),
                **common,
            )
            cond: Dict[str, Any] = dict(
                prompt_embeds=pe,
                negative_prompt_embeds=npe,
                pooled_prompt_embeds=pooled,
                negative_pooled_prompt_embeds=npooled,
            )
        else:
            pe, npe = self.pipe.encode_prompt(prompt, **common)
            cond = dict(prompt_embeds=pe, negative_prompt_embeds=npe)
        if attention is not None:
            cond["cross_attention_kwargs"] = dict(attention)
        return batch_size * num_images_per_prompt, cond

    # -- noise ----------------------------------------------------------------------------------
    def default_size(self) -> int:
        pipe = self.pipe
        sample_size = getattr(pipe, "default_sample_size", None) or pipe.unet.config.sample_size
        return sample_size * pipe.vae_scale_factor

    def latent_shape(self, batch_size: int, height: Optional[int], width: Optional[int]) -> Tuple[int, ...]:
        """The shape ``pipe.prepare_latents`` uses: (B, C, height // s, width // s)."""
        scale = self.pipe.vae_scale_factor
        height = self.default_size() if height is None else height
        width = self.default_size() if width is None else width
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % scale:
                raise ValueError(f"{name} must be a positive multiple of {scale}, got {value!r}")
        return (batch_size, self.pipe.unet.config.in_channels, height // scale, width // scale)

    def initial_latents(self, shape: Tuple[int, ...], generator: GeneratorLike, dtype: torch.dtype) -> Tensor:
        """Draw x_T / init_noise_sigma exactly as ``pipe.prepare_latents`` would (``randn_tensor``)."""
        return randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)

    # -- direction ------------------------------------------------------------------------------
    def direction_fn(
        self,
        conditioning: Dict[str, Any],
        *,
        gamma: Optional[float],
        reference_timestep: Optional[int],
        height: Optional[int] = None,
        width: Optional[int] = None,
        **size_kwargs: Any,
    ) -> DirectionFn:
        r"""NLG's direction ``ε(n|c) − ε(n|∅)`` at ``t_ref``, one batched UNet call on ``[n, n]``.

        The UNet sees n itself, the unit-variance x_T; the output is turned into ε with the
        scheduler's ``alphas_cumprod[t_ref]`` (:func:`nlg.core.to_epsilon`).  ``conditioning`` may hold the
        ``cross_attention_kwargs`` (e.g. the LoRA ``scale``) of :meth:`encode`; every UNet call receives them.
        Inputs go to ``pipe._execution_device`` (the accelerator under ``enable_model_cpu_offload()``, where
        the UNet's own weights sit on the CPU until its offload hook moves them).
        """
        pipe = self.pipe
        unet = pipe.unet
        timestep, alpha_bar, prediction_type = reference_point(pipe.scheduler, reference_timestep, self.device)
        embeds = torch.cat([conditioning["negative_prompt_embeds"], conditioning["prompt_embeds"]]).to(self.device)
        attention = conditioning.get("cross_attention_kwargs")
        added: Optional[Dict[str, Tensor]] = None
        if self.is_sdxl:
            added = self._sdxl_added_conditioning(conditioning, height, width, **size_kwargs)

        def direction(latents: Tensor, index: Optional[Tensor] = None) -> Tensor:
            sample = torch.cat([latents, latents]).to(self.device, unet.dtype)
            cond = None if added is None else {k: cfg_rows(v, index) for k, v in added.items()}
            out = unet(sample, timestep, encoder_hidden_states=cfg_rows(embeds, index), added_cond_kwargs=cond,
                       cross_attention_kwargs=attention, return_dict=False)[0]
            return cfg_output_direction(out.float(), sample.float(), alpha_bar, prediction_type, gamma).to(latents.device)

        return direction

    def _sdxl_added_conditioning(
        self,
        conditioning: Dict[str, Any],
        height: Optional[int],
        width: Optional[int],
        original_size: Optional[Tuple[int, int]] = None,
        crops_coords_top_left: Tuple[int, int] = (0, 0),
        target_size: Optional[Tuple[int, int]] = None,
    ) -> Dict[str, Tensor]:
        """SDXL's micro-conditioning, built as ``StableDiffusionXLPipeline.__call__`` builds it."""
        size = (height or self.default_size(), width or self.default_size())
        time_ids = list(tuple(original_size or size) + tuple(crops_coords_top_left) + tuple(target_size or size))
        pooled = conditioning["pooled_prompt_embeds"]
        expected = self.pipe.unet.add_embedding.linear_1.in_features
        passed = self.pipe.unet.config.addition_time_embed_dim * len(time_ids) + pooled.shape[-1]
        if expected != passed:
            raise ValueError(f"the UNet expects added embeddings of size {expected}, the pipeline gives {passed}")
        text_embeds = torch.cat([conditioning["negative_pooled_prompt_embeds"], pooled]).to(self.device)
        ids = torch.tensor([time_ids], dtype=text_embeds.dtype, device=self.device).repeat(text_embeds.shape[0], 1)
        return {"text_embeds": text_embeds, "time_ids": ids}
