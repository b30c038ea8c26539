"""Procedural shapes scenes: deterministic 32×32 renders with GenEval-style captions that are true of them.

Every scene is drawn from one seed (one ``torch.Generator``):

* 32×32 RGB on a white background (255, 255, 255);
* 1–4 non-overlapping objects, each a ``circle``, ``square`` or ``triangle`` in one of six exact colours
  (:data:`PALETTE`), hard-edged (no anti-aliasing), with at least :data:`MIN_GAP` background pixels
  between the bounding boxes of any two objects;
* a caption from GenEval's templates (Ghosh et al. 2023, https://arxiv.org/abs/2310.11513) with shapes in
  place of COCO classes (:data:`TASKS`).  The scene is built from the caption, so the caption is true of
  it; for ``position`` captions the relation holds by GenEval's rule (:func:`relative_position`) and is
  the only relation that holds.

An object occupies the square box ``[x, x + size) × [y, y + size)``; a pixel belongs to it when its
centre ``(i + ½, j + ½)`` lies inside the shape: the whole box (square), the inscribed disc (circle), or
the upright isosceles triangle with its base on the bottom edge and its apex at the top centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from ..utils.checks import check_number

__all__ = [
    "IMAGE_SIZE",
    "BACKGROUND",
    "PALETTE",
    "COLOURS",
    "SHAPES",
    "NUMBERS",
    "RELATIONS",
    "TASKS",
    "MIN_GAP",
    "SIZE_RANGES",
    "TASK_WEIGHTS",
    "check_task_weights",
    "mirror_scene",
    "ShapeObject",
    "Scene",
    "relative_position",
    "render",
    "sample_scene",
    "scene_from_seed",
    "render_dataset",
    "plural",
]

IMAGE_SIZE = 32
BACKGROUND: Tuple[int, int, int] = (255, 255, 255)
#: The six exact colours of issue 11.
PALETTE: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 50, 180),
    "cyan": (20, 190, 200),
}
#: The colour names, in :data:`PALETTE` order.
COLOURS: Tuple[str, ...] = tuple(PALETTE)
#: The shape names.
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle")
NUMBERS: Dict[int, str] = {2: "two", 3: "three", 4: "four"}
RELATIONS: Tuple[str, ...] = ("left of", "right of", "above", "below")
#: GenEval's six tasks, in GenEval's naming.
TASKS: Tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
#: Share of each task among training captions (the shipped v2.3 model's mix).
#: Weighted toward the compositional tasks a small model finds hard, position most: a position caption's relation
#: word changes only a few pixels of its scene, so it needs the most examples (v2.2 trained on
#: ``(0.06, 0.14, 0.20, 0.10, 0.22, 0.28)``; shapes guide, results).
TASK_WEIGHTS = (0.06, 0.12, 0.14, 0.10, 0.44, 0.14)


def check_task_weights(task_weights: Any) -> Tuple[float, ...]:
    """``task_weights`` as a tuple of floats: one weight >= 0 per task of :data:`TASKS`, with a positive sum.

    Raises a ValueError (or TypeError) naming ``task_weights`` otherwise."""
    if not isinstance(task_weights, (tuple, list)) or len(task_weights) != len(TASKS):
        raise TypeError(f"task_weights must be a sequence of {len(TASKS)} numbers (one per task of {TASKS}), got {task_weights!r}")
    weights = tuple(check_number(w, f"task_weights[{i}]") for i, w in enumerate(task_weights))
    if not sum(weights) > 0:
        raise ValueError(f"task_weights must not all be 0, got {task_weights!r}")
    return weights


#: Object side in pixels (inclusive range) by the number of objects in the scene, large enough to draw crisply.
SIZE_RANGES = {1: (12, 20), 2: (10, 15), 3: (9, 12), 4: (8, 11)}
#: Minimum number of background pixels between the boxes of two objects.
MIN_GAP = 2
#: GenEval's position margin: offsets are shrunk by this times the sum of the two box sizes.
POSITION_THRESHOLD = 0.1


@dataclass(frozen=True)
class ShapeObject:
    """One object: its shape, colour name and box ``[x, x + size) × [y, y + size)`` in pixels."""

    shape: str
    colour: str
    x: int
    y: int
    size: int

    @property
    def box(self) -> Tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` as GenEval's detector boxes (x2, y2 exclusive)."""
        return (float(self.x), float(self.y), float(self.x + self.size), float(self.y + self.size))


@dataclass(frozen=True)
class Scene:
    """A scene: its objects, its caption and the GenEval task the caption belongs to."""

    objects: Tuple[ShapeObject, ...]
    caption: str
    task: str


def plural(shape: str) -> str:
    """``circle`` → ``circles``."""
    return shape + "s"


def relative_position(box_a: Sequence[float], box_b: Sequence[float], threshold: float = POSITION_THRESHOLD) -> Set[str]:
    """Where box A lies relative to box B, by GenEval's rule.

    With centres c and sizes d = (w, h) of the boxes (x1, y1, x2, y2), the offset o = c_A − c_B is shrunk
    towards 0 by ``threshold · (d_A + d_B)`` per axis, r = sign(o)·max(abs(o) − threshold·(d_A + d_B), 0);
    if r ≈ 0 there is no relation, else with (dx, dy) = r / ‖o‖: ``left of`` if dx < −½, ``right of`` if
    dx > ½, ``above`` if dy < −½, ``below`` if dy > ½ (image y grows downwards).

    Args:
        box_a (`Sequence[float]`): ``(x1, y1, x2, y2)`` of A.
        box_b (`Sequence[float]`): ``(x1, y1, x2, y2)`` of B.
        threshold (`float`, defaults to 0.1): GenEval's ``POSITION_THRESHOLD``.
    """
    a = np.asarray(box_a, dtype=np.float64)
    b = np.asarray(box_b, dtype=np.float64)
    centre_a, centre_b = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
    dim_a, dim_b = np.abs(a[2:] - a[:2]), np.abs(b[2:] - b[:2])
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - threshold * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask of a shape in its box, by pixel-centre inclusion."""
    centres = np.arange(size, dtype=np.float64) + 0.5
    u, v = np.meshgrid(centres, centres, indexing="xy")  # u: column (x), v: row (y)
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        r = size / 2
        return (u - r) ** 2 + (v - r) ** 2 <= r * r
    if shape == "triangle":
        # Apex (size/2, 0), base from (0, size) to (size, size): the half-width at height v is v/2.
        return np.abs(u - size / 2) <= v / 2
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


_MASKS: Dict[Tuple[str, int], np.ndarray] = {}


def render(objects: Sequence[ShapeObject], image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Render objects on a white background.

    Args:
        objects (`Sequence[ShapeObject]`): the objects; later ones are painted over earlier ones.
        image_size (`int`, defaults to 32): side of the square image.

    Returns:
        A ``uint8`` array of shape ``(image_size, image_size, 3)``.
    """
    image = np.empty((image_size, image_size, 3), dtype=np.uint8)
    image[...] = BACKGROUND
    for obj in objects:
        if obj.colour not in PALETTE:
            raise ValueError(f"colour must be one of {COLOURS}, got {obj.colour!r}")
        if not (0 <= obj.x and 0 <= obj.y and obj.x + obj.size <= image_size and obj.y + obj.size <= image_size):
            raise ValueError(f"{obj} does not fit into a {image_size}×{image_size} image")
        key = (obj.shape, obj.size)
        if key not in _MASKS:
            _MASKS[key] = _shape_mask(obj.shape, obj.size)
        window = image[obj.y : obj.y + obj.size, obj.x : obj.x + obj.size]
        window[_MASKS[key]] = PALETTE[obj.colour]
    return image


# -- sampling -------------------------------------------------------------------------------------

def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _choice(generator: torch.Generator, options: Sequence) -> object:
    return options[_randint(generator, 0, len(options) - 1)]


def _size_range(count: int) -> Tuple[int, int]:
    return SIZE_RANGES[count]


def _apart(a: ShapeObject, b: ShapeObject, gap: int = MIN_GAP) -> bool:
    """At least ``gap`` background pixels between the boxes (on one axis)."""
    return (
        a.x + a.size + gap <= b.x
        or b.x + b.size + gap <= a.x
        or a.y + a.size + gap <= b.y
        or b.y + b.size + gap <= a.y
    )


def _place(
    generator: torch.Generator,
    specs: Sequence[Tuple[str, str]],
    relation: Optional[str] = None,
    image_size: int = IMAGE_SIZE,
    max_tries: int = 5000,
) -> Tuple[ShapeObject, ...]:
    """Place objects of the given (shape, colour) at random, non-overlapping, sizes by count.

    With ``relation``, object 0 must stand in exactly that relation to object 1 by GenEval's rule.
    """
    low, high = _size_range(len(specs))
    for _ in range(max_tries):
        placed: List[ShapeObject] = []
        ok = True
        for shape, colour in specs:
            size = _randint(generator, low, high)
            obj = ShapeObject(
                shape, colour, _randint(generator, 0, image_size - size), _randint(generator, 0, image_size - size), size
            )
            if not all(_apart(obj, other) for other in placed):
                ok = False
                break
            placed.append(obj)
        if ok and relation is not None and relative_position(placed[0].box, placed[1].box) != {relation}:
            ok = False
        if ok:
            return tuple(placed)
    raise RuntimeError(f"could not place {specs} in {max_tries} tries")  # pragma: no cover - never seen


def sample_scene(generator: torch.Generator, task: Optional[str] = None, task_weights: Sequence[float] = TASK_WEIGHTS,
                 coloured_position: float = 0.0) -> Scene:
    """Draw a caption from GenEval's templates, then a scene of which it is true.

    Templates (shapes in place of COCO classes):

    * ``single_object``: ``a photo of a {shape}`` (one object, any colour);
    * ``colors``: ``a photo of a {colour} {shape}`` (one object);
    * ``counting``: ``a photo of {two|three|four} {shape}s`` (exactly N objects, each any colour);
    * ``two_object``: ``a photo of a {shape} and a {shape}`` (two different shapes, any colours);
    * ``position``: ``a photo of a {s1} {left of|right of|above|below} a {s2}`` (s1 ≠ s2; the relation
      of s1 to s2 is exactly the named one by :func:`relative_position`);
    * ``color_attr``: ``a photo of a {c1} {s1} and a {c2} {s2}`` (s1 ≠ s2, c1 ≠ c2).

    Args:
        generator (`torch.Generator`): the only source of randomness.
        task (`str`, *optional*): one of :data:`TASKS`; drawn with ``task_weights`` if omitted.
        task_weights (`Sequence[float]`, defaults to :data:`TASK_WEIGHTS`): relative frequency of each task of
            :data:`TASKS` when ``task`` is omitted (:func:`check_task_weights`).
        coloured_position (`float`, defaults to 0.0): probability that a ``position`` scene names its two (distinct)
            colours, ``a photo of a {c1} {s1} {relation} a {c2} {s2}``: a training-only template, not GenEval's, in
            which the relation word decides where each colour goes (0: never; no extra draw is made).
    """
    check_number(coloured_position, "coloured_position", maximum=1.0)
    if task is None:
        weights = torch.tensor(check_task_weights(task_weights), dtype=torch.float64)
        task = TASKS[int(torch.multinomial(weights, 1, generator=generator))]
    elif task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    colour = lambda: str(_choice(generator, COLOURS))  # noqa: E731
    shape = lambda: str(_choice(generator, SHAPES))  # noqa: E731

    def two_shapes() -> Tuple[str, str]:
        first = shape()
        second = str(_choice(generator, [s for s in SHAPES if s != first]))
        return first, second

    if task == "single_object":
        s = shape()
        objects = _place(generator, [(s, colour())])
        caption = f"a photo of a {s}"
    elif task == "colors":
        s, c = shape(), colour()
        objects = _place(generator, [(s, c)])
        caption = f"a photo of a {c} {s}"
    elif task == "counting":
        s, n = shape(), _randint(generator, 2, 4)
        objects = _place(generator, [(s, colour()) for _ in range(n)])
        caption = f"a photo of {NUMBERS[n]} {plural(s)}"
    elif task == "two_object":
        s1, s2 = two_shapes()
        objects = _place(generator, [(s1, colour()), (s2, colour())])
        caption = f"a photo of a {s1} and a {s2}"
    elif task == "position":
        s1, s2 = two_shapes()
        relation = str(_choice(generator, RELATIONS))
        if coloured_position > 0 and float(torch.rand((), generator=generator, dtype=torch.float64)) < coloured_position:
            c1 = colour()
            c2 = str(_choice(generator, [c for c in COLOURS if c != c1]))
            objects = _place(generator, [(s1, c1), (s2, c2)], relation=relation)
            caption = f"a photo of a {c1} {s1} {relation} a {c2} {s2}"
        else:
            objects = _place(generator, [(s1, colour()), (s2, colour())], relation=relation)
            caption = f"a photo of a {s1} {relation} a {s2}"
    else:  # color_attr
        s1, s2 = two_shapes()
        c1 = colour()
        c2 = str(_choice(generator, [c for c in COLOURS if c != c1]))
        objects = _place(generator, [(s1, c1), (s2, c2)])
        caption = f"a photo of a {c1} {s1} and a {c2} {s2}"
    return Scene(objects=objects, caption=caption, task=task)


def scene_from_seed(seed: int, task: Optional[str] = None, task_weights: Sequence[float] = TASK_WEIGHTS,
                    coloured_position: float = 0.0) -> Scene:
    """The scene of ``seed``: ``sample_scene`` with ``torch.Generator().manual_seed(seed)``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return sample_scene(torch.Generator().manual_seed(seed), task, task_weights, coloured_position)


_MIRRORED_WORDS = {"left of": "right of", "right of": "left of"}


def mirror_scene(scene: Scene, image_size: int = IMAGE_SIZE) -> Scene:
    """``scene`` reflected left to right, with ``left of`` and ``right of`` swapped in its caption.

    Every shape is symmetric about its vertical axis, so ``render(mirror_scene(s).objects)`` is ``render(s.objects)``
    flipped left to right, and the mirrored caption is true of it: a counterfactual twin that differs from ``scene``
    only in the relation word and the layout it implies.

    Args:
        scene (`Scene`): any scene; only a position caption's relation word changes.
        image_size (`int`, defaults to 32): side of the square image.
    """
    objects = tuple(dataclass_replace(o, x=image_size - o.x - o.size) for o in scene.objects)
    caption = scene.caption
    if scene.task == "position":
        for word, other in _MIRRORED_WORDS.items():
            if f" {word} " in caption:
                caption = caption.replace(f" {word} ", f" {other} ")
                break
    return Scene(objects=objects, caption=caption, task=scene.task)


def render_dataset(seeds: Sequence[int], task_weights: Sequence[float] = TASK_WEIGHTS,
                   coloured_position: float = 0.0) -> Tuple[torch.Tensor, List[str], List[Scene]]:
    """Render the scenes of ``seeds`` (:func:`scene_from_seed`, tasks drawn with ``task_weights``, position captions
    naming their colours with probability ``coloured_position``).

    Returns:
        ``(images, captions, scenes)``: images as float32 ``(N, 3, 32, 32)`` in [-1, 1], the captions and
        the scenes themselves.
    """
    task_weights = check_task_weights(task_weights)
    scenes = [scene_from_seed(int(s), None, task_weights, coloured_position) for s in seeds]
    pixels = np.stack([render(scene.objects) for scene in scenes])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return images, [scene.caption for scene in scenes], scenes
