"""``RefineOptions``: the refinement settings of Noise Level Guidance, in one frozen, validated object.

:class:`nlg.NoiseLevelGuidance`, :class:`nlg.NoiseLevelImg2Img`, :func:`nlg.refine_noise`, the
embedded models' configurations and the cost benchmark all hold their settings in one of these, so
each setting has one name, one default, one check and one JSON spelling.

Example:
    >>> from nlg.core.options import RefineOptions
    >>> options = RefineOptions(refining_steps=4, step_size=5.0)
    >>> RefineOptions.from_json(options.to_json()) == options
    True
    >>> options.path_length
    20.0
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ..utils.checks import check_int, check_number
from .stopping import StopRule, stop_rule

__all__ = ["RefineOptions"]


@dataclass(frozen=True)
class RefineOptions:
    """The settings of one NLG refinement (Mannering, Huang and Prugel-Bennett 2025, https://arxiv.org/abs/2509.13936).

    Validated once, on construction: a bad value raises a ``TypeError``/``ValueError`` naming the field.

    Args:
        refining_steps (`int`, defaults to 20):
            Number of refinement steps ``K`` ≥ 0 (paper: 20); 0 leaves the latents unchanged.
        step_size (`float` or `Tuple[float, ...]`, defaults to 1.0):
            Step size ``η`` > 0 (paper: 1.0), or one ``η_k`` per step (a tuple of ``refining_steps`` values).
        clip_threshold (`float`, *optional*, defaults to 0.5):
            Per-sample norm bound ``τ`` on the direction (paper: 0.5); ``None`` disables clipping.
        noise_level (`float`, defaults to 0.001):
            Variance ``λ`` ≥ 0 of the Gaussian noise added after each step (paper: 0.001).
        normalize_latents (`bool`, defaults to True):
            Rescale each sample to norm ``√D`` after every step (paper: on).
        boundary_control (`bool`, defaults to False):
            Clamp entries to ``[−3, 3]`` after every step, before normalisation.
        guidance_formula_gamma (`float`, *optional*, defaults to None):
            Use the guidance-formula direction ``γ ε(n|c) + (1−γ) ε(n|∅)`` instead of the difference
            (the reference code's ``--guidance_formula`` uses γ = 3.0).  Read by the adapters.
        reference_timestep (`int`, *optional*, defaults to None):
            Timestep at which the model is evaluated; ``None`` means the last training timestep.
            Read by the adapters.
        stop_tolerance (`float`, *optional*, defaults to None):
            Adaptive stopping threshold (an ``nlg`` extension); ``None`` refines every sample for all steps.
        stop_window (`int`, defaults to 3):
            Consecutive evaluations the stopping signal must hold.
        stop_signal (`str`, defaults to ``"norm_change"``):
            The stopping rule: ``"norm_change"`` (:class:`~nlg.core.stopping.NormChange`) or ``"radial"``
            (:class:`~nlg.core.stopping.Radial`).
    """

    refining_steps: int = 20
    step_size: Union[float, Tuple[float, ...]] = 1.0
    clip_threshold: Optional[float] = 0.5
    noise_level: float = 0.001
    normalize_latents: bool = True
    boundary_control: bool = False
    guidance_formula_gamma: Optional[float] = None
    reference_timestep: Optional[int] = None
    stop_tolerance: Optional[float] = None
    stop_window: int = 3
    stop_signal: str = "norm_change"

    def __post_init__(self) -> None:
        check_int(self.refining_steps, "refining_steps")
        if isinstance(self.step_size, (list, tuple)):
            if len(self.step_size) != self.refining_steps:
                raise ValueError(
                    f"step_size holds {len(self.step_size)} per-step values but refining_steps is {self.refining_steps}"
                )
            for k, eta in enumerate(self.step_size):
                check_number(eta, f"step_size[{k}]", strict=True)
            object.__setattr__(self, "step_size", tuple(self.step_size))
        else:
            check_number(self.step_size, "step_size", strict=True)
        check_number(self.noise_level, "noise_level")
        check_number(self.clip_threshold, "clip_threshold", strict=True, optional=True)
        for name in ("normalize_latents", "boundary_control"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        check_number(self.guidance_formula_gamma, "guidance_formula_gamma", minimum=None, optional=True)
        if self.reference_timestep is not None and (
            isinstance(self.reference_timestep, bool) or not isinstance(self.reference_timestep, int) or self.reference_timestep < 0
        ):
            raise ValueError(f"reference_timestep must be a non-negative int or None, got {self.reference_timestep!r}")
        stop_rule(self.stop_signal, self.stop_tolerance, self.stop_window)

    @property
    def step_sizes(self) -> Tuple[float, ...]:
        """``(η_1, …, η_K)``: the step size of every step."""
        if isinstance(self.step_size, tuple):
            return self.step_size
        return (self.step_size,) * self.refining_steps

    @property
    def path_length(self) -> float:
        """``Σ η_k`` (``K·η`` for a fixed step): the length of the refinement path before clipping."""
        if isinstance(self.step_size, tuple):
            return float(sum(self.step_size))
        return self.refining_steps * self.step_size

    def stop_rule(self) -> Optional[StopRule]:
        """The adaptive-stopping rule these options name (:mod:`nlg.core.stopping`), or ``None``."""
        return stop_rule(self.stop_signal, self.stop_tolerance, self.stop_window)

    def replace(self, **changes: Any) -> "RefineOptions":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """The settings as a JSON-ready dict (a per-step ``step_size`` becomes a list)."""
        out = dataclasses.asdict(self)
        if isinstance(self.step_size, tuple):
            out["step_size"] = list(self.step_size)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RefineOptions":
        """Options from :meth:`to_dict`'s output; an unknown key raises a ``TypeError`` naming it."""
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown RefineOptions fields {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RefineOptions":
        """Options from :meth:`to_json`'s output."""
        return cls.from_dict(json.loads(text))

    def refine_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of :func:`nlg.refine_noise` these options set (not the adapters' two)."""
        out = self.to_dict()
        out["step_size"] = self.step_size
        del out["guidance_formula_gamma"], out["reference_timestep"]
        return out

