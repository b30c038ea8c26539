"""AutoGuidance as NLG's direction on the digits model: does refining the noise with ε_good − ε_weak help?

    python -m benchmarks.autoguidance_digits           # weak models of 300 and 1000 steps, 1000 samples (~45 min on a busy 2-core machine)
    python -m benchmarks.autoguidance_digits --quick   # one weak model of 100 steps, 200 samples

The good model is the shipped one (4000 steps).  Each weak model is trained here with
``nlg.digits.train_digits`` for a few hundred steps (seed 0, 1 thread: bit-exact).  Unconditional
samples (the null class, CFG scale 0) start from the same per-sample noises with and without
refinement by ``d = ε_good(n|∅) − ε_weak(n|∅)`` at t = 999 (NLG's unconditional variant); the metric
is the pixel Fréchet distance to all held-out real digits.  With ``--conditional`` the
conditional variant (``d = ε_good(n|c) − ε_weak(n|c)``, CFG scale 1) also reports class accuracy and
per-digit Fréchet distance next to NLG's usual CFG direction.  Results: ``benchmarks/results/autoguidance_digits.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from nlg import AutoGuidance, refine_noise
from nlg.digits import NULL_CLASS, DigitsEvaluator, DigitsPipeline, load_split, per_sample_generators, train_digits
from nlg.digits.experiment import requested_labels
from nlg.digits.pipeline import default_sampler

from .beyond_common import command, cfg_digits_direction, load_pipe, unconditional_fd, write_results


def sample(pipe: DigitsPipeline, labels: torch.Tensor, scale: float, seed: int,
           direction: Optional[Callable[[torch.Tensor], Any]] = None, chunk: int = 250, **options: Any) -> tuple:
    """Images for ``labels``; ``direction(part)`` builds the refinement direction of a chunk (None: no NLG)."""
    images, seconds = [], 0.0
    for start in range(0, len(labels), chunk):
        part = labels[start : start + chunk]
        gens = per_sample_generators(seed, len(part), start=start)
        latents = pipe.prepare_latents(len(part), gens)
        begin = time.perf_counter()
        if direction is not None:
            latents = refine_noise(latents, direction(part), generator=gens, **options).latents
        seconds += time.perf_counter() - begin
        images.append(pipe(part, latents=latents, generator=gens, guidance_scale=scale, progress=False).images)
    return torch.cat(images), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--weak-steps", type=int, nargs="+", default=None, help="training steps of the weak models (default 300 1000)")
    parser.add_argument("--samples-per-class", type=int, default=None, help="default 100 (20 with --quick)")
    parser.add_argument("--step-sizes", type=float, nargs="+", default=[0.1, 0.3, 1.0], help="NLG η for autoguidance")
    parser.add_argument("--conditional", action="store_true", help="also the conditional variant at CFG scale 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    per_class = args.samples_per_class or (20 if args.quick else 100)
    weak_steps = args.weak_steps or ([100] if args.quick else [300, 1000])
    pipe, evaluator, labels = load_pipe(args.weights), DigitsEvaluator(), requested_labels(per_class)
    null = torch.full_like(labels, NULL_CLASS)
    train_images, train_labels = load_split("train")
    rows: List[Dict[str, Any]] = []

    def record(**row: Any) -> None:
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    def conditional(images: torch.Tensor) -> Dict[str, float]:
        m = evaluator.evaluate(images, labels)
        return dict(accuracy=m.accuracy, fd_per_class=m.fd_per_class, fd_overall=m.fd_overall)

    plain_uncond, _ = sample(pipe, labels, 0.0, args.seed)
    record(variant="unconditional", weak_steps="-", config="no NLG", step_size="-", fd_overall=unconditional_fd(plain_uncond), refine_seconds=0.0)
    if args.conditional:
        plain_cond, _ = sample(pipe, labels, 1.0, args.seed)
        record(variant="conditional", weak_steps="-", config="no NLG", step_size="-", **conditional(plain_cond), refine_seconds=0.0)
        images, sec = sample(pipe, labels, 1.0, args.seed, lambda part: cfg_digits_direction(pipe, part))
        record(variant="conditional", weak_steps="-", config="NLG CFG direction K=20", step_size=1.0, **conditional(images), refine_seconds=sec)

    for steps in weak_steps:
        start = time.perf_counter()
        weak = train_digits(train_images, train_labels, steps=steps, seed=0, progress=False)
        train_seconds = time.perf_counter() - start
        weak_pipe = DigitsPipeline(weak, default_sampler(pipe.scheduler))
        weak_images, _ = sample(weak_pipe, labels, 0.0, args.seed)
        record(variant="unconditional", weak_steps=steps, config="weak model alone", step_size="-",
               fd_overall=unconditional_fd(weak_images), refine_seconds=0.0, train_seconds=train_seconds)
        ag = AutoGuidance(pipe.unet, weak, pipe.scheduler)
        for eta in args.step_sizes:
            images, sec = sample(pipe, labels, 0.0, args.seed, lambda part: ag.direction_fn(class_labels=null[: len(part)]),
                                 step_size=eta)
            record(variant="unconditional", weak_steps=steps, config="NLG autoguidance K=20", step_size=eta,
                   fd_overall=unconditional_fd(images), refine_seconds=sec)
            if not args.conditional:
                continue
            images, sec = sample(pipe, labels, 1.0, args.seed, lambda part: ag.direction_fn(class_labels=part), step_size=eta)
            record(variant="conditional", weak_steps=steps, config="NLG autoguidance K=20", step_size=eta,
                   **conditional(images), refine_seconds=sec)
    notes = [
        f"{command()}: {len(labels)} samples, seed {args.seed}, "
        "DDIM 25 steps; NLG K = 20, τ = 0.5, λ = 0.001, direction at t = 999.",
        "Unconditional rows: CFG scale 0, `fd_overall` = pixel Fréchet distance of all samples to all held-out digits. "
        "Conditional rows: CFG scale 1, 100 per digit. Lower FD is better.",
    ]
    columns = ["variant", "weak_steps", "config", "step_size", "fd_overall", "accuracy", "fd_per_class", "refine_seconds"]
    print(f"wrote {write_results('autoguidance_digits', rows, notes, columns)}")


if __name__ == "__main__":
    main()
