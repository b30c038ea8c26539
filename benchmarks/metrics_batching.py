"""Benchmark: batched, streaming FID + IS feature extraction vs the one-image-at-a-time reference loop.

Timed: the feature extraction, from image files on disk to updated metric states (model loading and
the final ``compute()`` are the same fixed cost on both sides and are not timed).  Both sides read the
same PNG/JPEG files and use the real torch-fidelity InceptionV3
architecture (random weights saved to a state dict: the real ones cannot be downloaded here; the cost
is the architecture's).  The reference loop is the public scripts' way: per image, torchvision
transforms then ``FrechetInceptionDistance.update`` for a fake and a real image, then a second pass of
``InceptionScore.update`` over the fakes.  Ours is :class:`nlg.eval.metrics.GenerationMetrics` fed by
:mod:`nlg.eval.datasets` DataLoaders (one fused Inception pass per image serves FID and IS).

Rounds are interleaved; the medians and the per-round ratios are printed, with both sides' figures.
On a CPU the ratio depends on threads and load: one-image passes suffer most from shared, busy
cores, while on one thread the gain is mostly the single shared pass (3 → 2 Inception passes per
fake/real pair) and batching adds little, as the network is compute-bound there.

    python -m benchmarks.metrics_batching [--images 4] [--rounds 6] [--batch_size 16] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torchvision.transforms as T
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
from torchmetrics.image.inception import InceptionScore

from nlg.eval.datasets import INCEPTION_SIZE, ImageFiles, image_loader
from nlg.eval.metrics import GenerationMetrics
from nlg.testing import save_random_inception_weights

from .common import interleaved, paired_ratios


def make_images(folder: Path, count: int, generator: torch.Generator) -> Tuple[List[Path], List[Path]]:
    """``count`` fake 64×64 PNGs and ``count`` real JPEGs of COCO-like sizes."""
    fakes, reals = [], []
    for i in range(count):
        for kind, (h, w), suffix in (("fake", (64, 64), "png"), ("real", (480, 640), "jpg")):
            pixels = (torch.rand(h, w, 3, generator=generator) * 255).to(torch.uint8).numpy()
            path = folder / f"{kind}_{i:04d}.{suffix}"
            Image.fromarray(pixels).save(path)
            (fakes if kind == "fake" else reals).append(path)
    return fakes, reals


def reference_loop(fakes: List[Path], reals: List[Path], weights: Path) -> Tuple[float, Dict[str, float]]:
    """The public scripts' loop; returns the feature-extraction seconds and the figures."""
    to_299 = T.Compose([T.Resize((299, 299)), T.ToTensor(), T.Lambda(lambda x: (x * 255).byte())])
    fid = FrechetInceptionDistance(feature_extractor_weights_path=str(weights))
    logits = NoTrainInceptionV3(name="inception-v3-compat", features_list=["logits_unbiased"],
                                feature_extractor_weights_path=str(weights))
    inception_score = InceptionScore(feature=logits, splits=2)
    start = time.perf_counter()
    for fake, real in zip(fakes, reals):
        fid.update(to_299(Image.open(fake))[None], real=False)
        fid.update(to_299(Image.open(real).convert("RGB"))[None], real=True)
    for fake in fakes:
        inception_score.update(to_299(Image.open(fake))[None])
    seconds = time.perf_counter() - start
    torch.manual_seed(0)
    return seconds, {"fid": float(fid.compute()), "inception_score": float(inception_score.compute()[0])}


def batched(
    fakes: List[Path], reals: List[Path], weights: Path, batch_size: int, workers: int
) -> Tuple[float, Dict[str, float]]:
    """:class:`nlg.eval.metrics.GenerationMetrics` fed by DataLoaders; returns the extraction seconds and the figures."""
    metrics = GenerationMetrics(inception_weights=weights, clip_model=None, is_splits=2)
    sizes = {"inception": INCEPTION_SIZE}
    fake_set = ImageFiles(fakes, sizes=sizes, ids=list(range(len(fakes))), captions=[""] * len(fakes))
    real_set = ImageFiles(reals, sizes=sizes)
    start = time.perf_counter()
    for batch in image_loader(fake_set, batch_size=batch_size, num_workers=workers):
        metrics.update_fake(batch["inception"], None, batch["caption"], batch["id"])
    for batch in image_loader(real_set, batch_size=batch_size, num_workers=workers):
        metrics.update_real(batch["inception"])
    seconds = time.perf_counter() - start
    result = metrics.compute()
    return seconds, {"fid": result.fid, "inception_score": result.inception_score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="fake images (and as many real ones)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = save_random_inception_weights(folder / "inception.pt", generator=torch.Generator().manual_seed(0))
        fakes, reals = make_images(folder, args.images, torch.Generator().manual_seed(1))
        figures: Dict[str, Dict[str, float]] = {}

        def arm(name: str, measure: Callable[[], Tuple[float, Dict[str, float]]]) -> Callable[[], float]:
            def once() -> float:
                seconds, figures[name] = measure()
                return seconds

            return once

        times = interleaved({
            "reference": arm("reference", lambda: reference_loop(fakes, reals, weights)),
            "batched": arm("batched", lambda: batched(fakes, reals, weights, args.batch_size, args.num_workers)),
        }, args.rounds)
    reference, ours = statistics.median(times["reference"]), statistics.median(times["batched"])
    ratios = paired_ratios(times, "reference", "batched")
    print(f"threads={torch.get_num_threads()} images={args.images} fake + {args.images} real, batch_size={args.batch_size}")
    print(f"median reference loop : {reference:.2f} s ({reference / args.images:.3f} s per fake+real pair)")
    print(f"median batched        : {ours:.2f} s ({ours / args.images:.3f} s per fake+real pair)")
    print(f"speed-up per round    : {', '.join(f'{r:.2f}x' for r in ratios)}")
    print(f"speed-up (median)     : {statistics.median(ratios):.2f}x (target >= 5x)")
    for key in ("fid", "inception_score"):
        print(f"{key:16s}: reference {figures['reference'][key]:.6f}  batched {figures['batched'][key]:.6f}")


if __name__ == "__main__":
    main()
