"""nlg.digits.evaluator against independent computations: scipy's sqrtm and pdist, analytic Gaussians, real data."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from scipy.spatial.distance import pdist

from nlg.digits import DigitsEvaluator, load_split
from nlg.digits.evaluator import frechet_distance, gaussian_stats, mean_pairwise_distance


@pytest.fixture(scope="module")
def evaluator():
    return DigitsEvaluator()


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, c1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, c2 = b.mean(0), np.cov(b, rowvar=False)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(sqrtm(c1 @ c2)))
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_diagonal_gaussians_is_analytic():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.0]), np.array([9.0, 1.0, 2.0])  # a zero variance: rank-deficient
    expected = 1.0 + 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + (0 - np.sqrt(2)) ** 2
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-9)


def test_mean_pairwise_distance_matches_pdist():
    x = np.random.default_rng(1).normal(size=(25, 64))
    assert mean_pairwise_distance(x) == pytest.approx(pdist(x).mean(), rel=1e-9)
    with pytest.raises(ValueError, match="N >= 2"):
        mean_pairwise_distance(x[:1])


def test_gaussian_stats_is_the_unbiased_estimate():
    x = np.random.default_rng(2).normal(size=(10, 3))
    mu, cov = gaussian_stats(x)
    centred = x - x.mean(0)
    np.testing.assert_allclose(cov, centred.T @ centred / 9)


def test_classifier_and_reference_on_real_digits(evaluator):
    images, labels = load_split("test")
    n = len(labels)
    # The issue asks for a classifier of about 96% accuracy.  On n held-out images a classifier whose true
    # accuracy is 0.96 scores below 0.96 − 3·√(0.96·0.04/n) (≈ 0.929 for n = 364) with probability ≈ 0.1%.
    assert evaluator.heldout_accuracy >= 0.96 - 3 * math.sqrt(0.96 * 0.04 / n)
    held_out = evaluator.evaluate(images, labels)
    assert held_out.accuracy == pytest.approx(evaluator.heldout_accuracy)
    assert held_out.fd_per_class == pytest.approx(0.0, abs=1e-6)  # the reference itself
    assert held_out.diversity_ratio == pytest.approx(1.0)
    # Shuffled labels are independent of the images: a sample is right with probability
    # Σ_c q_c·n_c/n ≤ max_c n_c/n (q = the predictions' class shares); 5 binomial σ above that is
    # exceeded with probability < 1e-6.
    shuffled = labels[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    p0 = float(labels.bincount().max()) / n
    assert evaluator.evaluate(images, shuffled).accuracy < p0 + 5 * math.sqrt(p0 * (1 - p0) / n)
    # The training split scored like a generator is the floor: class-matched real digits score a lower
    # Fréchet distance than the same images under the wrong class, and their diversity is closer to
    # the reference's than that of noisier digits (noise spreads pairwise distances).
    real = evaluator.real_reference()
    train_images, train_labels = load_split("train")
    wrong_class = evaluator.evaluate(train_images, (train_labels + 1) % 10)
    noisy = train_images + 0.3 * torch.randn(train_images.shape, generator=torch.Generator().manual_seed(1))
    noisier = evaluator.evaluate(noisy, train_labels)
    assert real.fd_per_class < wrong_class.fd_per_class
    assert real.fd_per_class < noisier.fd_per_class
    assert abs(real.diversity_ratio - 1) < abs(noisier.diversity_ratio - 1)


def test_streaming_equals_one_shot(evaluator):
    images, labels = load_split("test")
    stream = evaluator.accumulator()
    for start in range(0, len(labels), 50):
        stream.update(images[start : start + 50], labels[start : start + 50])
    noisy = images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    a, b = stream.compute(), evaluator.evaluate(images, labels)
    assert a.accuracy == b.accuracy and a.fd_overall == pytest.approx(b.fd_overall, abs=1e-9)
    # b is the reference itself (distance 0 up to float rounding, ~1e-6); noise must move it clearly away.
    assert b.fd_per_class < 1e-6 < 1e-3 < evaluator.evaluate(noisy, labels).fd_per_class


@pytest.mark.parametrize(
    "images, labels, error, match",
    [
        (torch.zeros(20, 64), torch.arange(20) % 10, ValueError, "images must have shape"),
        (torch.zeros(20, 1, 8, 8), torch.arange(19) % 10, ValueError, "labels has 19"),
        (torch.full((20, 1, 8, 8), float("nan")), torch.arange(20) % 10, ValueError, "NaN"),
        (torch.zeros(20, 1, 8, 8), torch.arange(20), ValueError, "labels must be digits"),
        (torch.zeros(10, 1, 8, 8), torch.arange(10), ValueError, "needs >= 2 samples"),
        (np.zeros((20, 1, 8, 8)), torch.arange(20) % 10, TypeError, "torch.Tensor"),
    ],
)
def test_bad_evaluator_inputs(evaluator, images, labels, error, match):
    with pytest.raises(error, match=match):
        evaluator.evaluate(images, labels)
