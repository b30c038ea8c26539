"""nlg: noise-level control for diffusion models.

Flagship: Noise Level Guidance (NLG, https://arxiv.org/abs/2509.13936), which refines the initial
latent before sampling.  ``refine_noise`` is the model-agnostic algorithm; ``NoiseLevelGuidance``
applies it to a diffusers Stable Diffusion / SDXL pipeline in two lines.
"""

from .directions import cfg_direction, to_epsilon
from .guidance import NLGRefinement, NoiseLevelGuidance
from .refine import RefineOutput, refine_noise
from .autoguidance import AutoGuidance, autoguidance_direction, guidance_direction, unet_epsilon
from .flow import FlowMatchingAdapter, flow_direction
from .img2img import NoiseLevelImg2Img, img2img_direction
from .noise_levels import NoiseLevel, noise_level_at, noise_level_for_strength, strength_for_noise_level, strength_table

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
