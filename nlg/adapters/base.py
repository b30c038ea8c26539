"""What :class:`nlg.NoiseLevelGuidance` needs from a model family, and helpers every adapter shares.

An adapter turns one family of pipelines into the pure direction callable that
:func:`nlg.refine_noise` steps against (as k-diffusion's ``external`` wrappers turn models into
denoisers).  :mod:`nlg.adapters.stable_diffusion` covers SD 1.x/2.x/XL, :mod:`nlg.adapters.flow`
covers flow-matching transformers (SD3); other families, such as :mod:`nlg.digits`, give their pipeline
an ``nlg_adapter()`` method returning a :class:`GuidanceAdapter`.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Iterable, List, Optional, Protocol, Tuple, Union, runtime_checkable

import torch
from torch import Tensor

from ..core.directions import PREDICTION_TYPES, cfg_direction, to_epsilon
from ..core.refine import DirectionFn
from ..core.schedule import reference_alpha_bar
from ..utils.types import GeneratorLike

__all__ = [
    "GuidanceAdapter",
    "cfg_rows",
    "reference_point",
    "cfg_output_direction",
    "prompt_batch_size",
    "check_prompt_embeds",
    "check_pipeline_kwargs",
    "REFUSED_KWARGS",
    "ENCODE_KWARGS",
    "EMBEDDING_KWARGS",
    "SDXL_SIZE_KWARGS",
]

Prompt = Union[str, List[str]]
#: Keyword arguments of ``pipe(...)`` that only shape prompt encoding; NLG consumes them.
ENCODE_KWARGS = ("negative_prompt", "prompt_2", "negative_prompt_2", "clip_skip")
#: Stable Diffusion 3's extra encoding keywords (its T5 encoder), consumed by :mod:`nlg.adapters.flow`.
ENCODE_KWARGS += ("prompt_3", "negative_prompt_3", "max_sequence_length")
#: Precomputed prompt embeddings (e.g. from Compel) in place of ``prompt`` / ``negative_prompt``; NLG encodes them
#: through the pipeline's own ``encode_prompt`` (repeated per image, the empty prompt as the default negative).
EMBEDDING_KWARGS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
#: ``cross_attention_kwargs`` (with the LoRA ``scale``) reaches the prompt encoding and every refinement model call;
#: the adapter returns it in the conditioning, so the pipeline receives it as well.
ENCODE_KWARGS += EMBEDDING_KWARGS + ("cross_attention_kwargs",)
#: Stable Diffusion 3's ``joint_attention_kwargs`` (with the LoRA ``scale``), its counterpart of
#: ``cross_attention_kwargs``: :mod:`nlg.adapters.flow` gives it to the prompt encoding and every refinement
#: transformer call, and returns it in the conditioning for the pipeline.
ENCODE_KWARGS += ("joint_attention_kwargs",)
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


def reference_point(
    scheduler: Any, reference_timestep: Optional[int], device: Optional[torch.device] = None
) -> Tuple[Tensor, float, str]:
    """Where an ε-model adapter evaluates NLG's direction: the timestep ``t_ref`` as a tensor, ᾱ there, and
    the scheduler's ``prediction_type`` (checked).

    Args:
        scheduler (`SchedulerMixin`): the pipeline's scheduler; its ``alphas_cumprod`` and ``config`` are read.
        reference_timestep (`int`, *optional*): ``t_ref``; default: the last training timestep
            (:func:`nlg.core.schedule.reference_alpha_bar`).
        device (`torch.device`, *optional*): where the timestep tensor goes (default: torch's default device).
    """
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unknown prediction_type {prediction_type!r} in the pipeline's scheduler config; "
            f"expected one of {PREDICTION_TYPES}"
        )
    t_ref, alpha_bar = reference_alpha_bar(scheduler, reference_timestep)
    return torch.tensor(t_ref, device=device), alpha_bar, prediction_type


def cfg_output_direction(
    model_output: Tensor, sample: Tensor, alpha_bar: float, prediction_type: str, gamma: Optional[float]
) -> Tensor:
    r"""NLG's direction from one model call on ``[n; n]`` with ``[negative; positive]`` conditioning.

    The output is turned into ε (:func:`nlg.core.to_epsilon`), split into ε(n|c̄) and ε(n|c), and combined by
    :func:`nlg.core.cfg_direction`: :math:`\epsilon(n|c) - \epsilon(n|\bar c)`, or with ``gamma`` the
    guidance-formula variant (arXiv 2509.13936, Eq. 7).

    Args:
        model_output (`torch.Tensor`): the raw output on the stacked batch ``sample``.
        sample (`torch.Tensor`): the model input, ``torch.cat([n, n])``.
        alpha_bar (`float`), prediction_type (`str`): as :func:`reference_point` returns them.
        gamma (`float`, *optional*): the guidance-formula weight; None for the plain difference.
    """
    eps_uncond, eps_cond = to_epsilon(model_output, sample, alpha_bar, prediction_type).chunk(2)
    return cfg_direction(eps_cond, eps_uncond, gamma)


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


#: Pipeline keywords NLG refuses, with the reason.
REFUSED_KWARGS: Dict[str, str] = {
    name: (
        "IP-Adapter image conditioning is not supported by NoiseLevelGuidance: the refinement direction would be "
        "computed without the image embeddings the UNet samples with. Run the pipeline without NLG, or without the "
        "IP-Adapter"
    )
    for name in ("ip_adapter_image", "ip_adapter_image_embeds")
}


def check_pipeline_kwargs(pipe: Any, pipeline_kwargs: Dict[str, Any], consumed: Iterable[str] = ()) -> None:
    """Refuse, by name, keywords NLG cannot honour and keywords ``pipe.__call__`` does not name.

    Keywords in :data:`ENCODE_KWARGS`, :data:`SDXL_SIZE_KWARGS` and ``consumed`` are NLG's own (the adapter
    refuses those its model family lacks); any other must be a named parameter of ``pipe.__call__``.

    Raises:
        ValueError: for a keyword in :data:`REFUSED_KWARGS` that is not None.
        TypeError: for a keyword that neither NLG nor ``pipe.__call__``'s signature names.
    """
    for name, reason in REFUSED_KWARGS.items():
        if pipeline_kwargs.get(name) is not None:
            raise ValueError(f"{name}: {reason}")
    call = getattr(pipe, "__call__", None)
    try:
        parameters = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return  # no signature to check against: the pipeline itself will judge
    named = {n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(pipeline_kwargs) - named - set(consumed) - set(ENCODE_KWARGS) - set(SDXL_SIZE_KWARGS))
    if unknown:
        raise TypeError(f"{type(pipe).__name__}.__call__ takes no keyword arguments {unknown}")


def check_prompt_embeds(prompt: Any, encode_kwargs: Dict[str, Any], *, pooled: bool) -> Optional[int]:
    """Check ``prompt`` against precomputed embeddings as diffusers' ``check_inputs`` does; the embeddings' batch size.

    A prompt or ``prompt_embeds``, never both (likewise ``negative_prompt`` and ``negative_prompt_embeds``, and
    ``prompt_2`` with ``prompt_embeds``); embeddings are ``(B, tokens, dim)`` tensors whose negative has the
    positive's shape; with ``pooled`` (SDXL) each embedding needs its pooled one, and without it pooled embeddings
    are refused.  Returns ``prompt_embeds.shape[0]`` when embeddings replace the prompt, else None.
    """
    embeds = {name: encode_kwargs.get(name) for name in EMBEDDING_KWARGS}
    for name, value in embeds.items():
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not pooled:
        given = [name for name in EMBEDDING_KWARGS[2:] if embeds[name] is not None]
        if given:
            raise TypeError(f"this pipeline takes no pooled embeddings (SDXL only), got {given}")
    positive, negative = embeds["prompt_embeds"], embeds["negative_prompt_embeds"]
    if prompt is not None and positive is not None:
        raise ValueError("Cannot forward both `prompt` and `prompt_embeds`: pass only one of them (as diffusers)")
    if prompt is None and positive is None:
        raise ValueError("Provide either `prompt` or `prompt_embeds`; both are None")
    for text in ("prompt_2", "negative_prompt", "negative_prompt_2"):
        embedding = "prompt_embeds" if text == "prompt_2" else "negative_prompt_embeds"
        if encode_kwargs.get(text) is not None and embeds[embedding] is not None:
            raise ValueError(f"Cannot forward both `{text}` and `{embedding}`: pass only one of them (as diffusers)")
    for name in ("prompt_embeds", "negative_prompt_embeds"):
        if embeds[name] is not None and embeds[name].ndim != 3:
            raise ValueError(f"{name} must have shape (batch, tokens, dim), got {tuple(embeds[name].shape)}")
    if positive is not None and negative is not None and positive.shape != negative.shape:
        raise ValueError(
            f"prompt_embeds and negative_prompt_embeds must have the same shape, got {tuple(positive.shape)} "
            f"and {tuple(negative.shape)}"
        )
    if pooled:
        for name in ("prompt_embeds", "negative_prompt_embeds"):
            pooled_name = name.replace("prompt_embeds", "pooled_prompt_embeds")
            if embeds[name] is not None and embeds[pooled_name] is None:
                raise ValueError(f"`{name}` was given without `{pooled_name}`: SDXL needs both (as diffusers)")
            if embeds[name] is None and embeds[pooled_name] is not None:
                raise ValueError(f"`{pooled_name}` was given without `{name}`: pass both or neither")
    if positive is None:
        return None
    if positive.shape[0] < 1:
        raise ValueError("prompt_embeds holds no prompt (batch size 0)")
    return int(positive.shape[0])
