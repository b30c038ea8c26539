"""An independent statement of what the public reference scripts select and name.

Written from the published behaviour of ``harveymannering/NoiseLevelGuidance`` ``core_experiments/``
(facts only, none of its code), without importing anything from ``nlg``, so tests compare the project
with this and not with itself:

* Both scripts call ``random.seed(0)`` once and shuffle the whole ``annotations`` list of the COCO
  captions JSON (file order) with the ``random`` module's ``shuffle``.
* ``generate_images.py`` generates the first ``--total_images`` annotations of that order.
* ``calculate_metrics.py`` then, with the same (continued) ``random`` state, shuffles
  ``sorted(Path(real_image_dir).glob('*.jpg'))`` and feeds FID the first ``len(fake images)`` of it.
* The image folder is ``images-guidance_{g}-inf_steps_{N}-ref_steps_{K}-step_size_{eta}-norm_{bool}-clip_{bool}
  -clip_thresh_{tau}-guid_form_{bool}-noise_{lambda}-bound_{bool}`` (no line break), each value being
  ``str()`` of the parsed flag.  The flags' argparse declarations: ``--guidance_level`` float, default
  7.5; ``--inference_steps`` int, 20; ``--refining_steps`` int, 0; ``--step_size`` ``type=float`` with
  the *int* default ``1`` (argparse converts only string defaults, so the default prints as ``1``);
  ``--clip_threshold`` float, 1.0; ``--noise_level`` float, 0.0; ``--normalize_latents``,
  ``--clip_grads``, ``--guidance_formula``, ``--boundary_control`` ``store_true``.
* Saved pixels are ``numpy.clip(image * 255, 0, 255).astype(numpy.uint8)`` of the pipeline's float
  ``output_type="numpy"`` images: truncation, not rounding.
* Its NLG converts the v-prediction output with ``σ = scheduler.sigmas[0]`` read before the pipeline
  call: ``ε = v/√(1+σ²) + x·σ/√(1+σ²)``.  On the first batch ``set_timesteps`` has not run yet, so σ is
  the training schedule's σ at t = 0, ``√((1−ᾱ₀)/ᾱ₀)``, i.e. ``ᾱ = ᾱ₀``; afterwards it is the σ of
  the sampler's first timestep (DPM-Solver++ from SD 2.1's hub config gets ``linspace`` spacing and
  starts at t = 999, the correct value; a config with ``leading`` spacing starts earlier).
"""

from __future__ import annotations

import argparse
import json
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Sequence

import numpy as np

__all__ = ["reference_caption_ids", "reference_fid_real_files", "reference_folder_name", "reference_pixels"]


@contextmanager
def _global_random(seed: int) -> Iterator[None]:
    """``random.seed(seed)`` on the global ``random`` module, as the reference does, restored afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _annotations(captions_json: Path) -> List[dict]:
    return json.loads(Path(captions_json).read_text(encoding="utf-8"))["annotations"]


def reference_caption_ids(captions_json: Path, total_images: int) -> List[int]:
    """The ids the reference generates, in its order."""
    prompts = _annotations(captions_json)
    with _global_random(0):
        random.shuffle(prompts)
    return [p["id"] for p in prompts[:total_images]]


def reference_fid_real_files(captions_json: Path, real_image_dir: Path, num_fake: int) -> List[str]:
    """Names of the real images the reference's FID uses (as a set their order does not matter)."""
    prompts = _annotations(captions_json)
    with _global_random(0):
        random.shuffle(prompts)
        real_files = sorted(Path(real_image_dir).glob("*.jpg"))
        random.shuffle(real_files)
    return [p.name for p in real_files[:num_fake]]


def _reference_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--output_dir")
    p.add_argument("--prompts_path")
    p.add_argument("--stable_diffusion_path")
    p.add_argument("--total_images", default=30000, type=int)
    p.add_argument("--inference_steps", default=20, type=int)
    p.add_argument("--batch_size", default=8, type=int)
    p.add_argument("--refining_steps", default=0, type=int)
    p.add_argument("--step_size", default=1, type=float)
    p.add_argument("--guidance_level", default=7.5, type=float)
    p.add_argument("--clip_threshold", default=1.0, type=float)
    p.add_argument("--noise_level", default=0.0, type=float)
    for flag in ("--clip_grads", "--normalize_latents", "--guidance_formula", "--add_noise", "--boundary_control"):
        p.add_argument(flag, action="store_true")
    return p


def reference_folder_name(argv: Sequence[str]) -> str:
    """The reference's image folder name for a command line of reference flags."""
    a, _ = _reference_parser().parse_known_args(list(argv))
    return (
        f"images-guidance_{str(a.guidance_level)}-inf_steps_{str(a.inference_steps)}"
        f"-ref_steps_{str(a.refining_steps)}-step_size_{str(a.step_size)}-norm_{str(a.normalize_latents)}"
        f"-clip_{str(a.clip_grads)}-clip_thresh_{str(a.clip_threshold)}-guid_form_{str(a.guidance_formula)}"
        f"-noise_{str(a.noise_level)}-bound_{str(a.boundary_control)}"
    )


def reference_pixels(images: np.ndarray) -> np.ndarray:
    """The uint8 pixels the reference saves for float images in [0, 1] (truncation)."""
    return np.clip(images * 255, 0, 255).astype(np.uint8)
