"""The algorithm, free of model code: :func:`refine_noise` over any direction callable, the direction
formulas (:func:`cfg_direction`, :func:`to_epsilon`) and noise-schedule helpers.

Nothing here imports a model family; :mod:`nlg.adapters` builds on it.
"""

from .directions import PREDICTION_TYPES, cfg_direction, check_signal, to_epsilon
from .noise_levels import NoiseLevel, check_strength, noise_level_at, noise_level_for_strength, strength_for_noise_level, strength_table
from .refine import DirectionFn, GeneratorLike, RefineOutput, refine_noise
from .schedule import reference_alpha_bar

__all__ = [
    "refine_noise",
    "RefineOutput",
    "DirectionFn",
    "GeneratorLike",
    "cfg_direction",
    "to_epsilon",
    "check_signal",
    "PREDICTION_TYPES",
    "reference_alpha_bar",
    "NoiseLevel",
    "check_strength",
    "noise_level_at",
    "noise_level_for_strength",
    "strength_for_noise_level",
    "strength_table",
]
