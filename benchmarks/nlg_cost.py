"""NLG at a fraction of the cost (issue 12): path length vs evaluations, clipping, schedules, stopping, frontier.

    python -m benchmarks.nlg_cost                                   # digits: cost clip schedule stop frontier (resumes)
    python -m benchmarks.nlg_cost --model flow                      # the flow-matching digits model
    # the published tables add the sections stop2, frontier2, frontier3 and a --seed 1 check: docs/guides/cost.md
    python -m benchmarks.nlg_cost --sections cost clip --quick --out-dir /tmp/cost   # smoke run
    python -m benchmarks.nlg_cost --report-only                     # redraw Markdown + PNG from the CSV

Sections (``--sections``):

* ``cost``: the path length ``L = K·η = 20`` held fixed while K shrinks 20, 10, 5, 4, 2, 1 (τ = 0.5,
  λ = 0.001, the paper's options otherwise), and the same with the noise scaled to keep ``K·λ`` fixed;
* ``clip``: τ scaled with η so that the per-step bound ``η·τ = 0.5`` of the paper's K = 20, η = 1,
  τ = 0.5 is held (clipping then engages at large η);
* ``schedule``: schedules devised here: Heun (predictor-corrector) steps and a decaying η, same path length;
* ``stop``: adaptive stopping with several signals (see ``nlg_cost_refiners.SIGNALS``);
* ``frontier``: plain CFG on a finer scale grid, and CFG + short, cheap NLG (smaller path, more noise λ,
  an earlier reference timestep, NLG followed by a lower CFG scale).

Every row samples the same per-sample seeds (``per_sample_generators(seed, N)``), 100 per digit unless
``--samples-per-class`` says otherwise, and is scored by :class:`nlg.digits.DigitsEvaluator`.
``evals`` = direction evaluations of the refinement per image (each is one CFG pair = 2 UNet
evaluations); ``unet_evals`` adds the sampler's.  Rows are appended to ``nlg_cost.csv`` atomically as
they finish (the file is rewritten through a temporary file and renamed); a rerun skips finished rows.
Wall times are measured in the same run on a shared machine: compare the ``time_ratio`` column
(total time / plain-CFG time of the same model and scale), not absolute seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from nlg import flow_direction, guidance_direction, unet_epsilon
from nlg.digits import NULL_CLASS, DigitsEvaluator, DigitsPipeline, per_sample_generators
from nlg.digits.experiment import requested_labels

from .common import RESULTS, command, interleaved, markdown_table, paired_ratios, write_csv, write_markdown
from .nlg_cost_models import digits_weights_dir, flow_model, weights_sha256
from .nlg_cost_refiners import Refiner, refine
from .nlg_cost_report import read_rows, write_report

SAMPLER_STEPS = 25
PATH = 20.0
KS = (20, 10, 5, 4, 2, 1)
FLOW_TRAIN_STEPS = 1500
FLOW_SIGMA_REF = 0.94

FIELDS = [
    "key", "model", "weights_sha256", "section", "cfg_scale", "refiner", "kind", "steps", "step_size", "etas",
    "path_length", "clip_threshold", "noise_level", "reference", "stop_signal", "stop_threshold", "stop_window",
    "min_steps", "samples", "seed", "mean_evals", "min_evals", "max_evals", "unet_evals", "accuracy",
    "mean_p_class", "fd_per_class", "fd_overall", "diversity_ratio", "refine_seconds", "total_seconds",
]


class DigitsModel:
    """The shipped digits model: DDIM 25 steps, NLG direction ε(n|c) − ε(n|∅) at t_ref (default 999)."""

    name = "digits"

    def __init__(self) -> None:
        self.pipe = DigitsPipeline.from_pretrained()
        self.sha256 = weights_sha256(digits_weights_dir())

    def initial(self, generators: List[torch.Generator]) -> torch.Tensor:
        return self.pipe.prepare_latents(len(generators), generators)

    def direction(self, labels: torch.Tensor, reference: Optional[float]) -> Any:
        ref = None if reference is None else int(reference)
        null = torch.full_like(labels, NULL_CLASS)
        cond = unet_epsilon(self.pipe.unet, self.pipe.scheduler, reference_timestep=ref, class_labels=labels)
        uncond = unet_epsilon(self.pipe.unet, self.pipe.scheduler, reference_timestep=ref, class_labels=null)
        return guidance_direction(cond, uncond)

    def sample(self, latents: torch.Tensor, labels: torch.Tensor, scale: float, generators: List[torch.Generator]) -> torch.Tensor:
        return self.pipe(labels, latents=latents, guidance_scale=scale, generator=generators, progress=False).images

    @staticmethod
    def sampler_evals(scale: float) -> int:
        return SAMPLER_STEPS * (1 if scale in (0.0, 1.0) else 2)


class FlowModel:
    """The flow-matching digits model of ``benchmarks/flow_digits.py``: 25 Euler steps, NLG ε-direction at σ_r."""

    name = "flow"

    def __init__(self, train_steps: int) -> None:
        from .flow_digits import velocity

        self.unet, folder = flow_model(train_steps)
        self.sha256 = weights_sha256(folder)
        self._velocity = velocity

    def initial(self, generators: List[torch.Generator]) -> torch.Tensor:
        return torch.stack([torch.randn(1, 8, 8, generator=g) for g in generators])

    def direction(self, labels: torch.Tensor, reference: Optional[float]) -> Any:
        sigma = FLOW_SIGMA_REF if reference is None else float(reference)
        null = torch.full_like(labels, NULL_CLASS)

        def direction(n: torch.Tensor, index: Optional[torch.Tensor] = None) -> torch.Tensor:
            rows = labels if index is None else labels[index]
            x_ref = sigma * n
            v_c = self.unet(x_ref, sigma * 1000.0, class_labels=rows).sample
            v_u = self.unet(x_ref, sigma * 1000.0, class_labels=null[: len(rows)]).sample
            return flow_direction(v_c, v_u, x_ref, sigma, target="epsilon")

        return direction

    @torch.inference_mode()
    def sample(self, latents: torch.Tensor, labels: torch.Tensor, scale: float, generators: List[torch.Generator]) -> torch.Tensor:
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
        scheduler.set_timesteps(SAMPLER_STEPS)
        x = latents
        for t in scheduler.timesteps:
            x = scheduler.step(self._velocity(self.unet, x, t, labels, scale), t, x).prev_sample
        return x.clamp(-1, 1)

    sampler_evals = staticmethod(DigitsModel.sampler_evals)


Spec = Tuple[str, float, Refiner]  # (section, cfg scale, refiner)


def euler(k: int, eta: float, **kw: Any) -> Refiner:
    return Refiner(kind="euler", steps=k, step_size=eta, **kw)


def sections(model: str, names: Sequence[str], quick: bool, full: bool = False) -> List[Spec]:
    """The study's rows, section by section in the order of ``names``.

    CPU was scarce for the published run: by default the secondary variations (clip, schedule) run at
    CFG scale 0 only, on fewer K; the CFG-1 cost rows skip K = 2 and the noise-scaled rows, and the
    flow model's cost rows run K = 20, 10, 4, 1 only.
    ``full`` runs every variation at both scales.
    """
    per_section: Dict[str, List[Spec]] = {}
    ks = (20, 4, 1) if quick else KS
    specs: List[Spec] = []
    for s in (0.0, 1.0):
        specs.append(("cost", s, Refiner()))
        ks_here = ks if (s == 0.0 or full or quick) else (20, 10, 5, 4, 1)
        if model == "flow" and not (full or quick):
            ks_here = (20, 10, 4, 1)
        specs += [("cost", s, euler(k, PATH / k)) for k in ks_here]
        if (s == 0.0 and model == "digits") or full:
            specs += [("cost", s, euler(k, PATH / k, noise_level=0.001 * PATH / k)) for k in ks if k in (5, 2, 1)]
    per_section["cost"] = specs
    clip_scales, clip_ks = ((0.0, 1.0), [k for k in ks if k < 20]) if (full or quick) else ((0.0,), [10, 4, 1])
    per_section["clip"] = [("clip", s, euler(k, PATH / k, clip_threshold=0.5 * k / PATH)) for s in clip_scales for k in clip_ks]
    specs = []
    for s in (0.0, 1.0) if (full or quick) else (0.0,):
        specs += [("schedule", s, Refiner(kind="heun", steps=h, step_size=PATH / h)) for h in ((1, 2) if not quick else (1,))]
        specs.append(("schedule", s, Refiner(kind="euler", steps=4, etas=(8.0, 6.0, 4.0, 2.0))))
        specs.append(("schedule", s, Refiner(kind="euler", steps=2, etas=(14.0, 6.0))))
        if full or quick:
            specs.append(("schedule", s, Refiner(kind="euler", steps=4, etas=(2.0, 4.0, 6.0, 8.0))))
    per_section["schedule"] = specs
    per_section["stop"] = [
        ("stop", s, Refiner(kind="euler", steps=kmax, step_size=eta, stop_signal=signal, stop_tolerance=threshold,
                            stop_window=window))
        for s in (0.0, 1.0) for signal, threshold, window, eta, kmax in stop_grid(quick, s)
    ]
    per_section["stop2"] = [("stop", 0.0, Refiner(kind="euler", steps=kmax, step_size=eta, stop_signal="radial", stop_tolerance=t))
                            for t, eta, kmax in ((0.5, 2.0, 10), (0.6, 4.0, 5)) + (((0.2, 2.0, 10), (0.3, 2.0, 10)) if model == "flow" else ())]
    per_section["frontier"] = frontier_grid(model, quick)
    per_section["frontier2"] = frontier_extra(model)
    per_section["check"] = frontier_check(model)
    per_section["frontier3"] = [("frontier", 1.1, Refiner()), ("frontier", 1.0, euler(1, 0.25)), ("frontier", 0.9, Refiner())]
    return [spec for name in names for spec in per_section[name]]


def stop_grid(quick: bool, scale: float) -> List[Tuple[str, float, int, float, int]]:
    """(signal, threshold, window, η, K_max) for the ``stop`` section."""
    if quick:
        return [("norm", 0.005, 2, 1.0, 20), ("radial", 0.4, 1, 1.0, 20), ("radial", 0.4, 1, 4.0, 5)]
    if scale != 0.0:
        return [("radial", 0.4, 1, 1.0, 20)]
    return [("norm", 0.005, 2, 1.0, 20), ("cosine", 0.9999, 2, 1.0, 20), ("drift", 0.2, 1, 1.0, 20),
            ("radial", 0.4, 1, 1.0, 20), ("radial", 0.5, 1, 1.0, 20), ("radial", 0.4, 1, 4.0, 5),
            ("radial", 0.5, 1, 4.0, 5), ("radial", 0.35, 1, 1.0, 20)]


def frontier_grid(model: str, quick: bool) -> List[Spec]:
    """Plain CFG on a finer grid, then CFG + cheap NLG: short paths (K = 2), more noise λ, an earlier
    reference, a lower CFG scale after NLG, and the ``radial`` gate that leaves samples whose first
    ρ is already high untouched (K ≤ 10 or 20, η = 1)."""
    # Plain CFG at 0 and 1 is in the ``cost`` section; the summary compares against every plain row.
    specs: List[Spec] = [("frontier", s, Refiner()) for s in ((0.75, 1.25) if quick else (0.5, 0.75, 1.25, 1.5))]
    base = None if model == "digits" else 0.98  # flow: σ_r = 0.98 hurt FD least in flow_digits.md
    early = 700.0 if model == "digits" else 0.94

    def gate(threshold: float, kmax: int) -> Refiner:
        return Refiner(kind="euler", steps=kmax, step_size=1.0, stop_signal="radial", stop_tolerance=threshold,
                       reference=base)

    if quick:
        return specs + [("frontier", 1.0, euler(2, 1.0, reference=base)), ("frontier", 1.0, gate(0.0, 10))]
    nlg = [("frontier", 1.0, gate(t, 10)) for t in (-0.1, 0.0)]
    nlg += [("frontier", 1.0, euler(2, p / 2, reference=base)) for p in (1.0, 2.0)]
    nlg += [("frontier", 0.75, gate(t, 20)) for t in (0.0, 0.1)]
    nlg += [("frontier", 0.75, euler(2, 2.0, reference=base)), ("frontier", 1.0, euler(2, 1.0, noise_level=0.05, reference=base)),
            ("frontier", 1.0, euler(2, 1.0, reference=early)), ("frontier", 1.0, euler(2, 2.0, reference=base))]
    return specs[:2] + nlg[:4] + specs[2:] + nlg[4:]


def _gate(threshold: float, kmax: int, eta: float = 1.0, reference: Optional[float] = None) -> Refiner:
    return Refiner(kind="euler", steps=kmax, step_size=eta, stop_signal="radial", stop_tolerance=threshold, reference=reference)


def frontier_extra(model: str) -> List[Spec]:
    """Second-round frontier candidates near the first round's best (CFG 1 + very short or gated NLG)."""
    base = None if model == "digits" else 0.98
    return [("frontier", 1.0, _gate(-0.15, 10, reference=base)), ("frontier", 1.0, euler(1, 0.5, reference=base)),
            ("frontier", 1.0, _gate(-0.1, 20, eta=0.5, reference=base))]


def frontier_check(model: str) -> List[Spec]:
    """Plain CFG 1 and the two closest candidates, meant for ``--seed 1``: how much the frontier moves by chance."""
    base = None if model == "digits" else 0.98
    return [("frontier", 1.0, Refiner()), ("frontier", 1.0, _gate(-0.1, 10, reference=base)),
            ("frontier", 1.0, euler(2, 0.5, reference=base)), ("frontier", 1.0, euler(1, 0.5, reference=base))]


def key_of(model: str, section: str, scale: float, refiner: Refiner, samples: int, seed: int) -> str:
    return f"{model}|{section}|s={scale:g}|{refiner.name}|n={samples}|seed={seed}"


def run_row(model: Any, evaluator: DigitsEvaluator, section: str, scale: float, refiner: Refiner, labels: torch.Tensor,
            seed: int, chunk: int = 250) -> Dict[str, Any]:
    images, evaluations, refine_seconds, total_seconds = [], [], 0.0, 0.0
    for start in range(0, len(labels), chunk):
        part = labels[start : start + chunk]
        gens = per_sample_generators(seed, len(part), start=start)
        begin = time.perf_counter()
        latents = model.initial(gens)
        latents, evals = refine(latents, model.direction(part, refiner.reference), refiner, gens)
        refine_seconds += time.perf_counter() - begin
        images.append(model.sample(latents, part, scale, gens))
        total_seconds += time.perf_counter() - begin
        evaluations.append(evals)
    metrics = evaluator.evaluate(torch.cat(images), labels)
    evals = torch.cat(evaluations).float()
    return dict(
        model=model.name, weights_sha256=model.sha256, section=section, cfg_scale=scale, refiner=refiner.name,
        kind=refiner.kind, steps=refiner.steps, step_size=refiner.step_size if not refiner.etas else "",
        etas="/".join(f"{e:g}" for e in refiner.etas), path_length=refiner.path_length,
        clip_threshold="none" if refiner.clip_threshold is None else refiner.clip_threshold,
        noise_level=refiner.noise_level, reference="" if refiner.reference is None else refiner.reference,
        stop_signal=refiner.stop_signal or "", stop_threshold=refiner.stop_tolerance if refiner.stop_signal else "",
        stop_window=refiner.stop_window if refiner.stop_signal else "", min_steps=refiner.min_steps if refiner.stop_signal else "",
        samples=len(labels), seed=seed, mean_evals=float(evals.mean()), min_evals=int(evals.min()), max_evals=int(evals.max()),
        unet_evals=2 * float(evals.mean()) + model.sampler_evals(scale), accuracy=metrics.accuracy,
        mean_p_class=metrics.mean_p_class, fd_per_class=metrics.fd_per_class, fd_overall=metrics.fd_overall,
        diversity_ratio=metrics.diversity_ratio, refine_seconds=refine_seconds, total_seconds=total_seconds,
    )


def write_rows_atomically(path: Path, rows: Iterable[Dict[str, Any]]) -> None:
    """Rewrite the CSV atomically (:func:`nlg.utils.tables.write_csv`): a killed run never leaves half a file."""
    formatted = ({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    write_csv(path, formatted, FIELDS, extrasaction="ignore")


def append_row(path: Path, row: Dict[str, Any]) -> None:
    """Add ``row`` to the CSV under an exclusive lock, merging with rows other processes wrote meanwhile."""
    import fcntl
    import hashlib
    import tempfile

    # The lock lives in the temp folder, keyed by the CSV's absolute path, so results/ holds only results.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with (Path(tempfile.gettempdir()) / f"nlg_cost_{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = [r for r in read_rows(path) if r["key"] != row["key"]]
        write_rows_atomically(path, rows + [row])


TIMING_CONFIGS = [
    ("plain CFG", Refiner()),
    ("K=20 η=1 (paper)", euler(20, 1.0)),
    ("K=10 η=2", euler(10, 2.0)),
    ("K=4 η=5 (for_budget(4))", euler(4, 5.0)),
    ("K=1 η=20 (for_budget(1))", euler(1, 20.0)),
    ("radial stop 0.4, η=1, K≤20", Refiner(kind="euler", steps=20, step_size=1.0, stop_signal="radial", stop_tolerance=0.4)),
]


def timing(model: Any, out_dir: Path, *, scale: float, images: int, rounds: int, seed: int) -> Path:
    """Wall time of refinement + sampling per configuration, interleaved in ``rounds`` rounds; median ratios to plain CFG."""
    import statistics

    labels = requested_labels(max(1, images // 10))
    evals: Dict[str, float] = {}

    def arm(name: str, refiner: Refiner) -> Callable[[], float]:
        def once() -> float:
            gens = per_sample_generators(seed, len(labels))
            begin = time.perf_counter()
            latents, used = refine(model.initial(gens), model.direction(labels, refiner.reference), refiner, gens)
            model.sample(latents, labels, scale, gens)
            evals[name] = float(used.float().mean())
            return time.perf_counter() - begin

        return once

    seconds = interleaved({name: arm(name, refiner) for name, refiner in TIMING_CONFIGS}, rounds, log=None)
    base = statistics.median(seconds["plain CFG"])
    rows = []
    for name, _ in TIMING_CONFIGS:
        ratios = paired_ratios(seconds, name, "plain CFG")
        rows.append(dict(config=name, mean_evals=evals[name], unet_evals=2 * evals[name] + model.sampler_evals(scale),
                         median_seconds=statistics.median(seconds[name]), median_ratio_to_plain=statistics.median(ratios),
                         min_ratio=min(ratios), max_ratio=max(ratios)))
    table = markdown_table(
        ["config", "direction evals", "UNet evals", "median s", "median ratio to plain", "min–max ratio"],
        [[r["config"], f"{r['mean_evals']:.2f}", f"{r['unet_evals']:.1f}", f"{r['median_seconds']:.2f}",
          f"{r['median_ratio_to_plain']:.2f}", f"{r['min_ratio']:.2f}–{r['max_ratio']:.2f}"] for r in rows],
    )
    argv = ["--model", model.name, "--timing", "--timing-images", str(images), "--timing-rounds", str(rounds)]
    lines = [f"# nlg_cost timing ({model.name})", "",
             f"`{command('nlg_cost', argv)}`: "
             f"{len(labels)} images at CFG scale {scale:g}, "
             f"refinement + {SAMPLER_STEPS} sampler steps, the configurations interleaved in {rounds} rounds on one "
             f"thread; ratios are per round (same round's plain CFG), then the median. Weights sha256 `{model.sha256}`. "
             f"Plain CFG median: {base:.2f} s.", "", table]
    path = write_markdown(out_dir / f"nlg_cost_timing_{model.name}.md", lines)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("digits", "flow"), default="digits")
    parser.add_argument("--sections", nargs="+", default=["cost", "clip", "schedule", "stop", "frontier"],
                        choices=("cost", "clip", "schedule", "stop", "stop2", "frontier", "frontier2", "frontier3", "check"),
                        help="check: plain CFG 1 and the two closest frontier candidates, for a second --seed")
    parser.add_argument("--quick", action="store_true", help="few rows, 5 samples per digit, 200-step flow model")
    parser.add_argument("--full", action="store_true", help="every variation at CFG scales 0 and 1 (default: the published subset)")
    parser.add_argument("--samples-per-class", type=int, default=None, help="default 100 (5 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flow-train-steps", type=int, default=None, help=f"default {FLOW_TRAIN_STEPS} (200 with --quick)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="rewrite nlg_cost.md and .png from the CSV")
    parser.add_argument("--timing", action="store_true", help="interleaved wall-time ratios only (nlg_cost_timing_<model>.md)")
    parser.add_argument("--timing-images", type=int, default=200)
    parser.add_argument("--timing-rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = args.out_dir / "nlg_cost.csv"
    if args.timing:
        model_t: Any = DigitsModel() if args.model == "digits" else FlowModel(args.flow_train_steps or FLOW_TRAIN_STEPS)
        print(f"wrote {timing(model_t, args.out_dir, scale=0.0, images=args.timing_images, rounds=args.timing_rounds, seed=args.seed)}")
        return
    if not args.report_only:
        per_class = args.samples_per_class or (5 if args.quick else 100)
        labels = requested_labels(per_class)
        if args.model == "digits":
            model: Any = DigitsModel()
        else:
            model = FlowModel(args.flow_train_steps or (200 if args.quick else FLOW_TRAIN_STEPS))
        evaluator = DigitsEvaluator()
        for section, scale, refiner in sections(args.model, args.sections, args.quick, args.full):
            key = key_of(args.model, section, scale, refiner, len(labels), args.seed)
            done = [row for row in read_rows(csv_path) if row["key"] == key]
            if any(row["weights_sha256"] != model.sha256 for row in done):
                raise ValueError(f"{csv_path} holds {key} measured on other weights than {model.sha256[:12]}…: "
                                 "delete those rows or pass another --out-dir")
            if done:
                continue
            row = {"key": key, **run_row(model, evaluator, section, scale, refiner, labels, args.seed)}
            append_row(csv_path, row)
            print(f"{key}: acc {row['accuracy']:.3f} FD/class {row['fd_per_class']:.2f} evals {row['mean_evals']:.2f} "
                  f"{row['total_seconds']:.0f} s", flush=True)
    print(f"wrote {write_report(csv_path, args.out_dir)}")


if __name__ == "__main__":
    main()
