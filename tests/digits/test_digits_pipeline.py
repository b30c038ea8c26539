"""DigitsPipeline and NLG on the shipped weights: CFG, the NLG direction, refinement, bad inputs, the demo."""

import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from nlg import NoiseLevelGuidance
from nlg.digits import DigitsEvaluator, DigitsPipeline, per_sample_generators
from nlg.digits.demo import run_demo
from nlg.digits.experiment import DigitsConfig, requested_labels, sample_digits

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pipe():
    return DigitsPipeline.from_pretrained()


def test_cfg_combines_two_independent_unet_calls(pipe):
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels, null = torch.tensor([1, 4, 9]), torch.full((3,), 10)
    t = torch.tensor(500)
    with torch.no_grad():
        eps_c = pipe.unet(x, t, class_labels=labels).sample
        eps_u = pipe.unet(x, t, class_labels=null).sample
        for scale in (0.0, 1.0, 2.5):
            got = pipe.guided_epsilon(x, t, labels, null, scale)
            torch.testing.assert_close(got, eps_u + scale * (eps_c - eps_u), atol=1e-5, rtol=1e-5)


def test_nlg_direction_is_the_class_difference_at_t999(pipe):
    refinement = NoiseLevelGuidance(refining_steps=1, step_size=1e-9, noise_level=0.0, clip_threshold=None).refine(
        pipe, [2, 5], generator=per_sample_generators(0, 2)
    )
    n = pipe.prepare_latents(2, per_sample_generators(0, 2))
    with torch.no_grad():
        expected = pipe.unet(n, 999, class_labels=torch.tensor([2, 5])).sample - pipe.unet(n, 999, class_labels=torch.tensor([10, 10])).sample
    torch.testing.assert_close(refinement.step_norms[0], expected.flatten(1).norm(dim=1), atol=1e-4, rtol=1e-4)
    adapter = pipe.nlg_adapter()
    _, conditioning = adapter.encode([2, 5])
    direction = adapter.direction_fn(conditioning, gamma=None, reference_timestep=None)
    torch.testing.assert_close(direction(n), expected, atol=1e-5, rtol=1e-5)


def test_refined_latents_lie_on_the_sphere_and_k0_is_the_plain_pipeline(pipe):
    kwargs = dict(guidance_scale=1.5, num_inference_steps=4, progress=False)
    refinement = NoiseLevelGuidance().refine(pipe, [3, 7], num_images_per_prompt=2, generator=per_sample_generators(1, 4))
    torch.testing.assert_close(refinement.latents.flatten(1).norm(dim=1), torch.full((4,), 8.0))
    assert torch.equal(refinement.conditioning["labels"], torch.tensor([3, 3, 7, 7]))
    plain = pipe([3, 7], num_images_per_prompt=2, generator=per_sample_generators(1, 4), **kwargs)
    k0 = NoiseLevelGuidance(refining_steps=0)(pipe, [3, 7], num_images_per_prompt=2, generator=per_sample_generators(1, 4), **kwargs)
    assert torch.equal(plain.images, k0.images)
    nlg = NoiseLevelGuidance()(pipe, [3, 7], num_images_per_prompt=2, generator=per_sample_generators(1, 4), **kwargs)
    assert not torch.equal(plain.images, nlg.images) and nlg.images.shape == (4, 1, 8, 8)


def test_an_image_does_not_depend_on_its_batch(pipe):
    config = DigitsConfig(guidance_scale=2.0, refining_steps=3)
    labels = torch.tensor([4, 0, 8, 1, 6])
    whole = sample_digits(pipe, labels, config, seed=9, num_inference_steps=3, chunk_size=5, progress=False)
    pieces = sample_digits(pipe, labels, config, seed=9, num_inference_steps=3, chunk_size=2, progress=False)
    torch.testing.assert_close(whole, pieces, atol=1e-5, rtol=0)


@pytest.mark.statistical
def test_nlg_k20_lifts_unconditional_sampling_from_chance(pipe):
    """The issue's check: at CFG scale 0 the labels only reach the sample through NLG's refined noise.

    At K = 0 with CFG 0 a sample ignores its label (ε = ε(x|∅) exactly) and the 200 requested labels
    are balanced, so each sample is correct with probability 1/10 independently: accuracy ~
    Binomial(200, 0.1)/200, σ = √(0.1·0.9/200) ≈ 0.021.  ``chance_bound`` = 0.1 + 5σ ≈ 0.206 is exceeded
    by chance with probability < 1e-6 (one-sided normal tail; the binomial tail is of the same order).
    K = 0 must stay below it; K = 20 must be above it, i.e. distinguishable from chance.
    """
    evaluator = DigitsEvaluator()
    labels = requested_labels(20)  # 200 samples, 20 per class
    n = len(labels)
    chance_bound = 0.1 + 5 * math.sqrt(0.1 * 0.9 / n)
    accuracy = {}
    for k in (0, 20):
        images = sample_digits(pipe, labels, DigitsConfig(guidance_scale=0.0, refining_steps=k), seed=11,
                               num_inference_steps=10, chunk_size=200, progress=False)
        accuracy[k] = evaluator.evaluate(images, labels).accuracy
    assert accuracy[0] < chance_bound, accuracy
    assert accuracy[20] > chance_bound, accuracy


@pytest.mark.parametrize(
    "labels, kwargs, error, match",
    [
        (12, {}, ValueError, "labels must be digits in 0…9, got 12"),
        ([3, -1], {}, ValueError, "labels"),
        (10, {}, ValueError, "null class"),
        ([3, "7"], {}, TypeError, "labels"),
        (3.0, {}, TypeError, "labels"),
        (torch.tensor([1.0]), {}, TypeError, "labels"),
        ([], {}, ValueError, "labels is empty"),
        (None, {}, TypeError, "labels is required"),
        ([1, 2], {"negative_labels": [10, 10, 10]}, ValueError, "negative_labels"),
        ([1], {"negative_labels": 11}, ValueError, "negative_labels"),
        ([1], {"height": 16}, ValueError, "height"),
        ([1, 2], {"latents": torch.zeros(1, 1, 8, 8)}, ValueError, "latents"),
        ([1, 2], {"generator": per_sample_generators(0, 3)}, ValueError, "generator"),
        ([1], {"num_inference_steps": 0}, ValueError, "num_inference_steps"),
    ],
)
def test_bad_pipeline_inputs(pipe, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe(labels, progress=False, **kwargs)


def test_bad_nlg_inputs(pipe):
    with pytest.raises(ValueError, match="labels must be digits"):
        NoiseLevelGuidance().refine(pipe, [3, 15])
    with pytest.raises(ValueError, match="width"):
        NoiseLevelGuidance().refine(pipe, [3], width=64)
    with pytest.raises(ValueError, match="latents"):
        NoiseLevelGuidance().refine(pipe, [3, 4], latents=torch.zeros(2, 1, 4, 4))


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "grid.png"
    results = run_demo(guidance_scales=(0.0,), refining_steps=2, samples_per_class=2, num_inference_steps=2, out=out, progress=False)
    assert [r.config.refining_steps for r in results] == [0, 2]
    assert all(r.metrics.num_samples == 20 for r in results)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height > 100
    printed = capsys.readouterr().out
    assert "| CFG 0 |" in printed and "| CFG 0 + NLG K=2" in printed and "held-out accuracy" in printed


@pytest.mark.slow
def test_benchmark_quick_writes_csv_and_plot(tmp_path, monkeypatch, capsys):
    argv = ["digits_frontier", "--quick", "--samples-per-class", "2", "--steps", "2", "--threads", "1", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_module("benchmarks.digits_frontier", run_name="__main__", alter_sys=True)
    assert "wrote" in capsys.readouterr().out
    lines = (tmp_path / "digits_frontier.csv").read_text().splitlines()
    assert lines[0].startswith("config,guidance_scale,refining_steps") and len(lines) == 1 + 9
    with Image.open(tmp_path / "digits_frontier.png") as image:
        assert image.format == "PNG"
