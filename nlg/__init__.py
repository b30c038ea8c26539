"""nlg: noise-level control for diffusion models.

Flagship: Noise Level Guidance (NLG; Mannering, Huang and Prugel-Bennett, "Noise-Level Diffusion
Guidance: Well Begun is Half Done", https://arxiv.org/abs/2509.13936), which refines the initial latent
before sampling.  ``refine_noise`` is the model-agnostic algorithm; ``NoiseLevelGuidance`` applies it to
a diffusers Stable Diffusion / SDXL pipeline in two lines.

Layers, imported one way only (each imports only those above it in this list):

- :mod:`nlg.utils` and :mod:`nlg.core`: shared types and checks; ``refine_noise``, ``RefineOptions``, direction formulas, schedule helpers; no model code;
- :mod:`nlg.adapters`: one adapter per model family (diffusers SD/SDXL, flow matching);
- ``nlg.guidance``, ``nlg.img2img``, ``nlg.autoguidance``: methods composed from core and adapters;
- :mod:`nlg.training` (training-time noise), :mod:`nlg.eval` (metrics, run folders, plots);
- the embedded models :mod:`nlg.digits` and :mod:`nlg.shapes`, and the web demo :mod:`nlg.app`.
"""

from .core import (
    RefineOptions,
    RefineOutput,
    SchedulePoint,
    cfg_direction,
    refine_noise,
    schedule_point_at,
    schedule_point_for_strength,
    strength_for_sigma,
    strength_table,
    to_epsilon,
)
from .core.noise_levels import noise_level_at, noise_level_for_strength, strength_for_noise_level  # deprecated aliases
from .adapters import DiffusersAdapter, FlowMatchingAdapter, GuidanceAdapter, flow_direction, get_adapter
from .guidance import NLGRefinement, NoiseLevelGuidance
from .img2img import NoiseLevelImg2Img, img2img_direction
from .autoguidance import AutoGuidance, autoguidance_direction, guidance_direction, unet_epsilon

__all__ = [
    "NoiseLevelGuidance",
    "NLGRefinement",
    "RefineOutput",
    "RefineOptions",
    "refine_noise",
    "cfg_direction",
    "to_epsilon",
    "AutoGuidance",
    "autoguidance_direction",
    "guidance_direction",
    "unet_epsilon",
    "GuidanceAdapter",
    "get_adapter",
    "DiffusersAdapter",
    "FlowMatchingAdapter",
    "flow_direction",
    "NoiseLevelImg2Img",
    "img2img_direction",
    "SchedulePoint",
    "schedule_point_at",
    "schedule_point_for_strength",
    "strength_for_sigma",
    "strength_table",
]

from .utils.deprecation import deprecated_attributes as _deprecated_attributes  # noqa: E402

__getattr__ = _deprecated_attributes(__name__, {"NoiseLevel": ("nlg.SchedulePoint", lambda: SchedulePoint)})

__version__ = "0.1.0"
