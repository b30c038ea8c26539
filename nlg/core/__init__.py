"""The algorithm, free of model code: :func:`refine_noise` over any direction callable, built from
public parts (:mod:`~nlg.core.steps`, :mod:`~nlg.core.stopping`) and configured by one
:class:`~nlg.core.options.RefineOptions`; the direction formulas (:func:`cfg_direction`,
:func:`to_epsilon`) and noise-schedule helpers.

Nothing here imports a model family; :mod:`nlg.adapters` builds on it.
"""

from ..utils.types import GeneratorLike
from .directions import PREDICTION_TYPES, cfg_direction, check_signal, to_epsilon
from .noise_levels import (
    SchedulePoint,
    check_strength,
    noise_level_at,
    noise_level_for_strength,
    schedule_point_at,
    schedule_point_for_strength,
    strength_for_noise_level,
    strength_for_sigma,
    strength_table,
)
from .options import RefineOptions
from .refine import DirectionFn, RefineOutput, StepCallback, refine_noise
from .schedule import reference_alpha_bar
from .steps import clip_direction, nlg_step, project_to_sphere, radial_share
from .stopping import NormChange, Radial, StopRule, StreakRule, stop_rule

__all__ = [
    "refine_noise",
    "RefineOutput",
    "RefineOptions",
    "DirectionFn",
    "StepCallback",
    "GeneratorLike",
    "nlg_step",
    "clip_direction",
    "project_to_sphere",
    "radial_share",
    "StopRule",
    "StreakRule",
    "NormChange",
    "Radial",
    "stop_rule",
    "cfg_direction",
    "to_epsilon",
    "check_signal",
    "PREDICTION_TYPES",
    "reference_alpha_bar",
    "SchedulePoint",
    "check_strength",
    "schedule_point_at",
    "schedule_point_for_strength",
    "strength_for_sigma",
    "strength_table",
]

from ..utils.deprecation import deprecated_attributes as _deprecated_attributes  # noqa: E402

# Deprecated names (one release); the functions' aliases are imported above and warn when called.
__getattr__ = _deprecated_attributes(__name__, {"NoiseLevel": ("nlg.SchedulePoint", lambda: SchedulePoint)})
