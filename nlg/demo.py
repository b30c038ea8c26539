"""``make demo``: NLG against plain sampling on both embedded models.

1. :mod:`nlg.digits.demo`: the class-conditional digits model, 1000 scored samples per configuration;
2. :mod:`nlg.shapes.demo`: the shapes text-to-image ``StableDiffusionPipeline``, the same prompts and seeds
   without and with NLG, scored by the mini-GenEval.

Each writes a grid to ``outputs/`` and prints its table.  ``python -m nlg.demo digits`` (or ``shapes``)
runs one of them.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from .digits import demo as digits_demo
from .shapes import demo as shapes_demo

__all__ = ["main"]

DEMOS = {"digits": digits_demo.main, "shapes": shapes_demo.main}


def main(argv: Optional[List[str]] = None) -> None:
    """Run the named demos (default: all, digits first) with their own default options."""
    names = list(sys.argv[1:] if argv is None else argv) or list(DEMOS)
    unknown = [name for name in names if name not in DEMOS]
    if unknown:
        raise SystemExit(f"error: unknown demo {unknown}; choose from {sorted(DEMOS)}")
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        DEMOS[name]([])


if __name__ == "__main__":
    main()
