"""``get_adapter``: pick the adapter for a pipeline."""

from __future__ import annotations

from typing import Any

from .base import GuidanceAdapter
from .flow import FlowMatchingAdapter
from .stable_diffusion import DiffusersAdapter

__all__ = ["get_adapter"]


def get_adapter(pipe: Any) -> GuidanceAdapter:
    """Return the adapter for ``pipe``: its own ``nlg_adapter()`` if it has one, else :class:`DiffusersAdapter`."""
    if hasattr(pipe, "nlg_adapter"):
        return pipe.nlg_adapter()
    if getattr(pipe, "transformer", None) is not None and getattr(pipe, "unet", None) is None:
        return FlowMatchingAdapter(pipe)  # SD3 and other flow-matching transformers
    return DiffusersAdapter(pipe)
