"""GenEval's rules on detected objects, with a primary failure reason for every wrong image.

GenEval (Ghosh et al. 2023, https://arxiv.org/abs/2310.11513, ``evaluation/evaluate_images.py``) judges an
image from its detections and the prompt's metadata: objects of a class are taken in order of detector confidence
(here: largest first); for each ``include`` entry the first ``count`` objects of the class must exist, have the
``color`` if one is given, and stand in the ``position`` relation (:func:`nlg.shapes.data.relative_position`) to
every object matched by the referenced entry; an ``exclude`` entry fails if ``count`` or more objects of its class
exist (so counting means exactly N).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .data import relative_position

__all__ = ["FAILURE_REASONS", "Detection", "failures", "evaluate"]

#: Primary failure reasons, in order of precedence (``garbage`` is decided by :mod:`nlg.shapes.scorer`).
FAILURE_REASONS: Tuple[str, ...] = (
    "garbage", "empty", "missing object", "wrong count", "extra object", "wrong colour", "wrong relation",
)


@dataclass(frozen=True)
class Detection:
    """One recognised object: class (shape), colour, box ``(x1, y1, x2, y2)`` (x2, y2 exclusive), pixel count."""

    shape: str
    colour: str
    box: Tuple[float, float, float, float]
    area: int


def failures(detections: Sequence[Detection], metadata: Dict[str, Any]) -> List[Tuple[str, str]]:
    """GenEval's decision for one image's objects as a list of ``(reason, detail)``: empty means correct.

    GenEval's rules as in the module docstring.  Reasons: ``empty`` (no object), ``missing object`` (none of a
    requested class), ``wrong count`` (some but not the number asked), ``extra object`` (the colour or relation holds
    for an object that a larger one of the class displaces), ``wrong colour``, ``wrong relation``.
    """
    if not detections:
        return [("empty", "no object")]
    by_class: Dict[str, List[Detection]] = {}
    for d in sorted(detections, key=lambda d: (-d.area, d.box)):
        by_class.setdefault(d.shape, []).append(d)
    found_reasons: List[Tuple[str, str]] = []
    groups: List[Optional[List[Detection]]] = []
    for req in metadata.get("include", []):
        cls, count = req["class"], req["count"]
        objects = by_class.get(cls, [])
        found = objects[:count]
        if len(found) < count:
            reason = "missing object" if not objects else "wrong count"
            found_reasons.append((reason, f"expected {count} {cls}, found {len(objects)}"))
            groups.append(None)
            continue
        ok = True
        if "color" in req and any(d.colour != req["color"] for d in found):
            ok = False
            displaced = any(d.colour == req["color"] for d in objects[count:])
            found_reasons.append(("extra object" if displaced else "wrong colour",
                                  f"expected {req['color']} {cls}, found {[d.colour for d in found]}"))
        if "position" in req and ok:
            relation, target = req["position"]
            if groups[target] is None:
                ok = False  # the target's own failure is already recorded
            elif any(relation not in relative_position(a.box, b.box) for a in found for b in groups[target]):
                ok = False
                targets = by_class.get(metadata["include"][target]["class"], [])
                elsewhere = any(relation in relative_position(a.box, b.box) for a in objects for b in targets)
                found_reasons.append(("extra object" if elsewhere else "wrong relation", f"expected {cls} {relation} "
                                      f"{metadata['include'][target]['class']}"))
        groups.append(found if ok else None)
    for req in metadata.get("exclude", []):
        n = len(by_class.get(req["class"], []))
        if n >= req["count"]:
            found_reasons.append(("wrong count", f"expected fewer than {req['count']} {req['class']}, found {n}"))
    return found_reasons


def evaluate(detections: Sequence[Detection], metadata: Dict[str, Any]) -> Tuple[bool, str]:
    """``(correct, reason)``: GenEval's decision and its primary reason (:data:`~nlg.shapes.rules.FAILURE_REASONS`; ``""`` if correct)."""
    found = failures(detections, metadata)
    return not found, min((r for r, _ in found), key=FAILURE_REASONS.index, default="")
