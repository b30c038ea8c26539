r"""Brightness-shifted data and brightness metrics, for checking the claim behind offset noise.

The claim (Guttenberg 2023): a model trained with plain ε cannot produce images much darker or
brighter than average, because the image-wide mean of its noisy input barely changes at high noise.
To test it, shift every image's brightness — a sizeable share of them strongly — and compare the
per-image mean brightness b(x) = mean over pixels of generated and held-out real images:

- 1-Wasserstein distance W₁ between the two distributions of b (scipy's ``wasserstein_distance``);
- MMD² with a Gaussian RBF kernel k(x, y) = exp(−‖x − y‖² / (2h²)) in pixel space, unbiased
  estimator (Gretton et al. 2012, https://jmlr.org/papers/v13/gretton12a.html), h the median
  pairwise distance within the reference set;
- the share of generated images with b below the reference's 5th percentile and above its 95th
  (5 % each for a perfect model).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..utils.types import GeneratorLike
from ._checks import check_latents, check_number, draw

__all__ = ["shift_brightness", "mean_brightness", "rbf_mmd2", "brightness_report"]


def shift_brightness(
    images: Tensor,
    *,
    extreme_share: float = 0.5,
    extreme_range: Tuple[float, float] = (0.5, 1.0),
    mild_range: float = 0.2,
    generator: GeneratorLike = None,
) -> Tuple[Tensor, Tensor]:
    r"""Add one brightness shift b per image and clamp to [-1, 1]: ``clamp(x + b, −1, 1)``.

    With probability ``extreme_share`` an image is shifted strongly, \|b\| ~ U(extreme_range) with a
    random sign (half of them dark, half bright); otherwise b ~ U(−mild_range, mild_range).

    Args:
        images (`torch.Tensor`): (N, C, H, W) in [-1, 1].
        extreme_share (`float`, defaults to 0.5): share of strongly shifted images, in [0, 1].
        extreme_range (`Tuple[float, float]`, defaults to (0.5, 1.0)): range of \|b\| for those.
        mild_range (`float`, defaults to 0.2): half-width of b for the others, ≥ 0.
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*): draw order per
            generator: which kind, the sign, then the magnitude.

    Returns:
        `Tuple[torch.Tensor, torch.Tensor]`: the shifted images and the shifts b, shape (N,).
    """
    check_latents(images, "images")
    check_number(extreme_share, "extreme_share")
    if extreme_share > 1:
        raise ValueError(f"extreme_share must be <= 1, got {extreme_share}")
    low, high = (check_number(v, "extreme_range") for v in extreme_range)
    if low > high:
        raise ValueError(f"extreme_range must be (low, high) with low <= high, got {extreme_range}")
    mild = check_number(mild_range, "mild_range")
    n = images.shape[0]
    kind, sign, size = (draw("uniform", (n,), generator, dtype=torch.float64) for _ in range(3))
    extreme = torch.where(sign < 0.5, -1.0, 1.0) * (low + (high - low) * size)
    shift = torch.where(kind < extreme_share, extreme, mild * (2.0 * size - 1.0)).to(images.dtype)
    return (images + shift.reshape(-1, 1, 1, 1)).clamp(-1.0, 1.0), shift


def mean_brightness(images: Tensor) -> Tensor:
    """Per-image mean pixel value, shape (N,)."""
    return images.flatten(1).mean(1)


def rbf_mmd2(x: Tensor, y: Tensor, *, bandwidth: Optional[float] = None) -> float:
    r"""Unbiased MMD² between sample sets ``x`` (n, …) and ``y`` (m, …) with an RBF kernel.

    MMD²_u = 1/(n(n−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j) − 2/(nm) Σ_{i,j} k(x_i, y_j)

    Args:
        x, y (`torch.Tensor`): flattened per sample; n, m ≥ 2.
        bandwidth (`float`, *optional*): h > 0; defaults to the median pairwise distance within ``y``.
    """
    x, y = x.flatten(1).double(), y.flatten(1).double()
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("rbf_mmd2 needs at least 2 samples in each set")
    if bandwidth is None:
        d = torch.cdist(y, y)
        bandwidth = float(torch.quantile(d[torch.triu(torch.ones_like(d, dtype=torch.bool), 1)], 0.5))
    h = check_number(bandwidth, "bandwidth", strict=True)
    k = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2) / (2 * h * h))  # noqa: E731
    n, m = x.shape[0], y.shape[0]
    kxx, kyy = k(x, x), k(y, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2 * k(x, y).mean())


def brightness_report(generated: Tensor, reference: Tensor) -> Dict[str, float]:
    """W₁ of per-image brightness, pixel-space RBF MMD², tail shares, and brightness mean/std.

    Args:
        generated (`torch.Tensor`): (N, C, H, W) samples.
        reference (`torch.Tensor`): (M, C, H, W) held-out real images.

    Returns:
        `Dict[str, float]`: ``w1_brightness``, ``mmd2_rbf``, ``share_below_p5``, ``share_above_p95``,
        ``brightness_mean``, ``brightness_std``.
    """
    from scipy.stats import wasserstein_distance

    b_gen = mean_brightness(generated.double()).numpy()
    b_ref = mean_brightness(reference.double()).numpy()
    p5, p95 = np.percentile(b_ref, [5, 95])
    return dict(
        w1_brightness=float(wasserstein_distance(b_gen, b_ref)),
        mmd2_rbf=rbf_mmd2(generated, reference),
        share_below_p5=float((b_gen < p5).mean()),
        share_above_p95=float((b_gen > p95).mean()),
        brightness_mean=float(b_gen.mean()),
        brightness_std=float(b_gen.std()),
    )
