r"""Timestep samplers for training, with one unambiguous name each and the aliases users know.

Every continuous sampler draws a normalised time u ∈ (0, 1) (u = 1 is pure noise) and maps it onto
the integer range [min_timestep, max_timestep] as t = min + ⌊u · (max − min + 1)⌋.  Tabulated
densities (``"weighted"``) are truncated to that range instead.

=================  ============================  ===============================================
name               aliases                       u
=================  ============================  ===============================================
``uniform``        ``linear`` (Oxen/ai-toolkit)  u ~ U(0, 1)
``logit_normal``   ``sigmoid`` (kohya, Simple-   u = sigmoid(mean + std·z), z ~ N(0, 1)
                   Tuner, ai-toolkit)            (Esser et al. 2024, https://arxiv.org/abs/2403.03206)
``shift``                                        u ~ U(0, 1), then u ← s·u / (1 + (s−1)·u)  (SD3)
``weighted``                                     P(t) ∝ w((t + ½)/T), a table or a function;
                                                 or uniform t with loss weights w (``weighting="loss"``)
=================  ============================  ===============================================

``shift`` also applies on top of ``uniform`` and ``logit_normal`` when given (s > 1 moves mass
towards high noise).  Beware: in other tools "sigmoid" sometimes means a sigmoid-*shaped* density;
here it is only an alias of ``logit_normal``.

The built-in ``weighted`` curve (:func:`weighted_curve`) is w(u) = 0.2 + 12 u² (1 − u): a Beta(3, 2)
bump, peaking at u = 2/3 (medium-to-high noise), tapering at both ends to a floor of 0.2 so that no
timestep is starved.  This is our own curve with the shape Oxen.ai's article on ai-toolkit's timestep
types describes for "weighted" (emphasis on medium-to-high noise, tapering at both ends); it is not
copied from any tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..utils.types import GeneratorLike
from ._checks import check_generator, check_int, check_number, draw

__all__ = ["TimestepSampler", "SAMPLER_ALIASES", "weighted_curve", "sample_timesteps"]

#: Accepted sampler names → canonical name.
SAMPLER_ALIASES = {
    "uniform": "uniform",
    "linear": "uniform",
    "logit_normal": "logit_normal",
    "sigmoid": "logit_normal",
    "shift": "shift",
    "weighted": "weighted",
}

Weights = Union[Tensor, Sequence[float], Callable[[Tensor], Tensor], None]


def weighted_curve(u: Tensor) -> Tensor:
    r"""The built-in ``weighted`` curve w(u) = 0.2 + 12 u² (1 − u) on u ∈ [0, 1] (1 = pure noise)."""
    return 0.2 + 12.0 * u**2 * (1.0 - u)


@dataclass(frozen=True)
class TimestepSampler:
    r"""Draws training timesteps (and loss weights) for a batch.

    Args:
        name (`str`, defaults to ``"uniform"``):
            ``uniform``/``linear``, ``logit_normal``/``sigmoid``, ``shift`` or ``weighted``.
        mean (`float`, defaults to 0.0):
            ``logit_normal`` location.
        std (`float`, defaults to 1.0):
            ``logit_normal`` scale, > 0.
        shift (`float`, *optional*):
            s > 0 of u ← s·u/(1 + (s−1)·u); defaults to 3.0 for ``shift`` (SD3's value) and 1.0 (no
            shift) otherwise.
        weights (`torch.Tensor`, sequence of `float` or callable, *optional*):
            For ``weighted``: a table of T non-negative values (one per timestep) or a function of
            u = (t + ½)/T; defaults to :func:`weighted_curve`.
        weighting (`str`, defaults to ``"density"``):
            For ``weighted``: ``"density"`` samples t ∝ w (loss weights 1); ``"loss"`` samples t
            uniformly and returns w(t) / mean(w) as loss weights.
        min_timestep (`int`, defaults to 0):
            Smallest timestep drawn.
        max_timestep (`int`, *optional*):
            Largest timestep drawn; defaults to T − 1.
    """

    name: str = "uniform"
    mean: float = 0.0
    std: float = 1.0
    shift: Optional[float] = None
    weights: Weights = None
    weighting: str = "density"
    min_timestep: int = 0
    max_timestep: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in SAMPLER_ALIASES:
            raise ValueError(f"unknown timestep sampler name {self.name!r}; expected one of {sorted(SAMPLER_ALIASES)}")
        object.__setattr__(self, "name", SAMPLER_ALIASES[self.name])
        check_number(self.mean, "mean", minimum=None)
        check_number(self.std, "std", strict=True)
        shift = (3.0 if self.name == "shift" else 1.0) if self.shift is None else self.shift
        object.__setattr__(self, "shift", check_number(shift, "shift", strict=True))
        if self.weighting not in ("density", "loss"):
            raise ValueError(f"weighting must be 'density' or 'loss', got {self.weighting!r}")
        if self.weights is not None and self.name != "weighted":
            raise ValueError(f"weights are only used by the 'weighted' sampler, not {self.name!r}")
        check_int(self.min_timestep, "min_timestep")
        if self.max_timestep is not None:
            check_int(self.max_timestep, "max_timestep")
            if self.min_timestep > self.max_timestep:
                raise ValueError(f"min_timestep ({self.min_timestep}) must be <= max_timestep ({self.max_timestep})")

    def bounds(self, num_train_timesteps: int) -> Tuple[int, int]:
        """The inclusive range [lo, hi] drawn from, checked against T."""
        check_int(num_train_timesteps, "num_train_timesteps", minimum=1)
        hi = num_train_timesteps - 1 if self.max_timestep is None else self.max_timestep
        if hi >= num_train_timesteps:
            raise ValueError(f"max_timestep ({hi}) must be < num_train_timesteps ({num_train_timesteps})")
        if self.min_timestep > hi:
            raise ValueError(f"min_timestep ({self.min_timestep}) must be <= max_timestep ({hi})")
        return self.min_timestep, hi

    def weight_table(self, num_train_timesteps: int) -> Tensor:
        """w(t) for t = 0 … T−1 (float64), from ``weights`` or the built-in curve."""
        weights = weighted_curve if self.weights is None else self.weights
        if callable(weights):
            u = (torch.arange(num_train_timesteps, dtype=torch.float64) + 0.5) / num_train_timesteps
            table = torch.as_tensor(weights(u), dtype=torch.float64)
        else:
            table = torch.as_tensor(weights, dtype=torch.float64)
        if table.shape != (num_train_timesteps,):
            raise ValueError(f"weights must give one value per timestep, shape ({num_train_timesteps},); got {tuple(table.shape)}")
        if not torch.isfinite(table).all() or (table < 0).any():
            raise ValueError("weights must be finite and >= 0")
        lo, hi = self.bounds(num_train_timesteps)
        if not table[lo : hi + 1].sum() > 0:
            raise ValueError(f"weights are all zero on [min_timestep, max_timestep] = [{lo}, {hi}]")
        return table

    def __call__(
        self,
        batch_size: int,
        *,
        num_train_timesteps: int = 1000,
        generator: GeneratorLike = None,
        device: Union[str, torch.device, None] = None,
    ) -> Tuple[Tensor, Tensor]:
        r"""Draw ``batch_size`` timesteps.

        Args:
            batch_size (`int`): how many.
            num_train_timesteps (`int`, defaults to 1000): T.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
                Source of the draw (one U(0,1) or N(0,1) per sample); a list gives one per sample.
            device: of the result.

        Returns:
            `Tuple[torch.Tensor, torch.Tensor]`: timesteps (long, shape (B,)) and loss weights
            (float32, shape (B,); all ones unless ``weighting="loss"``).
        """
        check_int(batch_size, "batch_size")
        check_generator(generator, batch_size)
        lo, hi = self.bounds(num_train_timesteps)
        count = hi - lo + 1
        ones = torch.ones(batch_size, device=device)
        if self.name == "weighted":
            table = self.weight_table(num_train_timesteps)[lo : hi + 1]
            u = draw("uniform", (batch_size,), generator, dtype=torch.float64).cpu()
            if self.weighting == "loss":
                index = torch.clamp((u * count).long(), max=count - 1)
                weights = (table / table.mean())[index].float()
                return (lo + index).to(device), weights.to(device)
            cdf = torch.cumsum(table, 0) / table.sum()
            index = torch.clamp(torch.searchsorted(cdf, u, right=True), max=count - 1)
            return (lo + index).to(device), ones
        if self.name == "logit_normal":
            u = torch.sigmoid(self.mean + self.std * draw("normal", (batch_size,), generator, dtype=torch.float64).cpu())
        else:
            u = draw("uniform", (batch_size,), generator, dtype=torch.float64).cpu()
        s = self.shift
        if s != 1.0:
            u = s * u / (1.0 + (s - 1.0) * u)
        index = torch.clamp((u * count).long(), min=0, max=count - 1)
        return (lo + index).to(device), ones


def sample_timesteps(
    batch_size: int,
    sampler: Union[str, TimestepSampler] = "uniform",
    *,
    num_train_timesteps: int = 1000,
    generator: GeneratorLike = None,
    device: Union[str, torch.device, None] = None,
) -> Tuple[Tensor, Tensor]:
    """Shortcut for ``TimestepSampler(sampler)(batch_size, ...)``; ``sampler`` may be a name."""
    if isinstance(sampler, str):
        sampler = TimestepSampler(sampler)
    elif not isinstance(sampler, TimestepSampler):
        raise TypeError(f"sampler must be a name or a TimestepSampler, got {type(sampler).__name__}")
    return sampler(batch_size, num_train_timesteps=num_train_timesteps, generator=generator, device=device)
