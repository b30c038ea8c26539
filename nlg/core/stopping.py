r"""Adaptive stopping for :func:`nlg.refine_noise`: small rule objects sharing one protocol.

Adaptive stopping is an ``nlg`` extension, not part of NLG (arXiv 2509.13936): a sample stops
refining once a per-sample *signal* has met a threshold for ``window`` consecutive evaluations,
and leaves the later direction batches.  A rule is any object with

* ``window`` (`int`) and ``keeps_previous`` (`bool`: a sample that stops keeps ``n_{k−1}``, the
  latent at which the deciding direction was evaluated, instead of taking that last step);
* ``start(batch) -> dict``: fresh per-call state;
* ``__call__(state, info) -> Tensor``: after each evaluation, a CPU ``bool`` tensor with one entry per
  active sample, True for those that stop.  ``info`` is the per-step dict :func:`nlg.refine_noise`
  also hands its ``callback``: ``step`` (0-based), ``index`` (the active samples' batch positions),
  ``previous`` (``n_{k−1}`` of the active samples), ``direction`` (``d_k`` before clipping), ``norm``
  (``‖d_k‖₂``, float32 on the CPU) and ``evaluations`` (per active sample, counting this one).

:class:`StreakRule` implements the consecutive-evaluation bookkeeping; a rule only says which samples
``hit`` at this step.  The two rules of the library are :class:`NormChange` and :class:`Radial`; their
names ``"norm_change"`` and ``"radial"`` are accepted wherever a ``stop_signal`` string is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..utils.checks import check_number
from .steps import radial_share

__all__ = ["StopRule", "StreakRule", "NormChange", "Radial", "STOP_SIGNALS", "stop_rule"]


@runtime_checkable
class StopRule(Protocol):
    """What :func:`nlg.refine_noise` needs of a stopping rule (see the module docstring)."""

    window: int
    keeps_previous: bool

    def start(self, batch: int) -> Dict[str, Any]: ...

    def __call__(self, state: Dict[str, Any], info: Dict[str, Any]) -> Tensor: ...


class StreakRule:
    """Base of the rules: stop once :meth:`hit` was True for ``window`` consecutive evaluations.

    Subclasses define ``window``, ``keeps_previous`` and ``hit(state, info)``, which returns a CPU
    ``bool`` tensor over the active samples, or ``None`` when the signal is not defined yet (the
    streak is then left as it is).
    """

    window: int = 1
    keeps_previous: bool = False

    def start(self, batch: int) -> Dict[str, Any]:
        return {"streak": torch.zeros(batch, dtype=torch.int64)}

    def hit(self, state: Dict[str, Any], info: Dict[str, Any]) -> Optional[Tensor]:
        raise NotImplementedError

    def __call__(self, state: Dict[str, Any], info: Dict[str, Any]) -> Tensor:
        index, streak = info["index"], state["streak"]
        hit = self.hit(state, info)
        if hit is not None:
            streak[index] = torch.where(hit, streak[index] + 1, torch.zeros_like(streak[index]))
        return streak[index] >= self.window


def _check_window(window: Any, name: str) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"{name} must be an int >= 1, got {window!r}")
    return window


@dataclass(frozen=True)
class NormChange(StreakRule):
    r"""Stop once the direction norm has settled: :math:`|\lVert d_k\rVert - \lVert d_{k-1}\rVert| / \lVert d_{k-1}\rVert < \text{tolerance}`
    for ``window`` consecutive steps (the sample takes its step, then stops).  ``stop_signal="norm_change"``.

    Args:
        tolerance (`float`): the relative change, a finite number > 0.
        window (`int`, defaults to 3): consecutive settled steps.
    """

    tolerance: float
    window: int = 3
    keeps_previous = False

    @staticmethod
    def check(tolerance: Any, window: Any, prefix: str = "") -> None:
        """Raise a ``TypeError``/``ValueError`` naming the bad argument (``prefix`` + its name)."""
        check_number(tolerance, prefix + "tolerance", minimum=0.0, strict=True)
        _check_window(window, prefix + "window")

    def __post_init__(self) -> None:
        self.check(self.tolerance, self.window)

    def start(self, batch: int) -> Dict[str, Any]:
        return {"streak": torch.zeros(batch, dtype=torch.int64), "norm": torch.full((batch,), float("nan"))}

    def hit(self, state: Dict[str, Any], info: Dict[str, Any]) -> Optional[Tensor]:
        index, norm = info["index"], info["norm"]
        previous = state["norm"][index]
        state["norm"][index] = norm
        if info["step"] == 0:
            return None
        return (norm - previous).abs() / previous.clamp_min(1e-12) < self.tolerance


@dataclass(frozen=True)
class Radial(StreakRule):
    r"""Stop once the step points along the latent: :math:`\rho_k = -\langle d_k, n_{k-1}\rangle / (\lVert d_k\rVert \lVert n_{k-1}\rVert) \ge \text{tolerance}`
    for ``window`` consecutive evaluations (:func:`nlg.core.steps.radial_share`); the sample keeps
    ``n_{k−1}`` (the last step is not taken, its evaluation is counted).  ``stop_signal="radial"``.

    With ``normalize_latents`` the projection back onto the sphere cancels that share of a step;
    ``ρ`` grows as refinement approaches the prompt (``docs/guides/cost.md``).

    Args:
        tolerance (`float`): a cosine in (−1, 1).
        window (`int`, defaults to 3): consecutive evaluations.
    """

    tolerance: float
    window: int = 3
    keeps_previous = True

    @staticmethod
    def check(tolerance: Any, window: Any, prefix: str = "") -> None:
        """Raise a ``TypeError``/``ValueError`` naming the bad argument (``prefix`` + its name)."""
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
            raise TypeError(f"{prefix}tolerance must be a number or None, got {type(tolerance).__name__}")
        if not -1 < tolerance < 1:
            raise ValueError(f"{prefix}tolerance must be in (-1, 1) for the radial rule (a cosine), got {tolerance!r}")
        _check_window(window, prefix + "window")

    def __post_init__(self) -> None:
        self.check(self.tolerance, self.window)

    def hit(self, state: Dict[str, Any], info: Dict[str, Any]) -> Optional[Tensor]:
        return (radial_share(info["direction"], info["previous"]) >= self.tolerance).cpu()


#: The rules a ``stop_signal`` string names.
STOP_SIGNALS = {"norm_change": NormChange, "radial": Radial}


def stop_rule(stop_signal: str, stop_tolerance: Optional[float], stop_window: int = 3) -> Optional[StopRule]:
    """The rule ``stop_signal`` names with ``stop_tolerance`` and ``stop_window``, or ``None`` if the tolerance is None.

    Validates all three (also when the tolerance is None), naming them in the message.
    """
    if stop_signal not in STOP_SIGNALS:
        raise ValueError(f"stop_signal must be one of {tuple(STOP_SIGNALS)}, got {stop_signal!r}")
    if stop_tolerance is None:
        _check_window(stop_window, "stop_window")
        return None
    rule = STOP_SIGNALS[stop_signal]
    rule.check(stop_tolerance, stop_window, prefix="stop_")
    return rule(stop_tolerance, stop_window)
