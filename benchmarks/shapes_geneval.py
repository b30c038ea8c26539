"""Mini-GenEval on the shipped shapes model: plain sampling vs Noise Level Guidance, paired seeds, 95% intervals.

    python -m benchmarks.shapes_geneval             # -> benchmarks/results/shapes_geneval.{csv,md,png}
    python -m benchmarks.shapes_geneval --quick --out-dir /tmp/sg    # a smoke run (2 prompts per task, 1 image)

Every configuration draws ``--images-per-prompt`` images for each prompt of
``nlg/shapes/evaluation_metadata.jsonl`` from the same per-image seeds (one ``torch.Generator`` per
image), DDIM with ``--steps`` steps, and scores them with the exact scorer (:mod:`nlg.shapes.geneval`).

Configurations: plain sampling at every CFG scale of ``--scales`` (1 = no guidance); then NLG through
``NoiseLevelGuidance(refining_steps=K, step_size=η)(pipe, ...)`` at the model's default scale
(:data:`nlg.shapes.DEFAULT_GUIDANCE_SCALE`, which ties the best plain scale on these same images) for
K = 20, 10, 5, 4, 2, 1 with K·η = 20 (:data:`NLG_SETTINGS`), and at CFG 1 (no guidance) for
(K, η) ∈ {(20, 1), (4, 5), (2, 10)}.  For each
NLG configuration the difference to plain sampling at the same CFG scale comes with a 95% paired
bootstrap interval: the (plain, NLG) image pairs of the same prompt and seed are resampled over the seeds
within each prompt, 2000 times, seeded.  Overall accuracy is the mean of the six task accuracies, as in GenEval.

Finished configurations' images are cached in ``--cache`` (keyed by the weights' sha256, the settings
and the prompt texts), so an interrupted run resumes; cached images are rescored on every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from nlg.shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_PIPELINE, load_pipeline
from nlg.shapes.data import TASKS
from nlg.shapes.geneval import load_prompts, task_accuracies
from nlg.shapes.sampling import SamplingConfig, generate, image_seed, score_batch
from nlg.shapes.train import safetensors_sha256
from nlg.utils.io import atomic_write, atomic_write_text

from .common import RESULTS, command, markdown_table, write_csv, write_markdown

SCALES = (1.0, 3.0, 4.5, 6.0, 9.0)
#: (K, η) at the first NLG scale (default: the best plain one): the cost study's K·η = 20 while K shrinks (issue 12).
NLG_SETTINGS = ((20, 1.0), (10, 2.0), (5, 4.0), (4, 5.0), (2, 10.0), (1, 20.0))
#: (K, η) at CFG 1: the paper's K = 20 and the two cheapest budgets.
NLG_SETTINGS_CFG1 = ((20, 1.0), (4, 5.0), (2, 10.0))
BOOTSTRAP = 2000


def run_config(pipe, config: SamplingConfig, prompts: List[Dict[str, Any]], images_per_prompt: int, seed: int,
               steps: int, cache: Path, key: str) -> Dict[str, Any]:
    """Generate one configuration (or read its images from the cache) and score them.

    The cache is keyed by the weights, the configuration, the seeds and the prompt texts; the images are
    rescored on every run, so a change to the scorer never reuses stale verdicts.
    """
    texts = [p["prompt"] for p in prompts for _ in range(images_per_prompt)]
    seeds = [image_seed(seed, i, j) for i in range(len(prompts)) for j in range(images_per_prompt)]
    meta = [p for p in prompts for _ in range(images_per_prompt)]
    digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
    name = hashlib.sha256(f"{key}|{config}|{images_per_prompt}|{seed}|{steps}|{digest}".encode()).hexdigest()[:16]
    path, images_path = cache / f"{name}.json", cache / f"{name}_images.npy"
    if path.is_file() and images_path.is_file():
        record = json.loads(path.read_text())
        images = np.load(images_path)
    else:
        start = time.perf_counter()
        images = generate(pipe, texts, seeds, config, num_inference_steps=steps)
        record = {"config": config.__dict__, "name": config.name, "seconds": round(time.perf_counter() - start, 1),
                  "unet_evals_per_image": config.unet_evals_per_image(steps)}
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write(images_path, lambda handle: np.save(handle, images))
        atomic_write_text(path, json.dumps(record))
    scores = score_batch(images, meta)
    record["correct"] = [bool(s["correct"]) for s in scores]
    record["off_palette"] = [s["off_palette"] for s in scores]
    return record


def bootstrap_difference(a: np.ndarray, b: np.ndarray, tags: Sequence[str], seed: int,
                         prompts: Sequence[int] | None = None) -> Dict[str, Tuple[float, float, float]]:
    """Mean difference b − a per task and overall (task mean), with 95% percentile intervals.

    ``a`` and ``b`` hold one 0/1 verdict per image, paired (same prompt, same seed).  The paired images are
    resampled with replacement within each prompt (``prompts``: the prompt of each image; without it, within
    each task), :data:`BOOTSTRAP` times, seeded: the interval is that of the task accuracy on this fixed
    prompt set over the seeds, as GenEval reports accuracy.
    """
    generator = torch.Generator().manual_seed(seed)
    tasks = [t for t in TASKS if t in tags]
    groups = list(tags) if prompts is None else [f"{tag}|{p}" for tag, p in zip(tags, prompts)]
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    index = {t: np.array([i for i, tag in enumerate(tags) if tag == t]) for t in tasks}
    draws = {}
    for t in tasks:
        parts = []
        for group in dict.fromkeys(groups[i] for i in index[t]):
            members = np.array([i for i in index[t] if groups[i] == group])
            picks = torch.randint(0, len(members), (BOOTSTRAP, len(members)), generator=generator).numpy()
            parts.append(diff[members[picks]])
        draws[t] = np.concatenate(parts, axis=1).mean(axis=1)
    overall = np.mean([draws[t] for t in tasks], axis=0)
    out = {t: (float(diff[index[t]].mean()), *np.percentile(draws[t], [2.5, 97.5]).tolist()) for t in tasks}
    out["overall"] = (float(np.mean([diff[index[t]].mean() for t in tasks])), *np.percentile(overall, [2.5, 97.5]).tolist())
    return out


def fmt_diff(d: Tuple[float, float, float]) -> str:
    return f"{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 prompts per task, 1 image each, scales 1 and 4, K=2 only")
    parser.add_argument("--images-per-prompt", type=int, default=None, help="default 4 (1 with --quick)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20, the documented default)")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help=f"plain CFG scales (default {SCALES})")
    parser.add_argument("--nlg-scales", type=float, nargs="+", default=None,
                        help="CFG scales for NLG, the first with every K of the cost study (default: nlg.shapes.DEFAULT_GUIDANCE_SCALE, then 1)")
    parser.add_argument("--settings", nargs="+", default=None, metavar="K:ETA",
                        help="only these NLG (K, η) settings, e.g. 20:1 4:5 (to split a run over processes sharing --cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", type=Path, default=None, help="pipeline folder (default: shipped)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=Path("outputs") / "shapes_geneval_cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    per_prompt = args.images_per_prompt or (1 if args.quick else 4)
    scales = tuple(args.scales) if args.scales else ((1.0, 4.0) if args.quick else SCALES)
    nlg_settings = ((2, 10.0),) if args.quick else NLG_SETTINGS
    prompts = load_prompts()
    if args.quick:
        prompts = [p for t in TASKS for p in [q for q in prompts if q["tag"] == t][:2]]
    tags = [p["tag"] for p in prompts]
    folder = Path(args.weights) if args.weights else DEFAULT_PIPELINE
    sha = safetensors_sha256(folder)
    key = hashlib.sha256(json.dumps(sha, sort_keys=True).encode()).hexdigest()
    pipe = load_pipeline(folder)
    start = time.perf_counter()

    records: Dict[SamplingConfig, Dict[str, Any]] = {}

    def run(config: SamplingConfig) -> Dict[str, Any]:
        record = run_config(pipe, config, prompts, per_prompt, args.seed, args.steps, args.cache, key)
        records[config] = record
        acc = task_accuracies([t for t in tags for _ in range(per_prompt)], record["correct"])
        print(f"{config.name:32s} overall {100 * acc['overall']:5.1f}%  ({record['seconds']:.0f} s)", flush=True)
        return record

    for scale in scales:
        run(SamplingConfig(scale))

    def overall(config: SamplingConfig) -> float:
        return task_accuracies([t for t in tags for _ in range(per_prompt)], records[config]["correct"])["overall"]

    best = max(scales, key=lambda s: (overall(SamplingConfig(s)), -s))
    if args.nlg_scales:
        nlg_scales = list(args.nlg_scales)
    elif args.quick:
        nlg_scales = [best] + ([1.0] if best != 1.0 else [])
    else:  # the model's documented default scale, then no guidance
        nlg_scales = [DEFAULT_GUIDANCE_SCALE] + ([1.0] if DEFAULT_GUIDANCE_SCALE != 1.0 else [])
    for scale in nlg_scales:
        if scale not in scales:
            run(SamplingConfig(scale))
    only = None
    if args.settings:
        try:
            only = {(int(k), float(eta)) for k, eta in (item.split(":") for item in args.settings)}
        except ValueError:
            raise SystemExit(f"error: --settings takes K:ETA pairs such as 20:1, got {args.settings}") from None
    for scale in nlg_scales:
        for k, eta in (nlg_settings if scale == nlg_scales[0] or args.quick else NLG_SETTINGS_CFG1):
            if only is None or (k, eta) in only:
                run(SamplingConfig(scale, k, eta))
    total = time.perf_counter() - start
    if only is not None:
        print(f"partial run (--settings): cached in {args.cache}; run without --settings to write the tables")
        return

    # -- tables ----------------------------------------------------------------------------------
    rows: List[Dict[str, Any]] = []
    image_tags = [t for t in tags for _ in range(per_prompt)]
    image_prompts = [i for i in range(len(prompts)) for _ in range(per_prompt)]
    for config, record in records.items():
        acc = task_accuracies(image_tags, record["correct"])
        diff = None
        if config.refining_steps:
            base = records[SamplingConfig(config.guidance_scale)]
            diff = bootstrap_difference(np.asarray(base["correct"], float), np.asarray(record["correct"], float),
                                        image_tags, seed=args.seed, prompts=image_prompts)
        for task in list(TASKS) + ["overall"]:
            if task not in acc:
                continue
            rows.append({
                "config": config.name, "guidance_scale": config.guidance_scale, "refining_steps": config.refining_steps,
                "step_size": config.step_size if config.refining_steps else "", "task": task,
                "accuracy": round(acc[task], 4),
                "diff_vs_plain": round(diff[task][0], 4) if diff else "",
                "ci_low": round(diff[task][1], 4) if diff else "", "ci_high": round(diff[task][2], 4) if diff else "",
                "images": sum(1 for t in image_tags if t == task) if task != "overall" else len(image_tags),
                "off_palette": round(float(np.mean(record["off_palette"])), 5),
                "unet_evals_per_image": record["unet_evals_per_image"], "seconds": record["seconds"],
            })
    args.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = args.out_dir / "shapes_geneval.csv"
    write_csv(csv_path, rows, list(rows[0]))

    tasks = [t for t in TASKS if t in tags]
    lines = [
        f"Mini-GenEval, {len(prompts)} prompts × {per_prompt} images, DDIM {args.steps} steps, seed {args.seed}; "
        f"weights sha256 (unet) {sha.get('unet/diffusion_pytorch_model.safetensors', '?')[:16]}…; "
        f"best plain CFG scale (overall) {best:g}; NLG at CFG {', '.join(f'{s:g}' for s in nlg_scales)}.",
        "",
    ]
    by_config: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for row in rows:
        by_config.setdefault(row["config"], {})[row["task"]] = row
    accuracies = []
    for name, cells in by_config.items():
        o = cells["overall"]
        delta = fmt_diff((o["diff_vs_plain"], o["ci_low"], o["ci_high"])) if o["diff_vs_plain"] != "" else "—"
        accuracies.append([name, *(f"{100 * cells[t]['accuracy']:.1f}" for t in tasks), f"**{100 * o['accuracy']:.1f}**",
                           delta, f"{100 * o['off_palette']:.2f}%", o["unet_evals_per_image"]])
    lines.append(markdown_table(
        ["configuration", *tasks, "overall", "Δ overall vs plain [95% CI]", "off-palette", "UNet evals/image"], accuracies))
    differences = [
        [name, *(fmt_diff((cells[t]["diff_vs_plain"], cells[t]["ci_low"], cells[t]["ci_high"])) for t in tasks)]
        for name, cells in by_config.items() if cells["overall"]["diff_vs_plain"] != ""
    ]
    lines += ["", "Per-task NLG − plain differences (percentage points, 95% paired bootstrap interval over seeds within prompts):", "",
              markdown_table(["configuration", *tasks], differences)]
    generation = sum(r["seconds"] for r in records.values())
    lines += ["", f"Command: `{command('shapes_geneval', argv)}`; {generation / 60:.1f} min of generation summed over the "
              f"configurations (1 thread each; this run {total / 60:.1f} min, the rest from the cache).",
              "", "Weights sha256: " + ", ".join(f"`{k}` {v}" for k, v in sha.items())]
    md_path = write_markdown(args.out_dir / "shapes_geneval.md", lines)

    png_path = args.out_dir / "shapes_geneval.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(by_config)
        x = np.arange(len(tasks) + 1)
        width = 0.8 / len(names)
        fig, ax = plt.subplots(figsize=(11, 4.2))
        for i, name in enumerate(names):
            values = [100 * by_config[name][t]["accuracy"] for t in tasks + ["overall"]]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
        ax.set_xticks(x, tasks + ["overall"])
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"mini-GenEval on the shapes model ({len(prompts)} prompts × {per_prompt} images)")
        ax.legend(fontsize=7, ncol=2, loc="upper right")
        fig.tight_layout()
        fig.savefig(png_path, dpi=110)
        plt.close(fig)
    except ImportError:  # pragma: no cover - matplotlib is in requirements.txt
        png_path = None
    print("\n".join(lines))
    print(f"wrote {csv_path}, {md_path}" + (f", {png_path}" if png_path else ""))


if __name__ == "__main__":
    sys.exit(main())
