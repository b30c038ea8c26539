"""The shapes evaluation protocol: CFG × steps vs NLG budgets, with controls, paired tests and prompt-bootstrap intervals.

    python -m benchmarks.shapes_protocol --split dev      # choose the CFG scale (and look at K, η) on dev seeds
    python -m benchmarks.shapes_protocol --split test     # the reported numbers, on seeds never used to choose
    python -m benchmarks.shapes_protocol --list           # the configurations, their keys and UNet evaluations per image
    python -m benchmarks.shapes_protocol --split test --settings nlg-k4-cfg1-s20 cfg1-s28 --shard 0/2   # one process' share
    python -m benchmarks.shapes_protocol --split test --pipeline PATH --tag seed2   # a second training seed of the model
    python -m benchmarks.shapes_protocol --quick --out-dir /tmp/sp                   # a smoke run

**Prompts.** The 553 prompts of ``nlg/shapes/evaluation_metadata.jsonl`` (GenEval's task sizes, drawn as
GenEval's ``create_prompts`` draws; :func:`nlg.shapes.geneval.build_prompts`).  **Seeds.** Image ``j`` of
prompt ``i`` is drawn from ``torch.Generator().manual_seed(split_seed(split, i, j))``
(:func:`nlg.shapes.sampling.split_seed`): dev and test never share a seed, and no image depends on the batch,
the process or a resumption.  ``--images-per-prompt`` defaults to 2 on dev and 4 on test.

**Configurations** (``--list``; every one on the same images' seeds, so all comparisons are paired):

* ``plain``: CFG scale × DDIM steps (``--scales`` × ``--steps``);
* ``nlg-cfg1``: NLG at CFG 1 (no guidance), ``NoiseLevelGuidance.for_budget(K)`` (K·η = 20) for K in ``--budgets``;
* ``nlg-best``: NLG on the best plain CFG scale (best overall at ``--default-steps`` on the *dev* split, read
  from ``shapes_protocol_dev.json``, or ``--best-cfg``) for K in ``--best-budgets``;
* ``control``, at CFG 1 and K = ``--control-budget``: NLG whose direction uses the empty prompt on both sides
  (only the refinement noise and renormalisation act), NLG whose direction uses another prompt of the set
  (a seeded derangement, :func:`nlg.shapes.sampling.shuffled_prompts`), and plain CFG-1 sampling with
  ``default_steps + 2K`` steps, i.e. the same UNet evaluations per image as that NLG.

UNet evaluations per image: CFG 1 costs 1 per sampler step, CFG > 1 two; NLG adds 2K (it evaluates
``[n, n]`` with the empty and the real prompt in one batch per step, the controls too).

**Statistics** (:mod:`nlg.eval.stats`): accuracy per task and GenEval's overall score (mean of the task
accuracies) with 95% intervals from a bootstrap over prompts (prompts resampled within each task, each
prompt's seeds kept together); each configuration against ``--baseline`` (default: plain sampling at the
best CFG scale) and the NLG configuration of the controls against each control: the paired difference with its
prompt-bootstrap interval, and an exact McNemar test per task with Holm's correction across the six tasks.

**Resuming and splitting.** Each image is one PNG in ``--cache`` (``<model>/<split>/<config>/<prompt>-<image>-<text
hash>.png``), written atomically after its batch; a rerun generates only what is missing.  ``--settings`` and
``--shard I/N`` (prompts ``i % N == I``) split the work over processes sharing the cache; they only generate.
A run without them generates whatever is still missing, scores every image (never cached: a new scorer
rescores) and writes ``benchmarks/results/shapes_protocol_<split>[_<tag>].{md,csv,json,png}``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nlg.eval.stats import paired_comparison, prompt_bootstrap
from nlg.shapes import DEFAULT_INFERENCE_STEPS, DEFAULT_PIPELINE, load_pipeline
from nlg.shapes.data import TASKS
from nlg.shapes.geneval import load_prompts
from nlg.shapes.sampling import SamplingConfig, generate, score_batch, shuffled_prompts, split_seed
from nlg.shapes.train import safetensors_sha256
from nlg.utils.io import atomic_save_figure, atomic_write, atomic_write_json, atomic_write_text
from nlg.utils.tables import markdown_table, write_csv

from .common import command as benchmark_command

RESULTS = Path(__file__).resolve().parent / "results"
SCALES = (1.0, 3.0, 5.0, 8.0)
STEPS = (10, DEFAULT_INFERENCE_STEPS)
BUDGETS = (20, 10, 4, 2)
BEST_BUDGETS = (20, 4)
CONTROL_BUDGET = 4
IMAGES_PER_PROMPT = {"dev": 2, "test": 4}
SHUFFLE_SEED = 0
#: The scorer's failure reasons (nlg.shapes.scorer), in table order; any other reason counts as "other".
REASONS = ("empty", "garbage", "missing object", "extra object", "wrong colour", "wrong count", "wrong relation")
COLUMNS = list(TASKS) + ["overall"]


@dataclass(frozen=True)
class Setting:
    """One evaluated configuration: a :class:`SamplingConfig` at a number of DDIM steps, in a group of the plot."""

    key: str
    group: str
    config: SamplingConfig
    steps: int

    @property
    def evals(self) -> int:
        return self.config.unet_evals_per_image(self.steps)

    @property
    def label(self) -> str:
        return f"{self.config.name}, {self.steps} steps"


def build_settings(args: argparse.Namespace, best_cfg: Optional[float]) -> List[Setting]:
    """Every configuration of the run, plain first; ``nlg-best`` only once the best CFG scale is known."""
    out: Dict[str, Setting] = {}

    def add(key: str, group: str, config: SamplingConfig, steps: int) -> None:
        out.setdefault(key, Setting(key, group, config, steps))

    for scale in args.scales:
        for steps in args.steps:
            add(f"cfg{scale:g}-s{steps}", "plain", SamplingConfig(scale), steps)
    d, k = args.default_steps, args.control_budget
    for budget in args.budgets:
        add(f"nlg-k{budget}-cfg1-s{d}", "nlg-cfg1", SamplingConfig.for_budget(budget, 1.0), d)
    if not args.no_controls:
        add(f"nlg-k{k}-cfg1-s{d}", "nlg-cfg1", SamplingConfig.for_budget(k, 1.0), d)
        add(f"empty-k{k}-cfg1-s{d}", "control", SamplingConfig.for_budget(k, 1.0, "empty"), d)
        add(f"shuffled-k{k}-cfg1-s{d}", "control", SamplingConfig.for_budget(k, 1.0, "shuffled"), d)
        add(f"cfg1-s{d + 2 * k}", "control", SamplingConfig(1.0), d + 2 * k)
    if best_cfg is not None:
        add(f"cfg{best_cfg:g}-s{d}", "plain", SamplingConfig(best_cfg), d)
        for budget in args.best_budgets:
            add(f"nlg-k{budget}-cfg{best_cfg:g}-s{d}", "nlg-best", SamplingConfig.for_budget(budget, best_cfg), d)
    return list(out.values())


def _png(image: np.ndarray):
    from PIL import Image

    def write(handle) -> None:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        handle.write(buffer.getvalue())

    return write


class Cache:
    """One PNG per (configuration, prompt, image) under ``root/<model key>/<split>/<configuration key>/``."""

    def __init__(self, root: Path, model_key: str, split: str, prompts: List[str], directions: List[str]) -> None:
        self.folder = Path(root) / model_key / split
        self.prompts, self.directions = prompts, directions

    def path(self, setting: Setting, prompt: int, image: int) -> Path:
        text = self.prompts[prompt] + ("|" + self.directions[prompt] if setting.config.direction == "shuffled" else "")
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        return self.folder / setting.key / f"{prompt:04d}-{image}-{digest}.png"

    def missing(self, setting: Setting, items: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
        return [(p, i) for p, i in items if not self.path(setting, p, i).is_file()]

    def fill(self, pipe: Any, setting: Setting, items: Sequence[Tuple[int, int]], split: str, batch_size: int) -> int:
        """Generate the missing images of ``items`` in batches, each image written atomically; returns how many."""
        todo = self.missing(setting, items)
        if not todo:
            return 0
        (self.folder / setting.key).mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        for first in range(0, len(todo), batch_size):
            chunk = todo[first : first + batch_size]
            directions = [self.directions[p] for p, _ in chunk] if setting.config.direction == "shuffled" else None
            images = generate(pipe, [self.prompts[p] for p, _ in chunk], [split_seed(split, p, i) for p, i in chunk],
                              setting.config, num_inference_steps=setting.steps, batch_size=batch_size,
                              direction_prompts=directions)
            for (p, i), image in zip(chunk, images):
                atomic_write(self.path(setting, p, i), _png(image))
        seconds = time.perf_counter() - start
        print(f"{setting.key:24s} {len(todo):5d} images in {seconds:6.1f} s ({len(todo) / seconds:.2f} images/s, "
              f"{setting.evals} UNet evals/image)", flush=True)
        return len(todo)

    def load(self, setting: Setting, items: Sequence[Tuple[int, int]]) -> np.ndarray:
        from PIL import Image

        return np.stack([np.asarray(Image.open(self.path(setting, p, i)).convert("RGB")) for p, i in items])


def _fmt(x: float, low: Optional[float] = None, high: Optional[float] = None, signed: bool = False) -> str:
    s = f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"
    return s if low is None else s + (f" [{100 * low:+.1f}, {100 * high:+.1f}]" if signed else f" [{100 * low:.1f}, {100 * high:.1f}]")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    return markdown_table(header, rows).split("\n")


def _star(p: float) -> str:
    return f"p={p:.3g}" + ("*" if p < 0.05 else "")


def _plot(settings: List[Setting], accuracy: Dict[str, Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    markers = {"empty": "x", "shuffled": "D", "prompt": "s"}
    for ax, column in zip(axes.flat, ["overall"] + list(TASKS)):
        plain = [s for s in settings if s.group == "plain"]
        for scale in sorted({s.config.guidance_scale for s in plain}):
            line = sorted((s for s in plain if s.config.guidance_scale == scale), key=lambda s: s.evals)
            ax.plot([s.evals for s in line], [100 * accuracy[s.key][column].estimate for s in line], "o-", lw=1,
                    alpha=0.7, label=f"plain CFG {scale:g} (× steps)")
        for group, style, name in (("nlg-cfg1", "s-", "NLG at CFG 1 (K·η = 20)"), ("nlg-best", "^-", "NLG on best CFG")):
            line = sorted((s for s in settings if s.group == group), key=lambda s: s.evals)
            if line:
                ax.plot([s.evals for s in line], [100 * accuracy[s.key][column].estimate for s in line], style, lw=2.2,
                        color="black" if group == "nlg-cfg1" else "tab:red", label=name)
        for s in settings:
            if s.group == "control":
                marker = "*" if s.config.refining_steps == 0 else markers[s.config.direction]
                ax.plot([s.evals], [100 * accuracy[s.key][column].estimate], marker, ms=10, mfc="none", mew=1.8,
                        label=f"control: {s.label}")
        ax.set_title(column)
        ax.set_xlabel("UNet evaluations per image")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[-1].axis("off")
    axes.flat[-1].legend(handles, labels, fontsize=7.5, loc="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=100)
    plt.close(fig)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--images-per-prompt", type=int, default=None, help="default: 2 on dev, 4 on test (1 with --quick)")
    parser.add_argument("--scales", type=float, nargs="+", default=SCALES, help=f"plain CFG scales (default {SCALES})")
    parser.add_argument("--steps", type=int, nargs="+", default=STEPS, help=f"plain DDIM steps (default {STEPS})")
    parser.add_argument("--default-steps", type=int, default=DEFAULT_INFERENCE_STEPS, help="DDIM steps under NLG and the controls")
    parser.add_argument("--budgets", type=int, nargs="*", default=BUDGETS,
                        help=f"K of NLG at CFG 1, η = 20/K (default {BUDGETS}; none: no NLG at CFG 1)")
    parser.add_argument("--best-budgets", type=int, nargs="*", default=BEST_BUDGETS,
                        help=f"K of NLG on the best CFG (default {BEST_BUDGETS}; none: no NLG on the best CFG)")
    parser.add_argument("--control-budget", type=int, default=CONTROL_BUDGET, help="K of the NLG the controls match (default 4)")
    parser.add_argument("--no-controls", action="store_true", help="leave out the three controls (e.g. on the dev split)")
    parser.add_argument("--best-cfg", type=float, default=None, help="the best plain scale (default: dev's, from shapes_protocol_dev.json)")
    parser.add_argument("--baseline", default=None, help="configuration key every other is tested against (default: plain at the best CFG)")
    parser.add_argument("--settings", nargs="+", default=None, metavar="KEY", help="only generate these configurations (see --list)")
    parser.add_argument("--shard", default=None, metavar="I/N", help="only generate prompts with index %% N == I")
    parser.add_argument("--list", action="store_true", help="print the configurations and exit")
    parser.add_argument("--quick", action="store_true", help="2 prompts per task, 1 image, 4 steps, K = 2: a smoke run")
    parser.add_argument("--pipeline", type=Path, default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--tag", default="", help="suffix of the result files, e.g. seed2 for a second model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap replicates")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=Path("outputs") / "shapes_protocol_cache")
    args = parser.parse_args(argv)
    if args.quick:
        args.scales, args.steps, args.default_steps = (1.0, 3.0), (4,), 4
        args.budgets, args.best_budgets, args.control_budget = (2,), (2,), 2
    args.images_per_prompt = args.images_per_prompt or (1 if args.quick else IMAGES_PER_PROMPT[args.split])
    if args.shard is not None:
        try:
            index, count = (int(x) for x in args.shard.split("/"))
            assert 0 <= index < count
        except (ValueError, AssertionError):
            parser.error(f"--shard takes I/N with 0 <= I < N, got {args.shard!r}")
        args.shard = (index, count)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    suffix = f"_{args.tag}" if args.tag else ""
    prompts = load_prompts()
    if args.quick:
        prompts = [p for t in TASKS for p in [q for q in prompts if q["tag"] == t][:2]]
    texts = [p["prompt"] for p in prompts]
    directions = shuffled_prompts(texts, torch.Generator().manual_seed(SHUFFLE_SEED))
    dev_json = args.out_dir / f"shapes_protocol_dev{suffix}.json"
    best_cfg = args.best_cfg
    if best_cfg is None and args.split == "test" and not (args.list and not dev_json.is_file()):
        if not dev_json.is_file():
            raise SystemExit(f"error: no {dev_json}: run --split dev first (the best CFG scale is chosen there) or pass --best-cfg")
        best_cfg = json.loads(dev_json.read_text())["best_cfg"]
    settings = build_settings(args, best_cfg)
    if args.list:
        for s in settings:
            print(f"{s.key:24s} {s.group:9s} {s.evals:4d} UNet evals/image  {s.label}")
        if best_cfg is None:
            print(f"{'cfg<best>-s' + str(args.default_steps):24s} nlg-best  and NLG on it for K in {tuple(args.best_budgets)}: "
                  f"2K + {2 * args.default_steps} UNet evals/image (the best scale comes from the dev split)")
        return 0
    known = {s.key for s in settings}
    if args.settings and not set(args.settings) <= known:
        raise SystemExit(f"error: unknown --settings {sorted(set(args.settings) - known)}; see --list")
    folder = Path(args.pipeline) if args.pipeline else DEFAULT_PIPELINE
    sha = safetensors_sha256(folder)
    model_key = hashlib.sha256(json.dumps(sha, sort_keys=True).encode()).hexdigest()[:16]
    pipe = load_pipeline(folder)
    cache = Cache(args.cache, model_key, args.split, texts, directions)
    shard = [p for p in range(len(prompts)) if args.shard is None or p % args.shard[1] == args.shard[0]]
    items = [(p, i) for p in shard for i in range(args.images_per_prompt)]

    def run(chosen: Sequence[Setting]) -> None:
        for s in chosen:
            if args.settings is None or s.key in args.settings:
                cache.fill(pipe, s, items, args.split, args.batch_size)

    run(settings)
    if args.settings is not None or args.shard is not None:
        print(f"partial run: images cached under {cache.folder}; run without --settings/--shard to write the tables")
        return 0

    all_items = [(p, i) for p in range(len(prompts)) for i in range(args.images_per_prompt)]
    tags = [prompts[p]["tag"] for p, _ in all_items]
    prompt_ids = [p for p, _ in all_items]
    meta = [prompts[p] for p, _ in all_items]
    results: Dict[str, List[Dict[str, Any]]] = {}
    correct: Dict[str, np.ndarray] = {}
    accuracy: Dict[str, Dict[str, Any]] = {}

    def score(chosen: Sequence[Setting]) -> None:
        for s in chosen:
            if s.key not in results:
                results[s.key] = score_batch(cache.load(s, all_items), meta)
                correct[s.key] = np.array([bool(r["correct"]) for r in results[s.key]])
                accuracy[s.key] = prompt_bootstrap(correct[s.key].astype(float), prompt_ids, tags, tasks=TASKS,
                                                   resamples=args.resamples, generator=torch.Generator().manual_seed(0))

    score(settings)
    if best_cfg is None:  # dev: the best plain scale at the default steps, ties to the smaller scale
        candidates = [s for s in settings if s.group == "plain" and s.steps == args.default_steps]
        best_cfg = max(candidates, key=lambda s: (accuracy[s.key]["overall"].estimate, -s.config.guidance_scale)).config.guidance_scale
        settings = build_settings(args, best_cfg)
        run(settings)
        score(settings)
    baseline = args.baseline or f"cfg{best_cfg:g}-s{args.default_steps}"
    if baseline not in correct:
        raise SystemExit(f"error: --baseline {baseline!r} is not a configuration of this run; see --list")
    k, d = args.control_budget, args.default_steps
    headline = f"nlg-k{k}-cfg1-s{d}"
    controls = [f"cfg1-s{d}", f"empty-k{k}-cfg1-s{d}", f"shuffled-k{k}-cfg1-s{d}", f"cfg1-s{d + 2 * k}"]
    controls = [c for c in dict.fromkeys(controls) if c in correct and headline in correct and c != headline]

    def compare(first: str, second: str) -> Dict[str, Dict[str, float]]:
        return paired_comparison(correct[first], correct[second], prompt_ids, tags, tasks=TASKS,
                                 resamples=args.resamples, generator=torch.Generator().manual_seed(1))

    versus = {s.key: compare(baseline, s.key) for s in settings if s.key != baseline}
    against = {c: compare(c, headline) for c in controls}

    # -- tables ----------------------------------------------------------------------------------
    command = benchmark_command("shapes_protocol", argv, without=("--cache", "--shard", "--out-dir"))
    n_prompts = len(prompts)
    head = [f"# Shapes protocol, {args.split} split{f' ({args.tag})' if args.tag else ''}", "",
            f"{n_prompts} prompts × {args.images_per_prompt} images ({args.split} seeds), model "
            f"`{folder.name}` (unet sha256 {sha.get('unet/diffusion_pytorch_model.safetensors', '?')[:16]}…); "
            f"best plain CFG scale ({'--best-cfg' if args.best_cfg is not None else f'dev, {d} steps'}): {best_cfg:g}; "
            f"baseline `{baseline}`.", "",
            f"Reproduce: `{command}`", ""]
    rows = []
    for s in settings:
        a = accuracy[s.key]
        rows.append([f"`{s.key}`", s.label, s.evals] + [_fmt(a[c].estimate, a[c].low, a[c].high) for c in COLUMNS])
    lines = head + ["## Accuracy (%) with 95% bootstrap-over-prompts intervals", ""]
    lines += _table(["key", "configuration", "UNet evals/image"] + COLUMNS, rows)
    if versus:  # a run of the baseline alone has nothing to pair
        lines += ["", f"## Paired against `{baseline}`: Δ accuracy (pp) [95% CI], exact McNemar p (Holm across the six tasks; overall unadjusted)", ""]
        lines += _table(["key"] + COLUMNS, [[f"`{key}`"] + [f"{_fmt(v[c]['difference'], v[c]['low'], v[c]['high'], True)} "
                                                              f"{_star(v[c]['p_holm'])}" for c in COLUMNS]
                                             for key, v in versus.items()])
    if against:
        lines += ["", f"## Controls: `{headline}` minus each control, Δ accuracy (pp) [95% CI], McNemar p (Holm)", "",
                  "`empty`: the direction uses the empty prompt on both sides; `shuffled`: another prompt of the set; "
                  f"`cfg1-s{d + 2 * k}`: plain sampling at the same UNet evaluations per image.", ""]
        lines += _table(["control", "accuracy of control (overall)"] + COLUMNS,
                        [[f"`{c}`", _fmt(accuracy[c]["overall"].estimate)] +
                         [f"{_fmt(v[col]['difference'], v[col]['low'], v[col]['high'], True)} {_star(v[col]['p_holm'])}" for col in COLUMNS]
                         for c, v in against.items()])
    reason_rows = []
    for s in settings:
        counts = {r: 0 for r in REASONS + ("other",)}
        for result in results[s.key]:
            if not result["correct"]:
                counts[result["reason"] if result["reason"] in REASONS else "other"] += 1
        reason_rows.append([f"`{s.key}`", int(correct[s.key].sum())] + [counts[r] for r in REASONS + ("other",)])
    lines += ["", f"## Failure reasons (images; {len(all_items)} per configuration)", ""]
    lines += _table(["key", "correct"] + list(REASONS) + ["other"], reason_rows)
    stem = args.out_dir / f"shapes_protocol_{args.split}{suffix}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    lines += ["", f"Plot: `{stem.name}.png`; per-image verdicts: `{stem.name}.csv`."]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")

    write_csv(stem.with_suffix(".csv"), (
        dict(key=s.key, group=s.group, guidance_scale=s.config.guidance_scale, steps=s.steps,
             refining_steps=s.config.refining_steps, step_size=s.config.step_size, direction=s.config.direction,
             unet_evals_per_image=s.evals, prompt=p, image=i, tag=prompts[p]["tag"],
             correct=int(bool(result["correct"])), reason=result["reason"])
        for s in settings for (p, i), result in zip(all_items, results[s.key])))
    atomic_write_json(stem.with_suffix(".json"), {
        "split": args.split, "command": command, "best_cfg": best_cfg, "baseline": baseline,
        "prompts": n_prompts, "images_per_prompt": args.images_per_prompt, "weights_sha256": sha,
        "configurations": {s.key: {"label": s.label, "group": s.group, "unet_evals_per_image": s.evals,
                                   "accuracy": {c: vars(accuracy[s.key][c]) for c in COLUMNS}} for s in settings},
        "versus_baseline": versus, "controls": against,
    })
    _plot(settings, accuracy, stem.with_suffix(".png"),
          f"Shapes protocol ({args.split}, {n_prompts} prompts × {args.images_per_prompt}): adherence vs UNet evaluations")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
