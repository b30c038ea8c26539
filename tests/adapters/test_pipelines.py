"""NoiseLevelGuidance on tiny SD-1.5, SD-2.1 (v-prediction) and SDXL pipelines built in-process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nlg import NoiseLevelGuidance
from nlg.eval.runs import SCHEDULERS
from nlg.testing import make_scheduler, tiny_sd_pipeline, tiny_sdxl_pipeline

STEPS = 4  # sampler steps: enough to exercise every multistep scheduler's history


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def sd_alpha_bar(t):
    """ᾱ_t of SD's scaled_linear schedule, computed from its definition rather than from the scheduler."""
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=np.float64) ** 2
    return float(np.prod(1.0 - betas[: t + 1]))


class UNetRecorder:
    """Records every UNet call's sample, timestep and output through a forward hook."""

    def __init__(self, unet, corrupt_call=None):
        self.calls = []
        self.corrupt_call = corrupt_call
        self.handle = unet.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        out = output[0] if isinstance(output, tuple) else output.sample
        self.calls.append((sample.detach().clone(), torch.as_tensor(timestep).clone(), out.detach().clone()))
        if self.corrupt_call is not None and len(self.calls) == self.corrupt_call:
            return (torch.full_like(out, float("nan")),)
        return None

    def remove(self):
        self.handle.remove()


@pytest.fixture(scope="module")
def sd15():
    return tiny_sd_pipeline("epsilon")


@pytest.fixture(scope="module")
def sd21():
    return tiny_sd_pipeline("v_prediction")


@pytest.fixture(scope="module")
def sdxl():
    return tiny_sdxl_pipeline()


# ---- refining_steps = 0 reproduces the plain pipeline exactly ------------------------------------------

@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_zero_steps_is_pixel_identical_for_every_scheduler(sd15, sd21, kind, scheduler):
    pipe = sd15 if kind == "epsilon" else sd21
    pipe.scheduler = make_scheduler(scheduler, kind)
    kwargs = dict(num_inference_steps=STEPS, output_type="np", guidance_scale=5.0, num_images_per_prompt=2)
    plain = pipe(["a red cube", "two cats"], generator=seeded(1), **kwargs).images
    ours = NoiseLevelGuidance(refining_steps=0)(pipe, ["a red cube", "two cats"], generator=seeded(1), **kwargs).images
    assert np.array_equal(plain, ours)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_zero_steps_is_pixel_identical_for_sdxl(sdxl, scheduler):
    sdxl.scheduler = make_scheduler(scheduler)
    kwargs = dict(num_inference_steps=STEPS, output_type="np", negative_prompt="blurry")
    plain = sdxl("a red cube", generator=seeded(2), **kwargs).images
    ours = NoiseLevelGuidance(refining_steps=0)(sdxl, "a red cube", generator=seeded(2), **kwargs).images
    assert np.array_equal(plain, ours)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_refined_sampling_runs_with_every_scheduler(sd15, sdxl, scheduler):
    for pipe in (sd15, sdxl):
        pipe.scheduler = make_scheduler(scheduler)
        nlg = NoiseLevelGuidance(refining_steps=3)
        out, ref = nlg(pipe, "a red cube", generator=seeded(3), num_inference_steps=STEPS, output_type="np",
                       return_refinement=True)
        plain = pipe("a red cube", generator=seeded(3), num_inference_steps=STEPS, output_type="np").images
        assert np.isfinite(out.images).all() and out.images.shape == plain.shape
        assert not np.array_equal(out.images, plain)
        assert ref.step_norms.shape == (3, 1) and bool((ref.step_norms > 0).all())


# ---- the direction is exactly the paper's ----------------------------------------------------------------

def one_plain_step(pipe, prompt, gamma=None, scheduler="euler", **refine_kwargs):
    """One refinement step with clip/noise/normalisation off, so that n₁ = n₀ − d exposes d."""
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config.prediction_type)
    nlg = NoiseLevelGuidance(refining_steps=1, clip_threshold=None, noise_level=0.0, normalize_latents=False,
                             guidance_formula_gamma=gamma)
    n0 = torch.randn(1, 4, 16, 16, generator=seeded(4))
    rec = UNetRecorder(pipe.unet)
    try:
        ref = nlg.refine(pipe, prompt, latents=n0, **refine_kwargs)
    finally:
        rec.remove()
    return n0, ref, rec.calls


def test_model_sees_unit_variance_latents_at_last_timestep_whatever_the_scheduler_state(sd15):
    """Euler's init_noise_sigma ≈ 14.6 and set_timesteps must not leak into the refinement input."""
    for prepare in (lambda s: None, lambda s: s.set_timesteps(7)):
        pipe = sd15
        pipe.scheduler = make_scheduler("euler")
        prepare(pipe.scheduler)
        n0 = torch.randn(1, 4, 16, 16, generator=seeded(5))
        rec = UNetRecorder(pipe.unet)
        try:
            NoiseLevelGuidance(refining_steps=1).refine(pipe, "x", latents=n0)
        finally:
            rec.remove()
        (sample, timestep, _), = rec.calls
        assert torch.equal(sample, torch.cat([n0, n0])) and int(timestep) == 999


def test_epsilon_direction_is_conditional_minus_unconditional(sd15):
    n0, ref, calls = one_plain_step(sd15, "a red cube")
    (_, _, out), = calls
    eps_u, eps_c = out.chunk(2)
    torch.testing.assert_close(n0 - ref.latents, eps_c - eps_u, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ref.step_norms[0], (eps_c - eps_u).flatten(1).norm(dim=1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [None, 3.0])
def test_v_prediction_uses_the_schedules_alpha_and_sigma(sd21, gamma):
    """ε = α v + σ x with α² = ᾱ₉₉₉ of SD's betas; the γ-formula keeps the σ x term, so both are checked."""
    n0, ref, calls = one_plain_step(sd21, "a red cube", gamma=gamma, scheduler="dpm++")
    (sample, _, v), = calls
    abar = sd_alpha_bar(999)
    assert 0.0046 < abar < 0.0047  # SD's well-known ᾱ_T ≈ 0.0047
    eps = math.sqrt(abar) * v.double() + math.sqrt(1 - abar) * sample.double()
    eps_u, eps_c = eps.chunk(2)
    expected = eps_c - eps_u if gamma is None else gamma * eps_c + (1 - gamma) * eps_u
    torch.testing.assert_close((n0 - ref.latents).double(), expected, rtol=1e-4, atol=1e-5)


def test_sample_prediction_converts_through_x0(sd15):
    pipe = sd15
    pipe.scheduler = make_scheduler("ddim", "sample")
    nlg = NoiseLevelGuidance(refining_steps=1, clip_threshold=None, noise_level=0.0, normalize_latents=False,
                             guidance_formula_gamma=2.0)
    n0 = torch.randn(1, 4, 16, 16, generator=seeded(6))
    rec = UNetRecorder(pipe.unet)
    try:
        ref = nlg.refine(pipe, "x", latents=n0)
    finally:
        rec.remove()
    (sample, _, x0), = rec.calls
    abar = sd_alpha_bar(999)
    eps = (sample.double() - math.sqrt(abar) * x0.double()) / math.sqrt(1 - abar)
    eps_u, eps_c = eps.chunk(2)
    torch.testing.assert_close((n0 - ref.latents).double(), 2.0 * eps_c - eps_u, rtol=1e-4, atol=1e-4)


def test_sdxl_receives_pooled_embeddings_and_time_ids(sdxl):
    sdxl.scheduler = make_scheduler("euler")
    seen = {}
    handle = sdxl.unet.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        NoiseLevelGuidance(refining_steps=1).refine(sdxl, ["a", "b"], height=32, width=32, generator=seeded(0))
    finally:
        handle.remove()
    added = seen["added_cond_kwargs"]
    assert added["text_embeds"].shape == (4, 32)
    assert added["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]] * 4
    # force_zeros_for_empty_prompt: SDXL's unconditional half is all zeros, as in the pipeline itself.
    assert float(added["text_embeds"][:2].abs().max()) == 0.0 and float(added["text_embeds"][2:].abs().max()) > 0


def test_refined_latents_reach_the_pipeline_and_text_encoder_runs_once(sd15):
    pipe = sd15
    pipe.scheduler = make_scheduler("ddim")
    text_calls = []
    handle = pipe.text_encoder.register_forward_hook(lambda *a: text_calls.append(1))
    rec = UNetRecorder(pipe.unet)
    try:
        _, ref = NoiseLevelGuidance(refining_steps=2)(pipe, "a red cube", generator=seeded(7),
                                                      num_inference_steps=2, return_refinement=True)
    finally:
        handle.remove()
        rec.remove()
    assert len(text_calls) == 2  # prompt and negative prompt, once each, not again in the pipeline
    first_sampling_input = rec.calls[2][0]  # after 2 refinement calls; DDIM's init_noise_sigma is 1
    assert torch.equal(first_sampling_input, torch.cat([ref.latents, ref.latents]))


# ---- batches, generators, determinism -------------------------------------------------------------------

def test_same_seed_reproduces_and_images_do_not_depend_on_batch(sd15):
    pipe = sd15
    pipe.scheduler = make_scheduler("euler_a")
    nlg = NoiseLevelGuidance(refining_steps=3)
    kw = dict(num_inference_steps=3, output_type="np")
    a = nlg(pipe, ["a red cube", "two cats"], generator=[seeded(10), seeded(11)], **kw).images
    b = nlg(pipe, ["a red cube", "two cats"], generator=[seeded(10), seeded(11)], **kw).images
    alone = nlg(pipe, ["two cats"], generator=[seeded(11)], **kw).images
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a[1], alone[0], atol=1 / 255)


def test_num_images_per_prompt_and_generator_lists(sd15):
    ref = NoiseLevelGuidance(refining_steps=2).refine(sd15, ["a", "b"], num_images_per_prompt=3,
                                                      generator=[seeded(i) for i in range(6)])
    assert ref.latents.shape == (6, 4, 16, 16) and ref.step_norms.shape == (2, 6)
    assert ref.conditioning["prompt_embeds"].shape[0] == 6
    np.testing.assert_allclose(ref.latents.flatten(1).norm(dim=1).numpy(), 32.0, rtol=1e-5)


def test_refine_runs_without_building_a_graph(sd15):
    ref = NoiseLevelGuidance(refining_steps=2).refine(sd15, "a", generator=seeded(0))
    assert ref.latents.grad_fn is None and not ref.latents.requires_grad
    assert all(not p.grad for p in sd15.unet.parameters() if p.grad is not None)


def test_bfloat16_pipeline_keeps_its_dtype(sd15):
    pipe = tiny_sd_pipeline("epsilon").to(torch.bfloat16)
    ref = NoiseLevelGuidance(refining_steps=2).refine(pipe, "a", generator=seeded(0))
    assert ref.latents.dtype == torch.bfloat16 and torch.isfinite(ref.latents.float()).all()


# ---- zero terminal SNR, bad input -----------------------------------------------------------------------

def test_zero_terminal_snr_is_refused_and_an_earlier_reference_works(sd15):
    pipe = sd15
    pipe.scheduler = make_scheduler("ddim", "v_prediction", rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="reference_timestep"):
        NoiseLevelGuidance(refining_steps=1).refine(pipe, "a", generator=seeded(0))
    rec = UNetRecorder(pipe.unet)
    try:
        ref = NoiseLevelGuidance(refining_steps=1, reference_timestep=900).refine(pipe, "a", generator=seeded(0))
    finally:
        rec.remove()
    assert int(rec.calls[0][1]) == 900 and float(ref.step_norms[0, 0]) > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(refining_steps=-1), "refining_steps"),
        (dict(step_size=0), "step_size"),
        (dict(clip_threshold=0), "clip_threshold"),
        (dict(noise_level=-0.1), "noise_level"),
        (dict(reference_timestep=-5), "reference_timestep"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        NoiseLevelGuidance(**kwargs)


def test_bad_inputs_name_the_parameter(sd15):
    pipe = sd15
    pipe.scheduler = make_scheduler("ddim")
    nlg = NoiseLevelGuidance(refining_steps=1)
    cases = [
        (dict(latents=torch.zeros(1, 4, 16)), "rank"),
        (dict(latents=torch.zeros(1, 3, 16, 16)), "shape"),
        (dict(latents=torch.zeros(2, 4, 16, 16)), "samples"),
        (dict(generator=[seeded(0), seeded(1)]), "generator"),
        (dict(height=31), "height"),
        (dict(num_images_per_prompt=0), "num_images_per_prompt"),
        (dict(negative_prompt=["a", "b"]), "negative_prompt"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            nlg.refine(pipe, "a prompt", **kwargs)
    with pytest.raises(TypeError, match="prompt"):
        nlg.refine(pipe, 42)
    with pytest.raises(TypeError, match="unexpected"):
        nlg.refine(pipe, "a", guidance_scale=3.0)


def test_unknown_prediction_type_and_bare_objects_are_refused(sd15):
    pipe = tiny_sd_pipeline("epsilon")
    pipe.scheduler.register_to_config(prediction_type="flow")
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseLevelGuidance(refining_steps=1).refine(pipe, "a")

    class NoUNet:
        text_encoder = object()
        scheduler = object()
        unet = None

        def encode_prompt(self, *a, **k):
            raise AssertionError("never reached")

    with pytest.raises(TypeError, match="UNet"):
        NoiseLevelGuidance().refine(NoUNet(), "a")


def test_non_finite_model_output_stops_with_the_step(sd15):
    rec = UNetRecorder(sd15.unet, corrupt_call=3)
    try:
        with pytest.raises(ValueError, match="step 3 of 5"):
            NoiseLevelGuidance(refining_steps=5).refine(sd15, "a", generator=seeded(0))
    finally:
        rec.remove()


def test_loading_from_a_local_folder_offline(tmp_path):
    from diffusers import StableDiffusionPipeline

    from nlg.testing import save_tiny_pipeline

    path = save_tiny_pipeline(tmp_path / "sd21", "sd21")
    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    ref = NoiseLevelGuidance(refining_steps=2).refine(pipe, "ünïcödé prompt " * 20, generator=seeded(0))
    assert torch.isfinite(ref.latents).all()


def test_adaptive_stopping_selects_each_images_own_prompt(sdxl):
    """With stopping, later UNet batches hold only active images, each with its own conditioning rows."""
    sdxl.scheduler = make_scheduler("euler")
    prompts = ["a red cube", "two cats", "a dark forest"]
    gens = lambda: [seeded(20 + i) for i in range(3)]
    seen = []
    handle = sdxl.unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["encoder_hidden_states"].shape[0]),
                                                 with_kwargs=True)
    try:
        stopped = NoiseLevelGuidance(refining_steps=12, stop_tolerance=0.05, stop_window=2).refine(
            sdxl, prompts, generator=gens())
    finally:
        handle.remove()
    evals = stopped.evaluations.tolist()
    assert min(evals) < 12 and seen == sorted(seen, reverse=True) and sum(seen) == 2 * sum(evals)
    # Each image equals a run of that image alone, stopped after the same number of steps.
    for i, prompt in enumerate(prompts):
        alone = NoiseLevelGuidance(refining_steps=evals[i]).refine(sdxl, prompt, generator=[seeded(20 + i)])
        torch.testing.assert_close(stopped.latents[i : i + 1], alone.latents, rtol=0, atol=1e-4)
        torch.testing.assert_close(stopped.step_norms[: evals[i], i], alone.step_norms[:, 0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stop_tolerance"):
        NoiseLevelGuidance(stop_tolerance=0)
