"""Property-based fuzzing of the public API (issue 14): bad input fails loudly and by name, good input gives finite output.

Two kinds of test:

* one test per registered bad-input class (``tests/helpers/fuzz.py``): hypothesis draws values of that
  class, everything else valid, and the call must raise ``TypeError``/``ValueError`` whose message
  names the argument (command lines: exit code 2 and the flag in the message);
* mixed tests per entry point: each argument is drawn valid or bad independently; with no bad argument
  the call must succeed with finite output of the documented shape, otherwise it must raise
  ``TypeError``/``ValueError`` naming one of the bad arguments.  Anything else (``RuntimeError`` from
  torch, ``AttributeError``, silent NaN) fails.

Deterministic: ``derandomize=True`` and no example database.  The count of classes that held is
printed at the end of the session (``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from pathlib import Path
from typing import Any, Callable, List, Sequence

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlg import NoiseLevelGuidance, NoiseLevelImg2Img, noise_level_for_strength, refine_noise
from nlg.training import (
    OffsetSchedule,
    initial_latents,
    min_snr_weights,
    offset_noise,
    pyramid_noise,
    training_batch,
)
from tests.helpers.experiments import load_script
from tests.helpers.fuzz import COVERED, NAN_INF, NEGATIVE, NON_POSITIVE, NOT_A_NUMBER, NOT_AN_INT, REGISTRY, bad
from nlg.testing import make_scheduler, tiny_sd_pipeline

ROOT = Path(__file__).resolve().parents[2]
FUZZ = dict(derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ERRORS = (TypeError, ValueError)


# -- fixtures built once, lazily (the registry's calls use them) -------------------------------------


@functools.lru_cache(maxsize=None)
def sd() -> Any:
    """The tiny SD-1.5-shaped pipeline: latents (4, 16, 16), images 32×32, VAE scale 2."""
    return tiny_sd_pipeline()


@functools.lru_cache(maxsize=None)
def img2img() -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**sd().components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.lru_cache(maxsize=None)
def ddpm() -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler()


@functools.lru_cache(maxsize=None)
def script(name: str) -> Any:
    return load_script(ROOT / "core_experiments" / f"{name}.py")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def latents(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed))


def direction(x: torch.Tensor) -> torch.Tensor:
    """A smooth direction that never cancels the latent: it cannot zero a sample's norm."""
    return 0.3 * torch.tanh(x.roll(1, dims=-1)) + 0.1


def exits(fn: Callable[[List[str]], Any], argv: List[str]) -> Any:
    """Run a command line; an exit with code 2 (argparse or ``run_cli``) becomes a ValueError with stderr."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return fn(argv)
    except SystemExit as exit_:
        if exit_.code != 2:
            raise AssertionError(f"expected exit code 2, got {exit_.code}: {err.getvalue()}") from None
        raise ValueError(err.getvalue()) from None


NLG2 = functools.partial(NoiseLevelGuidance, refining_steps=2)
X = latents(2, 4, 4, 4)


# -- the registry: refine_noise -------------------------------------------------------------------

def _refine(**kw: Any) -> Any:
    return refine_noise(kw.pop("latents", X), kw.pop("direction_fn", direction), **{"refining_steps": 2, **kw})


TENSORLESS = st.one_of(st.lists(st.floats(allow_nan=False), min_size=1, max_size=3), st.none(), st.integers(), st.text(max_size=2))
SIZES = st.lists(st.integers(1, 3), min_size=1, max_size=3)
EMPTY_SHAPES = st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)).filter(lambda s: 0 in s)
BAD_GENERATORS = st.one_of(st.integers(), st.text(max_size=2), st.just((gen(), gen())), st.floats(allow_nan=False))
#: nlg.training also takes a tuple of generators.
BAD_TRAINING_GENERATORS = st.one_of(st.integers(), st.text(max_size=2), st.floats(allow_nan=False))

bad("refine_noise.latents.not_tensor", "latents", TENSORLESS)(lambda v: _refine(latents=v))
bad("refine_noise.latents.nan_inf", "latents", st.tuples(NAN_INF, st.integers(0, 31)))(
    lambda v: _refine(latents=X.clone().view(-1).index_fill_(0, torch.tensor([v[1]]), v[0]).view(X.shape), refining_steps=0))
bad("refine_noise.latents.integer_dtype", "latents", st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.bool]))(
    lambda v: _refine(latents=torch.ones(2, 3, dtype=v)))
bad("refine_noise.latents.complex_dtype", "latents", st.sampled_from([torch.complex64, torch.complex128]))(
    lambda v: _refine(latents=torch.ones(2, 3, dtype=v)))
bad("refine_noise.latents.meta_device", "latents", SIZES)(lambda v: _refine(latents=torch.empty([2, *v], device="meta")))
bad("refine_noise.latents.empty", "latents", EMPTY_SHAPES)(lambda v: _refine(latents=torch.zeros(v)))
bad("refine_noise.latents.rank_below_2", "latents", st.integers(0, 5))(lambda v: _refine(latents=torch.ones(v) if v else torch.tensor(1.0)))
bad("refine_noise.latents.all_zero_sample", "latents", st.integers(0, 1))(
    lambda v: _refine(latents=X.clone().index_fill_(0, torch.tensor([v]), 0.0), noise_level=0.0))
bad("refine_noise.direction_fn.not_callable", "direction_fn", TENSORLESS)(lambda v: _refine(direction_fn=v))
bad("refine_noise.direction_fn.wrong_shape", "direction_fn", st.sampled_from([(1, 4, 4, 4), (2, 4, 4), (2, 4, 4, 5), (64,)]))(
    lambda v: _refine(direction_fn=lambda x: torch.zeros(v)))
bad("refine_noise.direction_fn.not_tensor", "direction_fn", TENSORLESS)(lambda v: _refine(direction_fn=lambda x: v))
bad("refine_noise.direction_fn.non_finite", "direction_fn", NAN_INF)(lambda v: _refine(direction_fn=lambda x: torch.full_like(x, v)))
bad("refine_noise.refining_steps.wrong_type", "refining_steps", NOT_AN_INT)(lambda v: _refine(refining_steps=v))
bad("refine_noise.refining_steps.negative", "refining_steps", st.integers(max_value=-1))(lambda v: _refine(refining_steps=v))
bad("refine_noise.step_size.nan_inf", "step_size", NAN_INF)(lambda v: _refine(step_size=v))
bad("refine_noise.step_size.non_positive", "step_size", NON_POSITIVE)(lambda v: _refine(step_size=v))
bad("refine_noise.step_size.wrong_type", "step_size", NOT_A_NUMBER)(lambda v: _refine(step_size=v))
bad("refine_noise.step_size.overflow", "step_size", st.floats(1e300, 1e308))(lambda v: _refine(step_size=v, clip_threshold=None))
bad("refine_noise.noise_level.nan_inf", "noise_level", NAN_INF)(lambda v: _refine(noise_level=v))
bad("refine_noise.noise_level.negative", "noise_level", NEGATIVE)(lambda v: _refine(noise_level=v))
bad("refine_noise.noise_level.wrong_type", "noise_level", NOT_A_NUMBER)(lambda v: _refine(noise_level=v))
bad("refine_noise.clip_threshold.nan_inf", "clip_threshold", NAN_INF)(lambda v: _refine(clip_threshold=v))
bad("refine_noise.clip_threshold.non_positive", "clip_threshold", NON_POSITIVE)(lambda v: _refine(clip_threshold=v))
bad("refine_noise.clip_threshold.wrong_type", "clip_threshold", NOT_A_NUMBER.filter(lambda v: v is not None))(
    lambda v: _refine(clip_threshold=v))
bad("refine_noise.generator.wrong_type", "generator", BAD_GENERATORS)(lambda v: _refine(generator=v))
bad("refine_noise.generator.list_of_non_generators", "generator", st.lists(st.integers(), min_size=2, max_size=2))(
    lambda v: _refine(generator=v))
bad("refine_noise.generator.list_length_mismatch", "generator", st.sampled_from([0, 1, 3, 5]))(
    lambda v: _refine(generator=[gen(i) for i in range(v)]))
bad("refine_noise.stop_tolerance.nan_inf", "stop_tolerance", NAN_INF)(lambda v: _refine(stop_tolerance=v))
bad("refine_noise.stop_tolerance.non_positive", "stop_tolerance", NON_POSITIVE)(lambda v: _refine(stop_tolerance=v))
bad("refine_noise.stop_tolerance.wrong_type", "stop_tolerance", NOT_A_NUMBER.filter(lambda v: v is not None))(
    lambda v: _refine(stop_tolerance=v))
bad("refine_noise.stop_window.non_positive", "stop_window", st.integers(max_value=0))(lambda v: _refine(stop_window=v, stop_tolerance=0.1))
bad("refine_noise.stop_window.wrong_type", "stop_window", NOT_AN_INT)(lambda v: _refine(stop_window=v, stop_tolerance=0.1))
bad("refine_noise.stop_signal.unknown", "stop_signal", st.one_of(st.text(max_size=5), st.none(), st.integers()))(
    lambda v: _refine(stop_signal=v))

# -- NoiseLevelGuidance(...) -----------------------------------------------------------------------

bad("NoiseLevelGuidance.refining_steps.negative", "refining_steps", st.integers(max_value=-1))(lambda v: NoiseLevelGuidance(refining_steps=v))
bad("NoiseLevelGuidance.refining_steps.wrong_type", "refining_steps", NOT_AN_INT)(lambda v: NoiseLevelGuidance(refining_steps=v))
bad("NoiseLevelGuidance.step_size.nan_inf", "step_size", NAN_INF)(lambda v: NoiseLevelGuidance(step_size=v))
bad("NoiseLevelGuidance.step_size.non_positive", "step_size", NON_POSITIVE)(lambda v: NoiseLevelGuidance(step_size=v))
bad("NoiseLevelGuidance.clip_threshold.non_positive", "clip_threshold", NON_POSITIVE)(lambda v: NoiseLevelGuidance(clip_threshold=v))
bad("NoiseLevelGuidance.noise_level.negative", "noise_level", NEGATIVE)(lambda v: NoiseLevelGuidance(noise_level=v))
bad("NoiseLevelGuidance.guidance_formula_gamma.nan_inf", "guidance_formula_gamma", NAN_INF)(
    lambda v: NoiseLevelGuidance(guidance_formula_gamma=v))
bad("NoiseLevelGuidance.guidance_formula_gamma.wrong_type", "guidance_formula_gamma", NOT_A_NUMBER.filter(lambda v: v is not None))(
    lambda v: NoiseLevelGuidance(guidance_formula_gamma=v))
bad("NoiseLevelGuidance.reference_timestep.negative", "reference_timestep", st.integers(max_value=-1))(
    lambda v: NoiseLevelGuidance(reference_timestep=v))
bad("NoiseLevelGuidance.reference_timestep.wrong_type", "reference_timestep", NOT_AN_INT.filter(lambda v: v is not None))(
    lambda v: NoiseLevelGuidance(reference_timestep=v))
bad("NoiseLevelGuidance.stop_window.non_positive", "stop_window", st.integers(max_value=0))(
    lambda v: NoiseLevelGuidance(stop_window=v))
bad("NoiseLevelGuidance.stop_signal.unknown", "stop_signal", st.text(max_size=5))(lambda v: NoiseLevelGuidance(stop_signal=v))

# -- NoiseLevelGuidance.refine / __call__ on the tiny SD pipeline ---------------------------------

PROMPTS_BAD = st.one_of(st.just([]), st.integers(), st.none(), st.lists(st.integers(), min_size=1, max_size=2))


def _nlg_refine(**kw: Any) -> Any:
    return NLG2().refine(sd(), kw.pop("prompt", "a cube"), **kw)


def _nlg_call(**kw: Any) -> Any:
    return NLG2()(sd(), kw.pop("prompt", "a cube"), num_inference_steps=2, output_type="pt", **kw)


bad("refine.prompt.empty_list", "prompt", st.just([]), examples=1)(lambda v: _nlg_refine(prompt=v))
bad("refine.prompt.wrong_type", "prompt", PROMPTS_BAD.filter(lambda v: v != []), examples=5)(lambda v: _nlg_refine(prompt=v))
bad("refine.negative_prompt.length_mismatch", "negative_prompt", st.integers(0, 3).filter(lambda n: n != 2), examples=3)(
    lambda v: _nlg_refine(prompt=["a", "b"], negative_prompt=["x"] * v))
bad("refine.num_images_per_prompt.non_positive", "num_images_per_prompt", st.integers(max_value=0), examples=4)(
    lambda v: _nlg_refine(num_images_per_prompt=v))
bad("refine.num_images_per_prompt.wrong_type", "num_images_per_prompt", NOT_AN_INT, examples=5)(
    lambda v: _nlg_refine(num_images_per_prompt=v))
bad("refine.height.non_positive", "height", st.integers(max_value=0), examples=4)(lambda v: _nlg_refine(height=v))
bad("refine.height.not_a_multiple", "height", st.integers(1, 99).filter(lambda v: v % 2), examples=4)(lambda v: _nlg_refine(height=v))
bad("refine.width.wrong_type", "width", st.one_of(st.floats(), st.text(max_size=3)), examples=4)(lambda v: _nlg_refine(width=v))
bad("refine.generator.wrong_type", "generator", BAD_GENERATORS, examples=4)(lambda v: _nlg_refine(generator=v))
bad("refine.generator.list_length_mismatch", "generator", st.sampled_from([0, 2, 3]), examples=3)(
    lambda v: _nlg_refine(generator=[gen(i) for i in range(v)]))
bad("refine.latents.nan_inf", "latents", NAN_INF, examples=3)(
    lambda v: _nlg_refine(latents=latents(1, 4, 16, 16).index_fill_(3, torch.tensor([5]), v)))
bad("refine.latents.wrong_shape", "latents", st.sampled_from([(2, 4, 16, 16), (1, 4, 8, 8), (1, 3, 16, 16), (4, 16, 16)]), examples=4)(
    lambda v: _nlg_refine(latents=torch.randn(v)))
bad("refine.latents.integer_dtype", "latents", st.sampled_from([torch.int64, torch.uint8, torch.bool]), examples=3)(
    lambda v: _nlg_refine(latents=torch.ones(1, 4, 16, 16, dtype=v)))
bad("refine.latents.meta_device", "latents", st.just((1, 4, 16, 16)), examples=1)(
    lambda v: _nlg_refine(latents=torch.empty(v, device="meta")))
bad("refine.pipe.not_a_pipeline", "pipe", st.one_of(st.integers(), st.text(max_size=3), st.just(object())), examples=3)(
    lambda v: NLG2().refine(v, "a cube"))
bad("refine.kwargs.unknown", "zz_option", st.integers(), examples=2)(lambda v: _nlg_refine(zz_option=v))
bad("refine.reference_timestep.out_of_range", "reference_timestep", st.integers(1000, 10**9), examples=3)(
    lambda v: NoiseLevelGuidance(refining_steps=1, reference_timestep=v).refine(sd(), "a cube"))
bad("call.prompt.empty_list", "prompt", st.just([]), examples=1)(lambda v: _nlg_call(prompt=v))
bad("call.num_images_per_prompt.non_positive", "num_images_per_prompt", st.integers(max_value=0), examples=3)(
    lambda v: _nlg_call(num_images_per_prompt=v))
bad("call.generator.list_length_mismatch", "generator", st.sampled_from([0, 3]), examples=2)(
    lambda v: _nlg_call(prompt=["a", "b"], generator=[gen(i) for i in range(v)]))
bad("call.latents.nan_inf", "latents", NAN_INF, examples=3)(lambda v: _nlg_call(latents=torch.full((1, 4, 16, 16), v)))

# -- img2img: noise_level_for_strength, NoiseLevelImg2Img ------------------------------------------

def _nlfs(strength: Any = 0.5, steps: Any = 10, scheduler: Any = None) -> Any:
    return noise_level_for_strength(scheduler if scheduler is not None else sd().scheduler, strength, steps)


bad("noise_level_for_strength.strength.nan_inf", "strength", NAN_INF)(lambda v: _nlfs(strength=v))
bad("noise_level_for_strength.strength.out_of_range", "strength",
    st.one_of(st.floats(max_value=0.0, allow_nan=False), st.floats(min_value=1.0, exclude_min=True, allow_nan=False)))(
    lambda v: _nlfs(strength=v))
bad("noise_level_for_strength.strength.wrong_type", "strength", NOT_A_NUMBER)(lambda v: _nlfs(strength=v))
bad("noise_level_for_strength.strength.no_denoising_step", "strength", st.floats(1e-12, 0.099))(lambda v: _nlfs(strength=v))
bad("noise_level_for_strength.num_inference_steps.non_positive", "num_inference_steps", st.integers(max_value=0))(
    lambda v: _nlfs(steps=v))
bad("noise_level_for_strength.num_inference_steps.wrong_type", "num_inference_steps", NOT_AN_INT)(lambda v: _nlfs(steps=v))
bad("noise_level_for_strength.scheduler.wrong_type", "scheduler", st.one_of(st.integers(), st.text(max_size=3), st.just(object())))(
    lambda v: _nlfs(scheduler=v))


def _i2i(**kw: Any) -> Any:
    image = kw.pop("image", torch.rand(1, 3, 32, 32, generator=gen(1)))
    return NoiseLevelImg2Img(NLG2())(img2img(), kw.pop("prompt", "a cube"), image=image,
                                     **{"strength": 0.5, "num_inference_steps": 4, "output_type": "pt", **kw})


bad("NoiseLevelImg2Img.guidance.wrong_type", "guidance", st.one_of(st.integers(), st.text(max_size=3)))(lambda v: NoiseLevelImg2Img(v))
bad("NoiseLevelImg2Img.guidance.reference_timestep_set", "reference_timestep", st.integers(0, 999), examples=3)(
    lambda v: NoiseLevelImg2Img(NoiseLevelGuidance(reference_timestep=v)))
bad("img2img_call.strength.out_of_range", "strength", st.one_of(NAN_INF, st.floats(1.01, 10), st.floats(-10, 0.0)), examples=4)(
    lambda v: _i2i(strength=v))
bad("img2img_call.image.nan_inf", "image", NAN_INF, examples=3)(lambda v: _i2i(image=torch.full((1, 3, 32, 32), v)))
bad("img2img_call.generator.wrong_type", "generator", BAD_GENERATORS, examples=3)(lambda v: _i2i(generator=v))
bad("img2img_call.prompt.empty_list", "prompt", st.just([]), examples=1)(lambda v: _i2i(prompt=v))

# -- nlg.training ----------------------------------------------------------------------------------

B4 = latents(2, 4, 8, 8)


def _tb(**kw: Any) -> Any:
    scheduler = kw.pop("scheduler") if "scheduler" in kw else ddpm()
    return training_batch(kw.pop("latents", B4), scheduler, **{"generator": gen(), **kw})


bad("training_batch.latents.nan_inf", "latents", NAN_INF)(lambda v: _tb(latents=B4.clone().index_fill_(2, torch.tensor([3]), v)))
bad("training_batch.latents.integer_dtype", "latents", st.sampled_from([torch.int64, torch.uint8, torch.bool]))(
    lambda v: _tb(latents=torch.ones(2, 4, 8, 8, dtype=v)))
bad("training_batch.latents.meta_device", "latents", st.just(0), examples=1)(lambda v: _tb(latents=torch.empty(2, 4, 8, 8, device="meta")))
bad("training_batch.latents.empty", "latents", st.tuples(st.integers(0, 2), st.integers(0, 2)).filter(lambda s: 0 in s))(
    lambda v: _tb(latents=torch.zeros(v[0], 4, v[1], 8), generator=None))
bad("training_batch.latents.wrong_rank", "latents", st.integers(1, 6).filter(lambda r: r != 4))(lambda v: _tb(latents=torch.ones([2] * v)))
bad("training_batch.scheduler.wrong_type", "scheduler", st.one_of(st.integers(), st.text(min_size=1, max_size=3)))(
    lambda v: _tb(scheduler=v))
bad("training_batch.generator.wrong_type", "generator", BAD_TRAINING_GENERATORS)(lambda v: _tb(generator=v))
bad("training_batch.generator.list_length_mismatch", "generator", st.sampled_from([0, 1, 3]))(
    lambda v: _tb(generator=[gen(i) for i in range(v)]))
bad("training_batch.timesteps.out_of_range", "timesteps", st.one_of(st.integers(max_value=-1), st.integers(min_value=1000)))(
    lambda v: _tb(timesteps=torch.tensor([5, max(min(v, 2**62), -2**62)])))
bad("training_batch.timesteps.wrong_type", "timesteps", st.one_of(st.text(min_size=1, max_size=3), st.just(object())))(
    lambda v: _tb(timesteps=v))
bad("training_batch.timesteps.wrong_length", "timesteps", st.sampled_from([1, 3, 4]))(lambda v: _tb(timesteps=torch.arange(v)))
bad("training_batch.timestep_sampler.unknown", "timestep sampler", st.text(max_size=5).filter(
    lambda v: v not in ("uniform", "linear", "logit_normal", "shift", "sigmoid", "weighted")))(lambda v: _tb(timestep_sampler=v))
bad("training_batch.timestep_sampler.wrong_type", "timestep_sampler", st.one_of(st.integers(), st.none()))(
    lambda v: _tb(timestep_sampler=v))
bad("training_batch.offset_strength.nan_inf", "offset_strength", NAN_INF)(lambda v: _tb(offset_strength=v))
bad("training_batch.offset_strength.negative", "offset_strength", NEGATIVE)(lambda v: _tb(offset_strength=v))
bad("training_batch.offset_strength.overflow", "offset_strength", st.floats(1e300, 1e308))(lambda v: _tb(offset_strength=v))
bad("training_batch.pyramid_iterations.negative", "pyramid_iterations", st.integers(max_value=-1))(lambda v: _tb(pyramid_iterations=v))
bad("training_batch.pyramid_iterations.wrong_type", "pyramid_iterations", NOT_AN_INT)(lambda v: _tb(pyramid_iterations=v))
bad("training_batch.pyramid_discount.nan_inf", "pyramid_discount", NAN_INF)(lambda v: _tb(pyramid_iterations=2, pyramid_discount=v))
bad("training_batch.min_snr_gamma.nan_inf", "min_snr_gamma", NAN_INF)(lambda v: _tb(min_snr_gamma=v))
bad("training_batch.min_snr_gamma.non_positive", "min_snr_gamma", NON_POSITIVE)(lambda v: _tb(min_snr_gamma=v))
bad("training_batch.prediction_type.unknown", "prediction_type", st.text(max_size=6))(lambda v: _tb(prediction_type=v))
bad("training_batch.offset_schedule.wrong_type", "offset_schedule", st.one_of(st.text(max_size=3), st.integers()))(
    lambda v: _tb(offset_schedule=v))
bad("offset_noise.strength.nan_inf", "strength", NAN_INF)(lambda v: offset_noise(B4, strength=v))
bad("offset_noise.noise.wrong_shape", "noise", st.sampled_from([(1, 4, 8, 8), (2, 4, 8), (2, 3, 8, 8)]))(
    lambda v: offset_noise(B4, noise=torch.randn(v)))
bad("offset_noise.noise.nan_inf", "noise", NAN_INF)(lambda v: offset_noise(B4, noise=torch.full_like(B4, v)))
bad("offset_noise.noise.wrong_type", "noise", TENSORLESS.filter(lambda v: v is not None))(lambda v: offset_noise(B4, noise=v))
bad("pyramid_noise.iterations.negative", "iterations", st.integers(max_value=-1))(lambda v: pyramid_noise(B4, iterations=v))
bad("pyramid_noise.discount.overflow", "discount", st.floats(1e160, 1e308))(lambda v: pyramid_noise(B4, discount=v, iterations=3))
bad("pyramid_noise.latents.one_value_per_sample", "latents", st.integers(1, 3))(lambda v: pyramid_noise(torch.ones(v, 1, 1, 1)))
bad("pyramid_noise.latents.empty", "latents", st.sampled_from([(0, 4, 8, 8), (1, 4, 0, 8), (1, 0, 8, 8)]))(
    lambda v: pyramid_noise(torch.zeros(v)))
bad("min_snr_weights.timesteps.out_of_range", "timesteps", st.one_of(st.integers(-10**6, -1), st.integers(1000, 10**6)))(
    lambda v: min_snr_weights(torch.tensor([v]), ddpm()))
bad("min_snr_weights.timesteps.wrong_type", "timesteps", st.one_of(st.lists(st.integers(0, 9), max_size=2), st.integers()))(
    lambda v: min_snr_weights(v, ddpm()))
bad("min_snr_weights.gamma.non_positive", "gamma", NON_POSITIVE)(lambda v: min_snr_weights(torch.tensor([3]), ddpm(), gamma=v))


def _init(**kw: Any) -> Any:
    schedule = OffsetSchedule.preset("balanced", strength=0.1, alphas_cumprod=ddpm().alphas_cumprod)
    return initial_latents(kw.pop("shape", (1, 4, 8, 8)), ddpm(), schedule, **kw)


bad("initial_latents.shape.wrong_rank", "shape", st.lists(st.integers(1, 3), max_size=6).filter(lambda s: len(s) != 4))(
    lambda v: _init(shape=v))
bad("initial_latents.shape.non_positive", "shape", st.tuples(st.integers(-3, 0), st.integers(1, 3)))(
    lambda v: _init(shape=(1, 4, v[0], v[1])))
bad("initial_latents.shape.wrong_type", "shape", st.sampled_from([(1.5, 4, 8, 8), ("a", 4, 8, 8), 7, None]))(
    lambda v: _init(shape=v))
bad("initial_latents.device.unknown", "device", st.sampled_from(["fakedev", "gpu:0", "cpu:x", "tpu9"]))(lambda v: _init(device=v))
bad("initial_latents.device.meta", "device", st.just("meta"), examples=1)(lambda v: _init(device=v))
bad("initial_latents.timestep.wrong_type", "timestep", st.one_of(st.floats(allow_nan=False), st.text(max_size=2)))(
    lambda v: _init(timestep=v))
bad("initial_latents.timestep.out_of_range", "timestep", st.one_of(st.integers(max_value=-1), st.integers(min_value=1000)))(
    lambda v: _init(timestep=v))

# -- command lines ---------------------------------------------------------------------------------

def _app(argv: List[str]) -> Any:
    from nlg.app.cli import parse_args

    return exits(parse_args, argv)


def _generate(argv: List[str]) -> Any:
    module = script("generate_images")
    return exits(lambda a: module.GenerationRun(**vars(module.build_parser().parse_args(["--output_dir", "o", "--prompts_path", "p", *a]))), argv)


def _metrics(argv: List[str]) -> Any:
    module = script("calculate_metrics")
    base = ["--real_image_dir", "/nonexistent/r", "--fake_image_dir", "/nonexistent/f", "--prompts_path", "/nonexistent/p.json"]
    return exits(lambda a: module.run_cli(lambda: module.main([*base, *a])), argv)


def _digits(argv: List[str]) -> Any:
    from nlg.digits.train import main

    return exits(main, argv)


FLOAT_TEXT = st.floats(allow_nan=True, allow_infinity=True).map(repr)
NOT_INT_TEXT = st.one_of(st.sampled_from(["abc", "1.5", "", "0x1g", "nan"]), st.floats(0.1, 99).map(lambda f: f"{f:.2f}"))

bad("cli.app.port.out_of_range", "--port", st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))(
    lambda v: _app(["--port", str(v)]))
bad("cli.app.port.not_an_int", "--port", NOT_INT_TEXT)(lambda v: _app(["--port", v]))
bad("cli.app.threads.non_positive", "--threads", st.integers(max_value=0))(lambda v: _app(["--threads", str(v)]))
bad("cli.app.weights.with_model", "--weights", st.sampled_from(["shapes", "some/folder"]))(
    lambda v: _app(["--model", v, "--weights", "w"]))
bad("cli.app.flag.unknown", "--zz", st.just("--zz"), examples=1)(lambda v: _app([v, "1"]))
for _name in ("total_images", "inference_steps", "batch_size"):
    bad(f"cli.generate_images.{_name}.non_positive", f"--{_name}", st.integers(max_value=0))(
        lambda v, n=_name: _generate([f"--{n}", str(v)]))
bad("cli.generate_images.total_images.not_an_int", "--total_images", NOT_INT_TEXT)(lambda v: _generate(["--total_images", v]))
bad("cli.generate_images.refining_steps.negative", "--refining_steps", st.integers(max_value=-1))(
    lambda v: _generate(["--refining_steps", str(v)]))
bad("cli.generate_images.guidance_level.nan_inf_negative", "--guidance_level",
    st.one_of(NAN_INF, st.floats(max_value=-1e-6, allow_nan=False)).map(repr))(lambda v: _generate(["--guidance_level", v]))
bad("cli.generate_images.step_size.nan_inf", "step_size", NAN_INF.map(repr))(lambda v: _generate(["--step_size", v]))
bad("cli.generate_images.height.not_a_multiple", "--height", st.integers(max_value=200).filter(lambda v: v < 8 or v % 8))(
    lambda v: _generate(["--height", str(v)]))
bad("cli.generate_images.scheduler.unknown", "--scheduler", st.sampled_from(["dpm", "karras", "", "DDIM"]))(
    lambda v: _generate(["--scheduler", v]))
bad("cli.generate_images.noise_level.nan_inf", "noise_level", NAN_INF.map(repr))(lambda v: _generate(["--add_noise", "--noise_level", v]))
for _name in ("bottom_k", "batch_size", "is_splits"):
    bad(f"cli.calculate_metrics.{_name}.non_positive", f"--{_name}", st.integers(max_value=0))(
        lambda v, n=_name: _metrics([f"--{n}", str(v)]))
bad("cli.calculate_metrics.num_workers.negative", "--num_workers", st.integers(max_value=-1))(lambda v: _metrics(["--num_workers", str(v)]))
bad("cli.calculate_metrics.bottom_k.not_an_int", "--bottom_k", NOT_INT_TEXT)(lambda v: _metrics(["--bottom_k", v]))
bad("cli.digits_train.steps.non_positive", "--steps", st.integers(max_value=0))(lambda v: _digits(["--steps", str(v)]))
bad("cli.digits_train.batch_size.non_positive", "--batch-size", st.integers(max_value=0))(lambda v: _digits(["--batch-size", str(v)]))
bad("cli.digits_train.lr.nan_inf_non_positive", "--lr", st.one_of(NAN_INF, NON_POSITIVE).map(repr))(lambda v: _digits(["--lr", v]))
bad("cli.digits_train.threads.non_positive", "--threads", st.integers(max_value=0))(lambda v: _digits(["--threads", str(v)]))


# -- the per-class property ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REGISTRY))
def test_bad_input_class_raises_a_named_type_or_value_error(name: str) -> None:
    """Every value of the class makes the call raise TypeError/ValueError naming the argument."""
    case = REGISTRY[name]

    @settings(max_examples=case.examples, **FUZZ)
    @given(value=case.values)
    def check(value: Any) -> None:
        with pytest.raises(ERRORS) as caught:
            case.call(value)
        assert case.argument in str(caught.value), f"{name}: message does not name {case.argument!r}: {caught.value}"

    check()
    COVERED.add(name)


# -- mixed properties: valid and bad arguments drawn together -------------------------------------


def draw_arg(data: st.DataObject, name: str, good: st.SearchStrategy, bad_values: st.SearchStrategy, bad: List[str]) -> Any:
    """Draw ``name`` bad with probability 1/5 (recording it in ``bad``), else valid."""
    if data.draw(st.integers(0, 4), label=f"{name} is bad") == 0:
        bad.append(name)
        return data.draw(bad_values, label=name)
    return data.draw(good, label=name)


def expect(bad: Sequence[str], call: Callable[[], Any], check: Callable[[Any], None]) -> None:
    """No bad argument: ``call`` succeeds and ``check`` holds; else TypeError/ValueError naming a bad one."""
    if not bad:
        check(call())
        return
    with pytest.raises(ERRORS) as caught:
        call()
    assert any(name in str(caught.value) for name in bad), f"bad {list(bad)}, message: {caught.value}"


def finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


@settings(max_examples=150, **FUZZ)
@given(data=st.data())
def test_refine_noise_mixed(data: st.DataObject) -> None:
    bad: List[str] = []
    shape = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)), label="shape")
    good_latents = st.integers(0, 99).map(lambda s: latents(*shape, seed=s))
    x = draw_arg(data, "latents", good_latents, st.one_of(
        st.just(torch.full(shape, math.nan)), st.just(torch.ones(shape, dtype=torch.long)), TENSORLESS,
        st.just(torch.empty(shape, device="meta")), st.just(torch.zeros((0, *shape[1:])))), bad)
    steps = draw_arg(data, "refining_steps", st.integers(0, 3), st.one_of(st.integers(max_value=-1), NOT_AN_INT), bad)
    step_size = draw_arg(data, "step_size", st.floats(1e-3, 10.0), st.one_of(NAN_INF, NON_POSITIVE, NOT_A_NUMBER), bad)
    clip = draw_arg(data, "clip_threshold", st.one_of(st.none(), st.floats(1e-3, 10.0)), st.one_of(NAN_INF, NON_POSITIVE), bad)
    noise = draw_arg(data, "noise_level", st.floats(0.0, 0.1), st.one_of(NAN_INF, NEGATIVE, NOT_A_NUMBER), bad)
    batch = shape[0]
    generator = draw_arg(
        data, "generator",
        st.sampled_from(["none", "one", "list"]).map(lambda k: None if k == "none" else gen() if k == "one" else [gen(i) for i in range(batch)]),
        st.one_of(BAD_GENERATORS, st.just([gen()] * (batch + 1))), bad)
    boundary = data.draw(st.booleans(), label="boundary_control")
    normalize = data.draw(st.booleans(), label="normalize_latents")

    def call() -> Any:
        return refine_noise(x, direction, refining_steps=steps, step_size=step_size, clip_threshold=clip, noise_level=noise,
                            generator=generator, boundary_control=boundary, normalize_latents=normalize)

    def check(out: Any) -> None:
        assert out.latents.shape == x.shape and out.latents.dtype == x.dtype and finite(out.latents)
        assert out.step_norms.shape == (steps, batch) and finite(out.step_norms)
        assert out.evaluations.tolist() == [steps] * batch
        if normalize and steps:
            assert torch.allclose(out.latents.flatten(1).norm(dim=1), torch.full((batch,), math.sqrt(x[0].numel())), rtol=1e-4)

    expect(bad, call, check)


@settings(max_examples=100, **FUZZ)
@given(data=st.data())
def test_training_batch_mixed(data: st.DataObject) -> None:
    bad: List[str] = []
    shape = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 8), st.integers(2, 8)), label="shape")
    x = draw_arg(data, "latents", st.integers(0, 99).map(lambda s: latents(*shape, seed=s)), st.one_of(
        st.just(torch.full(shape, math.inf)), st.just(torch.ones(shape, dtype=torch.int32)), st.just(torch.ones(shape[1:])),
        st.just(torch.empty(shape, device="meta"))), bad)
    batch = shape[0]
    generator = draw_arg(data, "generator", st.sampled_from([None, "list"]).map(lambda k: k and [gen(i) for i in range(batch)]),
                         st.one_of(BAD_TRAINING_GENERATORS, st.just([gen()] * (batch + 2))), bad)
    offset = draw_arg(data, "offset_strength", st.floats(0.0, 1.0), st.one_of(NAN_INF, NEGATIVE), bad)
    pyramid = draw_arg(data, "pyramid_iterations", st.integers(0, 3), st.one_of(st.integers(max_value=-1), NOT_AN_INT), bad)
    discount = draw_arg(data, "pyramid_discount", st.floats(0.0, 1.0), NAN_INF, bad)
    gamma = draw_arg(data, "min_snr_gamma", st.one_of(st.none(), st.floats(0.1, 20.0)), st.one_of(NAN_INF, NON_POSITIVE), bad)
    prediction = draw_arg(data, "prediction_type", st.sampled_from([None, "epsilon", "v_prediction", "sample"]),
                          st.sampled_from(["eps", "v", "x0", ""]), bad)
    timesteps = draw_arg(data, "timesteps", st.one_of(st.none(), st.lists(st.integers(0, 999), min_size=batch, max_size=batch)),
                         st.one_of(st.lists(st.integers(1000, 5000), min_size=batch, max_size=batch), st.just([-1] * batch),
                                   st.just("t")), bad)

    def call() -> Any:
        return training_batch(x, ddpm(), generator=generator, timesteps=timesteps, offset_strength=offset,
                              pyramid_iterations=pyramid, pyramid_discount=discount, min_snr_gamma=gamma,
                              prediction_type=prediction)

    def check(out: Any) -> None:
        assert out.noisy_latents.shape == x.shape and out.target.shape == x.shape
        assert out.timesteps.shape == (batch,) and out.loss_weights.shape == (batch,)
        assert all(finite(t) for t in (out.noisy_latents, out.target, out.loss_weights))
        if timesteps is not None:
            assert out.timesteps.tolist() == list(timesteps)

    expect(bad, call, check)


@settings(max_examples=60, **FUZZ)
@given(data=st.data())
def test_noise_level_for_strength_mixed(data: st.DataObject) -> None:
    bad: List[str] = []
    steps = draw_arg(data, "num_inference_steps", st.integers(1, 60), st.one_of(st.integers(max_value=0), NOT_AN_INT), bad)
    strength = draw_arg(data, "strength", st.floats(0.0, 1.0, exclude_min=True), st.one_of(NAN_INF, st.floats(1.0001, 5.0), NOT_A_NUMBER), bad)
    name = data.draw(st.sampled_from(["ddim", "euler", "dpm++", "pndm"]), label="scheduler")
    def check(level: Any) -> None:
        assert level.strength == strength and 0 <= level.denoising_steps <= steps
        assert math.isfinite(level.signal_scale) and math.isfinite(level.noise_scale) and level.noise_scale > 0

    call = lambda: noise_level_for_strength(make_scheduler(name), strength, steps)  # noqa: E731
    if not bad and int(steps * strength) == 0:
        # No regular step left: a ValueError naming strength, unless the scheduler keeps a timestep there
        # (PNDM's PLMS warm-up repeats one), where diffusers' img2img still runs and so does this.
        try:
            check(call())
        except ValueError as error:
            assert "strength" in str(error)
        return
    expect(bad, call, check)


@settings(max_examples=30, **FUZZ)
@given(data=st.data())
def test_guidance_refine_and_call_on_tiny_pipeline_mixed(data: st.DataObject) -> None:
    bad: List[str] = []
    prompt = draw_arg(data, "prompt", st.sampled_from(["a cube", "", ["a", "b"]]), PROMPTS_BAD, bad)
    per_prompt = draw_arg(data, "num_images_per_prompt", st.integers(1, 2), st.one_of(st.integers(max_value=0), NOT_AN_INT), bad)
    height = draw_arg(data, "height", st.sampled_from([None, 16, 24]), st.one_of(st.integers(max_value=0), st.sampled_from([7, 17, 16.0])), bad)
    batch = (len(prompt) if isinstance(prompt, list) and prompt else 1) * (per_prompt if isinstance(per_prompt, int) and per_prompt > 0 else 1)
    generator = draw_arg(data, "generator", st.sampled_from([None, "one", "list"]).map(
        lambda k: None if k is None else gen() if k == "one" else [gen(i) for i in range(batch)]),
        st.one_of(BAD_GENERATORS, st.just([gen()] * (batch + 1))), bad)
    size = height or 32
    latents_in = draw_arg(data, "latents", st.sampled_from([None, "given"]).map(
        lambda k: k and latents(batch, 4, size // 2, 32 // 2, seed=3)),
        st.sampled_from(["nan", "int", "shape"]).map(lambda k: {
            "nan": torch.full((batch, 4, size // 2, 16), math.nan), "int": torch.ones(batch, 4, size // 2, 16, dtype=torch.long),
            "shape": torch.randn(batch + 1, 4, 4, 4)}[k]), bad)
    run_pipeline = data.draw(st.booleans(), label="__call__")
    nlg = NoiseLevelGuidance(refining_steps=data.draw(st.integers(0, 2), label="K"))
    kwargs = dict(num_images_per_prompt=per_prompt, height=height, width=32 if latents_in is not None else None,
                  generator=generator, latents=latents_in)

    if run_pipeline:
        def call() -> Any:
            return nlg(sd(), prompt, num_inference_steps=2, output_type="pt", **kwargs).images

        def check(images: Any) -> None:
            assert images.shape == (batch, 3, size, 32) and finite(images)
    else:
        def call() -> Any:
            return nlg.refine(sd(), prompt, **kwargs)

        def check(out: Any) -> None:
            assert out.latents.shape == (batch, 4, size // 2, 16) and finite(out.latents)
            assert out.step_norms.shape == (nlg.refining_steps, batch) and finite(out.step_norms)

    expect(bad, call, check)


@settings(max_examples=15, **FUZZ)
@given(data=st.data())
def test_img2img_mixed(data: st.DataObject) -> None:
    bad: List[str] = []
    strength = draw_arg(data, "strength", st.sampled_from([0.25, 0.5, 1.0]), st.one_of(NAN_INF, st.floats(1.01, 3.0), st.just(0.0)), bad)
    image = draw_arg(data, "image", st.integers(0, 9).map(lambda s: torch.rand(1, 3, 32, 32, generator=gen(s))),
                     NAN_INF.map(lambda v: torch.full((1, 3, 32, 32), v)), bad)
    generator = draw_arg(data, "generator", st.sampled_from([None, "one"]).map(lambda k: k and gen()), BAD_GENERATORS, bad)
    prompt = draw_arg(data, "prompt", st.sampled_from(["a cube", ""]), PROMPTS_BAD, bad)

    def check(images: Any) -> None:
        assert images.shape == (1, 3, 32, 32) and finite(images)

    expect(bad, lambda: NoiseLevelImg2Img(NLG2())(img2img(), prompt, image=image, strength=strength, num_inference_steps=4,
                                                   generator=generator, output_type="pt").images, check)


@settings(max_examples=60, **FUZZ)
@given(data=st.data())
def test_app_command_line_mixed(data: st.DataObject) -> None:
    bad: List[str] = []
    port = draw_arg(data, "--port", st.integers(1, 65535).map(str), st.one_of(st.integers(max_value=0).map(str), NOT_INT_TEXT), bad)
    threads = draw_arg(data, "--threads", st.one_of(st.none(), st.integers(1, 64).map(str)), st.integers(-5, 0).map(str), bad)
    host = data.draw(st.sampled_from(["127.0.0.1", "localhost"]), label="host")
    argv = ["--port", port, "--host", host] + ([] if threads is None else ["--threads", threads])

    def check(args: Any) -> None:
        assert (args.port, args.host, args.threads) == (int(port), host, None if threads is None else int(threads))

    expect(bad, lambda: _app(argv), check)


def test_fuzz_registry_covers_at_least_40_bad_input_classes() -> None:
    """The suite's figure (docs/guides/reliability.md): how many named bad-input classes are fuzzed."""
    apis = {name.split(".")[0] if not name.startswith("cli.") else ".".join(name.split(".")[:2]) for name in REGISTRY}
    print(f"\nfuzz: {len(REGISTRY)} bad-input classes over {len(apis)} entry points")
    assert len(REGISTRY) >= 40
