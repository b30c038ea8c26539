"""Refinement schedules for ``python -m benchmarks.nlg_cost``: the paper's fixed-K loop and the variants the cost study tries.

Every schedule is the NLG update of arXiv 2509.13936 (Mannering, Huang and Prugel-Bennett), with
``Π`` = rescale to ‖n‖₂ = √D and ``clip_τ(d) = d · min(1, τ/‖d‖)``::

    euler  (the paper, K evaluations):   n ← Π(n − η_k clip_τ(d(n)) + √λ z)
    heun   (2 evaluations per step):     d₁ = clip_τ(d(n)),  n' = Π(n − η d₁),  d₂ = clip_τ(d(n')),
                                         n ← Π(n − η (d₁ + d₂)/2 + √λ z)

``η_k`` may vary per step (a decaying schedule).  Noise ``z`` is drawn per sample from that sample's
own generator, so an image never depends on its batch.  Every schedule runs through :func:`nlg.refine_noise`
itself, built from its public parts: a per-step ``η_k`` is a tuple ``step_size``, Heun is the direction
:func:`heun_direction` (the averaged clipped directions, so ``refine_noise`` runs unclipped), and the
stopping signals the library does not ship (``cosine``, ``drift``, ``min_steps``) are stopping-rule
objects (:class:`nlg.core.stopping.StreakRule`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from nlg import refine_noise
from nlg.core.options import RefineOptions
from nlg.core.steps import clip_direction, per_sample_norm, project_to_sphere, radial_share
from nlg.core.stopping import NormChange, Radial, StopRule, StreakRule

__all__ = ["Refiner", "refine", "heun_direction", "Cosine", "Drift", "MinSteps", "SIGNALS"]

DirectionFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Refiner:
    """One refinement setting of the study.

    Args:
        kind (`str`): ``"none"``, ``"euler"`` (fixed or per-step η), ``"heun"``.
        steps (`int`, defaults to 0): Euler steps K, or Heun steps H (2H evaluations).
        step_size (`float`, defaults to 1.0): η (ignored when ``etas`` is given).
        etas (`Tuple[float, ...]`, defaults to ()): per-step η for a varying schedule.
        clip_threshold (`float`, *optional*, defaults to 0.5): τ; None = no clipping.
        noise_level (`float`, defaults to 0.001): λ per step.
        stop_signal (`str`, *optional*): adaptive stopping signal (see :data:`SIGNALS`).
        stop_tolerance (`float`, defaults to 0.0): the signal's threshold (``stop_tolerance`` of
            :class:`nlg.core.options.RefineOptions`; the CSV column keeps its old name ``stop_threshold``).
        stop_window (`int`, defaults to 1): consecutive steps the signal must hold.
        min_steps (`int`, defaults to 1): never stop before this many evaluations.
        reference (`float`, *optional*): digits: reference timestep (None = 999); flow: σ_r.
    """

    kind: str = "none"
    steps: int = 0
    step_size: float = 1.0
    etas: Tuple[float, ...] = ()
    clip_threshold: Optional[float] = 0.5
    noise_level: float = 0.001
    stop_signal: Optional[str] = None
    stop_tolerance: float = 0.0
    stop_window: int = 1
    min_steps: int = 1
    reference: Optional[float] = None
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("none", "euler", "heun"):
            raise ValueError(f"kind must be 'none', 'euler' or 'heun', got {self.kind!r}")
        if self.stop_signal is not None and self.stop_signal not in SIGNALS:
            raise ValueError(f"stop_signal must be one of {sorted(SIGNALS)}, got {self.stop_signal!r}")
        if self.kind == "heun" and (self.stop_signal is not None or self.etas):
            raise ValueError("heun runs with a fixed step_size and without adaptive stopping")
        self.stop_rule()  # validate the stopping settings once

    @property
    def step_sizes(self) -> List[float]:
        return list(self.etas) if self.etas else [self.step_size] * self.steps

    @property
    def path_length(self) -> float:
        """``Σ η_k``: the length of the refinement path before clipping."""
        return float(sum(self.step_sizes))

    @property
    def max_evaluations(self) -> int:
        """Direction evaluations (each one batched CFG pair = 2 UNet evaluations) per image at most."""
        if self.kind == "none":
            return 0
        return 2 * self.steps if self.kind == "heun" else len(self.step_sizes)

    @property
    def options(self) -> RefineOptions:
        """The :class:`~nlg.core.options.RefineOptions` of :func:`nlg.refine_noise` for this setting (Heun: unclipped, see :func:`heun_direction`)."""
        steps = len(self.step_sizes)
        return RefineOptions(
            refining_steps=steps, step_size=tuple(self.etas) if self.etas else self.step_size,
            clip_threshold=None if self.kind == "heun" else self.clip_threshold, noise_level=self.noise_level,
        )

    def stop_rule(self) -> Optional[StopRule]:
        """The stopping-rule object of ``stop_signal`` (None without stopping)."""
        if self.stop_signal is None:
            return None
        rule = SIGNALS[self.stop_signal][2](self.stop_tolerance, self.stop_window)
        return MinSteps(rule, self.min_steps) if self.min_steps > 1 else rule

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.kind == "none":
            return "no NLG"
        clip = "none" if self.clip_threshold is None else f"{self.clip_threshold:g}"
        etas = "/".join(f"{e:g}" for e in self.etas) if self.etas else f"{self.step_size:g}"
        text = f"{self.kind} K={self.steps} η={etas} τ={clip} λ={self.noise_level:g}"
        if self.stop_signal:
            text += f" stop {self.stop_signal}≶{self.stop_tolerance:g} w{self.stop_window} min{self.min_steps}"
        if self.reference is not None:
            text += f" ref={self.reference:g}"
        return text


@dataclass(frozen=True)
class Cosine(StreakRule):
    """Hit when successive raw directions agree: ``cos(d_k, d_{k−1}) > tolerance`` (from the second evaluation)."""

    tolerance: float
    window: int = 1

    def start(self, batch: int) -> Dict[str, Any]:
        return {"streak": torch.zeros(batch, dtype=torch.long)}

    def hit(self, state: Dict[str, Any], info: Dict[str, Any]) -> Optional[Tensor]:
        d, index = info["direction"], info["index"]
        if "previous" not in state:
            state["previous"] = torch.zeros((len(state["streak"]),) + d.shape[1:], dtype=d.dtype, device=d.device)
        previous = state["previous"][index]
        state["previous"][index] = d
        return None if info["step"] == 0 else -radial_share(d, previous) > self.tolerance


@dataclass(frozen=True)
class Drift(StreakRule):
    """Hit once the direction has changed this much since the start: ``‖d_k − d_1‖ / ‖d_1‖ > tolerance``."""

    tolerance: float
    window: int = 1

    def hit(self, state: Dict[str, Any], info: Dict[str, Any]) -> Optional[Tensor]:
        d = info["direction"]
        if info["step"] == 0:
            state["first"] = d.clone()
            return None
        first = state["first"][info["index"]]
        norm = lambda x: per_sample_norm(x).flatten()  # noqa: E731
        return norm(d - first) / norm(first).clamp_min(1e-12) > self.tolerance


@dataclass(frozen=True)
class MinSteps:
    """``rule``, but a sample never stops before ``min_steps`` evaluations (its streak still counts)."""

    rule: Any
    min_steps: int

    @property
    def window(self) -> int:
        return self.rule.window

    @property
    def keeps_previous(self) -> bool:
        return self.rule.keeps_previous

    def start(self, batch: int) -> Dict[str, Any]:
        return self.rule.start(batch)

    def __call__(self, state: Dict[str, Any], info: Dict[str, Any]) -> Tensor:
        return self.rule(state, info) & (info["evaluations"] >= self.min_steps)


#: Adaptive-stopping signals, computed per sample after each evaluation from the raw directions
#: d₁ … d_k and the latents n_{k−1} at which d_k was evaluated: (direction, meaning, rule).  ``norm``
#: and ``radial`` are the library's :class:`~nlg.core.stopping.NormChange` and :class:`~nlg.core.stopping.Radial`
#: (``stop_signal="norm_change"`` / ``"radial"``).
SIGNALS = {
    "norm": ("<", "|‖d_k‖ − ‖d_{k−1}‖| / ‖d_{k−1}‖ (the library's existing rule)", NormChange),
    "cosine": (">", "cos(d_k, d_{k−1}): successive directions agree", Cosine),
    "drift": (">", "‖d_k − d_1‖ / ‖d_1‖: the direction has changed this much since the start", Drift),
    "radial": (">=", "−⟨d_k, n_{k−1}⟩ / (‖d_k‖ ‖n_{k−1}‖): share of the step −η d_k along n, which the projection removes", Radial),
}


def heun_direction(direction_fn: DirectionFn, step_size: float, clip_threshold: Optional[float]) -> DirectionFn:
    """Heun's averaged direction ``(clip_τ(d(n)) + clip_τ(d(Π(n − η clip_τ(d(n)))))) / 2`` (2 evaluations).

    Already clipped: run :func:`nlg.refine_noise` with ``clip_threshold=None``; it then steps
    ``n ← Π(n − η·that + √λ z)``.
    """

    def direction(x: Tensor, index: Optional[Tensor] = None) -> Tensor:
        d1 = clip_direction(direction_fn(x, index=index), clip_threshold)
        d2 = clip_direction(direction_fn(project_to_sphere(x - step_size * d1), index=index), clip_threshold)
        return (d1 + d2) / 2

    return direction


def refine(latents: Tensor, direction_fn: DirectionFn, refiner: Refiner, generators: Sequence[torch.Generator]) -> Tuple[Tensor, Tensor]:
    """Refine with :func:`nlg.refine_noise`; returns (latents, direction evaluations per sample)."""
    batch = latents.shape[0]
    if refiner.kind == "none":
        return latents, torch.zeros(batch, dtype=torch.long)
    if refiner.kind == "heun":
        direction_fn = heun_direction(direction_fn, refiner.step_size, refiner.clip_threshold)
    out = refine_noise(latents, direction_fn, options=refiner.options, stop=refiner.stop_rule(), generator=list(generators))
    return out.latents, out.evaluations * (2 if refiner.kind == "heun" else 1)
