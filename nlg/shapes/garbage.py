"""A garbage set for the shapes scorer: images that are not scenes, each with a prompt it could be mistaken for.

Every image here must score wrong (``tests/shapes/test_scorer_garbage.py``): the scorer of issue 19 called most of
them objects.  The set is deterministic (one ``torch.Generator`` per image) and committed as PNGs with a
``garbage.jsonl`` manifest (``{"file", "kind", "prompt"}`` per line); rebuild it with::

    python -m nlg.shapes.garbage --out tests/data/shapes_garbage
"""

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..utils.io import atomic_write, atomic_write_json_lines, read_json_lines
from ..utils.types import PathLike
from .data import BACKGROUND, IMAGE_SIZE, PALETTE, ShapeObject, render

__all__ = ["GARBAGE_DIR", "garbage_images", "write_garbage_set", "load_garbage_set", "main"]

#: Where the committed set lives (relative to the repository root).
GARBAGE_DIR = Path("tests") / "data" / "shapes_garbage"

_N = IMAGE_SIZE


def _blank(colour: Tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    image = np.empty((_N, _N, 3), dtype=np.uint8)
    image[...] = colour
    return image


def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(u, v)`` (column, row) of a ``size`` box, relative to its centre."""
    c = np.arange(size, dtype=np.float64) + 0.5 - size / 2
    return np.meshgrid(c, c, indexing="xy")


def _paint(image: np.ndarray, mask: np.ndarray, x: int, y: int, colour: str) -> np.ndarray:
    window = image[y : y + mask.shape[0], x : x + mask.shape[1]]
    window[mask] = PALETTE[colour]
    return image


def _disc(size: int) -> np.ndarray:
    u, v = _grid(size)
    return u**2 + v**2 <= (size / 2) ** 2


def _noise(g: torch.Generator) -> np.ndarray:
    return torch.randint(0, 256, (_N, _N, 3), generator=g, dtype=torch.uint8).numpy()


def _palette_speckle(g: torch.Generator) -> np.ndarray:
    colours = np.array([BACKGROUND] + list(PALETTE.values()), dtype=np.uint8)
    return colours[torch.randint(0, len(colours), (_N, _N), generator=g).numpy()]


def _line(width: int, length: int) -> np.ndarray:
    return np.ones((width, length), dtype=bool)


def _ring(size: int, inner: float) -> np.ndarray:
    u, v = _grid(size)
    r2 = u**2 + v**2
    return (r2 <= (size / 2) ** 2) & (r2 > inner**2)


def _ell(size: int, arm: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[:, :arm] = True
    mask[-arm:, :] = True
    return mask


def _cross(size: int, arm: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    lo = (size - arm) // 2
    mask[lo : lo + arm, :] = True
    mask[:, lo : lo + arm] = True
    return mask


def _two_tone(image: np.ndarray, mask: np.ndarray, x: int, y: int, left: str, right: str) -> np.ndarray:
    half = mask.shape[1] // 2
    _paint(image, mask & (np.arange(mask.shape[1]) < half)[None, :], x, y, left)
    return _paint(image, mask & (np.arange(mask.shape[1]) >= half)[None, :], x, y, right)


def _noisy_blob(g: torch.Generator, size: int) -> np.ndarray:
    """A disc whose radius varies by ±35% with direction and pixel: ragged, with holes and bays."""
    u, v = _grid(size)
    jitter = torch.rand((size, size), generator=g, dtype=torch.float64).numpy()
    return np.sqrt(u**2 + v**2) <= size / 2 * (0.65 + 0.7 * jitter)


def _pacman(size: int) -> np.ndarray:
    u, v = _grid(size)
    return _disc(size) & ~((u > 0) & (v < 0))


def _right_triangle(size: int) -> np.ndarray:
    u, v = _grid(size)
    return u <= v


def _cut(image: np.ndarray, row: int) -> np.ndarray:
    """The image with everything above ``row`` painted white (a triangle loses its top half)."""
    image[:row] = BACKGROUND
    return image


def _recolour(image: np.ndarray, colour: Tuple[int, int, int]) -> np.ndarray:
    """Every non-white pixel painted ``colour`` (a dark or muddy object)."""
    image[(image != BACKGROUND).any(axis=-1)] = colour
    return image


def _on_grey(image: np.ndarray, grey: int = 190) -> np.ndarray:
    """The white background replaced by grey."""
    image[(image == BACKGROUND).all(axis=-1)] = grey
    return image


#: ``kind → (prompt, builder)``; a builder takes a generator and returns a uint8 ``(32, 32, 3)`` image.
_KINDS: Dict[str, Tuple[str, Callable[[torch.Generator], np.ndarray]]] = {
    "uniform_noise": ("a photo of a circle", _noise),
    "palette_speckle": ("a photo of a red circle", _palette_speckle),
    "flat_black": ("a photo of a square", lambda g: _blank((0, 0, 0))),
    "flat_grey": ("a photo of a square", lambda g: _blank((128, 128, 128))),
    "flat_light_grey": ("a photo of a square", lambda g: _blank((215, 215, 215))),
    "flat_cream": ("a photo of a yellow square", lambda g: _blank((245, 232, 180))),
    "thin_line": ("a photo of a red circle", lambda g: _paint(_blank(), _line(1, 20), 6, 15, "red")),
    "thick_line": ("a photo of a green triangle", lambda g: _paint(_blank(), _line(2, 16), 8, 12, "green")),
    "bar": ("a photo of a blue square", lambda g: _paint(_blank(), _line(5, 20), 6, 13, "blue")),
    "vertical_bar": ("a photo of a cyan circle", lambda g: _paint(_blank(), _line(18, 6), 13, 7, "cyan")),
    "ring": ("a photo of a green circle", lambda g: _paint(_blank(), _ring(16, 4.5), 8, 8, "green")),
    "thin_ring": ("a photo of a red circle", lambda g: _paint(_blank(), _ring(14, 5.5), 9, 9, "red")),
    "l_shape": ("a photo of a yellow square", lambda g: _paint(_blank(), _ell(14, 5), 9, 9, "yellow")),
    "two_tone_block": ("a photo of a red square", lambda g: _two_tone(_blank(), np.ones((14, 14), bool), 9, 9,
                                                                      "red", "blue")),
    "two_tone_disc": ("a photo of a blue circle", lambda g: _two_tone(_blank(), _disc(16), 8, 8, "purple", "blue")),
    "two_tone_squares": ("a photo of a green square and a yellow circle", lambda g: _two_tone(
        _blank(), np.ones((10, 20), bool), 6, 11, "green", "yellow")),
    "merged_discs": ("a photo of two circles", lambda g: _paint(_paint(_blank(), _disc(12), 5, 10, "red"), _disc(12), 15, 10,
                                                                "red")),
    "cross": ("a photo of a purple square", lambda g: _paint(_blank(), _cross(15, 5), 8, 8, "purple")),
    "noisy_blob": ("a photo of a cyan circle", lambda g: _paint(_blank(), _noisy_blob(g, 16), 8, 8, "cyan")),
    "half_disc": ("a photo of a circle", lambda g: _paint(_blank(), _disc(16)[8:], 8, 12, "red")),
    "pacman": ("a photo of a yellow circle", lambda g: _paint(_blank(), _pacman(16), 8, 8, "yellow")),
    "cut_square": ("a photo of a triangle", lambda g: _paint(_blank(), _right_triangle(14), 9, 9, "blue")),
    "cut_triangle": ("a photo of a triangle", lambda g: _cut(render([ShapeObject("triangle", "green", 8, 4, 16)]), 12)),
    "dark_object": ("a photo of a red circle", lambda g: _recolour(render([ShapeObject("circle", "red", 8, 8, 16)]),
                                                                  (110, 15, 15))),
    "grey_background": ("a photo of a red circle", lambda g: _on_grey(render([ShapeObject("circle", "red", 9, 9, 14)]))),
}


def garbage_images(seed: int = 0) -> List[Tuple[str, str, np.ndarray]]:
    """The garbage set: ``(kind, prompt, image)`` for each kind, image uint8 ``(32, 32, 3)``.

    Args:
        seed (`int`, defaults to 0): the ``torch.Generator`` seed of the random kinds (one generator per image).
    """
    return [(kind, prompt, build(torch.Generator().manual_seed(seed + i)))
            for i, (kind, (prompt, build)) in enumerate(_KINDS.items())]


def write_garbage_set(out_dir: PathLike = GARBAGE_DIR, seed: int = 0) -> Path:
    """Write the set as ``{kind}.png`` files and ``garbage.jsonl`` in ``out_dir``; returns the manifest path.

    Args:
        out_dir (`str` or `Path`, defaults to :data:`GARBAGE_DIR`): the folder (created if missing).
        seed (`int`, defaults to 0): see :func:`garbage_images`.
    """
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind, prompt, image in garbage_images(seed):
        atomic_write(out / f"{kind}.png", lambda f, image=image: Image.fromarray(image).save(f, format="PNG"))
        rows.append({"file": f"{kind}.png", "kind": kind, "prompt": prompt})
    manifest = out / "garbage.jsonl"
    atomic_write_json_lines(manifest, rows)
    return manifest


def load_garbage_set(directory: PathLike = GARBAGE_DIR) -> List[Tuple[str, str, np.ndarray]]:
    """``(kind, prompt, image)`` for each row of ``directory/garbage.jsonl``."""
    from PIL import Image

    directory = Path(directory)
    rows = [row for _, row in read_json_lines(directory / "garbage.jsonl", "directory")]
    return [(r["kind"], r["prompt"], np.asarray(Image.open(directory / r["file"]).convert("RGB"))) for r in rows]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlg.shapes.garbage", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GARBAGE_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kinds (default: %(default)s)")
    args = parser.parse_args(argv)
    print(write_garbage_set(args.out, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
