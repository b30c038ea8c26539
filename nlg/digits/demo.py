"""``make demo``: the same seeds with and without NLG on the shipped digits model; a table and a grid.

    python -m nlg.digits.demo [--samples-per-class 100] [--guidance-scales 0 1] [--out outputs/digits_demo.png]

For every CFG scale it samples ``samples_per_class`` images of each digit twice from the same initial
noise: once as is, once after NLG refinement (K = 20, the paper's η = 1, τ = 0.5, λ = 0.001), scores
both with :class:`nlg.digits.DigitsEvaluator`, prints the table and writes a side-by-side grid
(rows = digits; one panel per configuration).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from .evaluator import DigitsEvaluator
from .experiment import ConfigResult, DigitsConfig, run_config
from .pipeline import DEFAULT_INFERENCE_STEPS, DigitsPipeline
from .report import metrics_table, reference_lines, save_grid

__all__ = ["run_demo", "main"]

DEFAULT_GRID = Path("outputs") / "digits_demo.png"


def run_demo(
    *,
    guidance_scales: Sequence[float] = (0.0, 1.0),
    refining_steps: int = 20,
    samples_per_class: int = 100,
    seed: int = 0,
    num_inference_steps: int = DEFAULT_INFERENCE_STEPS,
    out: Path = DEFAULT_GRID,
    weights: Optional[Path] = None,
    progress: bool = True,
) -> List[ConfigResult]:
    """Run baseline and NLG for each CFG scale, print the metrics table, write the grid PNG.

    Args:
        guidance_scales (`Sequence[float]`, defaults to (0.0, 1.0)): CFG scales; each runs with and without NLG.
        refining_steps (`int`, defaults to 20): NLG steps K.
        samples_per_class (`int`, defaults to 100): images per digit and configuration (≥ 2).
        seed (`int`, defaults to 0): seed of the per-sample generators, shared by all configurations.
        num_inference_steps (`int`, defaults to 25): DDIM steps.
        out (`Path`, defaults to ``outputs/digits_demo.png``): the grid PNG.
        weights (`Path`, *optional*): a weights folder; defaults to the shipped weights.
        progress (`bool`, defaults to True): progress bars.

    Returns:
        The :class:`nlg.digits.experiment.ConfigResult` of every configuration, baseline first per scale.
    """
    start = time.perf_counter()
    pipe = DigitsPipeline.from_pretrained(weights)
    evaluator = DigitsEvaluator()
    configs = []
    for scale in guidance_scales:
        configs += [DigitsConfig(guidance_scale=scale), DigitsConfig(guidance_scale=scale, refining_steps=refining_steps)]
    results = [
        run_config(
            pipe, evaluator, config, samples_per_class=samples_per_class, seed=seed,
            num_inference_steps=num_inference_steps, progress=progress,
        )
        for config in configs
    ]
    titles = [r.config.name.replace(" + NLG", "\n+ NLG").split(" η=")[0] for r in results]
    grid = save_grid([r.images for r in results], titles, out, samples_per_class=samples_per_class)
    print()
    print(f"{samples_per_class} samples per digit, seed {seed}, DDIM {num_inference_steps} steps, same initial noise in every row.")
    print(metrics_table(results))
    print(reference_lines(evaluator))
    print(f"grid: {grid}   total {time.perf_counter() - start:.0f} s")
    return results


def main(argv: Optional[list] = None) -> None:
    """Command line for :func:`run_demo`."""
    parser = argparse.ArgumentParser(description="NLG vs plain CFG on the shipped digits model.")
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--refining-steps", type=int, default=20)
    parser.add_argument("--samples-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=DEFAULT_INFERENCE_STEPS, help="DDIM steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_GRID)
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: shipped)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: on a shared 2-core machine 2 oversubscribed threads ran the demo ~8x slower)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run_demo(
        guidance_scales=args.guidance_scales, refining_steps=args.refining_steps, samples_per_class=args.samples_per_class,
        seed=args.seed, num_inference_steps=args.steps, out=args.out, weights=args.weights,
    )


if __name__ == "__main__":
    main()
