"""Sampling the shapes pipeline with and without NLG on paired seeds, and scoring it with the mini-GenEval.

Each image gets its own ``torch.Generator`` seeded from ``(seed, prompt index, image index)``, so an
image never depends on the batch it was generated in, and plain sampling and NLG start from the same
initial noise.  NLG goes through the public path only: ``NoiseLevelGuidance(...)(pipe, prompts, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from .. import NoiseLevelGuidance
from .geneval import score_image

__all__ = ["SamplingConfig", "image_seed", "generate", "score_batch"]


@dataclass(frozen=True)
class SamplingConfig:
    """One sampling setting: CFG scale, and NLG steps K and step size η (K = 0: plain sampling)."""

    guidance_scale: float
    refining_steps: int = 0
    step_size: float = 1.0

    @property
    def name(self) -> str:
        base = f"CFG {self.guidance_scale:g}"
        if self.refining_steps == 0:
            return base
        return f"{base} + NLG K={self.refining_steps} η={self.step_size:g}"

    def unet_evals_per_image(self, num_inference_steps: int) -> int:
        """Single-image UNet evaluations: 2 per NLG step, 1 or 2 (CFG) per sampler step."""
        per_step = 2 if self.guidance_scale > 1 else 1
        return 2 * self.refining_steps + per_step * num_inference_steps


def image_seed(seed: int, prompt_index: int, image_index: int) -> int:
    """The seed of one image: distinct for every (seed, prompt, image) below 10⁴ prompts and 10³ images each."""
    return seed * 10_000_000 + prompt_index * 1_000 + image_index


def generate(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    config: SamplingConfig,
    *,
    num_inference_steps: int,
    batch_size: int = 32,
) -> np.ndarray:
    """Images for ``prompts[i]`` from ``torch.Generator().manual_seed(seeds[i])``, as uint8 ``(N, 32, 32, 3)``.

    Args:
        pipe (`StableDiffusionPipeline`): e.g. :func:`nlg.shapes.load_pipeline`.
        prompts (`Sequence[str]`): one prompt per image.
        seeds (`Sequence[int]`): one seed per image.
        config (`SamplingConfig`): CFG scale and NLG settings.
        num_inference_steps (`int`): DDIM steps.
        batch_size (`int`, defaults to 32): images per pipeline call (does not change the images).
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"prompts and seeds must have the same length, got {len(prompts)} and {len(seeds)}")
    out: List[np.ndarray] = []
    nlg = NoiseLevelGuidance(refining_steps=config.refining_steps, step_size=config.step_size) if config.refining_steps else None
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start : start + batch_size]]
        kwargs: Dict[str, Any] = dict(
            num_inference_steps=num_inference_steps, guidance_scale=config.guidance_scale,
            generator=generators, output_type="np",
        )
        with torch.inference_mode():
            result = nlg(pipe, chunk, **kwargs) if nlg is not None else pipe(chunk, **kwargs)
        out.append(np.clip(np.round(result.images * 255.0), 0, 255).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, 32, 32, 3), dtype=np.uint8)


def score_batch(images: np.ndarray, metadata: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """:func:`nlg.shapes.geneval.score_image` for each image with its prompt's metadata."""
    if len(images) != len(metadata):
        raise ValueError(f"got {len(images)} images for {len(metadata)} prompts")
    return [score_image(image, meta) for image, meta in zip(images, metadata)]
