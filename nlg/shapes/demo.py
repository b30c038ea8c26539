"""``make demo`` for the shapes model: the same prompts and seeds without and with NLG, a grid and a small table.

    python -m nlg.shapes.demo [--out outputs/shapes_demo.png] [--images-per-prompt 2]

Two prompts per GenEval task, ``images_per_prompt`` seeds each, sampled with DDIM 20 steps at CFG 1 (no
guidance) and at the default :data:`nlg.shapes.DEFAULT_GUIDANCE_SCALE` (2, chosen on development seeds), each
once plainly and once after NLG (``NoiseLevelGuidance.for_budget(4)``: K = 4, η = 5, τ = 0.5, λ = 0.001) from the
same initial noise.  Prints the per-task accuracy of every arm on these few images (the protocol with intervals,
controls and paired tests is ``benchmarks/shapes_protocol.py``) and writes the grid: one row per prompt, one
panel per arm.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, load_pipeline
from .data import TASKS
from .geneval import load_prompts, task_accuracies
from ..utils.io import atomic_save_figure
from ..utils.tables import markdown_table
from .sampling import SamplingConfig, generate, prompt_image_seed, score_batch

__all__ = ["run_demo", "main", "DEFAULT_GRID"]

DEFAULT_GRID = Path("outputs") / "shapes_demo.png"


def _save_grid(images: Dict[str, np.ndarray], prompts: Sequence[str], marks: Dict[str, List[bool]],
               per_prompt: int, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(images)
    rows, cols = len(prompts), len(arms) * per_prompt
    fig, axes = plt.subplots(rows, cols, figsize=(1.15 * cols + 3.2, 1.15 * rows + 0.5), squeeze=False)
    for r, prompt in enumerate(prompts):
        for c in range(cols):
            arm, j = arms[c // per_prompt], c % per_prompt
            image = images[arm][r * per_prompt + j]
            ok = marks[arm][r * per_prompt + j]
            ax = axes[r][c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor("#2a2" if ok else "#c22")
                spine.set_linewidth(2.5)
            if r == 0 and j == 0:
                ax.set_title(arm, fontsize=8, loc="left")
        axes[r][0].set_ylabel(prompt.replace("a photo of ", ""), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("same seeds in every panel; green frame = correct by the shapes scorer",
                 fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_figure(fig, out, dpi=100)
    plt.close(fig)
    return out


def run_demo(
    *,
    images_per_prompt: int = 2,
    prompts_per_task: int = 2,
    guidance_scales: Sequence[float] = (1.0, DEFAULT_GUIDANCE_SCALE),
    refining_steps: int = 4,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    seed: int = 0,
    out: Path = DEFAULT_GRID,
    weights: Optional[Path] = None,
) -> Dict[str, Dict[str, float]]:
    """Sample plain and with NLG, print the table, write the grid; returns the per-task accuracies of both.

    Args:
        images_per_prompt (`int`, defaults to 2): seeds per prompt.
        prompts_per_task (`int`, defaults to 2): prompts taken (in file order, spread over the task) per task.
        guidance_scales (`Sequence[float]`, defaults to ``(1.0, DEFAULT_GUIDANCE_SCALE)``): CFG scales, each sampled
            plainly and with NLG.
        refining_steps (`int`, defaults to 4): NLG steps K, at the path length K·η = 20 (``for_budget``).
        num_inference_steps (`int`, defaults to 20): DDIM steps.
        seed (`int`, defaults to 0): seed of the per-image generators.
        out (`Path`, defaults to ``outputs/shapes_demo.png``): the grid PNG.
        weights (`Path`, *optional*): a pipeline folder; defaults to the shipped one.
    """
    start = time.perf_counter()
    pipe = load_pipeline(weights)
    chosen = []
    for task in TASKS:
        rows = [p for p in load_prompts() if p["tag"] == task]
        step = max(1, len(rows) // prompts_per_task)
        chosen += rows[::step][:prompts_per_task]
    texts = [p["prompt"] for p in chosen for _ in range(images_per_prompt)]
    meta = [p for p in chosen for _ in range(images_per_prompt)]
    seeds = [prompt_image_seed(seed, i, j) for i in range(len(chosen)) for j in range(images_per_prompt)]
    configs = {}
    for scale in guidance_scales:
        configs[f"CFG {scale:g}"] = SamplingConfig(scale)
        configs[f"CFG {scale:g} + NLG K={refining_steps}"] = SamplingConfig(scale, refining_steps, 20.0 / refining_steps)
    images, marks, accuracy = {}, {}, {}
    tags = [m["tag"] for m in meta]
    for arm, config in configs.items():
        images[arm] = generate(pipe, texts, seeds, config, num_inference_steps=num_inference_steps)
        marks[arm] = [s["correct"] for s in score_batch(images[arm], meta)]
        accuracy[arm] = task_accuracies(tags, marks[arm])
    grid = _save_grid(images, [p["prompt"] for p in chosen], marks, images_per_prompt, out)
    print(f"\nshapes model, {len(chosen)} prompts × {images_per_prompt} seeds, DDIM {num_inference_steps} steps, "
          f"same initial noise in every arm (a small sample: benchmarks/results/shapes_protocol_test.md has intervals)")
    print(markdown_table(["task"] + list(configs),
                         [[task] + [f"{100 * accuracy[arm][task]:.0f}%" for arm in configs]
                          for task in [t for t in TASKS if t in accuracy[next(iter(configs))]] + ["overall"]]))
    print(f"grid: {grid}   total {time.perf_counter() - start:.0f} s")
    return accuracy


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line for :func:`run_demo`."""
    parser = argparse.ArgumentParser(description="NLG vs plain sampling on the shipped shapes model.")
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--prompts-per-task", type=int, default=2)
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, DEFAULT_GUIDANCE_SCALE])
    parser.add_argument("--refining-steps", type=int, default=4)
    parser.add_argument("--steps", type=int, default=DEFAULT_INFERENCE_STEPS, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_GRID)
    parser.add_argument("--weights", type=Path, default=None, help="pipeline folder (default: shipped)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, robust on a shared CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run_demo(
        images_per_prompt=args.images_per_prompt, prompts_per_task=args.prompts_per_task,
        guidance_scales=args.guidance_scales, refining_steps=args.refining_steps, num_inference_steps=args.steps,
        seed=args.seed, out=args.out, weights=args.weights,
    )


if __name__ == "__main__":
    main()
