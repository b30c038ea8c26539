"""The model-agnostic core of Noise Level Guidance: :func:`refine_noise`.

Noise Level Guidance (NLG), Mannering, Huang and Prugel-Bennett 2025, https://arxiv.org/abs/2509.13936, refines the initial
Gaussian latent ``n`` of a diffusion sampler before sampling starts.  Given any callable that maps
``n`` to a guidance direction ``d(n)`` (for Stable Diffusion: ``ε(n|prompt) − ε(n|∅)`` at the last
training timestep), one refinement step is::

    d  ← d(n)                                   # record ‖d‖₂ per sample, before clipping
    d  ← d · min(1, τ / ‖d‖₂)                   # norm clipping, τ = clip_threshold
    n  ← n − η · d                              # η = step_size
    n  ← n + √λ · z,  z ~ N(0, I)               # λ = noise_level, z from the caller's generator
    n  ← clamp(n, −3, 3)                        # boundary control, optional
    n  ← n · √D / ‖n‖₂                          # back onto the sphere of radius √D, D = C·H·W

The model never appears here: adapters (:mod:`nlg.adapters`, :mod:`nlg.digits`) turn a model into
``direction_fn``, as k-diffusion's ``external.py`` turns models into denoisers.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Union

import torch
from torch import Tensor

__all__ = ["RefineOutput", "refine_noise", "validate_refine_options", "validate_stopping", "STOP_SIGNALS"]

GeneratorLike = Union[torch.Generator, List[torch.Generator], None]
DirectionFn = Callable[[Tensor], Tensor]

#: NLG's boundary control clamps every latent entry to this interval (paper, Sec. 3).
BOUNDARY = 3.0


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


def validate_refine_options(
    *,
    refining_steps: int,
    step_size: float,
    clip_threshold: Optional[float],
    noise_level: float,
) -> None:
    """Raise a ``TypeError``/``ValueError`` naming the first bad option; shared by every entry point."""
    if isinstance(refining_steps, bool) or not isinstance(refining_steps, int):
        raise TypeError(f"refining_steps must be an int, got {type(refining_steps).__name__}")
    if refining_steps < 0:
        raise ValueError(f"refining_steps must be >= 0, got {refining_steps}")
    for name, value in (("step_size", step_size), ("noise_level", noise_level)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if clip_threshold is not None:
        if isinstance(clip_threshold, bool) or not isinstance(clip_threshold, (int, float)):
            raise TypeError(f"clip_threshold must be a number or None, got {type(clip_threshold).__name__}")
        if not clip_threshold > 0 or not math.isfinite(clip_threshold):
            raise ValueError(f"clip_threshold must be a finite number > 0 (or None for no clipping), got {clip_threshold}")


#: Adaptive-stopping signals of :func:`refine_noise` (see its ``stop_signal`` argument).
STOP_SIGNALS = ("norm_change", "radial")


def validate_stopping(stop_tolerance: Optional[float], stop_window: int, stop_signal: str = "norm_change") -> None:
    """Raise a ``TypeError``/``ValueError`` naming the bad adaptive-stopping option."""
    if stop_signal not in STOP_SIGNALS:
        raise ValueError(f"stop_signal must be one of {STOP_SIGNALS}, got {stop_signal!r}")
    if stop_signal == "radial" and stop_tolerance is not None:
        if isinstance(stop_tolerance, bool) or not isinstance(stop_tolerance, (int, float)):
            raise TypeError(f"stop_tolerance must be a number or None, got {type(stop_tolerance).__name__}")
        if not -1 < stop_tolerance < 1:
            raise ValueError(f"stop_tolerance must be in (-1, 1) for stop_signal='radial' (a cosine), got {stop_tolerance!r}")
    elif stop_tolerance is not None:
        if isinstance(stop_tolerance, bool) or not isinstance(stop_tolerance, (int, float)):
            raise TypeError(f"stop_tolerance must be a number or None, got {type(stop_tolerance).__name__}")
        if not stop_tolerance > 0 or not math.isfinite(stop_tolerance):
            raise ValueError(f"stop_tolerance must be a finite number > 0 (or None), got {stop_tolerance}")
    if isinstance(stop_window, bool) or not isinstance(stop_window, int) or stop_window < 1:
        raise ValueError(f"stop_window must be an int >= 1, got {stop_window!r}")


def validate_generator(generator: GeneratorLike, batch: Optional[int] = None) -> None:
    """Raise a ``TypeError``/``ValueError`` naming ``generator`` unless it is None, a ``torch.Generator``,
    or a list of them (of length ``batch`` unless that is None)."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, list) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"generator must be a torch.Generator, a list of them, or None; got {type(generator).__name__}")
    if batch is not None and len(generator) != batch:
        raise ValueError(f"generator is a list of {len(generator)} generators but latents hold {batch} samples")


def check_latents_tensor(latents: Tensor, *, require_norm: bool = False, name: str = "latents") -> None:
    """Raise a ``ValueError``/``TypeError`` naming ``name`` unless the tensor is a non-empty, finite, real
    floating-point tensor with data (not on the meta device); with ``require_norm``, no sample may be all zeros."""
    if not latents.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {latents.dtype}")
    if latents.device.type == "meta":
        raise ValueError(f"{name} are on the meta device (shape only, no data): move them to a real device")
    if latents.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(latents.shape)}")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError(f"{name} contain NaN or Inf")
    if require_norm and not bool((latents.flatten(1).abs().amax(dim=1) > 0).all()):
        raise ValueError(f"{name} hold an all-zero sample, which cannot be rescaled to norm √D (normalize_latents=True)")


def accepts_index(fn: Callable[..., Tensor]) -> bool:
    """Whether ``fn`` takes an ``index`` keyword (the batch positions of the latents it is given)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "index" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _settled(norms: Tensor, step: int, window: int, tolerance: float) -> Tensor:
    """Per sample: |‖d_j‖ − ‖d_{j−1}‖| / ‖d_{j−1}‖ < tolerance for each of the last ``window`` steps j ≤ step."""
    if step < window:
        return torch.zeros(norms.shape[1], dtype=torch.bool)
    recent = norms[step - window : step + 1]
    change = (recent[1:] - recent[:-1]).abs() / recent[:-1].clamp_min(1e-12)
    return (change < tolerance).all(dim=0)


def _radial_share(d: Tensor, n: Tensor) -> Tensor:
    """Per sample: ``−⟨d, n⟩ / (‖d‖₂ ‖n‖₂)``, the cosine between the step ``−d`` and ``n``, shape (B,)."""
    d, n = d.flatten(1), n.flatten(1)
    return -(d * n).sum(dim=1) / (d.norm(dim=1) * n.norm(dim=1)).clamp_min(1e-12)


def _per_sample_norm(x: Tensor) -> Tensor:
    """‖x_b‖₂ over every axis but the first, shape (B, 1, ..., 1) for broadcasting."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))


def _randn_like(x: Tensor, generator: GeneratorLike) -> Tensor:
    """Standard normal noise shaped like ``x``; one generator per sample if a list is given.

    Each sample's draw uses only its own generator, so a sample's noise does not depend on the
    batch it sits in.  Draws happen on the generator's device and are moved to ``x``'s device.
    """
    if isinstance(generator, list):
        draws = [
            torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype).to(x.device) for g in generator
        ]
        return torch.stack(draws)
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def refine_noise(
    latents: Tensor,
    direction_fn: DirectionFn,
    *,
    refining_steps: int = 20,
    step_size: float = 1.0,
    clip_threshold: Optional[float] = 0.5,
    noise_level: float = 0.001,
    normalize_latents: bool = True,
    boundary_control: bool = False,
    generator: GeneratorLike = None,
    stop_tolerance: Optional[float] = None,
    stop_window: int = 3,
    stop_signal: str = "norm_change",
    fixed_noise: Optional[Tensor] = None,
) -> RefineOutput:
    r"""Refine initial noise by stepping against a guidance direction (NLG, arXiv 2509.13936, Alg. 1).

    For ``k = 1 … K``, with ``D = C·H·W`` and norms taken per sample:

    .. math::
        d_k = f(n_{k-1}),\quad
        \hat d_k = d_k \min\!\left(1, \frac{\tau}{\lVert d_k\rVert_2}\right),\quad
        n_k = \Pi\!\left(n_{k-1} - \eta \hat d_k + \sqrt{\lambda}\, z_k\right),

    where ``Π`` optionally clamps to ``[-3, 3]`` and then rescales to ``‖n_k‖₂ = √D``.

    Args:
        latents (`torch.Tensor`):
            Initial unit-variance Gaussian latents ``n`` of shape ``(B, ...)``.
        direction_fn (`Callable[[Tensor], Tensor]`):
            Maps the current latents to the direction ``d`` of the same shape.  For classifier-free
            models this is ``ε(n|c) − ε(n|∅)`` (see :mod:`nlg.core.directions`).
        refining_steps (`int`, defaults to 20):
            Number of refinement steps ``K``; 0 returns the latents unchanged.
        step_size (`float`, defaults to 1.0):
            Step size ``η`` > 0.
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
            What ``stop_tolerance`` thresholds.  ``"norm_change"``: the relative change of ``‖d‖`` above
            (stop when below the tolerance, after taking the step).  ``"radial"``: the share of the
            step that points along the latent, ``ρ_k = −⟨d_k, n_{k−1}⟩ / (‖d_k‖₂ ‖n_{k−1}‖₂)``, a cosine
            in (−1, 1): once ``ρ ≥ stop_tolerance`` for ``stop_window`` consecutive evaluations the
            sample stops and keeps ``n_{k−1}``, the latent ``ρ_k`` describes (that last step is not
            taken; its evaluation is counted).  With ``normalize_latents`` the projection back onto
            the sphere cancels that share of a step.  ``ρ`` grows as refinement approaches the
            prompt, so with a low tolerance a sample that already follows it is left as it is
            (``benchmarks/nlg_cost.py``, sections ``stop2`` and ``frontier2``; results in
            ``docs/guides/cost.md``).

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
    validate_refine_options(
        refining_steps=refining_steps, step_size=step_size, clip_threshold=clip_threshold, noise_level=noise_level
    )
    validate_stopping(stop_tolerance, stop_window, stop_signal)
    if not isinstance(latents, Tensor):
        raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if latents.ndim < 2:
        raise ValueError(f"latents must have a batch axis and at least one more, got shape {tuple(latents.shape)}")
    if not callable(direction_fn):
        raise TypeError("direction_fn must be callable: latents -> direction of the same shape")
    check_latents_tensor(latents, require_norm=normalize_latents)
    batch = latents.shape[0]
    validate_generator(generator, batch)
    if fixed_noise is not None:
        if not isinstance(fixed_noise, Tensor):
            raise TypeError(f"fixed_noise must be a torch.Tensor or None, got {type(fixed_noise).__name__}")
        if fixed_noise.shape != latents.shape:
            raise ValueError(f"fixed_noise must have the latents' shape {tuple(latents.shape)}, got {tuple(fixed_noise.shape)}")
        check_latents_tensor(fixed_noise, name="fixed_noise")

    out_dtype = latents.dtype
    # Half precision overflows ‖n‖² (D = 16384 for SD at 512², 65536 for SDXL): refine in float32.
    work_dtype = torch.float32 if latents.dtype in (torch.float16, torch.bfloat16) else latents.dtype
    n = latents.to(work_dtype)
    sqrt_dim = math.sqrt(n[0].numel())
    pass_index = accepts_index(direction_fn)
    active = torch.arange(batch)  # batch positions still refining

    with torch.inference_mode():
        norms = torch.full((refining_steps, batch), float("nan"), dtype=torch.float32)
        evaluations = torch.zeros(batch, dtype=torch.int64)
        streak = torch.zeros(batch, dtype=torch.int64)  # consecutive steps with ρ ≥ tolerance ("radial")
        for step in range(refining_steps):
            if len(active) == 0:
                break
            everyone = len(active) == batch
            x = n if everyone else n[active]
            gens = generator if not isinstance(generator, list) or everyone else [generator[i] for i in active]
            if pass_index:
                d = direction_fn(x.to(out_dtype), index=None if everyone else active)
            else:
                d = direction_fn(x.to(out_dtype))
            if not isinstance(d, Tensor) or d.shape != x.shape:
                shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
                raise ValueError(f"direction_fn must return a tensor of shape {tuple(x.shape)}, got {shape}")
            d = d.to(work_dtype)
            d_norm = _per_sample_norm(d)
            if not bool(torch.isfinite(d_norm).all()):
                raise ValueError(
                    f"non-finite model output at refining step {step + 1} of {refining_steps}: "
                    "the direction (direction_fn's output) holds NaN or Inf (check the model's dtype and inputs)"
                )
            norms[step, active] = d_norm.flatten().float().cpu()
            evaluations[active] += 1
            keep: Optional[Tensor] = None  # "radial": samples that stop here keep n_{k-1}
            if stop_tolerance is not None and stop_signal == "radial":
                hit = (_radial_share(d, x) >= stop_tolerance).cpu()
                streak[active] = torch.where(hit, streak[active] + 1, torch.zeros_like(streak[active]))
                keep = (streak[active] >= stop_window).to(x.device).view(-1, *([1] * (x.ndim - 1)))
                x_before = x
            if clip_threshold is not None:
                d = d * (clip_threshold / d_norm).clamp(max=1.0)
            x = x - step_size * d
            if noise_level > 0:
                if fixed_noise is None:
                    z = _randn_like(x, gens)
                else:
                    z = fixed_noise.to(device=x.device, dtype=x.dtype)
                    z = z if everyone else z[active.to(z.device)]
                x = x + math.sqrt(noise_level) * z
            if boundary_control:
                x = x.clamp(-BOUNDARY, BOUNDARY)
            if normalize_latents:
                x = x * (sqrt_dim / _per_sample_norm(x))
            if not bool(torch.isfinite(x).all()):
                raise ValueError(
                    f"the latents overflowed at refining step {step + 1}: step_size={step_size} or "
                    f"noise_level={noise_level} is too large for this direction and dtype"
                )
            if keep is not None:
                x = torch.where(keep, x_before, x)
            if everyone:
                n = x
            else:
                n = n.clone()
                n[active] = x
            if stop_tolerance is not None:
                if stop_signal == "radial":
                    done = streak[active] >= stop_window
                else:
                    done = _settled(norms[:, active], step, stop_window, stop_tolerance)
                active = active[~done]
    # Leave inference mode: the caller may hand these to code that updates tensors in place.
    return RefineOutput(latents=n.to(out_dtype).clone(), step_norms=norms.clone(), evaluations=evaluations.clone())
