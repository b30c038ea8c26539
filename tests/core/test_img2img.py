"""Noise-level-aware img2img: the ε-direction, the add_noise injection into StableDiffusionImg2ImgPipeline, bad strengths."""

from __future__ import annotations

import math

import pytest
import torch

from nlg import NoiseLevelGuidance, refine_noise
from nlg.img2img import NoiseLevelImg2Img, img2img_direction, refined_add_noise
from nlg.testing import tiny_sd_pipeline


def img2img_pipe(scheduler: str = "ddim"):
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**tiny_sd_pipeline(scheduler=scheduler).components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def image():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def test_direction_is_taken_at_the_noisy_image_with_the_image_term_fixed():
    g = torch.Generator().manual_seed(0)
    x0, eps, weight = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 1, 1, 1, generator=g)
    seen = []

    def direction_at(x, index=None):
        seen.append(x)
        rows = weight if index is None else weight[index]
        return rows * x

    ab = 0.3
    fn = img2img_direction(direction_at, x0, ab)
    expected_x = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    torch.testing.assert_close(fn(eps), weight * expected_x)
    torch.testing.assert_close(seen[-1], expected_x)
    # Adaptive stopping hands only the active rows: x₀ and the callable's own rows follow the index.
    index = torch.tensor([0, 2])
    torch.testing.assert_close(fn(eps[index], index=index), weight[index] * expected_x[index])
    with pytest.raises(ValueError, match="alpha_bar"):
        img2img_direction(direction_at, x0, 1.0)


def test_refined_noise_keeps_unit_sphere_and_stopping_works():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    fn = img2img_direction(lambda x: x - 0.5, x0, 0.2)
    out = refine_noise(eps, fn, refining_steps=30, generator=torch.Generator().manual_seed(2), stop_tolerance=0.05)
    torch.testing.assert_close(out.latents.flatten(1).norm(dim=1), torch.full((4,), 8.0))
    assert (out.evaluations < 30).all() and (out.evaluations >= 4).all()


def test_add_noise_wrapper_refines_only_the_first_call_and_is_removed():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler()
    x0, eps, t = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.tensor([500])
    with refined_add_noise(sched, lambda c, n, ts: 2 * n) as calls:
        first, second = sched.add_noise(x0, eps, t), sched.add_noise(x0, eps, t)
    b = math.sqrt(1 - float(sched.alphas_cumprod[500]))
    torch.testing.assert_close(first, torch.full_like(eps, 2 * b))
    torch.testing.assert_close(second, torch.full_like(eps, b))
    assert len(calls) == 2 and "add_noise" not in vars(sched)
    with pytest.raises(RuntimeError):
        with refined_add_noise(sched, lambda c, n, ts: n):
            raise RuntimeError("boom")
    assert "add_noise" not in vars(sched)


@pytest.mark.parametrize("scheduler", ["ddim", "euler_a"])
def test_zero_steps_reproduce_the_plain_pipeline(scheduler, image):
    pipe = img2img_pipe(scheduler)
    kwargs = dict(image=image[:1], strength=0.6, num_inference_steps=5, output_type="pt")
    plain = pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    same = NoiseLevelImg2Img(NoiseLevelGuidance(refining_steps=0))(pipe, "a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    torch.testing.assert_close(same, plain, rtol=0, atol=0)


def test_refinement_matches_an_independent_loop_on_the_pipelines_own_noise(image):
    from diffusers.utils.torch_utils import randn_tensor

    pipe = img2img_pipe("ddim")
    steps, strength, K = 5, 0.6, 3
    nlg = NoiseLevelImg2Img(NoiseLevelGuidance(refining_steps=K, clip_threshold=0.5))
    out, ref = nlg(pipe, ["a cat", "a dog"], image=image, strength=strength, num_inference_steps=steps,
                   generator=torch.Generator().manual_seed(0), output_type="pt", return_refinement=True)
    plain = pipe(["a cat", "a dog"], image=image, strength=strength, num_inference_steps=steps,
                 generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert not torch.allclose(out.images, plain)
    # DDIM, 5 steps, leading spacing + offset 1: timesteps 801…1; strength 0.6 → int(3.0) steps → t_s = 401.
    assert ref.timestep == 401 and ref.level.timestep == 401 and ref.level.denoising_steps == 3

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pixels = pipe.image_processor.preprocess(image)
        x0 = pipe.vae.encode(pixels).latent_dist.sample(gen) * pipe.vae.config.scaling_factor
        eps = randn_tensor(x0.shape, generator=gen)
        torch.testing.assert_close(ref.initial_noise, eps)
        pe, npe = pipe.encode_prompt(["a cat", "a dog"], "cpu", 1, True)
        ab = float(pipe.scheduler.alphas_cumprod[401])
        n = eps.clone()
        for _ in range(K):
            x = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * n
            e_u = pipe.unet(x, 401, encoder_hidden_states=npe).sample
            e_c = pipe.unet(x, 401, encoder_hidden_states=pe).sample
            d = e_c - e_u
            for b in range(2):
                norm = d[b].norm()
                if norm > 0.5:
                    d[b] = d[b] * 0.5 / norm
            n = n - d + math.sqrt(0.001) * torch.randn(n.shape, generator=gen)
            n = n * math.sqrt(n[0].numel()) / n.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(ref.noise, n, rtol=1e-4, atol=1e-5)
    assert ref.evaluations.tolist() == [K, K]


@pytest.mark.parametrize("strength", [0.0, -0.2, 1.5, float("nan")])
def test_strength_outside_unit_interval_is_refused(strength, image):
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        NoiseLevelImg2Img()(img2img_pipe(), "a cat", image=image[:1], strength=strength)


def test_strength_too_small_for_the_step_count_is_refused(image):
    pipe = img2img_pipe()
    with pytest.raises(ValueError, match="no denoising step"):
        NoiseLevelImg2Img()(pipe, "a cat", image=image[:1], strength=0.05, num_inference_steps=10)
    assert "add_noise" not in vars(pipe.scheduler)
    with pytest.raises(ValueError, match="reference_timestep"):
        NoiseLevelImg2Img(NoiseLevelGuidance(reference_timestep=900))


def test_stop_signal_reaches_the_refinement(image):
    """A radial gate every sample passes at once (cosine ≥ −0.99, window 1) stops each image after one
    evaluation with its noise untouched; the norm-change rule cannot stop before its second evaluation."""
    pipe = img2img_pipe("ddim")
    nlg = NoiseLevelImg2Img(NoiseLevelGuidance(refining_steps=6, stop_tolerance=-0.99, stop_window=1, stop_signal="radial"))
    _, ref = nlg(pipe, ["a cat", "a dog"], image=image, strength=0.6, num_inference_steps=5,
                 generator=torch.Generator().manual_seed(0), output_type="pt", return_refinement=True)
    assert ref.evaluations.tolist() == [1, 1]
    torch.testing.assert_close(ref.noise, ref.initial_noise)
