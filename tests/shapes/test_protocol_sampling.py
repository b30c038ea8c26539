"""The evaluation protocol's sampling: split seeds, the direction controls, and UNet evaluations per image.

Checked on a tiny random Stable Diffusion pipeline (32×32 images, like the shapes model) against independent
computations: NLG itself, a hand-normalised initial latent, and UNet calls counted with a forward hook.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

import nlg.shapes.sampling as sampling
from nlg import NoiseLevelGuidance
from nlg.shapes.sampling import (
    SPLIT_SEEDS,
    SamplingConfig,
    generate,
    prompt_image_seed,
    sample_with_direction,
    shuffled_prompts,
    split_seed,
)
from nlg.testing import tiny_sd_pipeline

PROMPTS = ["a photo of a red circle", "a photo of two squares", "a photo of a triangle"]


@pytest.fixture(scope="module")
def pipe():
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_direction_from_the_prompt_itself_is_nlg(pipe, scale):
    nlg = NoiseLevelGuidance.for_budget(3)
    kwargs = dict(num_inference_steps=4, guidance_scale=scale, output_type="np")
    expected = nlg(pipe, PROMPTS, generator=_generators([1, 2, 3]), **kwargs).images
    got = sample_with_direction(nlg, pipe, PROMPTS, direction_prompt=list(PROMPTS), generator=_generators([1, 2, 3]),
                                **kwargs).images
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_empty_direction_leaves_only_renormalisation(pipe):
    """With the empty prompt on both sides and no refinement noise, NLG only rescales n to norm √D."""
    nlg = NoiseLevelGuidance(refining_steps=5, step_size=2.0, noise_level=0.0)
    kwargs = dict(num_inference_steps=4, guidance_scale=1.0, output_type="np")
    got = sample_with_direction(nlg, pipe, PROMPTS, direction_prompt=[""] * 3, generator=_generators([4, 5, 6]),
                                **kwargs).images
    noise = randn_tensor((3, 4, 16, 16), generator=_generators([4, 5, 6]), dtype=torch.float32)
    flat = noise.flatten(1)
    normalised = noise * (math.sqrt(flat.shape[1]) / flat.norm(dim=1)).view(-1, 1, 1, 1)
    expected = pipe(PROMPTS, latents=normalised, generator=_generators([4, 5, 6]), **kwargs).images
    np.testing.assert_allclose(got, expected, atol=1e-5)
    real = nlg(pipe, PROMPTS, generator=_generators([4, 5, 6]), **kwargs).images
    assert np.abs(real - got).max() > 1e-3  # the real direction does move the noise


def test_sample_with_direction_refuses_mismatched_prompts(pipe):
    with pytest.raises(ValueError, match="direction_prompt"):
        sample_with_direction(NoiseLevelGuidance(2), pipe, PROMPTS, direction_prompt=[""])
    with pytest.raises(TypeError, match="nlg"):
        sample_with_direction(object(), pipe, PROMPTS, direction_prompt=PROMPTS)


@pytest.mark.parametrize("config", [
    SamplingConfig(1.0), SamplingConfig(3.0), SamplingConfig(1.0, 3, 2.0), SamplingConfig(2.5, 2, 10.0),
    SamplingConfig(1.0, 2, 1.0, "empty"), SamplingConfig(4.0, 2, 1.0, "shuffled"),
])
def test_unet_evaluations_per_image_are_counted(pipe, config):
    rows = []
    handle = pipe.unet.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    try:
        direction = shuffled_prompts(PROMPTS * 2, torch.Generator().manual_seed(0)) if config.direction == "shuffled" else None
        generate(pipe, PROMPTS * 2, list(range(6)), config, num_inference_steps=3, batch_size=6,
                 direction_prompts=direction)
    finally:
        handle.remove()
    assert sum(rows) / 6 == config.unet_evals_per_image(3)


def test_images_do_not_depend_on_batch_size(pipe):
    seeds = [split_seed("test", i, 0) for i in range(3)]
    config = SamplingConfig(1.0, 2, 10.0)
    one = generate(pipe, PROMPTS, seeds, config, num_inference_steps=3, batch_size=1)
    three = generate(pipe, PROMPTS, seeds, config, num_inference_steps=3, batch_size=3)
    # the same seeds whatever the batch; batched float arithmetic may move a pixel by one grey level, no more
    assert np.abs(one.astype(int) - three.astype(int)).max() <= 1


def test_dev_and_test_seeds_are_disjoint_and_distinct():
    dev = {split_seed("dev", p, i) for p in range(600) for i in range(8)}
    test = {split_seed("test", p, i) for p in range(600) for i in range(8)}
    assert len(dev) == len(test) == 600 * 8 and not dev & test
    assert 0 not in SPLIT_SEEDS.values()  # seed 0 chose the earlier default scale
    with pytest.raises(ValueError, match="split"):
        split_seed("train", 0, 0)
    with pytest.raises(ValueError, match="image_index"):
        prompt_image_seed(1, 0, 1000)


def test_prompt_image_seed_is_the_decimal_layout_and_the_old_name_warns():
    # seed, prompt and image in their own decimal places: seed·10⁷ + prompt·10³ + image
    assert prompt_image_seed(7, 123, 45) == int("7" + "0123" + "045")
    assert split_seed("dev", 2, 3) == SPLIT_SEEDS["dev"] * 10**7 + 2003
    with pytest.warns(DeprecationWarning, match="prompt_image_seed"):
        assert sampling.image_seed(7, 123, 45) == 70123045


def test_shuffled_prompts_are_a_seeded_derangement_of_the_texts():
    texts = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"]
    for seed in range(20):
        out = shuffled_prompts(texts, torch.Generator().manual_seed(seed))
        assert sorted(out) == sorted(texts)  # a permutation: every prompt directs once
        assert all(o != t for o, t in zip(out, texts))
    assert shuffled_prompts(texts, torch.Generator().manual_seed(1)) == shuffled_prompts(texts, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="derangement"):
        shuffled_prompts(["a", "a", "b"], torch.Generator())


def test_config_refuses_a_control_without_refinement():
    with pytest.raises(ValueError, match="direction"):
        SamplingConfig(1.0, 0, 1.0, "empty")
    with pytest.raises(ValueError, match="direction"):
        SamplingConfig(1.0, 2, 1.0, "opposite")
    with pytest.raises(ValueError, match="direction_prompts"):
        generate(None, ["x"], [0], SamplingConfig(1.0, 2, 1.0, "shuffled"), num_inference_steps=2)
