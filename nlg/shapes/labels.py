"""Labelling generated shapes images by eye, and the scorer's agreement with those labels.

The workflow (issue 19: ≥ 200 generated images labelled by eye, committed beside the images)::

    python -m nlg.shapes.labels sample --out benchmarks/results/shapes_labels --per-task 40 \
        --guidance-scales 1 3 5 --nlg-budgets 4 --seed 7000000 --steps 20 \
        --prompts benchmarks/results/shapes_labels/prompts.jsonl --pipeline PIPELINE_FOLDER
    # look at contact_sheet_*.png, fill in "verdict" (and "reason") in labels.jsonl, blind to the scorer
    python -m nlg.shapes.labels agreement benchmarks/results/shapes_labels/labels.jsonl \
        --out benchmarks/results/shapes_labels/agreement.md

**Labels file** (JSON lines, one image per line)::

    {"image": "images/0007.png", "prompt": "a photo of a red circle", "verdict": "correct", "reason": ""}

``image`` is relative to the labels file; ``verdict`` is ``"correct"`` or ``"incorrect"`` (``""`` while
unlabelled: such rows are skipped by :func:`read_labels`); ``reason`` is one of
:data:`nlg.shapes.scorer.FAILURE_REASONS` for an incorrect image, else ``""``; any other key (a ``note``) is kept.

**Agreement** (:func:`agreement`) per task, per sampling condition (CFG scale, or CFG 1 + NLG) and overall: the confusion counts of the human verdict against the
scorer's, the accuracy (share of agreeing verdicts) and Cohen's κ (Cohen 1960),

.. math::
    \\kappa = \\frac{p_o - p_e}{1 - p_e},\\qquad
    p_e = \\frac{(a + b)(a + c) + (c + d)(b + d)}{n^2},

with ``a`` both correct, ``b`` scorer-only correct, ``c`` human-only correct, ``d`` both incorrect, ``n`` their sum
and ``p_o = (a + d)/n`` (κ is ``nan`` when ``p_e = 1``: both raters gave one verdict to every image).
"""

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..utils.io import atomic_write, atomic_write_json_lines, atomic_write_text, read_json_lines
from ..utils.types import PathLike
from .data import TASKS
from .metadata import caption_metadata
from .scorer import FAILURE_REASONS, score_image

__all__ = ["VERDICTS", "contact_sheet", "labelling_plan", "write_labelling_set", "sample_labelling_set", "read_labels",
           "agreement", "score_labels", "agreement_report", "main"]

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


def labelling_plan(per_task: int, guidance_scales: Sequence[float], seed: int,
                   prompts_path: Optional[PathLike] = None, nlg_budgets: Sequence[int] = ()) -> List[Dict[str, Any]]:
    """What to sample for labelling: ``per_task`` images of each task, as ``{"prompt", "task", "condition",
    "guidance_scale", "seed"}`` (plus ``"refining_steps"`` and ``"step_size"`` for an NLG image).

    The conditions are the CFG scales, then for each budget ``K`` CFG 1 + ``NoiseLevelGuidance.for_budget(K)``
    (``K`` steps of size ``η = 20 / K``); ``"condition"`` is its :attr:`~nlg.shapes.sampling.SamplingConfig.name`.
    Tasks in :data:`~nlg.shapes.data.TASKS` order; the ``j``-th image of a task has the task's ``j mod P``-th
    distinct mini-GenEval prompt (:func:`nlg.shapes.geneval.load_prompts`, ``P`` of them, in file order) and the
    condition ``conditions[j·C // per_task]`` (``C`` conditions: consecutive equal blocks, so every condition gets
    ``per_task / C`` images of each task, ± 1); image ``i`` of the whole plan has the generator seed ``seed + i``.

    Args:
        per_task (`int`): images per task (≥ 1).
        guidance_scales (`Sequence[float]`): the CFG scales to spread them over (non-empty).
        seed (`int`): seed of the first image; pick one disjoint from evaluation and training seeds.
        prompts_path (`str` or `Path`, *optional*): an ``evaluation_metadata.jsonl``; defaults to
            :data:`nlg.shapes.geneval.PROMPTS_PATH`.
        nlg_budgets (`Sequence[int]`, defaults to ``()``): NLG budgets ``K`` ≥ 1, each one more condition at CFG 1.
    """
    from .geneval import PROMPTS_PATH, load_prompts
    from .sampling import SamplingConfig

    if per_task < 1 or not guidance_scales:
        raise ValueError(f"per_task must be >= 1 and guidance_scales non-empty, got {per_task} and {guidance_scales}")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in nlg_budgets):
        raise ValueError(f"nlg_budgets must hold integers >= 1, got {list(nlg_budgets)}")
    conditions = [SamplingConfig(float(s)) for s in guidance_scales]
    conditions += [SamplingConfig.for_budget(budget) for budget in nlg_budgets]
    plan: List[Dict[str, Any]] = []
    for task in TASKS:
        rows = load_prompts(PROMPTS_PATH if prompts_path is None else prompts_path, tasks=[task])
        prompts = list(dict.fromkeys(row["prompt"] for row in rows))
        for j in range(per_task):
            config = conditions[j * len(conditions) // per_task]
            nlg_keys = {"refining_steps": config.refining_steps, "step_size": config.step_size} if config.refining_steps else {}
            plan.append({"prompt": prompts[j % len(prompts)], "task": task, "condition": config.name,
                         "guidance_scale": config.guidance_scale, **nlg_keys, "seed": seed + len(plan)})
    return plan


def _config(row: Dict[str, Any]) -> Any:
    """The :class:`~nlg.shapes.sampling.SamplingConfig` of a plan row (NLG keys absent: plain sampling)."""
    from .sampling import SamplingConfig

    return SamplingConfig(float(row["guidance_scale"]), int(row.get("refining_steps", 0)), float(row.get("step_size", 1.0)))


def sample_labelling_set(pipe: Any, plan: Sequence[Dict[str, Any]], out_dir: PathLike, *, num_inference_steps: int,
                         per_sheet: int = 40) -> Path:
    """Generate the images of a :func:`labelling_plan` and write them with :func:`write_labelling_set`.

    Image ``i`` is :func:`nlg.shapes.sampling.generate` of ``plan[i]["prompt"]`` from
    ``torch.Generator().manual_seed(plan[i]["seed"])`` with ``SamplingConfig(guidance_scale, refining_steps,
    step_size)`` of its row (no NLG keys: plain sampling) and the pipeline's own scheduler, so it depends on its own
    seed and condition only; its condition, scale, NLG settings, seed and steps are kept in its row of the labels file.

    Args:
        pipe (`StableDiffusionPipeline`): e.g. ``nlg.shapes.load_pipeline(path)``.
        plan (`Sequence[dict]`): from :func:`labelling_plan`.
        out_dir (`str` or `Path`): the folder.
        num_inference_steps (`int`): sampler steps.
        per_sheet (`int`, defaults to 40): images per contact sheet.
    """
    from .sampling import generate

    _refuse_labelled(out_dir)  # before the sampling, not after it
    images: List[Any] = [None] * len(plan)
    configs = [_config(row) for row in plan]
    for config in dict.fromkeys(configs):
        where = [i for i, c in enumerate(configs) if c == config]
        batch = generate(pipe, [plan[i]["prompt"] for i in where], [plan[i]["seed"] for i in where], config,
                         num_inference_steps=num_inference_steps)
        for i, image in zip(where, batch):
            images[i] = image
    keep = ("condition", "guidance_scale", "refining_steps", "step_size", "seed")
    extra = [{**{k: row[k] for k in keep if k in row}, "steps": num_inference_steps} for row in plan]
    return write_labelling_set(images, [row["prompt"] for row in plan], out_dir, per_sheet=per_sheet, extra=extra)


def _refuse_labelled(out_dir: PathLike) -> None:
    """Raise a ValueError naming ``out_dir`` if its ``labels.jsonl`` holds any labelling (a ``verdict``, ``reason``
    or ``note`` that is not empty) or cannot be read: labels by eye are never overwritten."""
    labels = Path(out_dir) / "labels.jsonl"
    if not labels.is_file():
        return
    for number, row in read_json_lines(labels, "out_dir"):  # an unreadable labels file is refused too
        if any(row.get(key) not in (None, "") for key in ("verdict", "reason", "note")):
            raise ValueError(f"out_dir {str(out_dir)!r} already holds labels ({labels} line {number}); choose another "
                             "folder or move that one away")


def write_labelling_set(images: Sequence[Any], prompts: Sequence[str], out_dir: PathLike, *,
                        per_sheet: int = 48, extra: Optional[Sequence[Dict[str, Any]]] = None) -> Path:
    """Write images, contact sheets and an unlabelled labels file to fill in by eye; returns the labels file.

    Writes ``images/{i:04d}.png``, ``contact_sheet_{k:02d}.png`` (``per_sheet`` images each, numbered as the files)
    and ``labels.jsonl`` with empty ``verdict`` and ``reason``.  A folder whose ``labels.jsonl`` already holds any
    labelling (a ``verdict``, ``reason`` or ``note``), or cannot be read, is refused (``ValueError``) and left as it is.

    Args:
        images (`Sequence`): uint8 ``(32, 32, 3)`` arrays.
        prompts (`Sequence[str]`): one caption-template prompt per image.
        out_dir (`str` or `Path`): the folder.
        per_sheet (`int`, defaults to 48): images per contact sheet.
        extra (`Sequence[dict]`, *optional*): more keys for each image's row (e.g. its seed and CFG scale).
    """
    from PIL import Image

    _refuse_labelled(out_dir)
    if len(images) != len(prompts) or (extra is not None and len(extra) != len(images)):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts and "
                         f"{'no' if extra is None else len(extra)} extra rows")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        caption_metadata(prompt)  # refuse prompts the scorer cannot judge now, not after labelling
        name = f"images/{i:04d}.png"
        atomic_write(out / name, lambda f, image=image: Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG"))
        rows.append({"image": name, "prompt": prompt, **({} if extra is None else extra[i]), "verdict": "", "reason": ""})
    for k, first in enumerate(range(0, len(rows), per_sheet)):
        contact_sheet(images[first : first + per_sheet], prompts[first : first + per_sheet],
                      out / f"contact_sheet_{k:02d}.png", start=first)
    labels = out / "labels.jsonl"
    atomic_write_json_lines(labels, rows)
    return labels


def read_labels(path: PathLike) -> List[Dict[str, Any]]:
    """The labelled rows of a labels file (rows with an empty verdict are skipped), validated.

    Raises:
        ValueError: naming the line of a row that is not a JSON object, without ``image``/``prompt``, with an
            unknown ``verdict``, or with a ``reason`` outside :data:`~nlg.shapes.scorer.FAILURE_REASONS` (or a reason
            on a correct verdict).
    """
    rows = []
    for number, row in read_json_lines(path, "labels"):
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
        tasks (`Sequence[str]`): the group of each image: its task (GenEval's tag) or any other, e.g. its condition.

    Returns:
        ``{group: {"n", "both_correct", "scorer_only", "human_only", "both_incorrect", "accuracy", "kappa"}}``, tasks
        in :data:`~nlg.shapes.data.TASKS` order and other groups in order of first appearance, then ``"overall"``
        over all images.
    """
    if not len(human) == len(scorer) == len(tasks):
        raise ValueError(f"human, scorer and tasks must have one length, got {len(human)}, {len(scorer)}, {len(tasks)}")
    groups = [t for t in TASKS if t in tasks] + [t for t in dict.fromkeys(tasks) if t not in TASKS]
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
        ``{"agreement": agreement(...) per task, "by_condition": agreement(...) per condition,
        "rows": [row + {"task", "scorer_verdict", "scorer_reason", "scorer_detail"}]}``; a row's condition is its
        ``"condition"`` key, else ``"CFG {guidance_scale}"``, else ``"unknown"``.
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
    human = [r["verdict"] == "correct" for r in scored]
    scorer = [r["scorer_verdict"] == "correct" for r in scored]
    conditions = [r.get("condition") or (_config(r).name if "guidance_scale" in r else "unknown") for r in scored]
    return {"agreement": agreement(human, scorer, [r["task"] for r in scored]),
            "by_condition": agreement(human, scorer, conditions), "rows": scored}


def _sample(args: argparse.Namespace) -> int:
    from . import DEFAULT_INFERENCE_STEPS, load_pipeline

    plan = labelling_plan(args.per_task, args.guidance_scales, args.seed, args.prompts, args.nlg_budgets)
    _refuse_labelled(args.out)  # before loading the model
    steps = DEFAULT_INFERENCE_STEPS if args.steps is None else args.steps
    print(sample_labelling_set(load_pipeline(args.pipeline), plan, args.out, num_inference_steps=steps,
                               per_sheet=args.per_sheet))
    return 0


def agreement_report(path: PathLike, command: str = "") -> str:
    """The Markdown report of :func:`score_labels`: agreement per task and per condition, then every disagreement.

    Args:
        path (`str` or `Path`): the labels file.
        command (`str`, defaults to ``""``): the command line that made the report, shown at its top.
    """
    from ..utils.tables import markdown_table

    result = score_labels(path)
    columns = ["accuracy", "Cohen's κ", "both correct", "scorer only", "human only", "both incorrect"]

    def table(first: str, groups: Dict[str, Dict[str, float]]) -> str:
        rows = [[g, r["n"], f"{r['accuracy']:.3f}", f"{r['kappa']:.3f}", r["both_correct"], r["scorer_only"],
                 r["human_only"], r["both_incorrect"]] for g, r in groups.items()]
        return markdown_table([first, "n"] + columns, rows, align=["left"] + ["right"] * (len(columns) + 1))

    differ = [[r["image"], r["prompt"], r.get("condition", ""), " ".join([r["verdict"], r.get("reason", "")]).strip(),
               " ".join([r["scorer_verdict"], r["scorer_reason"] or ""]).strip(), r.get("note", "")]
              for r in result["rows"] if r["verdict"] != r["scorer_verdict"]]
    parts = ["# The scorer against labels by eye", "", f"`{command}`" if command else "", "",
             "## Per task", "", table("task", result["agreement"]), "",
             "## Per condition", "", table("condition", result["by_condition"]), "",
             f"## Disagreements ({len(differ)})", "",
             markdown_table(["image", "prompt", "condition", "human", "scorer", "note"], differ) if differ else "None."]
    return "\n".join(parts) + "\n"


def _agreement(args: argparse.Namespace) -> int:
    text = agreement_report(args.labels, args.command_line)
    print(text, end="")
    if args.out is not None:
        atomic_write_text(args.out, text)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlg.shapes.labels", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sample = commands.add_parser("sample", help="generate images and write contact sheets and an empty labels file")
    sample.add_argument("--out", type=Path, required=True, help="output folder")
    sample.add_argument("--per-task", type=int, default=40, help="images per task (default: %(default)s)")
    sample.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, 3.0, 5.0, 8.0],
                        help="CFG scales, spread evenly over each task's images (default: %(default)s)")
    sample.add_argument("--nlg-budgets", type=int, nargs="*", default=[], help="NLG budgets K: one more condition "
                        "each, CFG 1 + NoiseLevelGuidance.for_budget(K) (default: none)")
    sample.add_argument("--seed", type=int, default=7_000_000, help="generator seed of the first image, +1 per image "
                        "(default: %(default)s; evaluation uses 10^7+ and training scenes 10^6…10^6+40000)")
    sample.add_argument("--prompts", type=Path, default=None, help="evaluation_metadata.jsonl (default: the shipped one)")
    sample.add_argument("--pipeline", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    sample.add_argument("--steps", type=int, default=None, help="sampler steps (default: DEFAULT_INFERENCE_STEPS)")
    sample.add_argument("--per-sheet", type=int, default=40, help="images per contact sheet (default: %(default)s)")
    sample.set_defaults(run=_sample)
    agree = commands.add_parser("agreement", help="the scorer's agreement with a labels file per task and per "
                                "condition, and its disagreements, as Markdown")
    agree.add_argument("labels", type=Path, help="the labels.jsonl file")
    agree.add_argument("--out", type=Path, default=None, help="also write the report to this Markdown file")
    agree.set_defaults(run=_agreement)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["python", "-m", "nlg.shapes.labels", *argv])
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
