"""Noise-level-aware img2img on the digits model: turn real held-out digits of class a into class b.

    python -m benchmarks.img2img_digits           # all 364 held-out digits × strengths {0.3, 0.5, 0.7, 0.9} (~10 min, 1 core)
    python -m benchmarks.img2img_digits --quick   # the first 60 held-out digits

Held-out digit ``i`` of class ``a`` is prompted with ``b = (a + 1 + i mod 9) mod 10`` (never ``a``).
For each strength the start ``t_s`` and ``ᾱ`` come from :func:`nlg.schedule_point_for_strength` with the
pipeline's DDIM (25 steps, trailing); ``x_{t_s} = √ᾱ x₀ + √(1−ᾱ) ε`` with the same per-sample ε in
every row, and DDIM runs from ``t_s`` with CFG scale 1 (the conditional model).  "NLG-ε" refines ε
with :func:`nlg.img2img_direction`: the CFG direction at ``(x_{t_s}, t_s)``, image term fixed,
K ∈ {5, 20}, otherwise the paper's options (η = 1, τ = 0.5, λ = 0.001).  Reported: adherence to b (classifier accuracy, mean p(b)), how often the
result is still classified as a, the RMS pixel distance to the source, and the refinement cost.
Results: ``benchmarks/results/img2img_digits.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List

import numpy as np
import torch

from nlg import img2img_direction, schedule_point_for_strength, refine_noise
from nlg.digits import DigitsEvaluator, load_split, per_sample_generators

from .beyond_common import command, cfg_digits_direction, load_pipe, sample_from, write_results

STEPS = 25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first 60 held-out digits")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--refining-steps", type=int, nargs="+", default=[5, 20], help="NLG K values to run (η = 1)")
    parser.add_argument("--guidance-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe, evaluator = load_pipe(args.weights), DigitsEvaluator()
    source, source_labels = load_split("test")
    if args.quick:
        source, source_labels = source[:60], source_labels[:60]
    count = len(source)
    targets = (source_labels + 1 + torch.arange(count) % 9) % 10
    gens = per_sample_generators(args.seed, count)
    noise = pipe.prepare_latents(count, gens)  # the same ε for every row
    rows: List[Dict[str, Any]] = []
    for strength in args.strengths:
        level = schedule_point_for_strength(pipe.scheduler, strength, STEPS)
        pipe.scheduler.set_timesteps(STEPS)
        timesteps = pipe.scheduler.timesteps[STEPS - level.denoising_steps :]
        t_s = int(timesteps[0])
        assert t_s == level.timestep
        for k in [0] + list(args.refining_steps):
            run_gens = per_sample_generators(args.seed + 1, count)  # refinement and sampler noise
            eps, seconds, evaluations = noise, 0.0, 0
            if k > 0:
                start = time.perf_counter()
                direction = img2img_direction(cfg_digits_direction(pipe, targets, reference_timestep=t_s), source, level.alpha_bar)
                out = refine_noise(noise, direction, refining_steps=k, generator=run_gens)
                eps, seconds, evaluations = out.latents, time.perf_counter() - start, int(out.evaluations[0])
            x_ts = pipe.scheduler.add_noise(source, eps, torch.full((count,), t_s))
            images = sample_from(pipe, x_ts, timesteps, targets, args.guidance_scale, run_gens)
            probs = evaluator.classifier.predict_proba(images.double().flatten(1).numpy())
            predicted = probs.argmax(axis=1)
            rms = (images - source).pow(2).flatten(1).mean(dim=1).sqrt()
            row = dict(
                strength=strength, t_s=t_s, alpha_bar=level.alpha_bar, sigma=level.sigma, snr=level.snr,
                config="no refinement" if k == 0 else f"NLG-eps K={k}",
                adherence_b=float((predicted == targets.numpy()).mean()),
                mean_p_b=float(probs[np.arange(count), targets.numpy()].mean()),
                still_a=float((predicted == source_labels.numpy()).mean()),
                rms_to_source=float(rms.mean()), noise_change=float((eps - noise).flatten(1).norm(dim=1).mean() / 8.0),
                evals=evaluations, refine_seconds=seconds,
            )
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    notes = [
        f"{command()}: {count} held-out digits, "
        f"DDIM {STEPS} steps (trailing), CFG scale {args.guidance_scale:g}, seed {args.seed}.",
        "`adherence_b`: classified as the prompted digit b; `still_a`: classified as the source digit a; "
        "`rms_to_source`: RMS pixel distance to the source in [-1, 1] units; `noise_change`: ‖ε_refined − ε‖/√D.",
    ]
    columns = ["strength", "t_s", "alpha_bar", "sigma", "config", "adherence_b", "mean_p_b", "still_a",
               "rms_to_source", "noise_change", "evals", "refine_seconds"]
    print(f"wrote {write_results('img2img_digits', rows, notes, columns)}")


if __name__ == "__main__":
    main()
