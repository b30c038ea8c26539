"""nlg: noise-level control for diffusion models.

Flagship: Noise Level Guidance (NLG; Mannering, Huang and Prugel-Bennett, "Noise-Level Diffusion
Guidance: Well Begun is Half Done", https://arxiv.org/abs/2509.13936), which refines the initial latent
before sampling.  ``refine_noise`` is the model-agnostic algorithm; ``NoiseLevelGuidance`` applies it to
a diffusers Stable Diffusion / SDXL pipeline in two lines.

Layers, imported one way only (each imports only those above it in this list):

- :mod:`nlg.core`: ``refine_noise``, direction formulas, schedule helpers; no model code;
- :mod:`nlg.adapters`: one adapter per model family (diffusers SD/SDXL, flow matching);
- ``nlg.guidance``, ``nlg.img2img``, ``nlg.autoguidance``: methods composed from core and adapters;
- :mod:`nlg.training` (training-time noise), :mod:`nlg.eval` (metrics, run folders, plots);
- the embedded models :mod:`nlg.digits` and :mod:`nlg.shapes`, and the web demo :mod:`nlg.app`.
"""

from .core import (
    NoiseLevel,
    RefineOutput,
    cfg_direction,
    noise_level_at,
    noise_level_for_strength,
    refine_noise,
    strength_for_noise_level,
    strength_table,
    to_epsilon,
)
from .adapters import DiffusersAdapter, FlowMatchingAdapter, GuidanceAdapter, flow_direction, get_adapter
from .guidance import NLGRefinement, NoiseLevelGuidance
from .img2img import NoiseLevelImg2Img, img2img_direction
from .autoguidance import AutoGuidance, autoguidance_direction, guidance_direction, unet_epsilon

__all__ = [
    "NoiseLevelGuidance",
    "NLGRefinement",
    "RefineOutput",
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
    "NoiseLevel",
    "noise_level_at",
    "noise_level_for_strength",
    "strength_for_noise_level",
    "strength_table",
]

__version__ = "0.1.0"
