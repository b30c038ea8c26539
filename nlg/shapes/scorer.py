"""The shapes scorer: objects found by geometry, checked against the rendering rules, judged by GenEval's rules.

The scenes of :mod:`nlg.shapes.data` are white, with one to four hard-edged objects in six palette colours.  The
scorer reads an image in four steps, and anything that is not such a scene is *garbage*, never an object:

1. **Pixels** (:func:`assign_pixels`).  Each pixel is projected on the six segments from white to a palette colour;
   it takes the colour of the nearest segment if it lies at least half-way along it, else it is background.  The
   soft edges of a decoded image (a blend of a colour with white) therefore stay with their object and never read
   as another colour.  A pixel farther than :data:`OFF_PALETTE_DISTANCE` from every segment is *off-palette*
   (black, grey, brown, noise...).  Off-palette pixels above :data:`MAX_OFF_PALETTE_SHARE` of the foreground, or a
   background that is not white (:data:`MAX_TINTED_SHARE`), make the image garbage.
2. **Components.**  Pixels of one colour split into 8-connected components; those under :data:`MIN_AREA` pixels
   are specks and ignored.  Two components of different colours that touch along :data:`MIN_CONTACT` or more
   pixel sides are one object in two colours: garbage (rendered objects are ≥ ``MIN_GAP`` pixels apart).
3. **Shape** (:func:`shape_features`, :func:`classify_shape`).  A component is a circle, square or triangle only
   if every feature lies in that class's window (:data:`SHAPE_WINDOWS`), derived from the rendering rules below;
   otherwise it is *unrecognised* and the image is garbage.  No class is a catch-all.
4. **Judgement** (:func:`judge`, with :mod:`nlg.shapes.rules`).  GenEval's rules on the recognised objects; a failed image gets one primary
   reason from :data:`FAILURE_REASONS`.

**Expected feature values, from the rendering rules.**  An object of side ``s`` (8 ≤ s ≤ 20, ``SIZE_RANGES``) is
the set of pixels whose centre lies in a convex shape, so on a render:

* *solidity* (pixels / lattice points in the convex hull of the pixel centres, counted with Pick's theorem) is
  exactly 1 for every class: the hull of the centres lies inside the convex shape, so every lattice point in it is
  a pixel of the object;
* the shapes are mirror-symmetric about the box's vertical axis: *symmetry* (pixels whose mirror image is a pixel
  / pixels) is exactly 1;
* *fill* (pixels / box area): square 1; circle π/4 ≈ 0.785 (digitised 0.778–0.852 for s = 8…20); triangle ½ of
  the box — s²/2 pixels in an s × (s − 1) box for even s (its apex row is empty) and (s² + 1)/2 in s × s for odd
  s — so 0.50–0.57;
* *top* (share of pixels in the upper half of the box): ½ for circle and square; an upright triangle has a quarter
  of its area above mid-height, digitised 0.25–0.31;
* *aspect* (short / long box side): 1, or (s − 1)/s ≥ 7/8 for a triangle of even side;
* *corners* (share of the box's corner pixels, those whose centre lies outside the ellipse inscribed in the box,
  that belong to the object): square 1; circle exactly 0 at every size, since its box is its s × s box and a pixel
  belongs to it iff its centre lies inside that inscribed circle.  A square whose corners are rounded with radius
  ρs keeps 1 − 4ρ² of them (continuous), while its fill, 1 − (4 − π)ρ², barely moves: at fill 0.85 a soft square
  still keeps 0.30 of its corners, and a digitised circle of side 9 already reaches fill 0.852.  Fill cannot tell
  them apart; corners can.

The windows widen these by what a VAE decode or a generated image does to an object of 8 pixels: edges move by
about a pixel (aspect down to 6/8, fill of a triangle up by a row, to 0.78 on VAE round trips of side 8, and its top
up to about 0.40), the outline roughens (solidity and symmetry down to about 0.85), corners round off.  Circle and
square are split on *corners* half-way between their rendered values (VAE round trips: circles ≤ 0.2, squares
≥ 0.75); generated objects fill the gap, and the labels by eye put the boundary between a circle and a soft square
near there, at 0.4–0.5 (``benchmarks/results/shapes_labels/agreement.md``).  Given that split, fill only bounds each
class: a circle's fill up to 0.90 (full inside the ellipse plus under half of the corners: π/4 + (1 − π/4)/2 ≈
0.89) and down to 0.68 (a slightly polygonal circle), a square's down to 0.80 (soft corners, or slightly concave
sides that solidity bounds).  The thresholds are checked on renders and VAE round trips (≥ 98% scored right), on the
garbage set of :mod:`nlg.shapes.garbage` (all scored wrong) and on generated images labelled by eye.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy as np

from .data import BACKGROUND, COLOURS, PALETTE, SHAPES, SIZE_RANGES
from .rules import FAILURE_REASONS, Detection, evaluate, failures

__all__ = [
    "OFF_PALETTE_DISTANCE", "MAX_OFF_PALETTE_SHARE", "WHITE_DISTANCE", "MAX_TINTED_SHARE", "MIN_AREA",
    "MAX_SPECK_SHARE", "MIN_CONTACT", "SIZE_TOLERANCE", "SIZE_LIMITS", "SHAPE_WINDOWS", "UNRECOGNISED",
    "GARBAGE_KINDS", "Component", "Analysis", "assign_pixels", "shape_features", "classify_shape", "analyse",
    "detect_objects", "judge", "score_image",
]

#: A pixel farther than this (RGB Euclidean distance) from every white-to-colour segment is off-palette.
#: It is about half the distance between the two nearest palette colours (blue and purple, 119 apart), so a pixel
#: nearer than that to a segment is a (possibly pale or shifted) shade of that colour.
OFF_PALETTE_DISTANCE = 60.0
#: An image whose off-palette pixels exceed this share of its foreground (non-background pixels) is garbage.
MAX_OFF_PALETTE_SHARE = 0.2
#: A background pixel farther than this from white is tinted (a soft edge, or a grey / coloured background).
WHITE_DISTANCE = 40.0
#: An image with more tinted background pixels than this share of all pixels has no white background (garbage).
#: Soft edges are a one-pixel ring round each object, at most about a fifth of a 32×32 image.
MAX_TINTED_SHARE = 0.4
#: Components with fewer pixels are specks, not objects (the smallest rendered object, a triangle of side 8, has 32).
MIN_AREA = 12
#: An image whose specks (components under :data:`MIN_AREA`) hold more than this share of the foreground is garbage
#: (speckle); VAE round trips of renders stay under 5%.
MAX_SPECK_SHARE = 0.25
#: Two components of different colours sharing at least this many pixel sides are one two-colour object.
MIN_CONTACT = 3
#: Tolerance on the box side of a generated object, in pixels, around ``SIZE_RANGES``.
SIZE_TOLERANCE = 2
#: Accepted box side (the longer side) of an object, the smallest and largest rendered side ± :data:`SIZE_TOLERANCE`.
SIZE_LIMITS: Tuple[int, int] = (
    min(low for low, _ in SIZE_RANGES.values()) - SIZE_TOLERANCE,
    max(high for _, high in SIZE_RANGES.values()) + SIZE_TOLERANCE,
)
#: Per class, the accepted ``(low, high)`` of each feature (see the module docstring for the rendered values).
#: ``corners`` splits circle (0 on renders) from square (1) half-way; a tie goes to the circle, the first class tried.
SHAPE_WINDOWS: Dict[str, Dict[str, Tuple[float, float]]] = {
    "square": {"fill": (0.80, 1.0), "corners": (0.5, 1.0), "top": (0.42, 0.58)},
    "circle": {"fill": (0.68, 0.90), "corners": (0.0, 0.5), "top": (0.42, 0.58)},
    "triangle": {"fill": (0.42, 0.78), "top": (0.17, 0.41)},
}
#: Windows shared by all classes.
_COMMON_WINDOWS: Dict[str, Tuple[float, float]] = {"aspect": (0.75, 1.0), "solidity": (0.85, 1.0), "symmetry": (0.75, 1.0)}
#: The shape of a component that fits no class.
UNRECOGNISED = "unrecognised"
#: Why an image is garbage.
GARBAGE_KINDS: Tuple[str, ...] = ("off-palette", "tinted background", "speckle", "two-colour object", UNRECOGNISED)

_WHITE = np.array(BACKGROUND, dtype=np.float64)
_DIRECTIONS = np.array([PALETTE[c] for c in COLOURS], dtype=np.float64) - _WHITE  # (6, 3)


@dataclass(frozen=True)
class Component:
    """One foreground component: its colours (two or more for a two-colour object), box, area, features and class.

    ``shape`` is a class of :data:`SHAPES` or :data:`UNRECOGNISED`; ``why`` names the features outside every window.
    """

    colours: Tuple[str, ...]
    box: Tuple[float, float, float, float]
    area: int
    features: Dict[str, float]
    shape: str
    why: str = ""

    @property
    def detection(self) -> Detection:
        return Detection(self.shape, self.colours[0], self.box, self.area)


@dataclass(frozen=True)
class Analysis:
    """Everything the scorer reads from one image.

    ``objects``: recognised single-colour objects, largest first; ``components``: all components of at least
    :data:`MIN_AREA` pixels; ``off_palette``: off-palette share of the foreground; ``tinted``: share of the image that is
    tinted background; ``garbage``: the :data:`GARBAGE_KINDS` found (empty if none).
    """

    objects: Tuple[Detection, ...]
    components: Tuple[Component, ...]
    off_palette: float
    tinted: float
    garbage: Tuple[str, ...]


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
    r"""Colour label per pixel, with soft edges resolved along the white-to-colour segments, and the off-palette mask.

    A pixel ``p`` is projected onto each segment from white ``w`` to a palette colour ``c``,

    .. math::
        \alpha_c = \operatorname{clip}\Big(\frac{(p - w)\cdot(c - w)}{\lVert c - w\rVert^2}, 0, 1\Big),
        \qquad r_c = \lVert p - w - \alpha_c (c - w)\rVert,

    takes the colour with the smallest residual :math:`r_c`, and belongs to that colour if it is at least half-way
    along its segment (:math:`\alpha_c \ge 1/2`), else to the background.  (Half red and half white is nearer to
    yellow than to red: nearest-colour labels would ring every red object with yellow.)

    Args:
        image: a ``PIL.Image``, a uint8 ``(H, W, 3)`` array or a float one in [0, 1].

    Returns:
        ``(labels, off_palette)``: labels ``(H, W)`` with 0 = background and 1…6 = :data:`COLOURS` in order, and the
        boolean mask of pixels with :math:`\min_c r_c >` :data:`~nlg.shapes.scorer.OFF_PALETTE_DISTANCE` (labelled too, but garbage).
    """
    offset = _as_uint8(image).astype(np.float64) - _WHITE  # (H, W, 3)
    dot, length2 = offset @ _DIRECTIONS.T, (_DIRECTIONS**2).sum(axis=1)  # (H, W, 6), (6,)
    alpha = np.clip(dot / length2, 0.0, 1.0)
    residual = np.sqrt(np.maximum((offset**2).sum(axis=-1, keepdims=True) - 2 * alpha * dot + alpha**2 * length2, 0))
    best = residual.argmin(axis=-1)
    along = np.take_along_axis(alpha, best[..., None], axis=-1)[..., 0]
    return np.where(along >= 0.5, best + 1, 0), residual.min(axis=-1) > OFF_PALETTE_DISTANCE


def _hull_lattice_points(mask: np.ndarray) -> int:
    """Lattice points (pixel centres) in the convex hull of the mask's pixel centres, by Pick's theorem.

    With the hull's doubled area ``2A`` (shoelace) and ``B`` lattice points on its boundary (sum of gcd(|dx|, |dy|)
    over its edges), the points inside or on it number ``A + B/2 + 1`` (also right for a segment or a point).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    first = mask[rows].argmax(axis=1)
    last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    points = sorted(set(zip(first.tolist(), rows.tolist())) | set(zip(last.tolist(), rows.tolist())))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    chains = []
    for sequence in (points, points[::-1]):  # Andrew's monotone chain: lower then upper hull
        chain: List[Tuple[int, int]] = []
        for p in sequence:
            while len(chain) >= 2 and cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        chains.append(chain[:-1])
    hull = chains[0] + chains[1] or points
    twice_area = boundary = 0
    for (x0, y0), (x1, y1) in zip(hull, hull[1:] + hull[:1]):
        twice_area += x0 * y1 - x1 * y0
        boundary += math.gcd(abs(x1 - x0), abs(y1 - y0))
    return (abs(twice_area) + boundary) // 2 + 1


def shape_features(mask: np.ndarray) -> Dict[str, float]:
    """The features of one component, from its boolean mask cropped to its bounding box.

    ``side`` (longer box side, px), ``aspect`` (short / long side), ``fill`` (pixels / box area), ``solidity``
    (pixels / lattice points in the convex hull of the pixel centres), ``symmetry`` (share of pixels whose mirror
    image about the box's vertical axis is a pixel), ``top`` (share of pixels above the box's middle, a row on it
    counting half), ``corners`` (share of the box's pixels whose centre lies outside the box's inscribed ellipse that
    are in the mask; 0 if there are none).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f"mask must be a non-empty 2-D boolean array, got shape {mask.shape}")
    h, w = mask.shape
    area = float(mask.sum())
    centres = np.arange(h) + 0.5
    weight = np.where(centres < h / 2, 1.0, np.where(centres == h / 2, 0.5, 0.0))
    v, u = np.mgrid[:h, :w] + 0.5
    outside = ((2 * u - w) / w) ** 2 + ((2 * v - h) / h) ** 2 > 1  # centres outside the box's inscribed ellipse
    return {
        "side": float(max(h, w)),
        "aspect": min(h, w) / max(h, w),
        "fill": area / (h * w),
        "solidity": area / _hull_lattice_points(mask),
        "symmetry": float((mask & mask[:, ::-1]).sum()) / area,
        "top": float((mask.sum(axis=1) * weight).sum()) / area,
        "corners": float(mask[outside].mean()) if outside.any() else 0.0,
    }


def classify_shape(features: Dict[str, float]) -> Tuple[str, str]:
    """``(shape, why)``: the class whose windows hold every feature, or :data:`~nlg.shapes.scorer.UNRECOGNISED` and the failing features.

    Args:
        features (`Dict[str, float]`): from :func:`~nlg.shapes.scorer.shape_features`.
    """
    low, high = SIZE_LIMITS
    common = [name for name, (a, b) in _COMMON_WINDOWS.items() if not a <= features[name] <= b]
    if not low <= features["side"] <= high:
        common.append("side")
    if common:
        return UNRECOGNISED, ", ".join(f"{n}={features[n]:.2f}" for n in common)
    for shape in SHAPES:
        if all(a <= features[name] <= b for name, (a, b) in SHAPE_WINDOWS[shape].items()):
            return shape, ""
    return UNRECOGNISED, f"fill={features['fill']:.2f}, top={features['top']:.2f}, corners={features['corners']:.2f} fit no class"


def _contacts(ids: np.ndarray, colour_of: np.ndarray) -> Dict[Tuple[int, int], int]:
    """Pixel sides shared by two components of different colours: ``{(id_a, id_b): count}`` with id_a < id_b."""
    counts: Dict[Tuple[int, int], int] = {}
    for a, b in ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :])):
        touching = (a > 0) & (b > 0) & (colour_of[a] != colour_of[b])
        for x, y in zip(a[touching].tolist(), b[touching].tolist()):
            key = (min(x, y), max(x, y))
            counts[key] = counts.get(key, 0) + 1
    return counts


def analyse(image: Any) -> Analysis:
    """Read one image: components, their classes, the off-palette and tinted shares, and the garbage found.

    Args:
        image: a ``PIL.Image``, a uint8 ``(H, W, 3)`` array or a float one in [0, 1].
    """
    from scipy import ndimage

    pixels = _as_uint8(image)
    labels, off = assign_pixels(pixels)
    foreground = (labels > 0) | off
    off_share = float(off.sum() / foreground.sum()) if foreground.any() else 0.0
    far_from_white = np.linalg.norm(pixels.astype(np.float64) - _WHITE, axis=-1) > WHITE_DISTANCE
    tinted = float((~foreground & far_from_white).mean())

    ids = np.zeros(labels.shape, dtype=np.int64)
    colour_of = [0]
    specks = 0
    for k in range(1, len(COLOURS) + 1):
        components, count = ndimage.label(labels == k, structure=np.ones((3, 3), dtype=bool))
        for index in range(1, count + 1):
            mask = components == index
            if mask.sum() >= MIN_AREA:
                colour_of.append(k)
                ids[mask] = len(colour_of) - 1
            else:
                specks += int(mask.sum())
    group = list(range(len(colour_of)))  # union-find over components that touch: two-colour objects

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    for (a, b), n in _contacts(ids, np.array(colour_of)).items():
        if n >= MIN_CONTACT:
            group[root(a)] = root(b)
    result: List[Component] = []
    for r in sorted({root(i) for i in range(1, len(colour_of))}):
        members = [i for i in range(1, len(colour_of)) if root(i) == r]
        full = np.isin(ids, members)
        ys, xs = np.nonzero(full)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        features = shape_features(full[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
        colours = tuple(COLOURS[k - 1] for k in sorted({colour_of[i] for i in members}))
        if len(colours) > 1:
            shape, why = UNRECOGNISED, "two-colour object"
        else:
            shape, why = classify_shape(features)
        result.append(Component(colours, box, int(full.sum()), features, shape, why))
    result.sort(key=lambda c: (-c.area, c.box))
    garbage = []
    if off_share > MAX_OFF_PALETTE_SHARE:
        garbage.append("off-palette")
    if tinted > MAX_TINTED_SHARE:
        garbage.append("tinted background")
    if specks > MAX_SPECK_SHARE * (labels > 0).sum():
        garbage.append("speckle")
    if any(len(c.colours) > 1 for c in result):
        garbage.append("two-colour object")
    if any(len(c.colours) == 1 and c.shape == UNRECOGNISED for c in result):
        garbage.append(UNRECOGNISED)
    objects = tuple(c.detection for c in result if c.shape != UNRECOGNISED)
    return Analysis(objects, tuple(result), off_share, tinted, tuple(garbage))


def detect_objects(image: Any) -> Tuple[List[Detection], float]:
    """The recognised objects of an image, largest first, and its off-palette share (see :func:`~nlg.shapes.scorer.analyse`)."""
    analysis = analyse(image)
    return list(analysis.objects), analysis.off_palette


def judge(analysis: Analysis, metadata: Dict[str, Any]) -> Dict[str, Any]:
    """The verdict on an analysed image (:func:`analyse`) for one prompt's GenEval metadata.

    Returns:
        ``{"correct", "reason", "detail", "garbage", "off_palette", "objects"}``: ``correct`` iff no failure;
        ``reason`` the primary one of :data:`FAILURE_REASONS` (``"garbage"`` before any other, ``""`` if correct);
        ``detail`` a readable explanation; ``garbage`` the :data:`GARBAGE_KINDS` found; ``off_palette`` the
        off-palette share of the foreground; ``objects`` the number of recognised objects.
    """
    found = failures(analysis.objects, metadata)
    if analysis.garbage:
        rejects = [f"{'+'.join(c.colours)} {c.why}" for c in analysis.components if c.shape == UNRECOGNISED]
        found = [("garbage", "; ".join(list(analysis.garbage) + rejects))] + [f for f in found if f[0] != "empty"]
    reason = min((r for r, _ in found), key=FAILURE_REASONS.index, default="")
    return {"correct": not found, "reason": reason, "detail": "; ".join(f"{r}: {d}" for r, d in found),
            "garbage": list(analysis.garbage), "off_palette": analysis.off_palette, "objects": len(analysis.objects)}


def score_image(image: Any, metadata: Dict[str, Any]) -> Dict[str, Any]:
    """Score one image against one prompt's GenEval metadata: ``judge(analyse(image), metadata)``."""
    return judge(analyse(image), metadata)
