"""Refinement schedules for ``python -m benchmarks.nlg_cost``: the paper's fixed-K loop and the variants the cost study tries.

Every schedule is the NLG update of arXiv 2509.13936 (Mannering, Huang and Prugel-Bennett), with
``Π`` = rescale to ‖n‖₂ = √D and ``clip_τ(d) = d · min(1, τ/‖d‖)``::

    euler  (the paper, K evaluations):   n ← Π(n − η_k clip_τ(d(n)) + √λ z)
    heun   (2 evaluations per step):     d₁ = clip_τ(d(n)),  n' = Π(n − η d₁),  d₂ = clip_τ(d(n')),
                                         n ← Π(n − η (d₁ + d₂)/2 + √λ z)

``η_k`` may vary per step (a decaying schedule).  Noise ``z`` is drawn per sample from that sample's
own generator, so an image never depends on its batch.  The fixed-``η`` Euler schedule is run by
:func:`nlg.refine_noise` itself (see :func:`refine`), so the headline rows measure the library code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from nlg import refine_noise

__all__ = ["Refiner", "refine", "schedule_loop", "SIGNALS"]

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
        stop_threshold (`float`, defaults to 0.0): the signal's threshold.
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
    stop_threshold: float = 0.0
    stop_window: int = 1
    min_steps: int = 1
    reference: Optional[float] = None
    label: str = field(default="", compare=False)

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
    def name(self) -> str:
        if self.label:
            return self.label
        if self.kind == "none":
            return "no NLG"
        clip = "none" if self.clip_threshold is None else f"{self.clip_threshold:g}"
        etas = "/".join(f"{e:g}" for e in self.etas) if self.etas else f"{self.step_size:g}"
        text = f"{self.kind} K={self.steps} η={etas} τ={clip} λ={self.noise_level:g}"
        if self.stop_signal:
            text += f" stop {self.stop_signal}≶{self.stop_threshold:g} w{self.stop_window} min{self.min_steps}"
        if self.reference is not None:
            text += f" ref={self.reference:g}"
        return text


def _norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(dim=1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def _clip(d: Tensor, tau: Optional[float]) -> Tensor:
    if tau is None:
        return d
    return d * _bcast((tau / _norm(d)).clamp(max=1.0), d)


def _project(x: Tensor) -> Tensor:
    return x * _bcast(math.sqrt(x[0].numel()) / _norm(x), x)


def _noise(shape: torch.Size, generators: Sequence[torch.Generator]) -> Tensor:
    return torch.stack([torch.randn(shape[1:], generator=g) for g in generators])


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(1) / (_norm(a) * _norm(b)).clamp_min(1e-12)


#: Adaptive-stopping signals, computed per sample after evaluation k ≥ 2 from the raw directions
#: d₁ … d_k and the latents n_{k−1} at which d_k was evaluated; a sample stops when the signal is
#: below (``<``) or above (``>``) the threshold for ``stop_window`` consecutive evaluations.
SIGNALS = {
    "norm": ("<", "|‖d_k‖ − ‖d_{k−1}‖| / ‖d_{k−1}‖ (the library's existing rule)"),
    "cosine": (">", "cos(d_k, d_{k−1}): successive directions agree"),
    "drift": (">", "‖d_k − d_1‖ / ‖d_1‖: the direction has changed this much since the start"),
    "radial": (">", "−⟨d_k, n_{k−1}⟩ / (‖d_k‖ ‖n_{k−1}‖): share of the step −η d_k along n, which the projection removes"),
}


#: Signals :func:`nlg.refine_noise` implements itself (benchmark name -> ``stop_signal``); rows with
#: these and ``min_steps = 1`` run the library code.
LIBRARY_SIGNALS = {None: None, "norm": "norm_change", "radial": "radial"}


def _signal(name: str, d: Tensor, d_prev: Tensor, d_first: Tensor, n: Tensor) -> Tensor:
    if name == "norm":
        prev = _norm(d_prev)
        return (_norm(d) - prev).abs() / prev.clamp_min(1e-12)
    if name == "cosine":
        return _cosine(d, d_prev)
    if name == "drift":
        return _norm(d - d_first) / _norm(d_first).clamp_min(1e-12)
    if name == "radial":
        return -_cosine(d, n)
    raise ValueError(f"stop_signal must be one of {sorted(SIGNALS)}, got {name!r}")


@torch.inference_mode()
def schedule_loop(
    latents: Tensor, direction_fn: DirectionFn, refiner: Refiner, generators: Sequence[torch.Generator]
) -> Tuple[Tensor, Tensor]:
    """Run ``refiner`` (Euler with per-step η, Heun, optional adaptive stopping); returns (latents, evaluations per sample)."""
    n = latents.clone()
    batch = n.shape[0]
    evaluations = torch.zeros(batch, dtype=torch.long)
    active = torch.arange(batch)
    first: Optional[Tensor] = None
    prev: Optional[Tensor] = None
    streak = torch.zeros(batch, dtype=torch.long)
    for k, eta in enumerate(refiner.step_sizes):
        if len(active) == 0:
            break
        gens = [generators[i] for i in active]
        x = n[active]
        index = None if len(active) == batch else active
        d = direction_fn(x, index=index)
        evaluations[active] += 1
        d1 = _clip(d, refiner.clip_threshold)
        if refiner.kind == "heun":
            x_pred = _project(x - eta * d1)
            d2 = _clip(direction_fn(x_pred, index=index), refiner.clip_threshold)
            evaluations[active] += 1
            step = eta * (d1 + d2) / 2
        elif refiner.kind == "euler":
            step = eta * d1
        else:
            raise ValueError(f"unknown refiner kind {refiner.kind!r}")
        x_new = x - step
        if refiner.noise_level > 0:
            x_new = x_new + math.sqrt(refiner.noise_level) * _noise(x.shape, gens)
        n[active] = _project(x_new)
        if refiner.stop_signal is not None:
            raw = d.clone()
            if first is None:
                first = torch.zeros_like(n)
                prev = torch.zeros_like(n)
            if k == 0:
                first[active] = raw
            if k > 0 or refiner.stop_signal == "radial":  # the others compare with an earlier direction
                value = _signal(refiner.stop_signal, raw, prev[active], first[active], x)
                direction = SIGNALS[refiner.stop_signal][0]
                hit = value < refiner.stop_threshold if direction == "<" else value > refiner.stop_threshold
                streak[active] = torch.where(hit, streak[active] + 1, torch.zeros_like(streak[active]))
            prev[active] = raw
            done = (streak[active] >= refiner.stop_window) & (evaluations[active] >= refiner.min_steps)
            active = active[~done]
    return n, evaluations


def refine(latents: Tensor, direction_fn: DirectionFn, refiner: Refiner, generators: Sequence[torch.Generator]) -> Tuple[Tensor, Tensor]:
    """Refine with :func:`nlg.refine_noise` for the paper's fixed-η Euler schedule, else :func:`schedule_loop`."""
    batch = latents.shape[0]
    if refiner.kind == "none":
        return latents, torch.zeros(batch, dtype=torch.long)
    if refiner.kind == "euler" and not refiner.etas and refiner.stop_signal in LIBRARY_SIGNALS and refiner.min_steps <= 1:
        stop = {} if refiner.stop_signal is None else dict(
            stop_tolerance=refiner.stop_threshold, stop_window=refiner.stop_window,
            stop_signal=LIBRARY_SIGNALS[refiner.stop_signal],
        )
        out = refine_noise(
            latents, direction_fn, refining_steps=refiner.steps, step_size=refiner.step_size,
            clip_threshold=refiner.clip_threshold, noise_level=refiner.noise_level, generator=list(generators), **stop,
        )
        return out.latents, out.evaluations
    return schedule_loop(latents, direction_fn, refiner, generators)
