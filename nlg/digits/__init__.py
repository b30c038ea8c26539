"""The embedded default: a class-conditional diffusion model of 8×8 digits, trained and shipped by nlg.

No machine here reaches a model hub, so nlg trains its own small model (scikit-learn's bundled
digits, a diffusers ``UNet2DModel``, Stable Diffusion's noise schedule) and ships the weights.
:class:`DigitsPipeline` samples it with classifier-free guidance and plugs into
:class:`nlg.NoiseLevelGuidance` like any Stable Diffusion pipeline: the class label is the prompt, the
null class 10 the negative prompt.

    from nlg import NoiseLevelGuidance
    from nlg.digits import DigitsPipeline, per_sample_generators

    pipe = DigitsPipeline.from_pretrained()
    out = NoiseLevelGuidance()(pipe, [3, 7], guidance_scale=0.0, generator=per_sample_generators(0, 2))
"""

from .adapter import DigitsAdapter
from .data import NULL_CLASS, NUM_CLASSES, load_split
from .evaluator import DigitsEvaluator, DigitsMetrics
from .labels import per_sample_generators
from .model import build_unet, load_digits_model, save_digits_model, sd_scheduler
from .pipeline import DigitsPipeline, DigitsPipelineOutput
from .train import train_digits

__all__ = [
    "DigitsPipeline",
    "DigitsPipelineOutput",
    "DigitsAdapter",
    "DigitsEvaluator",
    "DigitsMetrics",
    "per_sample_generators",
    "load_split",
    "build_unet",
    "sd_scheduler",
    "save_digits_model",
    "load_digits_model",
    "train_digits",
    "NUM_CLASSES",
    "NULL_CLASS",
]
