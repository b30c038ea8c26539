"""A mini-GenEval for the shapes model: GenEval's six tasks, its prompt format, and its scoring.

GenEval (Ghosh et al. 2023, https://arxiv.org/abs/2310.11513) scores text-to-image prompt adherence
with an object detector.  Here the "detector" is geometry, no neural network: the scorer lives in
:mod:`nlg.shapes.scorer` (re-exported here: :func:`score_image`, :func:`detect_objects`, :func:`evaluate`,
:func:`assign_pixels`, :func:`classify_shape`, :class:`Detection`) and the metadata of a caption in
:mod:`nlg.shapes.metadata` (:func:`caption_metadata`, :func:`scene_metadata`).  Overall accuracy is the mean
of the six task accuracies, as in GenEval (:func:`task_accuracies`).

The prompt set (:func:`build_prompts`: 553 prompts in GenEval's task proportions, drawn as GenEval's
``create_prompts.py`` draws them) is stored in GenEval's ``evaluation_metadata.jsonl`` form in
:data:`PROMPTS_PATH`.
"""

from __future__ import annotations

import copy
from itertools import permutations
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch

from ..utils.io import atomic_write_json_lines, read_json_lines
from .data import COLOURS, NUMBERS, RELATIONS, SHAPES, TASKS, plural
from .metadata import caption_metadata, scene_metadata
from .scorer import (
    MIN_AREA,
    OFF_PALETTE_DISTANCE,
    Detection,
    assign_pixels,
    classify_shape,
    detect_objects,
    evaluate,
    score_image,
)

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
    "caption_metadata",
    "scene_metadata",
]

#: The mini-GenEval prompts, one JSON object per line.
PROMPTS_PATH = Path(__file__).resolve().parent / "evaluation_metadata.jsonl"


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
    atomic_write_json_lines(path, prompts)
    return path


def load_prompts(path: Union[str, Path] = PROMPTS_PATH, tasks: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Read an ``evaluation_metadata.jsonl`` file, optionally keeping only some tasks."""
    if tasks is not None:
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"tasks must be among {TASKS}, got {sorted(unknown)}")
    rows = [row for _, row in read_json_lines(path, "path")]
    return [r for r in rows if tasks is None or r["tag"] in tasks]


def task_accuracies(tags: Iterable[str], correct: Iterable[bool]) -> Dict[str, float]:
    """Accuracy per task and ``overall`` = mean of the task accuracies (GenEval's overall score)."""
    totals: Dict[str, List[int]] = {}
    for tag, ok in zip(tags, correct):
        totals.setdefault(tag, []).append(int(bool(ok)))
    result = {t: sum(v) / len(v) for t, v in sorted(totals.items(), key=lambda kv: TASKS.index(kv[0]))}
    result["overall"] = sum(result.values()) / len(result) if result else float("nan")
    return result
