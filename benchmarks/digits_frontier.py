"""The adherence/quality frontier on the shipped digits model: NLG vs plain classifier-free guidance.

    python -m benchmarks.digits_frontier                 # full sweep -> benchmarks/results/digits_frontier.{csv,png}
    python -m benchmarks.digits_frontier --quick --out-dir /tmp/frontier   # a smoke run

Sweeps CFG scale {0, 0.5, 1, 2, 3} × refining_steps {0, 5, 10, 20} with the paper's η = 1, τ = 0.5,
λ = 0.001, then K = 20 with step_size η ∈ {0.5, 2} and clip_threshold τ ∈ {0.25, 1, none} at CFG
scales 0 and 1.  Every configuration samples 100 images per digit from the same per-sample seeds
(DDIM, 25 steps) and is scored by :class:`nlg.digits.DigitsEvaluator`.  The CSV is rewritten atomically as
each row finishes; the plot shows accuracy vs per-class Fréchet distance, one curve per K.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List

import torch

from nlg.digits import DigitsEvaluator, DigitsPipeline
from nlg.digits.experiment import DigitsConfig, run_config
from nlg.digits.report import plot_frontier

from .common import RESULTS, read_csv, write_csv

SCALES = (0.0, 0.5, 1.0, 2.0, 3.0)
REFINING_STEPS = (0, 5, 10, 20)


def sweep(quick: bool) -> List[DigitsConfig]:
    """The grid, then the step-size and clip-threshold variations."""
    scales, ks = ((0.0, 2.0), (0, 20)) if quick else (SCALES, REFINING_STEPS)
    configs = [DigitsConfig(guidance_scale=s, refining_steps=k) for k in ks for s in scales]
    for scale in (0.0,) if quick else (0.0, 1.0):
        configs += [DigitsConfig(guidance_scale=scale, refining_steps=20, step_size=eta) for eta in (0.5, 2.0)]
        configs += [DigitsConfig(guidance_scale=scale, refining_steps=20, clip_threshold=tau) for tau in (0.25, 1.0, None)]
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 scales × K {0, 20}, 10 samples per digit")
    parser.add_argument("--samples-per-class", type=int, default=None, help="default 100 (10 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as for the published numbers)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: shipped)")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the existing CSV")
    args = parser.parse_args()
    csv_path, png_path = args.out_dir / "digits_frontier.csv", args.out_dir / "digits_frontier.png"
    if args.plot_only:
        plot_frontier(read_csv(csv_path), png_path, reference_fd=DigitsEvaluator().real_reference().fd_per_class)
        print(f"wrote {png_path}")
        return
    torch.set_num_threads(args.threads)
    per_class = args.samples_per_class or (10 if args.quick else 100)

    pipe = DigitsPipeline.from_pretrained(args.weights)
    evaluator = DigitsEvaluator()
    reference = evaluator.real_reference()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    start = time.perf_counter()
    for config in sweep(args.quick):
        result = run_config(pipe, evaluator, config, samples_per_class=per_class, seed=args.seed, num_inference_steps=args.steps)
        row = {k: round(v, 5) if isinstance(v, float) else v for k, v in result.as_row().items()}
        rows.append(row)
        write_csv(csv_path, rows)
        print(
            f"{config.name:40s} acc {100 * row['accuracy']:5.1f}%  FD/class {row['fd_per_class']:6.2f}  "
            f"FD {row['fd_overall']:6.2f}  div {row['diversity_ratio']:.2f}  {row['seconds']:.0f} s  "
            f"{row['unet_evals_per_image']} UNet evals/image",
            flush=True,
        )
    plot_frontier(rows, png_path, reference_fd=reference.fd_per_class)
    print(
        f"real training digits vs held-out: FD/class {reference.fd_per_class:.2f}, FD {reference.fd_overall:.2f}; "
        f"evaluator held-out accuracy {100 * evaluator.heldout_accuracy:.1f}%"
    )
    print(f"wrote {csv_path} and {png_path} in {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
