"""One configuration of the digits experiment: sample 100 per digit with fixed seeds, optionally with NLG, and score.

The demo (:mod:`nlg.digits.demo`) and the frontier benchmark (``benchmarks/digits_frontier.py``) are
thin loops over :func:`run_config`.  Sample ``i`` always uses the generator
``per_sample_generators(seed, N)[i]`` and digit ``i // samples_per_class``, so every configuration
sees the same initial noise for the same sample, whatever the chunk size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.options import RefineOptions
from ..guidance import NoiseLevelGuidance
from .data import NUM_CLASSES
from .evaluator import DigitsEvaluator, DigitsMetrics
from .labels import per_sample_generators
from .pipeline import DEFAULT_INFERENCE_STEPS, DigitsPipeline

__all__ = ["DigitsConfig", "ConfigResult", "requested_labels", "unet_evals_per_image", "sample_digits", "run_config"]


@dataclass(frozen=True)
class DigitsConfig:
    """A sampling configuration.

    Args:
        guidance_scale (`float`, defaults to 0.0): CFG scale during sampling.
        refining_steps (`int`, defaults to 0): NLG steps K; 0 = plain CFG.
        step_size (`float`, defaults to 1.0): NLG step size η.
        clip_threshold (`float`, *optional*, defaults to 0.5): NLG norm bound τ; None = no clipping.
        noise_level (`float`, defaults to 0.001): NLG noise variance λ.

    The NLG fields are those of :class:`~nlg.core.options.RefineOptions` (same names, defaults and
    checks, validated on construction); :attr:`refine_options` builds it.
    """

    guidance_scale: float = 0.0
    refining_steps: int = 0
    step_size: float = 1.0
    clip_threshold: Optional[float] = 0.5
    noise_level: float = 0.001

    def __post_init__(self) -> None:
        self.refine_options  # noqa: B018  (validates the NLG fields)

    @property
    def refine_options(self) -> RefineOptions:
        """The NLG settings as :class:`~nlg.core.options.RefineOptions` (the paper's for every other field)."""
        return RefineOptions(refining_steps=self.refining_steps, step_size=self.step_size,
                             clip_threshold=self.clip_threshold, noise_level=self.noise_level)

    @property
    def name(self) -> str:
        base = f"CFG {self.guidance_scale:g}"
        if self.refining_steps == 0:
            return base
        clip = "none" if self.clip_threshold is None else f"{self.clip_threshold:g}"
        return f"{base} + NLG K={self.refining_steps} η={self.step_size:g} τ={clip}"

    def guidance(self) -> Optional[NoiseLevelGuidance]:
        if self.refining_steps == 0:
            return None
        return NoiseLevelGuidance.from_options(self.refine_options)


@dataclass
class ConfigResult:
    """Metrics and cost of one configuration.

    Args:
        config (`DigitsConfig`): what was run.
        metrics (`DigitsMetrics`): the evaluator's numbers.
        seconds (`float`): wall time of sampling (including refinement), excluding evaluation.
        unet_evals_per_image (`int`): UNet evaluations per image, the machine-independent cost
            (see :func:`unet_evals_per_image`).
        images (`torch.Tensor`): the samples, ``(N, 1, 8, 8)``, in sample order.
    """

    config: DigitsConfig
    metrics: DigitsMetrics
    seconds: float
    unet_evals_per_image: int
    images: Tensor = field(repr=False)

    def as_row(self) -> Dict[str, Any]:
        row: Dict[str, Any] = {"config": self.config.name}
        row.update({k: ("none" if v is None else v) for k, v in vars(self.config).items()})
        row.update(self.metrics.as_dict())
        row["seconds"] = self.seconds
        row["unet_evals_per_image"] = self.unet_evals_per_image
        return row


def unet_evals_per_image(config: DigitsConfig, num_inference_steps: int) -> int:
    """``2K + S·m``: each NLG step evaluates ε(n|c) and ε(n|∅); each of the ``S`` sampler steps needs
    ``m = 1`` evaluation at CFG scale 0 or 1 (only one branch matters) and ``m = 2`` otherwise."""
    per_step = 1 if config.guidance_scale in (0.0, 1.0) else 2
    return 2 * config.refining_steps + num_inference_steps * per_step


def requested_labels(samples_per_class: int) -> Tensor:
    """``[0]*n + [1]*n + … + [9]*n``: sample ``i`` asks for digit ``i // n``."""
    if isinstance(samples_per_class, bool) or not isinstance(samples_per_class, int) or samples_per_class < 1:
        raise ValueError(f"samples_per_class must be an int >= 1, got {samples_per_class!r}")
    return torch.arange(NUM_CLASSES).repeat_interleave(samples_per_class)


def sample_digits(
    pipe: DigitsPipeline,
    labels: Tensor,
    config: DigitsConfig,
    *,
    seed: int = 0,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    chunk_size: int = 250,
    progress: bool = True,
) -> Tensor:
    """Generate one image per label in chunks, with per-sample generators seeded from ``(seed, index)``.

    Args:
        pipe (`DigitsPipeline`): the sampler.
        labels (`torch.LongTensor`): requested digits, one per image.
        config (`DigitsConfig`): CFG scale and NLG options.
        seed (`int`, defaults to 0): seed of the per-sample generators.
        num_inference_steps (`int`, defaults to 25): sampler steps.
        chunk_size (`int`, defaults to 250): images per batch; does not change the images.
        progress (`bool`, defaults to True): a tqdm bar over images.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    guidance = config.guidance()
    images = []
    with tqdm(total=len(labels), desc=config.name, unit="img", disable=not progress) as bar:
        for start in range(0, len(labels), chunk_size):
            chunk = labels[start : start + chunk_size]
            generators = per_sample_generators(seed, len(chunk), start=start)
            kwargs = dict(guidance_scale=config.guidance_scale, num_inference_steps=num_inference_steps, generator=generators, progress=False)
            out = pipe(chunk, **kwargs) if guidance is None else guidance(pipe, chunk, **kwargs)
            images.append(out.images)
            bar.update(len(chunk))
    return torch.cat(images)


def run_config(pipe: DigitsPipeline, evaluator: DigitsEvaluator, config: DigitsConfig, *, samples_per_class: int = 100,
               num_inference_steps: int = DEFAULT_INFERENCE_STEPS, **sampling: Any) -> ConfigResult:
    """Sample ``samples_per_class`` images of every digit under ``config`` and score them.

    Args:
        pipe (`DigitsPipeline`): the sampler.
        evaluator (`DigitsEvaluator`): the scorer.
        config (`DigitsConfig`): CFG scale and NLG options.
        samples_per_class (`int`, defaults to 100): images per digit (≥ 2).
        num_inference_steps (`int`, defaults to 25): sampler steps, as in :func:`sample_digits`.
        **sampling: ``seed`` (defaults to 0), ``chunk_size`` (defaults to 250) and ``progress`` (defaults to
            True), passed to :func:`sample_digits`; any other keyword is refused.
    """
    labels = requested_labels(samples_per_class)
    start = time.perf_counter()
    images = sample_digits(pipe, labels, config, num_inference_steps=num_inference_steps, **sampling)
    seconds = time.perf_counter() - start
    return ConfigResult(
        config=config,
        metrics=evaluator.evaluate(images, labels),
        seconds=seconds,
        unet_evals_per_image=unet_evals_per_image(config, num_inference_steps),
        images=images,
    )
