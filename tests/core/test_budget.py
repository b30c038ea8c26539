"""``NoiseLevelGuidance.for_budget``: K evaluations on the paper's path length K·η = 20.

The statistical test compares ``for_budget(4)`` with the paper's K = 20 on the shipped digits model
at CFG scale 0 (where NLG alone decides the class: plain sampling is ≈ 10% accurate), on the same
n = 200 seeded noises.  The stated tolerance is 3 accuracy points; because the arms are paired, the test
also asks for no paired evidence of a difference: with b and c the samples only one arm gets right,
McNemar's statistic (b − c)/√(b + c) stays within ±3.  (``benchmarks/nlg_cost.py`` measures the same
pair on 1000 samples: +0.1 points; see ``docs/guides/cost.md``.)
"""

import math

import numpy as np
import pytest
import torch

from nlg import NoiseLevelGuidance, refine_noise
from nlg.digits import DigitsPipeline, per_sample_generators
from nlg.digits.evaluator import DigitsEvaluator, _as_pixels
from nlg.digits.experiment import requested_labels

PAPER = dict(refining_steps=20, step_size=1.0, clip_threshold=0.5, noise_level=0.001, normalize_latents=True,
             boundary_control=False, guidance_formula_gamma=None, reference_timestep=None, stop_tolerance=None,
             stop_window=3, stop_signal="norm_change")


def test_default_is_the_paper_and_for_budget_20_is_the_default():
    assert NoiseLevelGuidance().config == PAPER
    assert NoiseLevelGuidance.for_budget(20).config == PAPER
    assert NoiseLevelGuidance().path_length == 20.0


@pytest.mark.parametrize("evaluations,path,eta", [(4, 20.0, 5.0), (1, 20.0, 20.0), (3, 10.0, 10.0 / 3), (8, 2.0, 0.25)])
def test_for_budget_sets_k_and_eta_from_the_path(evaluations, path, eta):
    nlg = NoiseLevelGuidance.for_budget(evaluations, path_length=path, noise_level=0.0, clip_threshold=None)
    assert nlg.refining_steps == evaluations
    assert nlg.step_size == pytest.approx(eta, rel=1e-12)
    assert nlg.path_length == pytest.approx(path, rel=1e-12)
    assert nlg.noise_level == 0.0 and nlg.clip_threshold is None


def test_constant_field_walks_the_same_path_for_every_budget():
    """Without projection, noise or clipping, K steps of η = L/K against a constant d end at n − L·d exactly."""
    g = torch.Generator().manual_seed(0)
    n0, d = torch.randn(3, 1, 8, 8, generator=g), 0.1 * torch.randn(3, 1, 8, 8, generator=g)
    for k in (1, 2, 5, 20):
        nlg = NoiseLevelGuidance.for_budget(k, clip_threshold=None, noise_level=0.0, normalize_latents=False)
        out = refine_noise(n0, lambda n: d, refining_steps=nlg.refining_steps, step_size=nlg.step_size,
                           clip_threshold=None, noise_level=0.0, normalize_latents=False)
        torch.testing.assert_close(out.latents, n0 - 20.0 * d, rtol=1e-5, atol=1e-5)
        assert out.evaluations.tolist() == [k] * 3


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(evaluations=0), ValueError, "evaluations"),
    (dict(evaluations=2.0), TypeError, "evaluations"),
    (dict(evaluations=True), TypeError, "evaluations"),
    (dict(evaluations=4, path_length=0.0), ValueError, "path_length"),
    (dict(evaluations=4, path_length="20"), TypeError, "path_length"),
    (dict(evaluations=4, step_size=2.0), TypeError, "step_size"),
    (dict(evaluations=4, refining_steps=3), TypeError, "refining_steps"),
])
def test_for_budget_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        NoiseLevelGuidance.for_budget(**kwargs)


def _correct(pipe, evaluator, labels, guidance) -> np.ndarray:
    """Per-sample agreement of the held-out classifier with the requested digit (same seeds in every arm)."""
    gens = per_sample_generators(1, len(labels))
    kwargs = dict(guidance_scale=0.0, generator=gens, progress=False)
    out = pipe(labels, **kwargs) if guidance is None else guidance(pipe, labels, **kwargs)
    return evaluator.classifier.predict(_as_pixels(out.images)) == np.asarray(labels)


@pytest.mark.statistical
def test_budget_of_4_scores_within_a_stated_tolerance_of_k20_on_digits():
    """for_budget(4) against K = 20, paired on the same 200 seeds: within 3 points, and no paired (McNemar) evidence
    of a difference at 3σ: |b − c| ≤ 3·√(b + c) for the b, c samples that only one arm gets right."""
    pipe, evaluator = DigitsPipeline.from_pretrained(), DigitsEvaluator()
    labels = requested_labels(20)  # n = 200, 20 per digit
    plain = _correct(pipe, evaluator, labels, None)
    k20 = _correct(pipe, evaluator, labels, NoiseLevelGuidance())
    budget = _correct(pipe, evaluator, labels, NoiseLevelGuidance.for_budget(4))
    only_budget, only_k20 = int((budget & ~k20).sum()), int((k20 & ~budget).sum())
    assert abs(budget.mean() - k20.mean()) <= 0.03, (budget.mean(), k20.mean())
    assert abs(only_budget - only_k20) <= 3 * math.sqrt(only_budget + only_k20), (only_budget, only_k20)
    # The comparison means something: refinement moves accuracy far more than the tolerance.
    assert k20.mean() - plain.mean() > 0.5, (k20.mean(), plain.mean())
