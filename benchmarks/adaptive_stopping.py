"""Adaptive stopping on the digits model: UNet evaluations saved vs fixed K = 20 at equal accuracy and Fréchet distance.

    python -m benchmarks.adaptive_stopping            # 100 samples per digit, CFG scales 0 and 1 (~40 min on a busy 2-core machine)
    python -m benchmarks.adaptive_stopping --quick    # 10 per digit, two tolerances

For every CFG scale it samples the same 100 initial noises per digit under: no NLG; NLG with fixed
K ∈ {10, 20} (paper options η = 1, τ = 0.5, λ = 0.001); and NLG with K ≤ 20 and adaptive stopping
(``stop_tolerance`` × ``stop_window``).  The K = 20 row is repeated with another seed, which shows
how much the metrics move by chance alone.  "evals" counts batched CFG evaluations of the refinement
per image (each is one UNet pass on the pair [n, n]); sampling adds 25 DDIM steps on top.
Results: ``benchmarks/results/adaptive_stopping.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, Optional

import torch

from nlg import refine_noise
from nlg.digits import DigitsEvaluator, per_sample_generators
from nlg.digits.experiment import requested_labels

from .beyond_common import command, cfg_digits_direction, load_pipe, write_results

MAX_STEPS = 20


def run(pipe: Any, evaluator: DigitsEvaluator, labels: torch.Tensor, *, scale: float, steps: int, seed: int,
        tolerance: Optional[float] = None, window: int = 3, chunk: int = 250) -> Dict[str, Any]:
    images, evaluations, norms, refine_seconds = [], [], [], 0.0
    for start in range(0, len(labels), chunk):
        part = labels[start : start + chunk]
        gens = per_sample_generators(seed, len(part), start=start)
        latents = pipe.prepare_latents(len(part), gens)
        begin = time.perf_counter()
        if steps > 0:
            out = refine_noise(latents, cfg_digits_direction(pipe, part), refining_steps=steps, generator=gens,
                               stop_tolerance=tolerance, stop_window=window)
            latents = out.latents
            evaluations.append(out.evaluations)
            norms.append(out.step_norms)
        else:
            evaluations.append(torch.zeros(len(part), dtype=torch.long))
        refine_seconds += time.perf_counter() - begin
        images.append(pipe(part, latents=latents, generator=gens, guidance_scale=scale, progress=False).images)
    metrics = evaluator.evaluate(torch.cat(images), labels)
    evals = torch.cat(evaluations).float()
    return dict(
        cfg_scale=scale, seed=seed, max_steps=steps, stop_tolerance="-" if tolerance is None else tolerance,
        stop_window="-" if tolerance is None else window, mean_evals=float(evals.mean()),
        min_evals=int(evals.min()), max_evals=int(evals.max()), accuracy=metrics.accuracy,
        mean_p_class=metrics.mean_p_class, fd_per_class=metrics.fd_per_class, fd_overall=metrics.fd_overall,
        refine_seconds=refine_seconds, **_norm_profile(norms),
    )


def _norm_profile(norms: list) -> Dict[str, Any]:
    """Median ‖d‖ at the first and last step and median relative change of ‖d‖ per step (fixed-K runs)."""
    if not norms or torch.cat(norms, dim=1).isnan().any():
        return {}
    n = torch.cat(norms, dim=1)
    change = ((n[1:] - n[:-1]).abs() / n[:-1]).median().item() if len(n) > 1 else float("nan")
    return dict(d_norm_first=n[0].median().item(), d_norm_last=n[-1].median().item(), d_norm_rel_change=change)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 samples per digit, tolerances 0.005 and 0.05, window 2")
    parser.add_argument("--samples-per-class", type=int, default=None, help="default 100 (10 with --quick)")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0], help="CFG scales during sampling")
    parser.add_argument("--tolerances", type=float, nargs="+", default=None, help="default 0.002 0.005 0.01")
    parser.add_argument("--windows", type=int, nargs="+", default=None, help="default 2 3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None, help="digits weights folder (default: the shipped ones)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    per_class = args.samples_per_class or (10 if args.quick else 100)
    tolerances = args.tolerances or ([0.005, 0.05] if args.quick else [0.002, 0.005, 0.01])
    windows = args.windows or ([2] if args.quick else [2, 3])

    pipe, evaluator, labels = load_pipe(args.weights), DigitsEvaluator(), requested_labels(per_class)
    rows = []
    for scale in args.scales:
        base = run(pipe, evaluator, labels, scale=scale, steps=MAX_STEPS, seed=args.seed)
        group = [run(pipe, evaluator, labels, scale=scale, steps=k, seed=args.seed) for k in (0, 10)]
        group.append(base)
        group.append(run(pipe, evaluator, labels, scale=scale, steps=MAX_STEPS, seed=args.seed + 1))
        group += [run(pipe, evaluator, labels, scale=scale, steps=MAX_STEPS, seed=args.seed, tolerance=tol, window=w)
                  for w in windows for tol in tolerances]
        for row in group:
            row["saved_vs_K20"] = 1.0 - row["mean_evals"] / MAX_STEPS
            same_seed = row["seed"] == args.seed
            row["no_worse_than_K20"] = "yes" if same_seed and row["accuracy"] >= base["accuracy"] and \
                row["fd_per_class"] <= base["fd_per_class"] and row["fd_overall"] <= base["fd_overall"] else "no"
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        rows += group
    notes = [
        f"{command()}: {per_class} samples per digit, "
        f"seed {args.seed}, DDIM 25 steps, NLG η = 1, τ = 0.5, λ = 0.001, K ≤ {MAX_STEPS}.",
        "`mean_evals`: batched CFG evaluations of the refinement per image; `saved_vs_K20` = 1 − mean_evals / 20. "
        "`no_worse_than_K20`: accuracy ≥ and both Fréchet distances ≤ the fixed K = 20 row of the same seed. "
        "The row with seed +1 repeats K = 20 with other noise: the spread the metrics have by chance. "
        "`d_norm_*` (fixed-K rows): median ‖d‖ at the first and last step and median relative change of ‖d‖ per step, "
        "the quantity adaptive stopping thresholds.",
    ]
    columns = ["cfg_scale", "seed", "max_steps", "stop_tolerance", "stop_window", "mean_evals", "saved_vs_K20",
               "accuracy", "fd_per_class", "fd_overall", "refine_seconds", "no_worse_than_K20", "d_norm_first",
               "d_norm_last", "d_norm_rel_change"]
    print(f"wrote {write_results('adaptive_stopping', rows, notes, columns)}")


if __name__ == "__main__":
    main()
