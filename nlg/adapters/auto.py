"""``get_adapter``: pick the adapter for a pipeline."""

from __future__ import annotations

from typing import Any

from .base import GuidanceAdapter
from .flow import FlowMatchingAdapter
from .stable_diffusion import DiffusersAdapter, check_text_to_image

__all__ = ["get_adapter"]


def get_adapter(pipe: Any) -> GuidanceAdapter:
    """Return the adapter for ``pipe``: its own ``nlg_adapter()`` if it has one, else :class:`DiffusersAdapter`.

    Raises:
        TypeError: for ControlNet, T2I-Adapter, img2img and inpainting pipelines, naming the class
            (:func:`~nlg.adapters.stable_diffusion.check_text_to_image`).
    """
    if hasattr(pipe, "nlg_adapter"):
        return pipe.nlg_adapter()
    if getattr(pipe, "transformer", None) is not None and getattr(pipe, "unet", None) is None:
        return FlowMatchingAdapter(pipe)  # SD3 and other flow-matching transformers
    check_text_to_image(pipe)
    return DiffusersAdapter(pipe)
