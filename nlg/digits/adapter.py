"""``DigitsAdapter``: the :class:`nlg.adapters.GuidanceAdapter` for :class:`nlg.digits.DigitsPipeline`.

It gives :class:`nlg.NoiseLevelGuidance` NLG's classifier-free direction for the digits model
(arXiv 2509.13936, Eq. 7), evaluated at the last training timestep ``t_ref = 999`` on the initial noise:

.. math::
    d(n) = \\epsilon(n, t_{ref} \\mid c) - \\epsilon(n, t_{ref} \\mid \\bar c),

with ``c`` the requested digit and ``c̄`` the negative label (the null class 10 by default), or the
guidance-formula variant ``γ ε(n|c) + (1−γ) ε(n|c̄)``.  The algorithm itself stays in
:func:`nlg.refine_noise`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..adapters.base import cfg_output_direction, cfg_rows, reference_point
from ..core.refine import DirectionFn
from ..utils.types import GeneratorLike
from .data import IMAGE_SIZE, check_image_size
from .labels import encode_labels

__all__ = ["DigitsAdapter"]


class DigitsAdapter:
    """Class label = prompt, null class = negative prompt.

    Args:
        pipe (`DigitsPipeline`): the pipeline whose UNet and scheduler define the direction.
    """

    def __init__(self, pipe: Any) -> None:
        missing = [name for name in ("unet", "scheduler", "prepare_latents") if not hasattr(pipe, name)]
        if missing:
            raise TypeError(f"pipe must be a DigitsPipeline, got {type(pipe).__name__} (it lacks {missing})")
        self.pipe = pipe

    def encode(self, prompt: Any, *, num_images_per_prompt: int = 1, **encode_kwargs: Any) -> Tuple[int, Dict[str, Any]]:
        """Labels in, ``{"labels", "negative_labels"}`` out: the keyword arguments ``DigitsPipeline`` takes."""
        negative = encode_kwargs.pop("negative_prompt", None)
        unsupported = sorted(k for k, v in encode_kwargs.items() if v is not None)
        if unsupported:
            raise TypeError(f"the digits pipeline takes no text-encoder options, got {unsupported}")
        labels, negative_labels = encode_labels(prompt, negative, num_images_per_prompt=num_images_per_prompt)
        return labels.numel(), {"labels": labels, "negative_labels": negative_labels}

    def latent_shape(self, batch_size: int, height: Optional[int], width: Optional[int]) -> Tuple[int, ...]:
        """``(B, 1, 8, 8)``: the model works in pixel space at 8×8 only."""
        check_image_size(height, width)
        return (batch_size, self.pipe.unet.config.in_channels, IMAGE_SIZE, IMAGE_SIZE)

    def initial_latents(self, shape: Tuple[int, ...], generator: GeneratorLike, dtype: torch.dtype) -> Tensor:
        """x_T drawn exactly as :meth:`~nlg.digits.pipeline.DigitsPipeline.prepare_latents` draws it."""
        return self.pipe.prepare_latents(shape[0], generator).to(dtype)

    def direction_fn(self, conditioning: Dict[str, Any], *, gamma: Optional[float], reference_timestep: Optional[int],
                     height: Optional[int] = None, width: Optional[int] = None, **unused: Any) -> DirectionFn:
        """NLG's direction at ``t_ref``: one UNet call on ``[n, n]`` with ``[c̄, c]``."""
        if unused:
            raise TypeError(f"the digits pipeline takes no size conditioning, got {sorted(unused)}")
        check_image_size(height, width)
        unet = self.pipe.unet
        timestep, alpha_bar, prediction_type = reference_point(self.pipe.scheduler, reference_timestep)
        class_labels = torch.cat([conditioning["negative_labels"], conditioning["labels"]])

        def direction(latents: Tensor, index: Optional[Tensor] = None) -> Tensor:
            # ``index``: the batch positions of ``latents`` when adaptive stopping has dropped some.
            labels = cfg_rows(class_labels, index)
            sample = torch.cat([latents, latents]).float()
            out = unet(sample, timestep, class_labels=labels).sample
            return cfg_output_direction(out, sample, alpha_bar, prediction_type, gamma).to(latents.dtype)

        return direction
