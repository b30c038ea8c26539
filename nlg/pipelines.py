"""The diffusers adapter: turns a Stable Diffusion pipeline into NLG's direction callable.

Everything diffusers-specific lives here: prompt encoding through the pipeline's own
``encode_prompt``, the SDXL added conditioning (pooled text embeddings and time ids), the
prediction-type conversion with the pipeline's own ``alphas_cumprod``, and drawing the initial noise
exactly as ``pipe.prepare_latents`` does.  :class:`nlg.NoiseLevelGuidance` talks to any model through
the small :class:`GuidanceAdapter` protocol, so other model families (e.g. :mod:`nlg.digits`) plug in
by giving their pipeline an ``nlg_adapter()`` method.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Protocol, Tuple, Union, runtime_checkable

import torch
from torch import Tensor

from .directions import PREDICTION_TYPES, cfg_direction, check_signal, to_epsilon
from .refine import DirectionFn, GeneratorLike

__all__ = ["GuidanceAdapter", "DiffusersAdapter", "get_adapter"]

Prompt = Union[str, List[str]]
#: Keyword arguments of ``pipe(...)`` that only shape prompt encoding; NLG consumes them.
ENCODE_KWARGS = ("negative_prompt", "prompt_2", "negative_prompt_2", "clip_skip")
#: Stable Diffusion 3's extra encoding keywords (its T5 encoder), consumed by :mod:`nlg.flow`.
ENCODE_KWARGS += ("prompt_3", "negative_prompt_3", "max_sequence_length")
#: SDXL micro-conditioning keywords that NLG reads but also passes on to the pipeline.
SDXL_SIZE_KWARGS = ("original_size", "crops_coords_top_left", "target_size")


@runtime_checkable
class GuidanceAdapter(Protocol):
    """What :class:`nlg.NoiseLevelGuidance` needs from a model family.

    ``encode`` returns the batch size and the conditioning, as keyword arguments the pipeline accepts
    in place of the prompt; ``initial_latents`` draws unit-variance noise exactly as the pipeline
    would; ``direction_fn`` returns NLG's direction callable for :func:`nlg.refine_noise`.
    """

    def encode(self, prompt: Any, *, num_images_per_prompt: int, **encode_kwargs: Any) -> Tuple[int, Dict[str, Any]]:
        ...

    def latent_shape(self, batch_size: int, height: Optional[int], width: Optional[int]) -> Tuple[int, ...]:
        ...

    def initial_latents(self, shape: Tuple[int, ...], generator: GeneratorLike, dtype: torch.dtype) -> Tensor:
        ...

    def direction_fn(
        self, conditioning: Dict[str, Any], *, gamma: Optional[float], reference_timestep: Optional[int], **kwargs: Any
    ) -> DirectionFn:
        ...


def cfg_rows(stacked: Tensor, index: Optional[Tensor]) -> Tensor:
    """The rows of a ``[negative; positive]`` conditioning stack that belong to the images ``index``.

    Adaptive stopping hands direction callables only the active images; this keeps each image's own
    negative and positive conditioning.  ``index=None`` means every image.
    """
    if index is None:
        return stacked
    half = stacked.shape[0] // 2
    index = index.to(stacked.device)
    return torch.cat([stacked[index], stacked[half + index]])


def get_adapter(pipe: Any) -> GuidanceAdapter:
    """Return the adapter for ``pipe``: its own ``nlg_adapter()`` if it has one, else :class:`DiffusersAdapter`."""
    if hasattr(pipe, "nlg_adapter"):
        return pipe.nlg_adapter()
    if getattr(pipe, "transformer", None) is not None and getattr(pipe, "unet", None) is None:
        from .flow import FlowMatchingAdapter  # SD3 and other flow-matching transformers

        return FlowMatchingAdapter(pipe)
    return DiffusersAdapter(pipe)


def prompt_batch_size(prompt: Any, num_images_per_prompt: int, negative_prompt: Any = None) -> int:
    """Number of prompts in ``prompt`` (a str or a non-empty list of str), after checking the batch options."""
    if isinstance(prompt, str):
        batch_size = 1
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        batch_size = len(prompt)
    else:
        raise TypeError(f"prompt must be a str or a non-empty list of str, got {type(prompt).__name__}")
    if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be an int >= 1, got {num_images_per_prompt!r}")
    if isinstance(negative_prompt, list) and len(negative_prompt) != batch_size:
        raise ValueError(f"negative_prompt has {len(negative_prompt)} entries but prompt has {batch_size}")
    return batch_size


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
        self.pipe = pipe
        self.is_sdxl = hasattr(pipe, "text_encoder_2")
        self.device = getattr(pipe, "_execution_device", None) or pipe.device

    # -- prompt ---------------------------------------------------------------------------------
    def encode(self, prompt: Prompt, *, num_images_per_prompt: int = 1, **encode_kwargs: Any) -> Tuple[int, Dict[str, Any]]:
        """Encode prompt and negative prompt once with the pipeline's own ``encode_prompt``."""
        negative = encode_kwargs.get("negative_prompt")
        batch_size = prompt_batch_size(prompt, num_images_per_prompt, negative)
        common = dict(
            device=self.device,
            num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=True,
            negative_prompt=negative,
            clip_skip=encode_kwargs.get("clip_skip"),
        )
        if self.is_sdxl:
            pe, npe, pooled, npooled = self.pipe.encode_prompt(
                prompt=prompt,
                prompt_2=encode_kwargs.get("prompt_2"),
                negative_prompt_2=encode_kwargs.get("negative_prompt_2"),
                **common,
            )
            cond = dict(
                prompt_embeds=pe,
                negative_prompt_embeds=npe,
                pooled_prompt_embeds=pooled,
                negative_pooled_prompt_embeds=npooled,
            )
        else:
            pe, npe = self.pipe.encode_prompt(prompt, **common)
            cond = dict(prompt_embeds=pe, negative_prompt_embeds=npe)
        return batch_size * num_images_per_prompt, cond

    # -- noise ----------------------------------------------------------------------------------
    def default_size(self) -> int:
        pipe = self.pipe
        sample_size = getattr(pipe, "default_sample_size", None) or pipe.unet.config.sample_size
        return sample_size * pipe.vae_scale_factor

    def latent_shape(self, batch_size: int, height: Optional[int], width: Optional[int]) -> Tuple[int, ...]:
        """The shape ``pipe.prepare_latents`` uses: (B, C, height // s, width // s)."""
        scale = self.pipe.vae_scale_factor
        height = height or self.default_size()
        width = width or self.default_size()
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % scale:
                raise ValueError(f"{name} must be a positive multiple of {scale}, got {value!r}")
        return (batch_size, self.pipe.unet.config.in_channels, height // scale, width // scale)

    def initial_latents(self, shape: Tuple[int, ...], generator: GeneratorLike, dtype: torch.dtype) -> Tensor:
        """Draw x_T / init_noise_sigma exactly as ``pipe.prepare_latents`` would (``randn_tensor``)."""
        from diffusers.utils.torch_utils import randn_tensor

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
        scheduler's ``alphas_cumprod[t_ref]`` (:func:`nlg.directions.to_epsilon`).
        """
        pipe = self.pipe
        unet = pipe.unet
        prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction_type {prediction_type!r} in the pipeline's scheduler config; "
                f"expected one of {PREDICTION_TYPES}"
            )
        t_ref, alpha_bar = reference_alpha_bar(pipe.scheduler, reference_timestep)
        timestep = torch.tensor(t_ref, device=self.device)
        embeds = torch.cat([conditioning["negative_prompt_embeds"], conditioning["prompt_embeds"]]).to(self.device)
        added: Optional[Dict[str, Tensor]] = None
        if self.is_sdxl:
            added = self._sdxl_added_conditioning(conditioning, height, width, **size_kwargs)

        def direction(latents: Tensor, index: Optional[Tensor] = None) -> Tensor:
            sample = torch.cat([latents, latents]).to(self.device, unet.dtype)
            cond = None if added is None else {k: cfg_rows(v, index) for k, v in added.items()}
            out = unet(sample, timestep, encoder_hidden_states=cfg_rows(embeds, index), added_cond_kwargs=cond,
                       return_dict=False)[0]
            eps = to_epsilon(out.float(), sample.float(), alpha_bar, prediction_type)
            eps_uncond, eps_cond = eps.chunk(2)
            return cfg_direction(eps_cond, eps_uncond, gamma).to(latents.device)

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
