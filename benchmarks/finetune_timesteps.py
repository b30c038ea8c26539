"""Study 1 of issue 22: which timestep type teaches a LoRA a new concept fastest, and what it forgets.

    python -m benchmarks.finetune_timesteps                                  # -> benchmarks/results/finetune_timesteps.{csv,md,png}
    python -m benchmarks.finetune_timesteps --quick --out-dir /tmp/ft1        # a smoke run (minutes)

On the embedded shapes model, a LoRA (``python -m nlg.finetune``) learns the *cross*, a shape the model never
saw, from ``--images`` rendered crosses captioned "a photo of a {colour} cross" (:mod:`nlg.finetune.studies`).
Every timestep type of ``--types`` trains with the same data, steps, learning rate, rank and training seeds
(``--seeds``); the LoRA is saved every ``--every`` steps.  At each saved step:

* **concept share**: the share of images for "a photo of a {colour} cross" (each colour, ``--samples`` images,
  fixed sampling seeds) in which :func:`nlg.finetune.studies.shows_cross` finds a cross of that colour;
* **forgetting**: the mini-GenEval overall score (:mod:`nlg.shapes.geneval`, the exact scorer) on the old
  prompts, beside the model without LoRA.

Both come as a mean over training seeds with a 95% Student-t interval.  Finished LoRAs are reused on a rerun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from nlg.finetune.studies import (CONCEPT, concept_scenes, fmt_interval, mean_interval, shows_cross, train_lora,
                                  write_image_folder)
from nlg.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS
from nlg.shapes.data import COLOURS
from nlg.shapes.geneval import load_prompts, task_accuracies
from nlg.shapes.sampling import SamplingConfig, generate, prompt_image_seed, score_batch
from nlg.training.loop import command_line
from nlg.utils.io import atomic_save_figure, atomic_write_text
from nlg.utils.tables import markdown_table, read_csv, write_csv

from .common import base_pipeline, fill_defaults, finished_lora, lora_study_parser, sample_sheet, study_name

TYPES = ("linear", "sigmoid", "shift", "weighted")
EVAL_SEED = 7  # sampling seeds are the same for every LoRA: the intervals are over training seeds


QUICK = dict(types="linear,sigmoid", seeds=2, steps=4, every=2, batch_size=2, images=6, samples=1, geneval_prompts=1,
             inference_steps=4)
FULL = dict(types=",".join(TYPES), seeds=3, steps=400, every=100, batch_size=8, images=30, samples=8,
            geneval_prompts=None, inference_steps=DEFAULT_INFERENCE_STEPS)


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = lora_study_parser(__doc__.splitlines()[0], "smoke run: 2 types, 2 seeds, 4 steps, a few images", FULL,
                          images_help="training crosses", samples_help="images per colour for the concept share",
                          work_dir="outputs/finetune_timesteps")
    p.add_argument("--types", default=None, help=f"comma-separated timestep types (default {','.join(TYPES)})")
    p.add_argument("--every", type=int, default=None, help="evaluate every N steps (default 100)")
    p.add_argument("--geneval-prompts", type=int, default=None, help="old prompts per task (default all)")
    args = fill_defaults(p.parse_args(argv), QUICK, FULL)
    args.types = args.types.split(",")
    if args.steps % args.every:
        p.error(f"--every ({args.every}) must divide --steps ({args.steps})")
    return args


def geneval_overall(pipe: Any, prompts: List[Dict[str, Any]], args: argparse.Namespace) -> float:
    texts = [m["prompt"] for m in prompts]
    seeds = [prompt_image_seed(EVAL_SEED, i, 0) for i in range(len(prompts))]
    images = generate(pipe, texts, seeds, SamplingConfig(DEFAULT_GUIDANCE_SCALE), num_inference_steps=args.inference_steps)
    scores = score_batch(images, prompts)
    return task_accuracies([m["tag"] for m in prompts], [s["correct"] for s in scores])["overall"]


def concept_share(pipe: Any, args: argparse.Namespace) -> float:
    colours = [c for c in COLOURS for _ in range(args.samples)]
    texts = [f"a photo of a {c} {CONCEPT}" for c in colours]
    seeds = [prompt_image_seed(EVAL_SEED, COLOURS.index(c), i % args.samples) for i, c in enumerate(colours)]
    images = generate(pipe, texts, seeds, SamplingConfig(DEFAULT_GUIDANCE_SCALE), num_inference_steps=args.inference_steps)
    return sum(shows_cross(image, c) for image, c in zip(images, colours)) / len(colours)


def figure(pipe: Any, work: Path, args: argparse.Namespace) -> Path:
    """``finetune_timesteps_samples.png``: the base model and each type's final seed-0 LoRA, two crosses per colour.

    The same sampling seeds as the concept share's first two images of each colour.
    """
    texts = [f"a photo of a {c} {CONCEPT}" for c in COLOURS for _ in range(2)]
    seeds = [prompt_image_seed(EVAL_SEED, i // 2, i % 2) for i in range(len(texts))]
    sample = lambda: generate(pipe, texts, seeds, SamplingConfig(DEFAULT_GUIDANCE_SCALE),  # noqa: E731
                              num_inference_steps=args.inference_steps)
    rows = {"base": sample()}
    for kind in args.types:
        pipe.load_lora_weights(finished_lora(work / f"{kind}-seed0"))
        rows[f"{kind} @{args.steps}"] = sample()
        pipe.unload_lora_weights()
    name = study_name("finetune_timesteps", args)
    return sample_sheet(rows, texts, args.out_dir / f"{name}_samples.png")


def main(argv: Optional[Sequence[str]] = None) -> Path:
    args = parse(argv)
    work = args.work_dir or Path("outputs") / study_name("finetune_timesteps", args)
    if args.figure_only:
        if not args.quick:
            redraw_plot(args)
        return figure(base_pipeline(args), work, args)
    data = write_image_folder(work / "data", *concept_scenes(args.images, seed=0))
    prompts = load_prompts()
    if args.geneval_prompts is not None:
        prompts = [m for task in dict.fromkeys(m["tag"] for m in prompts)
                   for m in [q for q in prompts if q["tag"] == task][: args.geneval_prompts]]
    args.n_prompts = len(prompts)
    pipe = base_pipeline(args)
    rows: List[Dict[str, Any]] = [dict(type="none (base model)", seed=0, step=0, concept=concept_share(pipe, args),
                                       geneval=geneval_overall(pipe, prompts, args))]
    for kind in args.types:
        for seed in range(args.seeds):
            out = train_lora(model=args.model, data_dir=data, output_dir=work / f"{kind}-seed{seed}", steps=args.steps,
                             lr=args.lr, rank=args.rank, batch_size=args.batch_size, seed=seed, timestep_type=kind,
                             save_every=args.every, checkpoint_every=args.every, local_files_only=True)
            for step in range(args.every, args.steps + 1, args.every):
                pipe.load_lora_weights(out if step == args.steps else out / f"step-{step}")
                rows.append(dict(type=kind, seed=seed, step=step, concept=concept_share(pipe, args),
                                 geneval=geneval_overall(pipe, prompts, args)))
                pipe.unload_lora_weights()
            print(f"{kind} seed {seed}: " + ", ".join(f"step {r['step']} concept {r['concept']:.2f}"
                                                     for r in rows if r["type"] == kind and r["seed"] == seed), flush=True)
    figure(pipe, work, args)
    return write_results(rows, args)


def by_type_and_step(rows: Iterable[Mapping[str, Any]]) -> Dict[Tuple[str, int], List[Mapping[str, Any]]]:
    """The result rows grouped by ``(type, step)``, in first-seen order (``step`` read as an int, as from a CSV)."""
    groups: Dict[Tuple[str, int], List[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["type"], int(r["step"])), []).append(r)
    return groups


def write_results(rows: List[Dict[str, Any]], args: argparse.Namespace) -> Path:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = study_name("finetune_timesteps", args)
    write_csv(args.out_dir / f"{name}.csv", rows)
    groups = by_type_and_step(rows)
    table = [(kind, step, len(g), fmt_interval([r["concept"] for r in g]), fmt_interval([r["geneval"] for r in g]))
             for (kind, step), g in groups.items()]
    best = []
    for step in range(args.every, args.steps + 1, args.every):
        means = sorted(((sum(r["concept"] for r in g) / len(g), kind) for (kind, s), g in groups.items() if s == step),
                       reverse=True)
        if len(means) > 1:
            best.append(f"- step {step}: highest concept share {means[0][1]} ({means[0][0]:.3f}; next {means[1][1]} "
                        f"{means[1][0]:.3f})")
    smoke = ("**SMOKE OUTPUT (`--quick`): a few steps and images, for testing the script only; not a result.**\n\n"
             if args.quick else "")
    text = (f"# Timestep types: learning a new concept (the cross) with a LoRA\n\n{smoke}"
            f"Command: `{command_line()}`\n\n"
            f"{len(args.types)} types × {args.seeds} training seeds, {args.steps} steps, lr {args.lr:g}, rank {args.rank}, "
            f"batch {args.batch_size}, {args.images} training images; concept share over {6 * args.samples} images, "
            f"mini-GenEval over {args.n_prompts} prompts; DDIM {args.inference_steps} steps, CFG {DEFAULT_GUIDANCE_SCALE:g}. "
            "Mean over training seeds [95% t-interval].\n\n"
            + markdown_table(["timestep type", "step", "seeds", "concept share ↑", "mini-GenEval overall (forgetting)"], table) + "\n"
            + ("\n" + "\n".join(best) + "\n" if best else ""))
    path = args.out_dir / f"{name}.md"
    atomic_write_text(path, text)
    if not args.quick:
        plot(groups, args.out_dir / f"{name}.png")
    return path


def plot(groups: Dict[tuple, List[Dict[str, Any]]], path: Path) -> None:
    """Concept share and mini-GenEval (forgetting) against LoRA step, per type: means over seeds, 95% t-intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    base = [g for (k, _), g in groups.items() if k.startswith("none")]
    for ax, column, label in zip(axes, ("concept", "geneval"), ("concept share (crosses) ↑", "mini-GenEval overall (old prompts)")):
        for offset, kind in enumerate(dict.fromkeys(k for k, _ in groups if not k.startswith("none"))):
            steps = sorted(s for k, s in groups if k == kind)
            stats = [mean_interval([float(r[column]) for r in groups[(kind, s)]]) for s in steps]
            means = [m for m, _, _ in stats]
            errors = [[m - lo for m, lo, _ in stats], [hi - m for m, _, hi in stats]]
            ax.errorbar([s + 4 * (offset - 1.5) for s in steps], means, yerr=errors, marker="o", capsize=3, label=kind)
        if base:
            ax.axhline(float(base[0][0][column]), color="grey", linestyle="--", label="base model")
        ax.set_xlabel("LoRA step")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)
    plt.close(fig)


def redraw_plot(args: argparse.Namespace) -> Path:
    """Redraw ``<name>.png`` from ``<name>.csv`` (written by a finished run)."""
    name = study_name("finetune_timesteps", args)
    source = args.out_dir / f"{name}.csv"
    if not source.is_file():
        raise ValueError(f"no {source}: run the study without --figure-only first")
    plot(by_type_and_step(read_csv(source)), args.out_dir / f"{name}.png")
    return args.out_dir / f"{name}.png"


if __name__ == "__main__":
    main(sys.argv[1:])
