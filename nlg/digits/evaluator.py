"""Metrics for generated digits: adherence (classifier), quality (Fréchet distance), diversity.

The evaluator is a multinomial logistic regression on the 64 pixels, fitted on the training split
only (≈97% accuracy on the held-out split).  For a set of generated images with requested labels it
reports:

* **accuracy**: fraction classified as the requested digit (the analogue of CLIP score);
* **mean p(class)**: mean predicted probability of the requested digit;
* **Fréchet distance** to the held-out real digits (the analogue of FID, computed on the 64 pixels in
  [-1, 1] rather than on network features), per class and overall:

  .. math::
      \\mathrm{FD} = \\lVert\\mu_g - \\mu_r\\rVert_2^2 + \\operatorname{tr}\\!\\left(\\Sigma_g + \\Sigma_r - 2(\\Sigma_g\\Sigma_r)^{1/2}\\right)

  (Heusel et al. 2017, https://arxiv.org/abs/1706.08500);
* **diversity**: mean pairwise Euclidean distance between two different samples of the same class,
  averaged over classes, next to the same number for the held-out real digits.

Fréchet distances from a few dozen samples per class are biased upwards; compare configurations
with each other and with :meth:`DigitsEvaluator.real_reference`, not with published FIDs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .data import NUM_CLASSES, load_split
from .labels import as_label_tensor

__all__ = [
    "DigitsMetrics",
    "DigitsEvaluator",
    "MetricAccumulator",
    "gaussian_stats",
    "frechet_distance",
    "mean_pairwise_distance",
]


def gaussian_stats(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``ddof = 1``) of ``features`` of shape ``(N, D)``, N ≥ 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    ``tr((Σ₁Σ₂)^{1/2})`` is computed as ``Σᵢ √λᵢ(Σ₁^{1/2} Σ₂ Σ₁^{1/2})``: the eigenvalues of a
    symmetric PSD matrix, which stays stable when the covariances are rank-deficient (fewer samples
    than dimensions).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: means {mu1.shape}, {mu2.shape}; covariances {cov1.shape}, {cov2.shape}")
    root1 = _psd_sqrt(cov1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ cov2 @ root1), 0.0, None)).sum()
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)
    return max(value, 0.0)


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance over all unordered pairs of distinct rows of ``features`` ``(N, D)``, N ≥ 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {features.shape}")
    squared = (features ** 2).sum(axis=1)
    gram = squared[:, None] + squared[None, :] - 2.0 * features @ features.T
    upper = np.triu_indices(features.shape[0], k=1)
    return float(np.sqrt(np.clip(gram[upper], 0.0, None)).mean())


@dataclass
class DigitsMetrics:
    """Metrics of one set of generated digits (see the module docstring).

    Args:
        num_samples (`int`): images evaluated.
        accuracy (`float`): fraction classified as the requested digit.
        mean_p_class (`float`): mean classifier probability of the requested digit.
        fd_overall (`float`): Fréchet distance of all samples to all held-out real digits.
        fd_per_class (`float`): mean over digits of the per-digit Fréchet distance.
        diversity (`float`): mean within-class pairwise distance, averaged over digits.
        diversity_real (`float`): the same for the held-out real digits.
        fd_by_digit (`List[float]`): per-digit Fréchet distance, digits 0…9.
    """

    num_samples: int
    accuracy: float
    mean_p_class: float
    fd_overall: float
    fd_per_class: float
    diversity: float
    diversity_real: float
    fd_by_digit: List[float] = field(default_factory=list)

    @property
    def diversity_ratio(self) -> float:
        """``diversity / diversity_real``: 1 matches the real data, below 1 means less varied samples."""
        return self.diversity / self.diversity_real

    def as_dict(self) -> Dict[str, Any]:
        """Flat dict for CSV rows (per-digit distances as ``fd_digit_0`` … ``fd_digit_9``)."""
        row = {k: v for k, v in asdict(self).items() if k != "fd_by_digit"}
        row["diversity_ratio"] = self.diversity_ratio
        row.update({f"fd_digit_{d}": v for d, v in enumerate(self.fd_by_digit)})
        return row


@lru_cache(maxsize=1)
def _fitted_classifier() -> Any:
    from sklearn.linear_model import LogisticRegression

    images, labels = load_split("train")
    classifier = LogisticRegression(C=1.0, max_iter=5000)
    classifier.fit(images.flatten(1).double().numpy(), labels.numpy())
    return classifier


def _as_pixels(images: Any, name: str = "images") -> np.ndarray:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise ValueError(f"{name} must have shape (N, 1, 8, 8), got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contain NaN or Inf")
    return images.detach().to("cpu", torch.float64).clamp(-1.0, 1.0).flatten(1).numpy()


class MetricAccumulator:
    """Collects generated batches (``update``) and returns :class:`DigitsMetrics` (``compute``).

    Classifier statistics are reduced at every ``update``; the pixels (64 floats per image) are kept
    per digit for the Fréchet distance and the pairwise distances.
    """

    def __init__(self, evaluator: "DigitsEvaluator") -> None:
        self.evaluator = evaluator
        self.correct = 0
        self.p_sum = 0.0
        self.pixels: List[List[np.ndarray]] = [[] for _ in range(NUM_CLASSES)]

    @property
    def num_samples(self) -> int:
        return int(sum(sum(len(chunk) for chunk in per_digit) for per_digit in self.pixels))

    def update(self, images: Tensor, labels: Any) -> None:
        """Add generated ``images`` ``(B, 1, 8, 8)`` in [-1, 1] with their requested digits ``labels`` ``(B,)``."""
        pixels = _as_pixels(images)
        labels = as_label_tensor(labels).numpy()
        if len(labels) != len(pixels):
            raise ValueError(f"labels has {len(labels)} entries but images has {len(pixels)}")
        probs = self.evaluator.classifier.predict_proba(pixels)
        self.correct += int((probs.argmax(axis=1) == labels).sum())
        self.p_sum += float(probs[np.arange(len(labels)), labels].sum())
        for digit in np.unique(labels):
            self.pixels[digit].append(pixels[labels == digit])

    def compute(self) -> DigitsMetrics:
        """Metrics over everything added so far; every digit needs at least 2 samples."""
        per_digit = [np.concatenate(chunks) if chunks else np.zeros((0, 64)) for chunks in self.pixels]
        short = [d for d, x in enumerate(per_digit) if len(x) < 2]
        if short:
            raise ValueError(f"every digit needs >= 2 samples for Fréchet distance and diversity; too few for digits {short}")
        return self.evaluator.compare(per_digit, correct=self.correct, p_sum=self.p_sum)


class DigitsEvaluator:
    """Scores generated digits against the held-out real digits (see the module docstring).

    The classifier is fitted once per process on the training split (deterministic, ~2 s).
    """

    def __init__(self) -> None:
        self.classifier = _fitted_classifier()
        images, labels = load_split("test")
        self._real = [_as_pixels(images[labels == d]) for d in range(NUM_CLASSES)]
        self._real_all_stats = gaussian_stats(np.concatenate(self._real))
        self._real_stats = [gaussian_stats(x) for x in self._real]
        self.diversity_real = float(np.mean([mean_pairwise_distance(x) for x in self._real]))
        predicted = self.classifier.predict(_as_pixels(images))
        self.heldout_accuracy = float((predicted == labels.numpy()).mean())

    def accumulator(self) -> MetricAccumulator:
        """A fresh :class:`MetricAccumulator` for streaming evaluation."""
        return MetricAccumulator(self)

    def evaluate(self, images: Tensor, labels: Any) -> DigitsMetrics:
        """Metrics of generated ``images`` ``(N, 1, 8, 8)`` in [-1, 1] for requested digits ``labels`` ``(N,)``."""
        accumulator = self.accumulator()
        accumulator.update(images, labels)
        return accumulator.compute()

    def compare(self, per_digit: List[np.ndarray], *, correct: Optional[int] = None, p_sum: Optional[float] = None) -> DigitsMetrics:
        """Fréchet distances and diversity of per-digit pixel arrays; classifier terms from the sums given."""
        total = sum(len(x) for x in per_digit)
        if correct is None or p_sum is None:
            pixels = np.concatenate(per_digit)
            labels = np.concatenate([np.full(len(x), d) for d, x in enumerate(per_digit)])
            probs = self.classifier.predict_proba(pixels)
            correct = int((probs.argmax(axis=1) == labels).sum())
            p_sum = float(probs[np.arange(total), labels].sum())
        fd_by_digit = [frechet_distance(*gaussian_stats(x), *ref) for x, ref in zip(per_digit, self._real_stats)]
        return DigitsMetrics(
            num_samples=total,
            accuracy=correct / total,
            mean_p_class=p_sum / total,
            fd_overall=frechet_distance(*gaussian_stats(np.concatenate(per_digit)), *self._real_all_stats),
            fd_per_class=float(np.mean(fd_by_digit)),
            diversity=float(np.mean([mean_pairwise_distance(x) for x in per_digit])),
            diversity_real=self.diversity_real,
            fd_by_digit=fd_by_digit,
        )

    def real_reference(self) -> DigitsMetrics:
        """The training split scored like a generator: the floor for Fréchet distance at these sample sizes.

        Accuracy and p(class) here are on data the classifier was fitted on; the honest classifier
        accuracy is ``heldout_accuracy``.
        """
        images, labels = load_split("train")
        return self.compare([_as_pixels(images[labels == d]) for d in range(NUM_CLASSES)])
