"""Adaptive stopping through NoiseLevelGuidance on the digits pipeline: each image keeps its own label."""

import torch

from nlg import NoiseLevelGuidance
from nlg.digits import DigitsPipeline


def test_stopped_images_match_their_own_fixed_length_runs():
    pipe = DigitsPipeline.from_pretrained()
    labels = [0, 3, 7, 9, 1, 4]
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(len(labels))]
    stopped = NoiseLevelGuidance(refining_steps=15, stop_tolerance=0.004, stop_window=2).refine(
        pipe, labels, generator=gens())
    evals = stopped.evaluations.tolist()
    assert len(set(evals)) > 1, "the test needs images that stop at different steps"
    for i, label in enumerate(labels):
        alone = NoiseLevelGuidance(refining_steps=evals[i]).refine(
            pipe, [label], generator=[torch.Generator().manual_seed(100 + i)])
        torch.testing.assert_close(stopped.latents[i : i + 1], alone.latents, rtol=0, atol=1e-5)
