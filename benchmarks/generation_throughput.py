"""Benchmark: images per second of the generation loop with NLG vs plain generation.

NLG adds K refinement steps, each one UNet call on the (unconditional, conditional) pair — what one
classifier-free-guided sampling step costs — so with N sampling steps the expected time ratio is
(N+K)/N.  The target is a ratio within (N+K)/N × 1.05: the loop (per-image generators, atomic PNG
writes, manifest) adds nothing else that grows with K.  Timed end to end through
:func:`nlg.eval.generation.generate_images` on a small SD-2.1-shaped pipeline, rounds interleaved,
medians printed.

    python -m benchmarks.generation_throughput [--images 4] [--inference_steps 20] [--refining_steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import List

import torch

from nlg import NoiseLevelGuidance
from nlg.eval import Caption, RunFolder, generate_images
from nlg.testing import tiny_sd_pipeline

from .common import interleaved, paired_ratios


def run(pipe, refining_steps: int, captions: List[Caption], folder: Path, args: argparse.Namespace) -> float:
    run_folder = RunFolder(folder, {"refining_steps": refining_steps})
    run_folder.prepare()
    guidance = NoiseLevelGuidance(refining_steps=refining_steps, clip_threshold=0.5, noise_level=0.001)
    start = time.perf_counter()
    generate_images(
        pipe,
        guidance,
        captions,
        run_folder,
        seed=0,
        batch_size=args.batch_size,
        pipeline_kwargs=dict(num_inference_steps=args.inference_steps, guidance_scale=7.5),
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--inference_steps", type=int, default=20)
    parser.add_argument("--refining_steps", type=int, default=20)
    parser.add_argument("--sample_size", type=int, default=32, help="latent size of the test pipeline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription noise)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # the test pipeline's scheduler config notice
    torch.set_num_threads(args.threads)
    pipe = tiny_sd_pipeline("v_prediction", scheduler="dpm++", sample_size=args.sample_size)
    captions = [Caption(id=i, caption=f"a photo of object number {i}") for i in range(args.images)]
    n, k = args.inference_steps, args.refining_steps
    with tempfile.TemporaryDirectory() as tmp:
        run(pipe, 0, captions[:1], Path(tmp) / "warmup", args)
        folders = (Path(tmp) / f"run{i}" for i in range(2 * args.rounds))  # a fresh run folder per timed run
        times = interleaved({"plain": lambda: run(pipe, 0, captions, next(folders), args),
                             "nlg": lambda: run(pipe, k, captions, next(folders), args)}, args.rounds)
    plain, nlg = statistics.median(times["plain"]), statistics.median(times["nlg"])
    bound = (n + k) / n * 1.05
    print(f"threads={torch.get_num_threads()} images={args.images} batch_size={args.batch_size} N={n} K={k} "
          f"latents={args.sample_size}x{args.sample_size}")
    print(f"median plain : {plain:.2f} s ({args.images / plain:.2f} img/s)")
    print(f"median NLG   : {nlg:.2f} s ({args.images / nlg:.2f} img/s)")
    ratio = statistics.median(paired_ratios(times, "nlg", "plain"))
    print(f"time ratio   : {ratio:.3f} (median of per-round ratios; bound (N+K)/N x 1.05 = {bound:.3f}) "
          f"-> {'OK' if ratio <= bound else 'OVER'}")


if __name__ == "__main__":
    main()
