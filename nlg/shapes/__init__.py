"""``nlg.shapes``: a tiny text-to-image latent diffusion model of coloured shapes, trained and shipped by nlg.

The model is a Stable Diffusion pipeline in miniature — a ``CLIPTokenizer``, a 2-layer ``CLIPTextModel``,
an ``AutoencoderKL`` (32×32 pixels ↔ 16×16×4 latents), a ``UNet2DConditionModel`` with cross-attention and
SD's noise schedule — all trained here on procedural scenes (:mod:`nlg.shapes.data`) by
``python -m nlg.shapes.train``.  :func:`load_pipeline` returns an unmodified diffusers
``StableDiffusionPipeline``; Noise Level Guidance reaches it through the public path only::

    import torch
    from nlg import NoiseLevelGuidance
    from nlg.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, load_pipeline

    pipe = load_pipeline()
    generator = [torch.Generator().manual_seed(i) for i in range(4)]
    plain = pipe(["a photo of a red circle"] * 4, num_inference_steps=DEFAULT_INFERENCE_STEPS,
                 guidance_scale=DEFAULT_GUIDANCE_SCALE, generator=generator).images
    generator = [torch.Generator().manual_seed(i) for i in range(4)]
    nlg = NoiseLevelGuidance()(pipe, ["a photo of a red circle"] * 4, num_inference_steps=DEFAULT_INFERENCE_STEPS,
                               guidance_scale=DEFAULT_GUIDANCE_SCALE, generator=generator).images

**Default settings.** The shipped scheduler is ``DDIMScheduler`` (η = 0, trailing spacing, so sampling starts at
t = 999); use ``num_inference_steps=DEFAULT_INFERENCE_STEPS`` (20) and ``guidance_scale=DEFAULT_GUIDANCE_SCALE``
(2, chosen on development seeds) at the default size 32×32.  diffusers' own call defaults (50 steps, scale 7.5) also work but are slower.

**Prompts.** The model was trained on the caption templates of :mod:`nlg.shapes.data` (see
:data:`nlg.shapes.tokenizer.WORDS` for the vocabulary).  Any text is accepted by the pipeline and by
NLG — the tokenizer falls back to sub-word and byte tokens for unknown words — but such prompts are
outside the training distribution, so the image follows only the words the model knows.  The empty
prompt ``""`` samples the unconditional model (what caption dropout trained); with NLG its direction
ε(n|"") − ε(n|"") is zero, so only the refinement noise and renormalisation act.
:func:`check_prompt` raises a ``ValueError`` naming the unknown words, for callers who want to refuse
such prompts instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, List, Optional, Union

from .data import COLOURS, PALETTE, SHAPES, TASKS, Scene, ShapeObject, render, scene_from_seed
from .tokenizer import WORDS

__all__ = [
    "load_pipeline",
    "check_prompt",
    "unknown_words",
    "DEFAULT_PIPELINE",
    "DEFAULT_INFERENCE_STEPS",
    "DEFAULT_GUIDANCE_SCALE",
    "PALETTE",
    "COLOURS",
    "SHAPES",
    "TASKS",
    "Scene",
    "ShapeObject",
    "render",
    "scene_from_seed",
]

#: The shipped pipeline folder.
DEFAULT_PIPELINE = Path(__file__).resolve().parent / "weights" / "shapes_ldm"
#: DDIM steps users should use.
DEFAULT_INFERENCE_STEPS = 20
#: The classifier-free guidance scale users should use, 2.  Chosen on the protocol's development seeds
#: (``benchmarks/results/shapes_protocol_dev.md``: 553 prompts × 1 dev seed, DDIM 20): GenEval overall 69.9% at
#: CFG 1, 81.8% at 2 and 78.5% at 3; stronger guidance loses single objects and counts.
DEFAULT_GUIDANCE_SCALE = 2.0

_WORD = re.compile(r"[^\W\d_]+|\d|[^\s\w]+", re.UNICODE)


def unknown_words(prompt: str) -> List[str]:
    """Words of ``prompt`` (lower-cased) that the model never saw in training, in order of appearance."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    known = set(WORDS)
    return [w for w in _WORD.findall(prompt.lower()) if w not in known]


def check_prompt(prompt: Union[str, List[str]]) -> None:
    """Raise ``ValueError`` if a prompt has words outside the training vocabulary.

    The empty prompt is valid (it is the unconditional prompt).  The pipeline itself never raises on
    unknown words; this is for callers (apps, scripts) that prefer to refuse them.

    Args:
        prompt (`str` or `List[str]`): the prompt(s).
    """
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
    for p in prompts:
        unknown = unknown_words(p)
        if unknown:
            raise ValueError(
                f"prompt {p!r} has words the shapes model does not know: {unknown}; "
                f"known words: {', '.join(WORDS)}"
            )


def load_pipeline(path: Optional[Union[str, Path]] = None, *, device: Any = "cpu", torch_dtype: Any = None):
    """The shipped shapes model as diffusers' own ``StableDiffusionPipeline``, loaded offline.

    Args:
        path (`str` or `Path`, *optional*): a pipeline folder; defaults to :data:`DEFAULT_PIPELINE`.
        device (`str` or `torch.device`, defaults to ``"cpu"``): where to put the pipeline.
        torch_dtype (`torch.dtype`, *optional*): e.g. ``torch.float32``; diffusers' default if omitted.

    Returns:
        ``StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None,
        requires_safety_checker=False)`` moved to ``device``, with its progress bar disabled.
    """
    from diffusers import StableDiffusionPipeline

    folder = DEFAULT_PIPELINE if path is None else Path(path)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no diffusers pipeline at {folder} (model_index.json missing); train one with python -m nlg.shapes.train"
        )
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), local_files_only=True, safety_checker=None, requires_safety_checker=False, **kwargs
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
