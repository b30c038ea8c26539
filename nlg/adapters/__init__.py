"""Adapters: each turns one model family into the direction callable :func:`nlg.refine_noise` steps against.

- :mod:`~nlg.adapters.base`: the :class:`GuidanceAdapter` protocol and helpers every adapter shares;
- :mod:`~nlg.adapters.stable_diffusion`: :class:`DiffusersAdapter` for SD 1.x, SD 2.x and SDXL;
- :mod:`~nlg.adapters.flow`: :class:`FlowMatchingAdapter` for SD3-style flow-matching transformers;
- :mod:`~nlg.adapters.auto`: :func:`get_adapter`, which picks one for a pipeline;
- :mod:`~nlg.adapters.hub`: today's Hub ids of the Stable Diffusion checkpoints (SD 1.5, SD 2.1 mirrors, SDXL).

Adapters import :mod:`nlg.core` only.
"""

from .auto import get_adapter
from .base import GuidanceAdapter
from .flow import FlowMatchingAdapter, flow_direction
from .stable_diffusion import DiffusersAdapter

__all__ = ["GuidanceAdapter", "get_adapter", "DiffusersAdapter", "FlowMatchingAdapter", "flow_direction"]
