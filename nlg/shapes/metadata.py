"""GenEval metadata of a shapes caption: the ``{"tag", "include", "exclude"?, "prompt"}`` row a scorer judges it by.

The captions of :mod:`nlg.shapes.data` follow GenEval's templates (Ghosh et al. 2023,
https://arxiv.org/abs/2310.11513), so each one has exactly one metadata row, in the form of GenEval's
``evaluation_metadata.jsonl`` (and of :func:`nlg.shapes.geneval.build_prompts`):

* ``a photo of a {s}`` → single_object, ``include [{s, 1}]``;
* ``a photo of a {c} {s}`` → colors, ``include [{s, 1, color c}]``;
* ``a photo of {two|three|four} {s}s`` → counting, ``include [{s, N}]``, ``exclude [{s, N + 1}]`` (exactly N);
* ``a photo of a {s1} and a {s2}`` → two_object, ``include [{s1, 1}, {s2, 1}]``;
* ``a photo of a {s1} {relation} a {s2}`` → position, ``include [{s2, 1}, {s1, 1, position [relation, 0]}]``;
* ``a photo of a {c1} {s1} and a {c2} {s2}`` → color_attr, ``include [{s1, 1, color c1}, {s2, 1, color c2}]``.
"""

from __future__ import annotations

import re
from typing import Any, Dict

from .data import COLOURS, NUMBERS, RELATIONS, SHAPES, Scene, plural

__all__ = ["caption_metadata", "scene_metadata"]

_SHAPE = "|".join(SHAPES)
_COLOUR = "|".join(COLOURS)
_PATTERNS = [
    ("single_object", rf"a photo of a (?P<s1>{_SHAPE})"),
    ("colors", rf"a photo of a (?P<c1>{_COLOUR}) (?P<s1>{_SHAPE})"),
    ("counting", rf"a photo of (?P<n>{'|'.join(NUMBERS.values())}) (?P<s1>{'|'.join(plural(s) for s in SHAPES)})"),
    ("two_object", rf"a photo of a (?P<s1>{_SHAPE}) and a (?P<s2>{_SHAPE})"),
    ("position", rf"a photo of a (?P<s1>{_SHAPE}) (?P<r>{'|'.join(RELATIONS)}) a (?P<s2>{_SHAPE})"),
    ("color_attr", rf"a photo of a (?P<c1>{_COLOUR}) (?P<s1>{_SHAPE}) and a (?P<c2>{_COLOUR}) (?P<s2>{_SHAPE})"),
]


def caption_metadata(caption: str) -> Dict[str, Any]:
    """The GenEval metadata row of a caption written by one of the templates above.

    Args:
        caption (`str`): e.g. ``"a photo of a red circle and a blue square"``.

    Raises:
        ValueError: naming ``caption`` if it matches no template.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    for tag, pattern in _PATTERNS:
        match = re.fullmatch(pattern, caption)
        if match is None:
            continue
        g = match.groupdict()
        if tag == "single_object":
            include = [{"class": g["s1"], "count": 1}]
        elif tag == "colors":
            include = [{"class": g["s1"], "count": 1, "color": g["c1"]}]
        elif tag == "counting":
            n = {word: k for k, word in NUMBERS.items()}[g["n"]]
            shape = g["s1"][:-1]
            return {"tag": tag, "include": [{"class": shape, "count": n}], "exclude": [{"class": shape, "count": n + 1}],
                    "prompt": caption}
        elif tag == "two_object":
            include = [{"class": g["s1"], "count": 1}, {"class": g["s2"], "count": 1}]
        elif tag == "position":
            include = [{"class": g["s2"], "count": 1}, {"class": g["s1"], "count": 1, "position": [g["r"], 0]}]
        else:
            include = [{"class": g["s1"], "count": 1, "color": g["c1"]}, {"class": g["s2"], "count": 1, "color": g["c2"]}]
        return {"tag": tag, "include": include, "prompt": caption}
    raise ValueError(f"caption {caption!r} matches none of the shapes caption templates")


def scene_metadata(scene: Scene) -> Dict[str, Any]:
    """The metadata of a scene's caption (:func:`caption_metadata`), checked against the scene's task."""
    metadata = caption_metadata(scene.caption)
    if metadata["tag"] != scene.task:
        raise ValueError(f"scene: caption {scene.caption!r} is a {metadata['tag']} caption, the scene says {scene.task}")
    return metadata
