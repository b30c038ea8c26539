"""Sampling the shapes pipeline with and without NLG on paired seeds, and scoring it with the mini-GenEval.

Each image gets its own ``torch.Generator`` seeded from ``(seed, prompt index, image index)``, so an
image's noise never depends on the batch it was generated in, the process that made it or a resumption
(batched float arithmetic can still move a pixel by one grey level between batch sizes), and
plain sampling and NLG start from the same initial noise.  The evaluation has two disjoint seed splits
(:data:`SPLIT_SEEDS`): ``dev`` for choosing CFG, K and η, ``test`` for the reported numbers.

NLG goes through the public path only: ``NoiseLevelGuidance(...)(pipe, prompts, ...)``.  The controls
refine the noise with another *direction* prompt than the one sampled (:func:`sample_with_direction`):
the empty prompt on both sides (only the refinement noise and renormalisation act) or another prompt of
the set (:func:`shuffled_prompts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import NoiseLevelGuidance
from ..core.options import RefineOptions
from ..utils.deprecation import deprecated_function
from .scorer import score_image

__all__ = [
    "DIRECTIONS",
    "SPLIT_SEEDS",
    "SamplingConfig",
    "prompt_image_seed",
    "split_seed",
    "shuffled_prompts",
    "sample_with_direction",
    "generate",
    "score_batch",
]

#: The sources of NLG's direction, in order the sampled prompt (NLG itself), the empty prompt on both sides, and
#: another prompt of the set (:func:`shuffled_prompts`).
DIRECTIONS = ("prompt", "empty", "shuffled")
#: Seed bases of the evaluation splits; seed 0 chose the earlier default scale and is in neither.
SPLIT_SEEDS = {"dev": 1, "test": 2}


@dataclass(frozen=True)
class SamplingConfig:
    """One sampling setting: CFG scale, NLG steps K and step size η (K = 0: plain sampling), and NLG's direction.

    Args:
        guidance_scale (`float`): classifier-free guidance scale (1 = none).
        refining_steps (`int`, defaults to 0): NLG steps K (:class:`~nlg.core.options.RefineOptions`).
        step_size (`float`, defaults to 1.0): NLG step size η.
        direction (`str`, defaults to ``"prompt"``): one of :data:`DIRECTIONS`; the controls use ``"empty"``
            and ``"shuffled"`` (only with ``refining_steps > 0``).
    """

    guidance_scale: float
    refining_steps: int = 0
    step_size: float = 1.0
    direction: str = "prompt"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.direction != "prompt" and not self.refining_steps:
            raise ValueError(f"direction={self.direction!r} needs refining_steps > 0 (it changes NLG's direction)")
        self.refine_options  # noqa: B018  (validates the NLG fields)

    @classmethod
    def for_budget(cls, evaluations: int, guidance_scale: float = 1.0, direction: str = "prompt") -> "SamplingConfig":
        """NLG with :meth:`nlg.NoiseLevelGuidance.for_budget` (``K = evaluations`` steps, K·η = 20) at a CFG scale.

        Args:
            evaluations (`int`): the number of NLG steps K.
            guidance_scale (`float`, defaults to 1.0): classifier-free guidance scale (1 = none).
            direction (`str`, defaults to ``"prompt"``): one of :data:`DIRECTIONS`.
        """
        from .. import NoiseLevelGuidance

        nlg = NoiseLevelGuidance.for_budget(evaluations)
        return cls(guidance_scale, nlg.refining_steps, nlg.step_size, direction)

    @property
    def refine_options(self) -> RefineOptions:
        """The NLG settings as :class:`~nlg.core.options.RefineOptions`."""
        return RefineOptions(refining_steps=self.refining_steps, step_size=self.step_size)

    @property
    def name(self) -> str:
        base = f"CFG {self.guidance_scale:g}"
        if self.refining_steps == 0:
            return base
        suffix = "" if self.direction == "prompt" else f" ({self.direction} direction)"
        return f"{base} + NLG K={self.refining_steps} η={self.step_size:g}{suffix}"

    def unet_evals_per_image(self, num_inference_steps: int) -> int:
        """Single-image UNet evaluations: 2K for NLG, plus 1 (CFG 1) or 2 (CFG > 1) per sampler step.

        NLG evaluates ``[n, n]`` with (negative, positive) prompts in one batched call per step
        (:meth:`nlg.adapters.stable_diffusion.DiffusersAdapter.direction_fn`), also for the controls;
        the pipeline doubles its batch when ``guidance_scale > 1``.
        """
        per_step = 2 if self.guidance_scale > 1 else 1
        return 2 * self.refining_steps + per_step * num_inference_steps


def prompt_image_seed(seed: int, prompt_index: int, image_index: int) -> int:
    """The seed of image ``image_index`` of prompt ``prompt_index``: ``seed·10⁷ + prompt_index·10³ + image_index``,
    distinct for every (seed, prompt, image) below 10⁴ prompts and 10³ images each.

    Not :func:`nlg.eval.process.image_seed`, which seeds one caption of a COCO generation run.

    Args:
        seed (`int`): the run's seed.
        prompt_index (`int`): the prompt's position, in [0, 10⁴).
        image_index (`int`): the image's position among the prompt's images, in [0, 10³).
    """
    if not 0 <= prompt_index < 10_000 or not 0 <= image_index < 1_000:
        raise ValueError(f"prompt_index must lie in [0, 10000) and image_index in [0, 1000), got {prompt_index}, {image_index}")
    return seed * 10_000_000 + prompt_index * 1_000 + image_index


def split_seed(split: str, prompt_index: int, image_index: int) -> int:
    """:func:`prompt_image_seed` of one image of an evaluation split (:data:`SPLIT_SEEDS`): dev and test never share one."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    return prompt_image_seed(SPLIT_SEEDS[split], prompt_index, image_index)


#: Deprecated (one release): the old name of :func:`prompt_image_seed`, which clashed with :func:`nlg.eval.process.image_seed`.
image_seed = deprecated_function(prompt_image_seed, "nlg.shapes.sampling.image_seed", "nlg.shapes.sampling.prompt_image_seed")


def shuffled_prompts(prompts: Sequence[str], generator: torch.Generator) -> List[str]:
    """``prompts`` permuted so that no prompt keeps its own text: a seeded derangement of the texts.

    A uniform permutation (``torch.randperm``) is repaired by swaps with random partners until every
    position holds a different text from its own; the result is still a permutation, so every prompt of
    the set serves as a direction exactly once.

    Args:
        prompts (`Sequence[str]`): the prompt texts (repeats allowed, none may fill half the set or more).
        generator (`torch.Generator`): drives the permutation and the swaps.
    """
    texts = list(prompts)
    n = len(texts)
    most = max((texts.count(t) for t in set(texts)), default=0)
    if n and 2 * most > n:
        raise ValueError(f"prompts: one text fills {most} of {n} places; no derangement of the texts exists")
    order = torch.randperm(n, generator=generator).tolist()
    for i in range(n):
        for _ in range(100 * n):
            if texts[order[i]] != texts[i]:
                break
            j = int(torch.randint(0, n, (1,), generator=generator))
            if texts[order[j]] != texts[i] and texts[order[i]] != texts[j]:
                order[i], order[j] = order[j], order[i]
        else:  # pragma: no cover - needs a pathological text distribution
            raise ValueError("prompts: could not derange the texts")
    return [texts[k] for k in order]


def sample_with_direction(nlg: NoiseLevelGuidance, pipe: Any, prompt: Any, *, direction_prompt: Any,
                          direction_negative_prompt: Any = None, **pipeline_kwargs: Any) -> Any:
    """NLG whose direction comes from ``direction_prompt`` while the pipeline samples ``prompt``.

    Refines the initial noise with :meth:`nlg.NoiseLevelGuidance.refine` on ``direction_prompt`` (and
    ``direction_negative_prompt``, default empty), then calls the unmodified ``pipe(prompt,
    latents=refined, **pipeline_kwargs)``.  With ``direction_prompt = prompt`` this is
    ``nlg(pipe, prompt, **pipeline_kwargs)``; with ``direction_prompt = ""`` the direction
    ε(n|"") − ε(n|"") is zero and only the refinement noise and renormalisation act.

    Args:
        nlg (`NoiseLevelGuidance`): the refinement settings.
        pipe (`StableDiffusionPipeline`): the pipeline.
        prompt (`str` or `List[str]`): what the pipeline samples.
        direction_prompt (`str` or `List[str]`): what the refinement's direction is conditioned on, one per prompt.
        direction_negative_prompt (*optional*): the refinement's null condition (default: the empty prompt).
        **pipeline_kwargs: the pipeline's keyword arguments; ``generator``, ``height``, ``width``,
            ``num_images_per_prompt`` and ``latents`` also shape the refinement, as in ``nlg(pipe, ...)``.
    """
    if not isinstance(nlg, NoiseLevelGuidance):
        raise TypeError(f"nlg must be a NoiseLevelGuidance, got {type(nlg).__name__}")
    count = lambda p: 1 if isinstance(p, str) else len(p) if isinstance(p, list) else -1  # noqa: E731
    if count(prompt) < 1 or count(direction_prompt) != count(prompt):
        raise ValueError(f"direction_prompt must match prompt (a str or a list of the same length), got "
                         f"{count(direction_prompt)} direction prompt(s) for {count(prompt)} prompt(s)")
    refine_args = {k: pipeline_kwargs[k] for k in ("generator", "height", "width", "num_images_per_prompt") if k in pipeline_kwargs}
    if "latents" in pipeline_kwargs:
        refine_args["latents"] = pipeline_kwargs.pop("latents")
    refinement = nlg.refine(pipe, direction_prompt, negative_prompt=direction_negative_prompt, **refine_args)
    with torch.inference_mode():
        return pipe(prompt, latents=refinement.latents, **pipeline_kwargs)


def generate(
    pipe: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    config: SamplingConfig,
    *,
    num_inference_steps: int,
    batch_size: int = 32,
    direction_prompts: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Images for ``prompts[i]`` from ``torch.Generator().manual_seed(seeds[i])``, as uint8 ``(N, 32, 32, 3)``.

    Args:
        pipe (`StableDiffusionPipeline`): e.g. :func:`nlg.shapes.load_pipeline`.
        prompts (`Sequence[str]`): one prompt per image.
        seeds (`Sequence[int]`): one seed per image.
        config (`SamplingConfig`): CFG scale and NLG settings.
        num_inference_steps (`int`): DDIM steps.
        batch_size (`int`, defaults to 32): images per pipeline call (does not change the seeds; pixels agree
            across batch sizes to within one grey level).
        direction_prompts (`Sequence[str]`, *optional*): one direction prompt per image, required by (and
            only by) ``config.direction == "shuffled"``, e.g. from :func:`shuffled_prompts`.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"prompts and seeds must have the same length, got {len(prompts)} and {len(seeds)}")
    if (direction_prompts is not None) != (config.direction == "shuffled"):
        raise ValueError("direction_prompts must be given exactly when config.direction == 'shuffled'")
    if direction_prompts is not None and len(direction_prompts) != len(prompts):
        raise ValueError(f"direction_prompts must hold one prompt per image, got {len(direction_prompts)} for {len(prompts)}")
    out: List[np.ndarray] = []
    nlg = NoiseLevelGuidance.from_options(config.refine_options) if config.refining_steps else None
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[start : start + batch_size]]
        kwargs: Dict[str, Any] = dict(
            num_inference_steps=num_inference_steps, guidance_scale=config.guidance_scale,
            generator=generators, output_type="np",
        )
        if config.direction == "prompt":
            with torch.inference_mode():
                result = nlg(pipe, chunk, **kwargs) if nlg is not None else pipe(chunk, **kwargs)
        else:
            direction = [""] * len(chunk) if direction_prompts is None else list(direction_prompts[start : start + batch_size])
            result = sample_with_direction(nlg, pipe, chunk, direction_prompt=direction, **kwargs)
        out.append(np.clip(np.round(result.images * 255.0), 0, 255).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, 32, 32, 3), dtype=np.uint8)


def score_batch(images: np.ndarray, metadata: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """:func:`nlg.shapes.scorer.score_image` for each image with its prompt's metadata."""
    if len(images) != len(metadata):
        raise ValueError(f"got {len(images)} images for {len(metadata)} prompts")
    return [score_image(image, meta) for image, meta in zip(images, metadata)]
