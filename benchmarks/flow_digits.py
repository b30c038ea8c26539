"""NLG on a flow-matching digits model: does the velocity-difference direction at σ_r < 1 help?

    python -m benchmarks.flow_digits           # trains a 1500-step flow model (~15 min), 1000 samples per row
    python -m benchmarks.flow_digits --quick   # 200 training steps, 200 samples per row

The digits UNet of :mod:`nlg.digits` is trained here (``train_digits`` with a flow-matching
``batch_fn``, seed 0, 1 thread) on ``x_σ = (1−σ) x₀ + σ ε``, ``σ ~ U(0, 1)``, timestep ``1000 σ``,
target ``v = ε − x₀``, the parameterisation of SD3 / FLUX.  Sampling: diffusers'
``FlowMatchEulerDiscreteScheduler`` (25 Euler steps, no shift) with CFG on the velocity.  NLG refines
the initial noise with :func:`nlg.flow_direction` at the reference σ_r (K = 20, η = 1, τ = 0.5,
λ = 0.001), as ``FlowMatchingAdapter`` does for SD3.  Results: ``benchmarks/results/flow_digits.{csv,md}``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from nlg import flow_direction, refine_noise
from nlg.digits import NULL_CLASS, DigitsEvaluator, load_split, per_sample_generators, train_digits
from nlg.digits.experiment import requested_labels

from .beyond_common import write_results

STEPS = 25


def flow_batch(clean: torch.Tensor, labels: torch.Tensor, scheduler: Any, generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
    """Flow matching: ``σ ~ U(0, 1)``, ``x_σ = (1−σ) x₀ + σ ε``, timestep ``1000 σ``, target ``ε − x₀``."""
    sigma = torch.rand(clean.shape[0], generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    s = sigma.view(-1, 1, 1, 1)
    return (1 - s) * clean + s * noise, sigma * 1000.0, noise - clean, torch.ones(clean.shape[0])


@torch.inference_mode()
def velocity(unet: Any, x: torch.Tensor, t: Any, labels: torch.Tensor, scale: float) -> torch.Tensor:
    null = torch.full_like(labels, NULL_CLASS)
    if scale == 0.0:
        return unet(x, t, class_labels=null).sample
    if scale == 1.0:
        return unet(x, t, class_labels=labels).sample
    v_u, v_c = unet(torch.cat([x, x]), t, class_labels=torch.cat([null, labels])).sample.chunk(2)
    return v_u + scale * (v_c - v_u)


def sample(unet: Any, labels: torch.Tensor, scale: float, seed: int, sigma_ref: Optional[float],
           target: str = "epsilon", chunk: int = 250) -> Tuple[torch.Tensor, float]:
    images, seconds = [], 0.0
    for start in range(0, len(labels), chunk):
        part = labels[start : start + chunk]
        gens = per_sample_generators(seed, len(part), start=start)
        x = torch.stack([torch.randn(1, 8, 8, generator=g) for g in gens])
        begin = time.perf_counter()
        if sigma_ref is not None:
            null = torch.full_like(part, NULL_CLASS)

            def direction(n: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
                rows = part if index is None else part[index]
                x_ref = sigma_ref * n
                v_c = unet(x_ref, sigma_ref * 1000.0, class_labels=rows).sample
                v_u = unet(x_ref, sigma_ref * 1000.0, class_labels=null[: len(rows)]).sample
                return flow_direction(v_c, v_u, x_ref, sigma_ref, target=target)

            x = refine_noise(x, direction, generator=gens).latents
        seconds += time.perf_counter() - begin
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
        scheduler.set_timesteps(STEPS)
        for t in scheduler.timesteps:
            x = scheduler.step(velocity(unet, x, t, part, scale), t, x).prev_sample
        images.append(x.clamp(-1, 1))
    return torch.cat(images), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--train-steps", type=int, default=None, help="default 1500 (200 with --quick)")
    parser.add_argument("--samples-per-class", type=int, default=None, help="default 100 (20 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_steps = args.train_steps or (200 if args.quick else 1500)
    labels = requested_labels(args.samples_per_class or (20 if args.quick else 100))
    images, digit_labels = load_split("train")
    start = time.perf_counter()
    unet = train_digits(images, digit_labels, steps=train_steps, seed=0, batch_fn=flow_batch, progress=False)
    print(f"trained the flow model for {train_steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    evaluator = DigitsEvaluator()
    rows: List[Dict[str, Any]] = []
    configs = [(None, "epsilon"), (0.94, "epsilon"), (0.98, "epsilon"), (0.8, "epsilon"), (0.94, "velocity")]
    for scale in (0.0, 1.0):
        for sigma_ref, target in configs:
            out, seconds = sample(unet, labels, scale, args.seed, sigma_ref, target)
            m = evaluator.evaluate(out, labels)
            row = dict(cfg_scale=scale, config="no NLG" if sigma_ref is None else f"NLG σ_r={sigma_ref:g} {target}",
                       accuracy=m.accuracy, fd_per_class=m.fd_per_class, fd_overall=m.fd_overall,
                       diversity_ratio=m.diversity_ratio, refine_seconds=seconds)
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    notes = [
        f"`python -m benchmarks.flow_digits{' --quick' if args.quick else ''}`: flow-matching digits UNet trained "
        f"{train_steps} steps (seed 0), {len(labels)} samples per row, seed {args.seed}, 25 Euler steps.",
        "NLG: K = 20, η = 1, τ = 0.5, λ = 0.001; `epsilon` = (1−σ_r)(v_c − v_u), `velocity` = v_c − v_u, both at x = σ_r n.",
    ]
    columns = ["cfg_scale", "config", "accuracy", "fd_per_class", "fd_overall", "diversity_ratio", "refine_seconds"]
    print(f"wrote {write_results('flow_digits', rows, notes, columns)}")


if __name__ == "__main__":
    main()
