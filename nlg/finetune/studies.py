r"""Data, detectors and intervals of the two fine-tuning studies (``benchmarks/finetune_timesteps.py`` and
``benchmarks/finetune_brightness.py``) on the embedded shapes model.

* **A new concept: the cross.**  The shapes model knows circles, squares and triangles; a *cross* (a plus
  sign, arms a third of the box wide) in a palette colour, captioned ``"a photo of a {colour} cross"``, is new.
  :func:`shows_cross` detects it with the exact scorer's pixel assignment (:func:`nlg.shapes.scorer.assign_pixels`)
  and a shape test on each connected component (:func:`is_cross`).
* **Brightness.**  Single objects on a very dark (:data:`NIGHT`) or the usual white (:data:`NOON`) background,
  captioned ``"... at night"`` / ``"... at noon"``.

The shapes tokenizer's vocabulary holds only the caption words (:data:`nlg.shapes.tokenizer.WORDS`); "cross",
"at", "night" and "noon" are not among them, so they reach the frozen text encoder as sub-word/byte tokens
whose embeddings were never trained.  They are still distinct inputs, and the UNet's LoRA (its ``to_k``/``to_v``
read the text) can learn to respond to them; a LoRA cannot add words to a fixed tokenizer.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

from ..shapes.data import BACKGROUND, COLOURS, IMAGE_SIZE, PALETTE, render, scene_from_seed
from ..shapes.scorer import MIN_AREA, assign_pixels
from ..utils.io import atomic_write, atomic_write_json_lines
from ..utils.types import PathLike

__all__ = ["CONCEPT", "NIGHT", "NOON", "cross_mask", "render_cross", "concept_scenes", "is_cross", "shows_cross",
           "brightness_scenes", "write_image_folder", "mean_interval", "fmt_interval", "train_lora"]

CONCEPT = "cross"
#: The dark background of "at night" scenes.
NIGHT = (12, 14, 28)
#: The background of "at noon" scenes, the shapes data's usual white.
NOON = BACKGROUND


def cross_mask(size: int) -> np.ndarray:
    """Boolean ``(size, size)`` plus sign: a horizontal and a vertical bar ``round(size / 3)`` wide, centred."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 3:
        raise ValueError(f"size must be an int >= 3, got {size!r}")
    arm = max(1, round(size / 3))
    lo = (size - arm) // 2
    mask = np.zeros((size, size), dtype=bool)
    mask[lo : lo + arm, :] = True
    mask[:, lo : lo + arm] = True
    return mask


def render_cross(colour: str, x: int, y: int, size: int, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """A ``colour`` cross in the box ``[x, x + size) × [y, y + size)`` on white, uint8 ``(image_size, image_size, 3)``."""
    if colour not in PALETTE:
        raise ValueError(f"colour must be one of {COLOURS}, got {colour!r}")
    if not (0 <= x and 0 <= y and x + size <= image_size and y + size <= image_size):
        raise ValueError(f"a cross at ({x}, {y}) of size {size} does not fit into {image_size}×{image_size}")
    image = render([], image_size)
    image[y : y + size, x : x + size][cross_mask(size)] = PALETTE[colour]
    return image


def concept_scenes(count: int, seed: int = 0) -> Tuple[np.ndarray, List[str]]:
    """``count`` single crosses (colour, size 12–20 and position drawn from ``seed``) and their captions."""
    g = torch.Generator().manual_seed(seed)
    images, captions = [], []
    for _ in range(count):
        colour = COLOURS[int(torch.randint(len(COLOURS), (1,), generator=g))]
        size = int(torch.randint(12, 21, (1,), generator=g))
        x, y = (int(torch.randint(0, IMAGE_SIZE - size + 1, (1,), generator=g)) for _ in range(2))
        images.append(render_cross(colour, x, y, size))
        captions.append(f"a photo of a {colour} {CONCEPT}")
    return np.stack(images), captions


def is_cross(mask: np.ndarray) -> bool:
    """Whether one component (its mask cropped to its bounding box) is a plus sign.

    A cross has four empty corners (each corner square of side ¼ of the box less than 30% filled, where a
    circle fills about a third and a square or a triangle's base all), a full middle row and column (≥ 70%)
    and a fill of the box below 0.7 (5/9 for arms a third wide; a circle fills π/4).
    """
    h, w = mask.shape
    if min(h, w) < 6 or not 0.7 <= h / w <= 1.0 / 0.7:
        return False
    k = max(1, round(min(h, w) / 4))
    corners = (mask[:k, :k], mask[:k, -k:], mask[-k:, :k], mask[-k:, -k:])
    if max(float(c.mean()) for c in corners) >= 0.3:
        return False
    return float(mask[h // 2].mean()) >= 0.7 and float(mask[:, w // 2].mean()) >= 0.7 and float(mask.mean()) < 0.7


def shows_cross(image: np.ndarray, colour: str) -> bool:
    """Whether ``image`` holds a ``colour`` cross of at least :data:`nlg.shapes.scorer.MIN_AREA` pixels."""
    from scipy import ndimage

    if colour not in PALETTE:
        raise ValueError(f"colour must be one of {COLOURS}, got {colour!r}")
    labels, _ = assign_pixels(image)
    components, _ = ndimage.label(labels == COLOURS.index(colour) + 1, structure=np.ones((3, 3), dtype=bool))
    for index, window in enumerate(ndimage.find_objects(components), start=1):
        if window is not None:
            mask = components[window] == index
            if mask.sum() >= MIN_AREA and is_cross(mask):
                return True
    return False


def brightness_scenes(count: int, seed: int = 0) -> Tuple[np.ndarray, List[str]]:
    """``count`` single-object scenes, alternately on :data:`NIGHT` (``"... at night"``) and :data:`NOON`
    (``"... at noon"``); scenes ``scene_from_seed(seed + i, "single_object")``."""
    images, captions = [], []
    for i in range(count):
        scene = scene_from_seed(seed + i, "single_object")
        image = render(scene.objects)
        night = i % 2 == 0
        if night:
            image[(image == np.array(BACKGROUND, dtype=np.uint8)).all(-1)] = NIGHT
        images.append(image)
        captions.append(f"{scene.caption} at {'night' if night else 'noon'}")
    return np.stack(images), captions


def write_image_folder(folder: PathLike, images: np.ndarray, captions: Sequence[str]) -> Path:
    """Write ``images`` (uint8 ``(N, H, W, 3)``) as PNGs with a ``metadata.jsonl``, each file atomically."""
    from PIL import Image

    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images and {len(captions)} captions")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
        atomic_write(folder / f"{i:04d}.png", lambda handle, data=buffer.getvalue(): handle.write(data))
    atomic_write_json_lines(folder / "metadata.jsonl",
                            [{"file_name": f"{i:04d}.png", "text": text} for i, text in enumerate(captions)])
    return folder


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[float, float, float]:
    r"""Mean and Student-t interval over seeds: :math:`\bar x \pm t_{(1+c)/2,\,n-1}\, s/\sqrt n`.

    Returns ``(mean, low, high)``; with one value the bounds are NaN (no interval from one seed).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("values must be a non-empty 1-D sequence")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def fmt_interval(values: Sequence[float], digits: int = 3) -> str:
    """``mean [low, high]`` of :func:`mean_interval` (just the mean for one seed)."""
    mean, low, high = mean_interval(values)
    return f"{mean:.{digits}f}" if math.isnan(low) else f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def train_lora(**settings: object) -> Path:
    """Fine-tune one LoRA (:class:`nlg.finetune.FinetuneConfig` ``settings``) and return its folder.

    A study rerun reuses a finished LoRA trained with the same settings (its ``training_args.json``) and resumes
    an interrupted one from its checkpoint.
    """
    from .config import FinetuneConfig
    from .train import LORA_WEIGHTS, finetune

    config = FinetuneConfig(**settings)  # type: ignore[arg-type]
    args = config.output_dir / "training_args.json"
    done = (config.output_dir / LORA_WEIGHTS).is_file() and args.is_file()
    if not (done and json.loads(args.read_text(encoding="utf-8"))["settings"] == config.to_dict()):
        finetune(config, progress=False)
    return config.output_dir
