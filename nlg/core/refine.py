"""The model-agnostic core of Noise Level Guidance: :func:`refine_noise`.

Noise Level Guidance (NLG), Mannering, Huang and Prugel-Bennett 2025, https://arxiv.org/abs/2509.13936,
refines the initial Gaussian latent ``n`` of a diffusion sampler before sampling starts.  Given any
callable that maps ``n`` to a guidance direction ``d(n)`` (for Stable Diffusion: ``ε(n|prompt) − ε(n|∅)``
at the last training timestep), :func:`refine_noise` repeats one NLG step (:func:`nlg.core.steps.nlg_step`)::

    d  ← d(n)                                   # record ‖d‖₂ per sample, before clipping
    n  ← Π(n − η · clip_τ(d) + √λ · z)          # clip_direction, project_to_sphere; z from the caller's generator

and asks a stopping rule (:mod:`nlg.core.stopping`) which samples are done.  The settings are a
:class:`~nlg.core.options.RefineOptions`.  The model never appears here: adapters (:mod:`nlg.adapters`,
:mod:`nlg.digits`) turn a model into ``direction_fn``, as k-diffusion's ``external.py`` turns models into
denoisers.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from ..utils.checks import check_generator, check_tensor
from ..utils.types import GeneratorLike
from .options import RefineOptions
from .steps import BOUNDARY, nlg_step, per_sample_norm, randn_like
from .stopping import STOP_SIGNALS, StopRule

__all__ = ["RefineOutput", "refine_noise", "accepts_index", "DirectionFn", "StepCallback", "BOUNDARY", "STOP_SIGNALS"]

DirectionFn = Callable[[Tensor], Tensor]
_DEFAULTS = RefineOptions().refine_kwargs()
#: Called after every step with the per-step dict (see :func:`refine_noise`).
StepCallback = Callable[[Dict[str, Any]], None]


@dataclass
class RefineOutput:
    """What :func:`refine_noise` returns.

    Args:
        latents (`torch.Tensor`):
            The refined latents, same shape and dtype as the input.
        step_norms (`torch.Tensor`):
            ‖d‖₂ per step and per sample, measured before clipping, shape ``(refining_steps, B)``,
            float32 on the CPU; NaN for steps a sample skipped after adaptive stopping.
        evaluations (`torch.Tensor`):
            How many times the direction was evaluated for each sample, shape ``(B,)``, int64:
            ``refining_steps`` for every sample unless adaptive stopping ended some early.
    """

    latents: Tensor
    step_norms: Tensor
    evaluations: Optional[Tensor] = None


def accepts_index(fn: Callable[..., Tensor]) -> bool:
    """Whether ``fn`` takes an ``index`` keyword (the batch positions of the latents it is given)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "index" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def refine_noise(
    latents: Tensor,
    direction_fn: DirectionFn,
    *,
    refining_steps: int = 20,
    step_size: Union[float, Tuple[float, ...]] = 1.0,
    clip_threshold: Optional[float] = 0.5,
    noise_level: float = 0.001,
    normalize_latents: bool = True,
    boundary_control: bool = False,
    generator: GeneratorLike = None,
    stop_tolerance: Optional[float] = None,
    stop_window: int = 3,
    stop_signal: str = "norm_change",
    fixed_noise: Optional[Tensor] = None,
    options: Optional[RefineOptions] = None,
    stop: Optional[StopRule] = None,
    callback: Optional[StepCallback] = None,
) -> RefineOutput:
    r"""Refine initial noise by stepping against a guidance direction (NLG, arXiv 2509.13936, Alg. 1).

    For ``k = 1 … K``, with ``D = C·H·W`` and norms taken per sample:

    .. math::
        d_k = f(n_{k-1}),\quad
        \hat d_k = d_k \min\!\left(1, \frac{\tau}{\lVert d_k\rVert_2}\right),\quad
        n_k = \Pi\!\left(n_{k-1} - \eta_k \hat d_k + \sqrt{\lambda}\, z_k\right),

    where ``Π`` optionally clamps to ``[-3, 3]`` and then rescales to ``‖n_k‖₂ = √D``.  Each step is
    :func:`nlg.core.steps.nlg_step` (built from :func:`~nlg.core.steps.clip_direction` and
    :func:`~nlg.core.steps.project_to_sphere`); after each evaluation an optional stopping rule
    (:mod:`nlg.core.stopping`) says which samples are done.

    Args:
        latents (`torch.Tensor`):
            Initial unit-variance Gaussian latents ``n`` of shape ``(B, ...)``.
        direction_fn (`Callable[[Tensor], Tensor]`):
            Maps the current latents to the direction ``d`` of the same shape.  For classifier-free
            models this is ``ε(n|c) − ε(n|∅)`` (see :mod:`nlg.core.directions`).
        refining_steps (`int`, defaults to 20):
            Number of refinement steps ``K``; 0 returns the latents unchanged.
        step_size (`float` or `Tuple[float, ...]`, defaults to 1.0):
            Step size ``η`` > 0, or one ``η_k`` per step.
        clip_threshold (`float`, *optional*, defaults to 0.5):
            Per-sample norm bound ``τ`` on ``d``; ``None`` disables clipping.
        noise_level (`float`, defaults to 0.001):
            Variance ``λ`` ≥ 0 of the Gaussian noise added after each step; 0 adds none.
        normalize_latents (`bool`, defaults to True):
            Rescale each sample to norm ``√D`` after every step.
        boundary_control (`bool`, defaults to False):
            Clamp entries to ``[-3, 3]`` after every step (before normalisation).
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
            Source of the added noise; a list gives one generator per sample.
        stop_tolerance (`float`, *optional*, defaults to None):
            Adaptive stopping (an ``nlg`` extension, not in the paper): with the default
            ``stop_signal="norm_change"`` a sample stops refining once the relative change of its
            direction norm, ``|‖d_k‖ − ‖d_{k−1}‖| / ‖d_{k−1}‖``, has stayed below this tolerance for
            ``stop_window`` consecutive steps (see ``stop_signal`` for the other rule).  Stopped samples are left out
            of later calls: ``direction_fn`` then receives only the active samples, and, if it takes
            an ``index`` keyword, their positions in the batch (so it can select their conditioning).
            ``None`` runs every sample for all ``refining_steps``.
        stop_window (`int`, defaults to 3):
            Number of consecutive settled steps adaptive stopping waits for.
        fixed_noise (`torch.Tensor`, *optional*, defaults to None):
            A ``z`` of the latents' shape added (times ``√λ``) at *every* step instead of a fresh draw
            from ``generator``.  Not the paper's update: it reproduces the reference implementation,
            which restores NumPy's random state around its draw and so repeats one ``z``
            (``core_experiments/generate_images.py --reference_noise_bug``).
        stop_signal (`str`, defaults to ``"norm_change"``):
            What ``stop_tolerance`` thresholds, naming a rule of :mod:`nlg.core.stopping`.
            ``"norm_change"`` (:class:`~nlg.core.stopping.NormChange`): the relative change of ``‖d‖`` above
            (stop when below the tolerance, after taking the step).  ``"radial"``
            (:class:`~nlg.core.stopping.Radial`): the share of the step that points along the latent,
            ``ρ_k = −⟨d_k, n_{k−1}⟩ / (‖d_k‖₂ ‖n_{k−1}‖₂)``, a cosine in (−1, 1): once ``ρ ≥ stop_tolerance``
            for ``stop_window`` consecutive evaluations the sample stops and keeps ``n_{k−1}`` (that last
            step is not taken; its evaluation is counted).  Results: ``docs/guides/cost.md``.
        options (`RefineOptions`, *optional*, defaults to None):
            All the settings above in one validated object (:class:`~nlg.core.options.RefineOptions`); when
            given, the individual setting arguments must keep their defaults (a ``TypeError`` names any that do not).
        stop (`StopRule`, *optional*, defaults to None):
            A stopping-rule object (:class:`~nlg.core.stopping.StopRule`) instead of ``stop_tolerance``/``stop_signal``.
        callback (`Callable[[dict], None]`, *optional*, defaults to None):
            Called after every step, as k-diffusion's samplers call theirs, with a dict: ``step`` (0-based),
            ``index`` (batch positions of the samples refined in this step), ``previous`` (their ``n_{k−1}``),
            ``direction`` (``d_k`` before clipping), ``norm`` (``‖d_k‖₂``, float32 CPU), ``evaluations``
            (per sample, counting this one), ``latents`` (their new ``n_k``) and ``stopped`` (a bool mask of
            those that stop here, or None without stopping).  Do not modify the tensors.

    Example:
        One step against a fixed direction, by hand: ``‖d‖₂ = 2`` is clipped to ``τ = 0.5``, so the
        step is ``n − η·d·τ/‖d‖₂ = 1 − 0.25·d``; with renormalisation every sample keeps ``‖n‖₂ = √D``:

        >>> import torch
        >>> from nlg import refine_noise
        >>> n, d = torch.ones(1, 4), torch.tensor([[1.0, 1.0, -1.0, -1.0]])
        >>> out = refine_noise(n, lambda x: d, refining_steps=1, noise_level=0.0, normalize_latents=False)
        >>> out.latents
        tensor([[0.7500, 0.7500, 1.2500, 1.2500]])
        >>> out.step_norms
        tensor([[2.]])
        >>> out = refine_noise(torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)),
        ...                    lambda x: -x, refining_steps=5, generator=torch.Generator().manual_seed(1))
        >>> out.latents.shape, out.step_norms.shape
        (torch.Size([3, 4, 8, 8]), torch.Size([5, 3]))
        >>> torch.allclose(out.latents.flatten(1).norm(dim=1), torch.full((3,), 16.0))   # √(4·8·8)
        True

    Returns:
        :class:`RefineOutput` with the refined ``latents`` (input dtype), ``step_norms`` of shape
        ``(refining_steps, B)`` (``‖d_k‖₂`` before clipping) and ``evaluations`` per sample.

    Raises:
        ValueError: on bad options, a direction of the wrong shape, or a non-finite direction
            (the message names the step).
    """
    settings = dict(
        refining_steps=refining_steps, step_size=step_size, clip_threshold=clip_threshold, noise_level=noise_level,
        normalize_latents=normalize_latents, boundary_control=boundary_control, stop_tolerance=stop_tolerance,
        stop_window=stop_window, stop_signal=stop_signal,
    )
    if options is None:
        options = RefineOptions(**settings)
    elif not isinstance(options, RefineOptions):
        raise TypeError(f"options must be a RefineOptions or None, got {type(options).__name__}")
    elif any(value != _DEFAULTS[name] for name, value in settings.items()):
        changed = sorted(name for name, value in settings.items() if value != _DEFAULTS[name])
        raise TypeError(f"pass the settings either in options or as arguments, not both: got options and {changed}")
    if stop is None:
        stop = options.stop_rule()
    elif options.stop_tolerance is not None or not isinstance(stop, StopRule):
        raise TypeError("stop must be a stopping rule (nlg.core.stopping), and not given with stop_tolerance")
    if not callable(direction_fn):
        raise TypeError("direction_fn must be callable: latents -> direction of the same shape")
    check_tensor(latents, "latents", min_rank=2, nonzero_samples=options.normalize_latents)
    batch = latents.shape[0]
    check_generator(generator, batch)
    if fixed_noise is not None:
        check_tensor(fixed_noise, "fixed_noise")
        if fixed_noise.shape != latents.shape:
            raise ValueError(f"fixed_noise must have the latents' shape {tuple(latents.shape)}, got {tuple(fixed_noise.shape)}")

    # Half precision overflows ‖n‖² (D = 16384 for SD at 512², 65536 for SDXL): refine in float32.
    work_dtype = torch.float32 if latents.dtype in (torch.float16, torch.bfloat16) else latents.dtype
    steps = _Steps(direction_fn, options, latents.dtype, work_dtype, generator, fixed_noise)
    n, active = latents.to(work_dtype), torch.arange(batch)  # batch positions still refining
    with torch.inference_mode():
        norms = torch.full((options.refining_steps, batch), float("nan"), dtype=torch.float32)
        evaluations = torch.zeros(batch, dtype=torch.int64)
        state = stop.start(batch) if stop is not None else None
        for step, eta in enumerate(options.step_sizes):
            if len(active) == 0:
                break
            everyone = len(active) == batch
            x = n if everyone else n[active]
            d, d_norm = steps.direction(x, None if everyone else active, step)
            norms[step, active] = d_norm.flatten().float().cpu()
            evaluations[active] += 1
            info = dict(step=step, index=active, previous=x, direction=d, norm=norms[step, active], evaluations=evaluations[active])
            done = stop(state, info) if stop is not None else None
            x = steps.update(x, d, d_norm, eta, active, everyone, step)
            if done is not None and stop.keeps_previous:
                x = torch.where(done.to(x.device).view(-1, *([1] * (x.ndim - 1))), info["previous"], x)
            n = x if everyone else n.clone().index_put_((active.to(n.device),), x)
            if callback is not None:
                callback({**info, "latents": x, "stopped": done})
            if done is not None:
                active = active[~done]
    # Leave inference mode: the caller may hand these to code that updates tensors in place.
    return RefineOutput(latents=n.to(latents.dtype).clone(), step_norms=norms.clone(), evaluations=evaluations.clone())


class _Steps:
    """The two halves of a step with their checks: evaluate the direction, take the NLG step."""

    def __init__(self, direction_fn: DirectionFn, options: RefineOptions, out_dtype: torch.dtype, work_dtype: torch.dtype,
                 generator: GeneratorLike, fixed_noise: Optional[Tensor]) -> None:
        self.fn, self.options, self.out_dtype, self.work_dtype = direction_fn, options, out_dtype, work_dtype
        self.generator, self.fixed_noise, self.pass_index = generator, fixed_noise, accepts_index(direction_fn)

    def direction(self, x: Tensor, index: Optional[Tensor], step: int) -> Tuple[Tensor, Tensor]:
        """``d(x)`` in the working dtype and ``‖d‖₂`` per sample; a ``ValueError`` for a bad shape or NaN/Inf."""
        d = self.fn(x.to(self.out_dtype), index=index) if self.pass_index else self.fn(x.to(self.out_dtype))
        if not isinstance(d, Tensor) or d.shape != x.shape:
            shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(f"direction_fn must return a tensor of shape {tuple(x.shape)}, got {shape}")
        d = d.to(self.work_dtype)
        d_norm = per_sample_norm(d)
        if not bool(torch.isfinite(d_norm).all()):
            raise ValueError(
                f"non-finite model output at refining step {step + 1} of {self.options.refining_steps}: "
                "the direction (direction_fn's output) holds NaN or Inf (check the model's dtype and inputs)"
            )
        return d, d_norm

    def update(self, x: Tensor, d: Tensor, d_norm: Tensor, eta: float, active: Tensor, everyone: bool, step: int) -> Tensor:
        """:func:`~nlg.core.steps.nlg_step` with this step's noise; a ``ValueError`` if the latents overflow."""
        o, z = self.options, None
        if o.noise_level > 0 and self.fixed_noise is None:
            gens = self.generator
            z = randn_like(x, gens if not isinstance(gens, (list, tuple)) or everyone else [gens[i] for i in active])
        elif o.noise_level > 0:
            z = self.fixed_noise.to(device=x.device, dtype=x.dtype)
            z = z if everyone else z[active.to(z.device)]
        x = nlg_step(x, d, step_size=eta, clip_threshold=o.clip_threshold, noise=z, noise_level=o.noise_level,
                     boundary_control=o.boundary_control, normalize_latents=o.normalize_latents, norm=d_norm)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"the latents overflowed at refining step {step + 1}: step_size={eta} or "
                f"noise_level={o.noise_level} is too large for this direction and dtype"
            )
        return x
