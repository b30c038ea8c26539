"""nlg: noise-level control for diffusion models.

Flagship: Noise Level Guidance (NLG, https://arxiv.org/abs/2509.13936), which refines the initial
latent before sampling.  ``refine_noise`` is the model-agnostic algorithm; ``NoiseLevelGuidance``
applies it to a diffusers Stable Diffusion / SDXL pipeline in two lines.
"""

from .directions import cfg_direction, to_epsilon
from .guidance import NLGRefinement, NoiseLevelGuidance
from .refine import RefineOutput, refine_noise

__all__ = [
    "NoiseLevelGuidance",
    "NLGRefinement",
    "RefineOutput",
    "refine_noise",
    "cfg_direction",
    "to_epsilon",
]

__version__ = "0.1.0"
