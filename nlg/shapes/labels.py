"""Labelling generated shapes images by eye, and the scorer's agreement with those labels.

The workflow (issue 19: ≥ 200 generated images labelled by eye, committed beside the images)::

    python -m nlg.shapes.labels sample --out benchmarks/results/shapes_labels --count 240
    # look at contact_sheet_*.png, fill in "verdict" (and "reason") in labels.jsonl
    python -m nlg.shapes.labels agreement benchmarks/results/shapes_labels/labels.jsonl

**Labels file** (JSON lines, one image per line)::

    {"image": "images/0007.png", "prompt": "a photo of a red circle", "verdict": "correct", "reason": ""}

``image`` is relative to the labels file; ``verdict`` is ``"correct"`` or ``"incorrect"`` (``""`` while
unlabelled: such rows are skipped by :func:`read_labels`); ``reason`` is one of
:data:`nlg.shapes.scorer.FAILURE_REASONS` for an incorrect image, else ``""``; any other key (a ``note``) is kept.

**Agreement** (:func:`agreement`) per task and overall: the confusion counts of the human verdict against the
scorer's, the accuracy (share of agreeing verdicts) and Cohen's κ (Cohen 1960),

.. math::
    \\kappa = \\frac{p_o - p_e}{1 - p_e},\\qquad
    p_e = \\frac{(a + b)(a + c) + (c + d)(b + d)}{n^2},

with ``a`` both correct, ``b`` scorer-only correct, ``c`` human-only correct, ``d`` both incorrect, ``n`` their sum
and ``p_o = (a + d)/n`` (κ is ``nan`` when ``p_e = 1``: both raters gave one verdict to every image).
"""

import argparse
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..utils.io import atomic_write, atomic_write_text
from ..utils.types import PathLike
from .data import TASKS
from .metadata import caption_metadata
from .scorer import FAILURE_REASONS, score_image

__all__ = ["VERDICTS", "contact_sheet", "write_labelling_set", "read_labels", "agreement", "score_labels", "main"]

#: The human verdicts.
VERDICTS = ("correct", "incorrect")


def contact_sheet(images: Sequence[Any], prompts: Sequence[str], path: PathLike, *, columns: int = 8, scale: int = 4,
                  start: int = 0) -> Path:
    """Write a grid PNG of images, each upscaled by ``scale`` (nearest neighbour), its index above and prompt below.

    Args:
        images (`Sequence`): uint8 ``(H, W, 3)`` arrays (or PIL images).
        prompts (`Sequence[str]`): one prompt per image.
        path (`str` or `Path`): the PNG to write.
        columns (`int`, defaults to 8): tiles per row.
        scale (`int`, defaults to 4): upscaling factor.
        start (`int`, defaults to 0): the index shown on the first tile.
    """
    from PIL import Image, ImageDraw, ImageFont

    if len(images) != len(prompts) or len(images) == 0:
        raise ValueError(f"images and prompts must be non-empty and of one length, got {len(images)} and {len(prompts)}")
    if columns < 1 or scale < 1:
        raise ValueError(f"columns and scale must be >= 1, got {columns} and {scale}")
    font = ImageFont.load_default()
    tiles = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
    width = max(t.width for t in tiles) * scale
    height = max(t.height for t in tiles) * scale
    line, pad = 12, 6
    wrapped = [_wrap(p, font, width) for p in prompts]
    text_lines = max(len(w) for w in wrapped)
    cell_w, cell_h = width + pad, line + height + line * text_lines + pad
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * cell_w + pad, rows * cell_h + pad), (200, 200, 200))
    draw = ImageDraw.Draw(sheet)
    for i, (tile, lines) in enumerate(zip(tiles, wrapped)):
        x, y = pad + (i % columns) * cell_w, pad + (i // columns) * cell_h
        draw.text((x, y), f"#{start + i}", fill=(0, 0, 0), font=font)
        sheet.paste(tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST), (x, y + line))
        for k, text in enumerate(lines):
            draw.text((x, y + line + height + k * line), text, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: sheet.save(f, format="PNG"))
    return path


def _wrap(text: str, font: Any, width: int) -> List[str]:
    """Words of ``text`` in lines no wider than ``width`` pixels (a longer word gets its own line)."""
    text = text.replace("a photo of ", "")
    lines: List[str] = []
    for word in text.split():
        if lines and font.getlength(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def write_labelling_set(images: Sequence[Any], prompts: Sequence[str], out_dir: PathLike, *,
                        per_sheet: int = 48) -> Path:
    """Write images, contact sheets and an unlabelled labels file to fill in by eye; returns the labels file.

    Writes ``images/{i:04d}.png``, ``contact_sheet_{k:02d}.png`` (``per_sheet`` images each, numbered as the files)
    and ``labels.jsonl`` with empty ``verdict`` and ``reason``.

    Args:
        images (`Sequence`): uint8 ``(32, 32, 3)`` arrays.
        prompts (`Sequence[str]`): one caption-template prompt per image.
        out_dir (`str` or `Path`): the folder.
        per_sheet (`int`, defaults to 48): images per contact sheet.
    """
    from PIL import Image

    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        caption_metadata(prompt)  # refuse prompts the scorer cannot judge now, not after labelling
        name = f"images/{i:04d}.png"
        atomic_write(out / name, lambda f, image=image: Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG"))
        rows.append({"image": name, "prompt": prompt, "verdict": "", "reason": ""})
    for k, first in enumerate(range(0, len(rows), per_sheet)):
        contact_sheet(images[first : first + per_sheet], prompts[first : first + per_sheet],
                      out / f"contact_sheet_{k:02d}.png", start=first)
    labels = out / "labels.jsonl"
    atomic_write_text(labels, "".join(json.dumps(r) + "\n" for r in rows))
    return labels


def read_labels(path: PathLike) -> List[Dict[str, Any]]:
    """The labelled rows of a labels file (rows with an empty verdict are skipped), validated.

    Raises:
        ValueError: naming the line of a row without ``image``/``prompt``, with an unknown ``verdict``, or with a
            ``reason`` outside :data:`~nlg.shapes.scorer.FAILURE_REASONS` (or a reason on a correct verdict).
    """
    rows = []
    for number, text in enumerate(Path(path).read_text().splitlines(), start=1):
        if not text.strip():
            continue
        row = json.loads(text)
        where = f"{path}:{number}"
        if not isinstance(row.get("image"), str) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{where}: a label needs 'image' and 'prompt' strings, got {row}")
        verdict, reason = row.get("verdict", ""), row.get("reason", "")
        if verdict == "":
            continue
        if verdict not in VERDICTS:
            raise ValueError(f"{where}: verdict must be one of {VERDICTS}, got {verdict!r}")
        if (verdict == "correct" and reason) or (verdict == "incorrect" and reason not in ("",) + FAILURE_REASONS):
            raise ValueError(f"{where}: reason must be '' for a correct image and one of {FAILURE_REASONS} (or '') "
                             f"for an incorrect one, got {reason!r} with verdict {verdict!r}")
        rows.append(row)
    return rows


def agreement(human: Sequence[bool], scorer: Sequence[bool], tasks: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """The scorer's agreement with human verdicts, per task and ``overall`` (formula in the module docstring).

    Args:
        human (`Sequence[bool]`): the human verdicts (True = correct).
        scorer (`Sequence[bool]`): the scorer's verdicts, same order.
        tasks (`Sequence[str]`): the task of each image (GenEval's tags).

    Returns:
        ``{task: {"n", "both_correct", "scorer_only", "human_only", "both_incorrect", "accuracy", "kappa"}}``, tasks
        in :data:`~nlg.shapes.data.TASKS` order, then ``"overall"`` over all images.
    """
    if not len(human) == len(scorer) == len(tasks):
        raise ValueError(f"human, scorer and tasks must have one length, got {len(human)}, {len(scorer)}, {len(tasks)}")
    groups = sorted(set(tasks), key=lambda t: (TASKS.index(t) if t in TASKS else len(TASKS), t))
    result = {}
    for group in groups + ["overall"]:
        pairs = [(bool(h), bool(s)) for h, s, t in zip(human, scorer, tasks) if group in ("overall", t)]
        a = sum(h and s for h, s in pairs)
        b = sum(s and not h for h, s in pairs)
        c = sum(h and not s for h, s in pairs)
        d = sum(not h and not s for h, s in pairs)
        n = a + b + c + d
        observed = (a + d) / n if n else float("nan")
        expected = ((a + b) * (a + c) + (c + d) * (b + d)) / n**2 if n else float("nan")
        kappa = (observed - expected) / (1 - expected) if n and expected < 1 else float("nan")
        result[group] = {"n": n, "both_correct": a, "scorer_only": b, "human_only": c, "both_incorrect": d,
                         "accuracy": observed, "kappa": kappa}
    return result


def score_labels(path: PathLike) -> Dict[str, Any]:
    """Score every labelled image of a labels file and compare with the human verdicts.

    Returns:
        ``{"agreement": agreement(...), "rows": [row + {"scorer_verdict", "scorer_reason", "scorer_detail"}]}``.
    """
    from PIL import Image

    rows = read_labels(path)
    root = Path(path).parent
    scored = []
    for row in rows:
        metadata = caption_metadata(row["prompt"])
        result = score_image(np.asarray(Image.open(root / row["image"]).convert("RGB")), metadata)
        scored.append({**row, "task": metadata["tag"], "scorer_verdict": "correct" if result["correct"] else "incorrect",
                       "scorer_reason": result["reason"], "scorer_detail": result["detail"]})
    table = agreement([r["verdict"] == "correct" for r in scored], [r["scorer_verdict"] == "correct" for r in scored],
                      [r["task"] for r in scored])
    return {"agreement": table, "rows": scored}


def _sample(args: argparse.Namespace) -> int:
    from . import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, load_pipeline
    from .geneval import load_prompts
    from .sampling import SamplingConfig, generate

    prompts = [row["prompt"] for row in load_prompts()]
    chosen = [prompts[i % len(prompts)] for i in range(args.count)]
    seeds = [args.seed + i for i in range(args.count)]
    scale = DEFAULT_GUIDANCE_SCALE if args.guidance_scale is None else args.guidance_scale
    images = generate(load_pipeline(), chosen, seeds, SamplingConfig(scale), num_inference_steps=DEFAULT_INFERENCE_STEPS)
    print(write_labelling_set(images, chosen, args.out))
    return 0


def _agreement(args: argparse.Namespace) -> int:
    table = score_labels(args.labels)["agreement"]
    print("| task | n | accuracy | Cohen's κ | both correct | scorer only | human only | both incorrect |")
    print("|---|---|---|---|---|---|---|---|")
    for task, r in table.items():
        print(f"| {task} | {r['n']} | {r['accuracy']:.3f} | {r['kappa']:.3f} | {r['both_correct']} | "
              f"{r['scorer_only']} | {r['human_only']} | {r['both_incorrect']} |")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlg.shapes.labels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sample = commands.add_parser("sample", help="generate images and write contact sheets and an empty labels file")
    sample.add_argument("--out", type=Path, required=True, help="output folder")
    sample.add_argument("--count", type=int, default=240, help="images (prompts cycled in order; default: %(default)s)")
    sample.add_argument("--seed", type=int, default=8_000_000, help="seed of the first image (default: %(default)s)")
    sample.add_argument("--guidance-scale", type=float, default=None, help="CFG scale (default: the model's default)")
    sample.set_defaults(run=_sample)
    agree = commands.add_parser("agreement", help="the scorer's agreement with a labels file, as a Markdown table")
    agree.add_argument("labels", type=Path, help="the labels.jsonl file")
    agree.set_defaults(run=_agreement)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
