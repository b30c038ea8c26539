"""What :class:`nlg.NoiseLevelGuidance` needs from a model family, and helpers every adapter shares.

An adapter turns one family of pipelines into the pure direction callable that
:func:`nlg.refine_noise` steps against (as k-diffusion's ``external`` wrappers turn models into
denoisers).  :mod:`nlg.adapters.stable_diffusion` covers SD 1.x/2.x/XL, :mod:`nlg.adapters.flow`
covers flow-matching transformers (SD3); other families, such as :mod:`nlg.digits`, give their pipeline
an ``nlg_adapter()`` method returning a :class:`GuidanceAdapter`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Protocol, Tuple, Union, runtime_checkable

import torch
from torch import Tensor

from ..core.refine import DirectionFn, GeneratorLike

__all__ = ["GuidanceAdapter", "cfg_rows", "prompt_batch_size", "ENCODE_KWARGS", "SDXL_SIZE_KWARGS"]

Prompt = Union[str, List[str]]
#: Keyword arguments of ``pipe(...)`` that only shape prompt encoding; NLG consumes them.
ENCODE_KWARGS = ("negative_prompt", "prompt_2", "negative_prompt_2", "clip_skip")
#: Stable Diffusion 3's extra encoding keywords (its T5 encoder), consumed by :mod:`nlg.adapters.flow`.
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
