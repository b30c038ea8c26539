"""Study 2 of issue 22: does offset noise let a fine-tuned text-to-image model reach very dark backgrounds?

    python -m benchmarks.finetune_brightness                                # -> benchmarks/results/finetune_brightness.{csv,md}
    python -m benchmarks.finetune_brightness --quick --out-dir /tmp/ft2     # a smoke run (minutes)

On the embedded shapes model a LoRA (``python -m nlg.finetune``) learns single objects on a very dark background,
captioned "... at night", beside the usual white ones, "... at noon" (:func:`nlg.finetune.studies.brightness_scenes`;
the tokenizer spells these new words with sub-word/byte tokens).  Variants, same data, steps, lr, rank and seeds:

==============  ===============================================================================================
none            plain ε
offset          ``--offset_noise 0.1`` (Guttenberg 2023)
pyramid         ``--pyramid_noise 6 --pyramid_discount 0.4`` (Whitaker 2023)
probabilistic   ``--probabilistic_offset balanced --probabilistic_offset_strength 0.1`` (arXiv 2412.03134),
                sampled from its own x_T (:func:`nlg.training.initial_latents`)
zero_snr        ``--zero_terminal_snr --prediction_type v_prediction`` (Lin et al. 2024), sampled with the saved
                zero-SNR trailing scheduler and CFG rescale 0.7; the shapes model is a v-model, so only the
                schedule changes (on an ε base model this LoRA would also have to switch its objective to v)
==============  ===============================================================================================

Measures, per caption word: W₁ between the per-image mean brightness of generated images and of the training
images with that word (:func:`nlg.training.brightness.brightness_report`; pixels in [0, 1]); **adherence**: the
share of generated images on the right side of the midpoint between the two training means; and the mini-GenEval
verdict of the noon images (white background: the exact scorer applies).  Mean over training seeds [95% t-interval].
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from nlg.finetune.studies import brightness_scenes, fmt_interval, train_lora, write_image_folder
from nlg.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS
from nlg.shapes.data import SHAPES
from nlg.shapes.geneval import score_image
from nlg.shapes.sampling import prompt_image_seed
from nlg.training import OffsetSchedule, initial_latents
from nlg.training.brightness import brightness_report
from nlg.training.loop import command_line
from nlg.utils.io import atomic_write_text
from nlg.utils.tables import markdown_table, write_csv

from .common import base_pipeline, fill_defaults, finished_lora, lora_study_parser, sample_sheet, study_name

VARIANTS: Dict[str, Dict[str, Any]] = {
    "none": {},
    "offset": {"offset_noise": 0.1},
    "pyramid": {"pyramid_noise": 6, "pyramid_discount": 0.4},
    "probabilistic": {"probabilistic_offset": "balanced", "probabilistic_offset_strength": 0.1},
    "zero_snr": {"zero_terminal_snr": True, "prediction_type": "v_prediction"},
}
EVAL_SEED = 11


QUICK = dict(variants=",".join(VARIANTS), seeds=1, steps=4, batch_size=2, images=8, samples=1, inference_steps=4)
FULL = dict(variants=",".join(VARIANTS), seeds=3, steps=600, batch_size=8, images=64, samples=16,
            inference_steps=DEFAULT_INFERENCE_STEPS)


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = lora_study_parser(__doc__.splitlines()[0], "smoke run: every variant, 1 seed, 4 steps, a few images", FULL,
                          images_help="training scenes, half night, half noon", samples_help="images per shape and word",
                          work_dir="outputs/finetune_brightness")
    p.add_argument("--variants", default=None, help=f"comma-separated (default {','.join(VARIANTS)})")
    args = fill_defaults(p.parse_args(argv), QUICK, FULL)
    args.variants = args.variants.split(",")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    return args


@torch.inference_mode()
def sample(pipe: Any, out: Path, variant: str, texts: List[str], seeds: List[int], steps: int) -> np.ndarray:
    """Images in [0, 1], (N, 32, 32, 3), sampled the way ``variant`` was trained to be sampled."""
    base = pipe.scheduler
    kwargs: Dict[str, Any] = {}
    if (out / "scheduler").is_dir():  # zero SNR: the saved v-prediction, zero-SNR, trailing scheduler
        pipe.scheduler = type(base).from_pretrained(out, subfolder="scheduler")
        kwargs["guidance_rescale"] = 0.7
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    if VARIANTS[variant].get("probabilistic_offset"):
        options = VARIANTS[variant]
        schedule = OffsetSchedule.preset(options["probabilistic_offset"], strength=options["probabilistic_offset_strength"],
                                         alphas_cumprod=pipe.scheduler.alphas_cumprod)
        pipe.scheduler.set_timesteps(steps)
        size = pipe.unet.config.sample_size
        kwargs["latents"] = initial_latents((len(texts), 4, size, size), pipe.scheduler, schedule, generator=generators)
    try:
        return pipe(texts, num_inference_steps=steps, guidance_scale=DEFAULT_GUIDANCE_SCALE, generator=generators,
                    output_type="np", **kwargs).images
    finally:
        pipe.scheduler = base


def caption_shape(text: str) -> str:
    """The shape a study caption names: ``"a photo of a circle at noon"`` → ``"circle"``."""
    words = text.split()
    if len(words) != 7 or words[:4] != ["a", "photo", "of", "a"] or words[5] != "at" or words[4] not in SHAPES:
        raise ValueError(f"not a caption of this study: {text!r}")
    return words[4]


def evaluate(images: np.ndarray, texts: List[str], train: np.ndarray, train_texts: List[str]) -> Dict[str, float]:
    """The table's measures for ``images`` in [0, 1] sampled for ``texts``, against the training images (uint8)."""
    as_tensor = lambda x: torch.from_numpy(np.asarray(x, dtype=np.float32)).permute(0, 3, 1, 2)  # noqa: E731
    train = train.astype(np.float32) / 255.0
    words = np.array([t.endswith("night") for t in texts])
    train_words = np.array([t.endswith("night") for t in train_texts])
    means = images.reshape(len(images), -1).mean(1)
    midpoint = (train[train_words].mean() + train[~train_words].mean()) / 2
    out: Dict[str, float] = {}
    for word, mask, train_mask in (("night", words, train_words), ("noon", ~words, ~train_words)):
        report = brightness_report(as_tensor(images[mask]), as_tensor(train[train_mask]))
        out[f"w1_{word}"] = report["w1_brightness"]
        out[f"mean_{word}"] = report["brightness_mean"]
        out[f"adherence_{word}"] = float(((means[mask] < midpoint) == (word == "night")).mean())
    noon = [score_image(np.clip(np.round(img * 255), 0, 255).astype(np.uint8),
                        {"tag": "single_object", "include": [{"class": caption_shape(t), "count": 1}]})["correct"]
            for img, t in zip(images[~words], np.array(texts)[~words])]
    out["geneval_noon"] = float(np.mean(noon))
    return out


def figure(pipe: Any, work: Path, args: argparse.Namespace) -> Path:
    """``finetune_brightness_samples.png``: the base model and each variant's seed-0 LoRA, each shape at night and noon.

    Sampled as :func:`sample` does for the table, with the seeds of each prompt's first two images there.
    """
    texts = [f"a photo of a {shape} at {word}" for word in ("night", "noon") for shape in SHAPES for _ in range(2)]
    seeds = [prompt_image_seed(EVAL_SEED, i // 2, i % 2) for i in range(len(texts))]
    rows = {"base": sample(pipe, work, "none", texts, seeds, args.inference_steps)}
    for variant in args.variants:
        out = finished_lora(work / f"{variant}-seed0")
        pipe.load_lora_weights(out)
        rows[variant] = sample(pipe, out, variant, texts, seeds, args.inference_steps)
        pipe.unload_lora_weights()
    name = study_name("finetune_brightness", args)
    return sample_sheet(rows, texts, args.out_dir / f"{name}_samples.png")


def main(argv: Optional[Sequence[str]] = None) -> Path:
    args = parse(argv)
    work = args.work_dir or Path("outputs") / study_name("finetune_brightness", args)
    if args.figure_only:
        return figure(base_pipeline(args), work, args)
    train, train_texts = brightness_scenes(args.images, seed=2_000_000)
    data = write_image_folder(work / "data", train, train_texts)
    texts = [f"a photo of a {shape} at {word}" for word in ("night", "noon") for shape in SHAPES for _ in range(args.samples)]
    seeds = [prompt_image_seed(EVAL_SEED, i // args.samples, i % args.samples) for i in range(len(texts))]
    pipe = base_pipeline(args)
    rows: List[Dict[str, Any]] = []
    for variant in args.variants:
        for seed in range(args.seeds):
            out = train_lora(model=args.model, data_dir=data, output_dir=work / f"{variant}-seed{seed}", steps=args.steps,
                             lr=args.lr, rank=args.rank, batch_size=args.batch_size, seed=seed,
                             checkpoint_every=max(1, args.steps // 4), **VARIANTS[variant])
            pipe.load_lora_weights(out)
            rows.append(dict(variant=variant, seed=seed,
                             **evaluate(sample(pipe, out, variant, texts, seeds, args.inference_steps), texts, train, train_texts)))
            pipe.unload_lora_weights()
            print(f"{variant} seed {seed}: W1 night {rows[-1]['w1_night']:.3f}, noon {rows[-1]['w1_noon']:.3f}", flush=True)
    figure(pipe, work, args)
    return write_results(rows, args, train, train_texts)


def write_results(rows: List[Dict[str, Any]], args: argparse.Namespace, train: np.ndarray, train_texts: List[str]) -> Path:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = study_name("finetune_brightness", args)
    write_csv(args.out_dir / f"{name}.csv", rows)
    columns = ["w1_night", "w1_noon", "mean_night", "mean_noon", "adherence_night", "adherence_noon", "geneval_noon"]
    table = [[variant, sum(r["variant"] == variant for r in rows)]
             + [fmt_interval([r[c] for r in rows if r["variant"] == variant]) for c in columns] for variant in args.variants]
    night = np.array([t.endswith("night") for t in train_texts])
    means = train.reshape(len(train), -1).astype(np.float64).mean(1) / 255.0
    smoke = ("**SMOKE OUTPUT (`--quick`): a few steps and images, for testing the script only; not a result.**\n\n"
             if args.quick else "")
    text = (f"# Brightness: offset noise and its relatives in a LoRA fine-tune\n\n{smoke}"
            f"Command: `{command_line()}`\n\n"
            f"{args.seeds} training seeds, {args.steps} steps, lr {args.lr:g}, rank {args.rank}, batch {args.batch_size}, "
            f"{args.images} training scenes (mean brightness: night {means[night].mean():.3f}, noon {means[~night].mean():.3f}); "
            f"{3 * args.samples} images per word, DDIM {args.inference_steps} steps, CFG {DEFAULT_GUIDANCE_SCALE:g}. "
            "W₁ to the training images of the same word (↓), mean brightness, adherence (right side of the midpoint, ↑), "
            "mini-GenEval of the noon images (↑). Mean over training seeds [95% t-interval].\n\n"
            + markdown_table(["variant", "seeds", "W₁ night ↓", "W₁ noon ↓", "mean night", "mean noon", "adherence night ↑",
                              "adherence noon ↑", "GenEval noon ↑"], table) + "\n")
    path = args.out_dir / f"{name}.md"
    atomic_write_text(path, text)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
