"""The brightness experiment: can models trained with and without offset noise draw very dark/bright digits?

Trains the embedded default model (the class-conditional digits UNet, SD's scaled-linear betas,
:func:`nlg.digits.train.train_digits`) five ways on brightness-shifted sklearn digits — baseline,
offset noise 0.1, pyramid noise, probabilistic offset noise, zero terminal SNR with v-prediction —
samples 1000 digits from each with the same DDIM sampler, and compares their per-image brightness
with held-out real images (W₁, pixel-space RBF MMD², tail shares; :mod:`nlg.training.brightness`).

    python core_experiments/brightness_experiment.py                  # full run, ~35 min on 2 shared cores
    python core_experiments/brightness_experiment.py --quick --output_dir /tmp/brightness   # smoke run, < 1 min

Writes ``brightness.csv``, ``brightness_hist.png``, ``brightness_grid.png`` and ``run.json`` into
``--output_dir`` (default ``core_experiments/results/brightness``); trained samples are cached in
``<out>/cache`` so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from nlg.digits.data import load_split
from nlg.digits.labels import per_sample_generators
from nlg.digits.model import sd_scheduler
from nlg.digits.pipeline import DigitsPipeline, default_sampler
from nlg.digits.train import train_digits
from nlg.training import OffsetSchedule, initial_latents, training_batch, zero_terminal_snr
from nlg.training.brightness import brightness_report, mean_brightness, shift_brightness
from nlg.utils.io import atomic_save_figure, atomic_save_torch, atomic_write_text
from nlg.utils.tables import markdown_table, write_csv

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "brightness"

#: name → (training_batch options, probabilistic offset (preset, ψ_T) or None, zero terminal SNR?)
ARMS: Dict[str, Dict[str, Any]] = {
    "baseline": dict(options={}),
    "offset 0.1": dict(options=dict(offset_strength=0.1)),
    "pyramid 6×0.4": dict(options=dict(pyramid_iterations=6, pyramid_discount=0.4)),
    # 'balanced' keeps φ_t = ψ_t (so DDIM's x̂₀ stays unbiased); its offset shrinks ∝ σ_t below T, and
    # ψ_T = 0.3 puts it at ≈ 0.1 around t = 800, where offset noise 0.1 acts too.
    "prob. offset balanced 0.3": dict(options={}, schedule=("balanced", 0.3)),
    "zero SNR + v": dict(options={}, zero_snr=True),
}

SETTINGS = {
    "full": dict(steps=1200, batch_size=128, lr=1e-3, samples=1000, inference_steps=50, train_copies=4, reference_copies=3),
    "quick": dict(steps=8, batch_size=16, lr=1e-3, samples=40, inference_steps=4, train_copies=1, reference_copies=1),
}


def shifted_data(split: str, copies: int, seed: int):
    """``copies`` brightness-shifted versions of every image of a digits split, and their labels."""
    images, labels = load_split(split)
    images, labels = images.repeat(copies, 1, 1, 1), labels.repeat(copies)
    shifted, _ = shift_brightness(images, generator=torch.Generator().manual_seed(seed))
    return shifted, labels


def run_arm(name: str, arm: Dict[str, Any], images, labels, cfg: Dict[str, Any], seed: int) -> Dict[str, Any]:
    """Train one model and draw ``cfg['samples']`` class-balanced samples from it."""
    scheduler = sd_scheduler()
    if arm.get("zero_snr"):
        scheduler = zero_terminal_snr(scheduler)
    options = dict(arm["options"])
    schedule = None
    if arm.get("schedule"):
        preset, strength = arm["schedule"]
        schedule = OffsetSchedule.preset(preset, strength=strength, alphas_cumprod=scheduler.alphas_cumprod)
        options["offset_schedule"] = schedule

    def batch_fn(clean, _labels, sched, generator):
        return tuple(training_batch(clean, sched, generator=generator, **options))

    start = time.perf_counter()

    def log(step: int, loss: float) -> None:
        if (step + 1) % 200 == 0:
            print(f"  {name}: step {step + 1}/{cfg['steps']}, loss {loss:.4f}, {time.perf_counter() - start:.0f} s", flush=True)

    unet = train_digits(
        images, labels, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"], seed=seed,
        scheduler=scheduler, batch_fn=batch_fn, progress=False, on_step=log,
    )
    train_seconds = time.perf_counter() - start

    sampler = default_sampler(scheduler)
    pipe = DigitsPipeline(unet, sampler)
    n = cfg["samples"]
    digits = torch.arange(n) % 10
    generators = per_sample_generators(seed + 1, n)
    latents = None
    if schedule is not None:
        sampler.set_timesteps(cfg["inference_steps"])
        latents = initial_latents((n, 1, 8, 8), sampler, schedule, generator=generators)
    start = time.perf_counter()
    out = pipe(digits, num_inference_steps=cfg["inference_steps"], guidance_scale=1.0, latents=latents,
               generator=generators, progress=False)
    return dict(samples=out.images, train_seconds=train_seconds, sample_seconds=time.perf_counter() - start)


def plot_histograms(path: Path, reference, rows: Dict[str, Dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b_ref = mean_brightness(reference).numpy()
    p5, p95 = np.percentile(b_ref, [5, 95])
    bins = np.linspace(-1.0, 1.0, 51)
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True, sharey=True)
    for ax, (name, row) in zip(axes.flat, rows.items()):
        ax.hist(b_ref, bins=bins, density=True, color="0.75", label="held-out real")
        ax.hist(mean_brightness(row["samples"]).numpy(), bins=bins, density=True, histtype="step", lw=2,
                color="C3" if name.startswith("real") else "C0", label=name)
        for p in (p5, p95):
            ax.axvline(p, color="k", ls="--", lw=0.8)
        m = row["metrics"]
        ax.set_title(f"{name}\nW1 {m['w1_brightness']:.3f} · <p5 {m['share_below_p5']:.1%} · >p95 {m['share_above_p95']:.1%}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("per-image mean brightness (pixels in [-1, 1])")
    fig.suptitle("Brightness of generated vs held-out digits (dashed: real 5th / 95th percentiles)")
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_grid(path: Path, rows: Dict[str, Dict[str, Any]], columns: int = 16) -> None:
    """Per row, the samples at evenly spaced brightness quantiles, darkest left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(columns * 0.55 + 2.2, len(rows) * 0.75 + 0.4))
    for ax, (name, row) in zip(axes, rows.items()):
        images = row["samples"]
        order = torch.argsort(mean_brightness(images))
        pick = order[torch.linspace(0, len(order) - 1, columns).round().long()]
        strip = torch.ones(8, columns * 9 - 1)
        for j, i in enumerate(pick):
            strip[:, j * 9 : j * 9 + 8] = images[i, 0]
        ax.imshow(strip.numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("Samples at brightness quantiles (darkest → brightest)", fontsize=9)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)


def write_records(path: Path, rows: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    records = []
    for name, row in rows.items():
        record = {"method": name, "n": len(row["samples"])}
        record.update({k: round(v, 5) for k, v in row["metrics"].items()})
        record["train_seconds"] = round(row.get("train_seconds", 0.0), 1)
        records.append(record)
    write_csv(path, records, list(records[0]))
    return records


def results_table(records: List[Dict[str, Any]]) -> str:
    """The printed summary: one row per method (:func:`nlg.utils.tables.markdown_table`)."""
    return markdown_table(
        ["method", "W₁ brightness ↓", "MMD² RBF ↓", "< real p5 (5 %)", "> real p95 (5 %)", "brightness mean ± std"],
        [[r["method"], f"{r['w1_brightness']:.3f}", f"{r['mmd2_rbf']:.4f}", f"{r['share_below_p5']:.1%}",
          f"{r['share_above_p95']:.1%}", f"{r['brightness_mean']:.2f} ± {r['brightness_std']:.2f}"] for r in records],
    )


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (< 1 min)")
    parser.add_argument("--output_dir", "--out", dest="output_dir", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT}); --out is a deprecated alias")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; robust on a shared CPU)")
    args = parser.parse_args(argv)
    cfg = SETTINGS["quick" if args.quick else "full"]
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args, cfg)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Train, sample, measure and write everything for parsed ``args``."""
    cache = args.output_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)

    images, labels = shifted_data("train", cfg["train_copies"], args.seed)
    reference, _ = shifted_data("test", cfg["reference_copies"], args.seed + 1000)
    real = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[: cfg["samples"]]]
    rows: Dict[str, Dict[str, Any]] = {"real (train split)": dict(samples=real)}
    for name, arm in ARMS.items():
        key = hashlib.sha1(json.dumps([name, repr(arm), cfg, args.seed], sort_keys=True).encode()).hexdigest()[:12]
        cached = cache / f"{key}.pt"
        if cached.is_file():
            rows[name] = torch.load(cached)
        else:
            rows[name] = run_arm(name, arm, images, labels, cfg, args.seed)
            atomic_save_torch(rows[name], cached)
        print(f"{name}: trained in {rows[name]['train_seconds']:.0f} s, sampled in {rows[name]['sample_seconds']:.0f} s", flush=True)
    for row in rows.values():
        row["metrics"] = brightness_report(row["samples"], reference)

    records = write_records(args.output_dir / "brightness.csv", rows)
    plot_histograms(args.output_dir / "brightness_hist.png", reference, rows)
    plot_grid(args.output_dir / "brightness_grid.png", {"held-out real": dict(samples=reference), **rows})
    run = dict(command="python core_experiments/brightness_experiment.py" + (" --quick" if args.quick else ""),
               settings=cfg, seed=args.seed, threads=args.threads, torch=torch.__version__,
               train_images=len(images), reference_images=len(reference), arms={k: repr(v) for k, v in ARMS.items()})
    atomic_write_text(args.output_dir / "run.json", json.dumps(run, indent=2) + "\n")
    print(results_table(records))
    return records


if __name__ == "__main__":
    main()
