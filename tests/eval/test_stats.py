"""nlg.eval.stats against independent computations: scipy's binomial test, a Holm example worked by hand,
and properties of the bootstrap over prompts (seeds kept together, collapse, coverage)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from nlg.eval.stats import holm, mcnemar_exact, paired_comparison, prompt_bootstrap, task_means


def test_mcnemar_matches_scipy_binomtest_on_the_discordant_pairs():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(1, 80))
        first = rng.random(n) < rng.random()
        second = rng.random(n) < rng.random()
        result = mcnemar_exact(first, second)
        b, c = int(np.sum(~first & second)), int(np.sum(first & ~second))
        assert (result.b, result.c) == (b, c)
        expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
        assert result.p_value == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_mcnemar_four_of_twelve_drop_is_not_significant():
    # 12 pairs, the first configuration right on 4 images the second gets wrong, agreement elsewhere:
    # p = 2 · (1/2)^4 = 0.125 (issue 19's example).
    first = [1] * 4 + [0] * 8
    second = [0] * 12
    result = mcnemar_exact(first, second)
    assert (result.b, result.c, result.discordant) == (0, 4, 4)
    assert result.p_value == 0.125
    assert mcnemar_exact([1, 0], [1, 0]).p_value == 1.0


def test_mcnemar_refuses_bad_input():
    with pytest.raises(ValueError, match="paired"):
        mcnemar_exact([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="first"):
        mcnemar_exact([0, 2], [0, 1])


def test_holm_hand_worked_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1 and monotone: 0.5·2 = 1.0, then max(1.0, 0.6) = 1.0
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []
    with pytest.raises(ValueError, match="p_values"):
        holm([0.1, 1.5])


def test_bootstrap_collapses_when_every_prompt_agrees():
    prompts = [p for p in range(10) for _ in range(4)]
    tags = ["a" if p < 5 else "b" for p in prompts]
    values = [0.25 if t == "a" else -0.5 for t in tags]
    out = prompt_bootstrap(values, prompts, tags, resamples=200)
    assert out["a"].low == out["a"].high == out["a"].estimate == pytest.approx(0.25)
    assert out["b"].low == out["b"].high == pytest.approx(-0.5)
    assert out["overall"].estimate == pytest.approx((0.25 - 0.5) / 2)
    assert out["overall"].low == pytest.approx(-0.125) and out["overall"].high == pytest.approx(-0.125)


def test_bootstrap_keeps_a_prompts_seeds_together():
    """Seeds that always agree within a prompt carry one prompt's information, not four images'.

    The replicate task mean is then the mean of P prompt means drawn with replacement, whose standard
    deviation is σ/√P with σ the (ddof 0) standard deviation of the prompt means — twice what resampling
    the 4P images independently (σ/√(4P)) would give.
    """
    rng = np.random.default_rng(1)
    P, S = 60, 4
    prompt_values = (rng.random(P) < 0.4).astype(float)
    values = np.repeat(prompt_values, S)
    prompts = np.repeat(np.arange(P), S)
    out = prompt_bootstrap(values, prompts, ["t"] * (P * S), resamples=20000, generator=torch.Generator().manual_seed(3))
    expected_sd = prompt_values.std() / np.sqrt(P)
    # a normal approximation of the central 95% interval: mean ± 1.96 σ/√P
    width = out["t"].high - out["t"].low
    assert width == pytest.approx(2 * 1.96 * expected_sd, rel=0.12)
    assert width > 1.6 * (2 * 1.96 * values.std() / np.sqrt(P * S))
    assert out["t"].estimate == pytest.approx(prompt_values.mean())


@pytest.mark.statistical
def test_bootstrap_interval_covers_the_population_mean():
    """Prompts drawn from a known population: the 90% interval covers the true task mean about 90% of the time."""
    rng = np.random.default_rng(2)
    population = rng.beta(2, 3, size=5000)  # per-prompt success probabilities
    truth = population.mean()
    covered = 0
    trials = 300
    generator = torch.Generator().manual_seed(4)
    for _ in range(trials):
        probs = rng.choice(population, size=50)
        values = (rng.random((50, 4)) < probs[:, None]).astype(float).ravel()
        prompts = np.repeat(np.arange(50), 4)
        interval = prompt_bootstrap(values, prompts, ["t"] * 200, resamples=500, confidence=0.9, generator=generator)["t"]
        covered += interval.low <= truth <= interval.high
    assert 0.84 <= covered / trials <= 0.96


def test_task_means_overall_is_the_mean_of_task_means():
    tags = ["x", "x", "x", "y"]
    out = task_means([1, 0, 0, 1], tags)
    assert out == {"x": pytest.approx(1 / 3), "y": 1.0, "overall": pytest.approx((1 / 3 + 1) / 2)}


def test_paired_comparison_counts_tests_and_adjusts_per_task():
    rng = np.random.default_rng(5)
    prompts = np.repeat(np.arange(30), 4)
    tags = np.where(prompts < 10, "a", np.where(prompts < 20, "b", "c"))
    first = rng.random(120) < 0.3
    second = rng.random(120) < 0.6
    out = paired_comparison(first, second, prompts, list(tags), resamples=300)
    p_values = []
    for task in ("a", "b", "c"):
        mask = tags == task
        b = int(np.sum(~first[mask] & second[mask]))
        c = int(np.sum(first[mask] & ~second[mask]))
        assert (out[task]["b"], out[task]["c"]) == (b, c)
        assert out[task]["difference"] == pytest.approx(second[mask].mean() - first[mask].mean())
        assert out[task]["low"] <= out[task]["difference"] <= out[task]["high"]
        p_values.append(binomtest(b, b + c, 0.5).pvalue)
    m = 3
    order = np.argsort(p_values)
    by_hand = np.maximum.accumulate([min(1.0, (m - i) * p_values[j]) for i, j in enumerate(order)])
    for rank, j in enumerate(order):
        assert out["abc"[j]]["p_holm"] == pytest.approx(by_hand[rank])
    assert out["overall"]["difference"] == pytest.approx(
        np.mean([second[tags == t].mean() - first[tags == t].mean() for t in "abc"]))
