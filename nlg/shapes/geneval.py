"""A mini-GenEval for the shapes model: GenEval's six tasks, its prompt format, and an exact scorer.

GenEval (Ghosh et al. 2023, https://arxiv.org/abs/2310.11513) scores text-to-image prompt adherence
with an object detector.  Here the world is known exactly, so the "detector" is geometry, no neural
network:

1. every pixel goes to the palette colour whose segment from white it lies nearest to, or to the
   background if it is less than half-way along that segment (so the soft edges of decoded images do not
   read as other colours; :func:`assign_pixels`); pixels farther than :data:`OFF_PALETTE_DISTANCE` from
   all seven reference colours (white and the six palette colours) are counted as *off-palette* (a
   quality proxy reported next to accuracy);
2. the pixels of each colour split into 8-connected components; components smaller than
   :data:`MIN_AREA` pixels are ignored;
3. each component's shape comes from its geometry: with ``top`` = share of its pixels in the upper
   half of its bounding box and ``fill`` = pixels / box area, an upright triangle has ``top ≈ ¼``, a
   circle ``fill ≈ π/4`` and a square ``fill = 1`` (:func:`classify_shape`).

:func:`evaluate` then applies GenEval's rules to the detections: for each ``include`` entry the
``count`` largest objects of the class must exist, have the ``color`` if one is given, and stand in
the ``position`` relation (GenEval's rule, :func:`nlg.shapes.data.relative_position`) to every object
matched by the referenced entry; an ``exclude`` entry fails if ``count`` or more objects of its class
exist (so counting means *exactly* N).  Overall accuracy is the mean of the six task accuracies, as
in GenEval.

The prompt set (:func:`build_prompts`: 553 prompts in GenEval's task proportions, drawn as GenEval's
``create_prompts.py`` draws them) is stored in GenEval's ``evaluation_metadata.jsonl`` form in
:data:`PROMPTS_PATH`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..utils.io import atomic_write_text
from .data import BACKGROUND, COLOURS, NUMBERS, PALETTE, RELATIONS, SHAPES, TASKS, plural, relative_position

__all__ = [
    "PROMPTS_PATH",
    "OFF_PALETTE_DISTANCE",
    "MIN_AREA",
    "Detection",
    "GENEVAL_TASK_SIZES",
    "PROMPT_SEED",
    "distinct_prompts",
    "build_prompts",
    "write_prompts",
    "load_prompts",
    "assign_pixels",
    "classify_shape",
    "detect_objects",
    "evaluate",
    "score_image",
    "task_accuracies",
]

#: The mini-GenEval prompts, one JSON object per line.
PROMPTS_PATH = Path(__file__).resolve().parent / "evaluation_metadata.jsonl"
#: A pixel farther than this (RGB Euclidean distance) from every reference colour is off-palette.
OFF_PALETTE_DISTANCE = 60.0
#: Components with fewer pixels are noise, not objects (the smallest rendered object has 25 pixels).
MIN_AREA = 10
_REFERENCE = np.array([BACKGROUND] + [PALETTE[c] for c in COLOURS], dtype=np.float64)  # 0 = background


@dataclass(frozen=True)
class Detection:
    """One detected object: class (shape), colour, box ``(x1, y1, x2, y2)`` (x2, y2 exclusive), pixel count."""

    shape: str
    colour: str
    box: Tuple[float, float, float, float]
    area: int


# -- prompts --------------------------------------------------------------------------------------

#: Prompts per task in GenEval's released set (Ghosh et al. 2023, 553 in all, after its de-duplication).
GENEVAL_TASK_SIZES: Dict[str, int] = {
    "single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100,
}
#: The seed of GenEval's ``create_prompts.py`` (``--seed 43``); here it seeds a ``torch.Generator``.
PROMPT_SEED = 43


def distinct_prompts(task: str) -> List[Dict[str, Any]]:
    """Every distinct prompt of one task (its template space), in a fixed order.

    * ``single_object``: ``a photo of a {shape}`` (3);
    * ``two_object``: ``a photo of a {s1} and a {s2}``, ordered pairs of different shapes (6);
    * ``counting``: ``a photo of {two|three|four} {shape}s`` with ``exclude`` count N + 1 (9);
    * ``colors``: ``a photo of a {colour} {shape}`` (18);
    * ``position``: ``a photo of a {s1} {relation} a {s2}``, ordered pairs × 4 relations (24); as in
      GenEval, the second include entry (s1) carries ``position: [relation, 0]``;
    * ``color_attr``: ``a photo of a {c1} {s1} and a {c2} {s2}`` with s1 ≠ s2 and c1 ≠ c2 (180).

    Args:
        task (`str`): one of :data:`nlg.shapes.data.TASKS`.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "single_object":
        return [{"tag": task, "include": [{"class": s, "count": 1}], "prompt": f"a photo of a {s}"} for s in SHAPES]
    if task == "two_object":
        return [{"tag": task, "include": [{"class": s1, "count": 1}, {"class": s2, "count": 1}],
                 "prompt": f"a photo of a {s1} and a {s2}"} for s1, s2 in permutations(SHAPES, 2)]
    if task == "counting":
        return [{"tag": task, "include": [{"class": s, "count": n}], "exclude": [{"class": s, "count": n + 1}],
                 "prompt": f"a photo of {word} {plural(s)}"} for s in SHAPES for n, word in NUMBERS.items()]
    if task == "colors":
        return [{"tag": task, "include": [{"class": s, "count": 1, "color": c}], "prompt": f"a photo of a {c} {s}"}
                for c in COLOURS for s in SHAPES]
    if task == "position":
        return [{"tag": task, "include": [{"class": s2, "count": 1}, {"class": s1, "count": 1, "position": [r, 0]}],
                 "prompt": f"a photo of a {s1} {r} a {s2}"} for s1, s2 in permutations(SHAPES, 2) for r in RELATIONS]
    return [{"tag": task, "include": [{"class": s1, "count": 1, "color": c1}, {"class": s2, "count": 1, "color": c2}],
             "prompt": f"a photo of a {c1} {s1} and a {c2} {s2}"}
            for s1, s2 in permutations(SHAPES, 2) for c1, c2 in permutations(COLOURS, 2)]


def build_prompts(*, sizes: Optional[Dict[str, int]] = None, seed: int = PROMPT_SEED) -> List[Dict[str, Any]]:
    """The GenEval-sized prompt set: GenEval's tasks in GenEval's proportions, drawn as its ``create_prompts`` does.

    GenEval's ``create_prompts.py`` draws every prompt of a task independently and uniformly — classes,
    colours, counts 2–4 and relations, with two different classes (and two different colours) where a
    prompt names two — then drops duplicates; ``single_object`` lists every class once.  With COCO's 80
    classes that leaves :data:`GENEVAL_TASK_SIZES`.  With 3 shapes × 6 colours a task has only 3–180
    distinct prompts (:func:`distinct_prompts`), so duplicates are *kept*: each task's prompts are drawn
    uniformly **with replacement** from its template space (the same distribution as GenEval's
    per-prompt draws), in task order, from one ``torch.Generator`` seeded ``seed``.  ``single_object``
    follows GenEval's "every class once" by repeating seeded permutations of the shapes, so each shape
    appears ⌊80/3⌋ or ⌈80/3⌉ times.  A repeated prompt is a separate entry with its own image seeds; the
    entries are i.i.d. draws from the task's prompt distribution, which is what the bootstrap over
    prompts (:func:`nlg.eval.stats.prompt_bootstrap`) resamples.

    Args:
        sizes (`Dict[str, int]`, *optional*): prompts per task; defaults to :data:`GENEVAL_TASK_SIZES`.
        seed (`int`, defaults to 43): seed of the draws (GenEval's default seed).
    """
    sizes = dict(GENEVAL_TASK_SIZES if sizes is None else sizes)
    unknown = set(sizes) - set(TASKS)
    if unknown:
        raise ValueError(f"sizes must be keyed by tasks among {TASKS}, got {sorted(unknown)}")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in sizes.values()):
        raise ValueError(f"sizes must be non-negative ints, got {sizes}")
    generator = torch.Generator().manual_seed(seed)
    prompts: List[Dict[str, Any]] = []
    for task in TASKS:
        n, space = sizes.get(task, 0), distinct_prompts(task)
        if task == "single_object":
            rounds = -(-n // len(space)) if n else 0
            picks = [int(i) for _ in range(rounds) for i in torch.randperm(len(space), generator=generator)][:n]
        else:
            picks = torch.randint(0, len(space), (n,), generator=generator).tolist()
        prompts.extend(copy.deepcopy(space[i]) for i in picks)
    return prompts


def write_prompts(path: Union[str, Path] = PROMPTS_PATH, prompts: Optional[List[Dict[str, Any]]] = None) -> Path:
    """Write prompts (default :func:`build_prompts`) as JSON lines."""
    path = Path(path)
    prompts = build_prompts() if prompts is None else prompts
    atomic_write_text(path, "".join(json.dumps(p) + "\n" for p in prompts))
    return path


def load_prompts(path: Union[str, Path] = PROMPTS_PATH, tasks: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Read an ``evaluation_metadata.jsonl`` file, optionally keeping only some tasks."""
    if tasks is not None:
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"tasks must be among {TASKS}, got {sorted(unknown)}")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in rows if tasks is None or r["tag"] in tasks]


# -- detection ------------------------------------------------------------------------------------

def _as_uint8(image: Any) -> np.ndarray:
    """``(H, W, 3)`` uint8 from a PIL image, a uint8 array, or a float array in [0, 1]."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"image must be uint8 or float in [0, 1], got dtype {array.dtype}")
        if array.size and not (np.isfinite(array).all() and array.min() >= -1e-3 and array.max() <= 1 + 1e-3):
            raise ValueError("a float image must hold finite values in [0, 1] (a 0-255 image must be uint8), "
                             f"got values in [{array.min()}, {array.max()}]")
        array = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
    return array


def assign_pixels(image: Any) -> Tuple[np.ndarray, np.ndarray]:
    r"""Colour label per pixel, with soft edges resolved along the white-to-colour lines.

    A decoded image has soft edges: a pixel half-way between a colour ``c`` and the white background is
    often nearer to *another* palette colour than to ``c`` (half red, half white is nearest to yellow).  So a
    pixel ``p`` is projected onto each segment from white ``w`` to a colour ``c``,

    .. math::
        \alpha_c = \operatorname{clip}\Big(\frac{(p - w)\cdot(c - w)}{\lVert c - w\rVert^2}, 0, 1\Big),
        \qquad r_c = \lVert p - w - \alpha_c (c - w)\rVert,

    takes the colour with the smallest residual :math:`r_c`, and belongs to that colour's objects if it is at
    least half-way along its segment (:math:`\alpha_c \ge 1/2`), else to the background.

    Returns:
        ``(labels, off_palette)``: labels ``(H, W)`` with 0 = background and 1…6 = :data:`COLOURS` in
        order, and a boolean ``(H, W)`` mask of pixels farther than :data:`OFF_PALETTE_DISTANCE` from all
        seven reference colours (the quality proxy; it does not change the labels).
    """
    pixels = _as_uint8(image).astype(np.float64)
    distances = np.linalg.norm(pixels[:, :, None, :] - _REFERENCE[None, None], axis=-1)
    white, colours = _REFERENCE[0], _REFERENCE[1:]
    directions = colours - white  # (6, 3)
    offset = pixels - white  # (H, W, 3)
    alpha = np.clip(offset @ directions.T / (directions**2).sum(axis=1), 0.0, 1.0)  # (H, W, 6)
    residual = np.linalg.norm(offset[:, :, None, :] - alpha[..., None] * directions, axis=-1)
    best = residual.argmin(axis=-1)
    along = np.take_along_axis(alpha, best[..., None], axis=-1)[..., 0]
    labels = np.where(along >= 0.5, best + 1, 0)
    return labels, distances.min(axis=-1) > OFF_PALETTE_DISTANCE


def classify_shape(mask: np.ndarray) -> str:
    """Shape of one component from its mask cropped to its bounding box.

    ``top`` (share of pixels whose centre lies above the box's middle, pixels on it counting half)
    below 0.37 means an upright triangle (≈ ¼ for a triangle, ½ for symmetric shapes); otherwise
    ``fill`` (pixels / box area) above 0.89 means a square (1), else a circle (π/4 ≈ 0.785).
    """
    h, w = mask.shape
    area = mask.sum()
    centres = np.arange(h) + 0.5
    weight = np.where(centres < h / 2, 1.0, np.where(centres == h / 2, 0.5, 0.0))
    top = float((mask.sum(axis=1) * weight).sum() / area)
    fill = float(area / (h * w))
    if top < 0.37:
        return "triangle"
    return "square" if fill > 0.89 else "circle"


def detect_objects(image: Any) -> Tuple[List[Detection], float]:
    """Objects in an image and its off-palette share.

    Args:
        image: a ``PIL.Image``, a uint8 ``(H, W, 3)`` array or a float one in [0, 1].

    Returns:
        ``(detections, off_palette_fraction)``, detections sorted by area, largest first.
    """
    from scipy import ndimage

    labels, off = assign_pixels(image)
    detections: List[Detection] = []
    structure = np.ones((3, 3), dtype=bool)
    for k, colour in enumerate(COLOURS, start=1):
        components, count = ndimage.label(labels == k, structure=structure)
        for index, window in enumerate(ndimage.find_objects(components), start=1):
            if window is None:
                continue
            mask = components[window] == index
            area = int(mask.sum())
            if area < MIN_AREA:
                continue
            ys, xs = window
            box = (float(xs.start), float(ys.start), float(xs.stop), float(ys.stop))
            detections.append(Detection(classify_shape(mask), colour, box, area))
    detections.sort(key=lambda d: (-d.area, d.box))
    return detections, float(off.mean())


# -- GenEval's rules ------------------------------------------------------------------------------

def evaluate(detections: Sequence[Detection], metadata: Dict[str, Any]) -> Tuple[bool, str]:
    """GenEval's decision for one image: ``(correct, reason)``.

    Objects of a class are taken largest first (GenEval takes them by detector confidence).
    """
    by_class: Dict[str, List[Detection]] = {}
    for d in sorted(detections, key=lambda d: (-d.area, d.box)):
        by_class.setdefault(d.shape, []).append(d)
    correct = True
    reasons: List[str] = []
    matched_groups: List[Optional[List[Detection]]] = []
    for req in metadata.get("include", []):
        cls, count = req["class"], req["count"]
        found = by_class.get(cls, [])[:count]
        matched = True
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colours = [d.colour for d in found]
                if colours.count(req["color"]) < count:
                    correct = matched = False
                    reasons.append(f"expected {req['color']} {cls}>={count}, found {colours}")
            if "position" in req and matched:
                relation, target = req["position"]
                if matched_groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {cls} to be {relation}")
                else:
                    for obj in found:
                        for other in matched_groups[target]:
                            actual = relative_position(obj.box, other.box)
                            if relation not in actual:
                                correct = matched = False
                                reasons.append(f"expected {cls} {relation} target, found {sorted(actual)}")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        cls, count = req["class"], req["count"]
        if len(by_class.get(cls, [])) >= count:
            correct = False
            reasons.append(f"expected {cls}<{count}, found {len(by_class[cls])}")
    return correct, "; ".join(reasons)


def score_image(image: Any, metadata: Dict[str, Any]) -> Dict[str, Any]:
    """Detect and evaluate one image: ``{"correct", "reason", "off_palette", "objects"}``."""
    detections, off = detect_objects(image)
    correct, reason = evaluate(detections, metadata)
    return {"correct": correct, "reason": reason, "off_palette": off, "objects": len(detections)}


def task_accuracies(tags: Iterable[str], correct: Iterable[bool]) -> Dict[str, float]:
    """Accuracy per task and ``overall`` = mean of the task accuracies (GenEval's overall score)."""
    totals: Dict[str, List[int]] = {}
    for tag, ok in zip(tags, correct):
        totals.setdefault(tag, []).append(int(bool(ok)))
    result = {t: sum(v) / len(v) for t, v in sorted(totals.items(), key=lambda kv: TASKS.index(kv[0]))}
    result["overall"] = sum(result.values()) / len(result) if result else float("nan")
    return result
