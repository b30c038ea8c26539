"""What every benchmark shares: the results folder, the command a table records, interleaved timing and result files.

* :data:`RESULTS` is ``benchmarks/results``;
* :func:`command` is the command line that reproduces a run (``python -m benchmarks.<name> ...``);
* :func:`interleaved` times several arms round by round in one process, so that a machine's load drift
  hits every arm alike; :func:`paired_ratios` divides them round by round;
* :func:`lora_study_parser` and :func:`fill_defaults` are the command line the LoRA studies share, and
  :func:`sample_sheet` their picture of samples (one row per LoRA);
* :func:`write_results` writes a CSV and a Markdown table with notes; tables come from
  :func:`nlg.utils.tables.markdown_table` and every file is written atomically (:mod:`nlg.utils.io`).
"""

from __future__ import annotations

import argparse
import time
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from nlg.utils.io import atomic_write_text
from nlg.utils.tables import markdown_table, read_csv, write_csv

__all__ = ["RESULTS", "command", "seconds_of", "interleaved", "paired_ratios", "cell", "write_results", "write_markdown",
           "markdown_table", "write_csv", "read_csv", "lora_study_parser", "base_pipeline", "fill_defaults", "study_name", "sample_sheet", "finished_lora"]

#: Where the committed result tables live.
RESULTS = Path(__file__).resolve().parent / "results"


def command(name: str, argv: Optional[Sequence[str]] = None, *, without: Sequence[str] = ()) -> str:
    """``python -m benchmarks.<name>`` followed by ``argv`` (default: this process's arguments).

    Args:
        name (`str`): the benchmark module.
        argv (`Sequence[str]`, *optional*): the arguments; defaults to ``sys.argv[1:]``.
        without (`Sequence[str]`, defaults to ``()``): options that do not change the results (a cache folder, a
            shard), left out together with their value, as ``--opt value`` or ``--opt=value``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    kept: List[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in without:
            skip = True
        elif not any(arg.startswith(option + "=") for option in without):
            kept.append(arg)
    return " ".join([f"python -m benchmarks.{name}", *kept])


def seconds_of(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call of ``fn`` (``time.perf_counter``)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(arms: Mapping[str, Callable[[], float]], rounds: int, *, alternate: bool = False,
                log: Optional[Callable[[str], None]] = print) -> Dict[str, List[float]]:
    """Run every arm once per round and collect the seconds each returns.

    Args:
        arms (`Mapping[str, Callable[[], float]]`): name → a call that runs the arm once and returns its
            seconds (time only what should be timed; :func:`seconds_of` times the whole call).
        rounds (`int`): rounds; every arm runs once in each.
        alternate (`bool`, defaults to `False`): reverse the order of the arms every other round.
        log (`Callable[[str], None]`, *optional*, defaults to `print`): receives one line per round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    times: Dict[str, List[float]] = {name: [] for name in arms}
    for round_ in range(rounds):
        order = list(arms) if not (alternate and round_ % 2) else list(reversed(list(arms)))
        for name in order:
            times[name].append(arms[name]())
        if log is not None:
            log(f"round {round_ + 1}: " + ", ".join(f"{name} {times[name][-1]:.2f}s" for name in arms))
    return times


def paired_ratios(times: Mapping[str, Sequence[float]], numerator: str, denominator: str) -> List[float]:
    """``times[numerator][r] / times[denominator][r]`` per round ``r``: robust to load that drifts between rounds."""
    return [a / b for a, b in zip(times[numerator], times[denominator])]


def cell(value: Any) -> str:
    """A table cell: floats with 4 significant digits, anything else as ``str``."""
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def write_markdown(path: Path, lines: Sequence[str]) -> Path:
    """Write ``lines`` (a table is one multi-line item) joined by newlines, with a final newline, atomically."""
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_results(name: str, rows: List[Dict[str, Any]], notes: Sequence[str], columns: Sequence[str],
                  out_dir: Path = RESULTS) -> Path:
    """Write ``rows`` to ``<out_dir>/<name>.csv`` and a Markdown table of ``columns`` with ``notes`` to ``<name>.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / f"{name}.csv", rows)
    table = markdown_table(columns, [[cell(row.get(c, "")) for c in columns] for row in rows])
    return write_markdown(out_dir / f"{name}.md", [f"# {name}", "", *notes, "", table])


def lora_study_parser(description: str, quick_help: str, full: Mapping[str, Any], *, images_help: str,
                      samples_help: str, work_dir: str) -> argparse.ArgumentParser:
    """The flags every LoRA study (``finetune_*``) takes; a study adds its own after these.

    ``--quick`` and ``--seeds``, ``--steps``, ``--lr``, ``--rank``, ``--batch-size``, ``--images``, ``--samples``,
    ``--inference-steps``, ``--work-dir``, ``--out-dir``.  The size flags default to None, to be filled from the
    quick or the full set by :func:`fill_defaults`.

    Args:
        description (`str`): the parser's description.
        quick_help (`str`): what ``--quick`` runs.
        full (`Mapping[str, Any]`): the full run's settings, named in the help (``seeds``, ``steps``,
            ``batch_size``, ``images``, ``samples``, ``inference_steps``).
        images_help, samples_help (`str`): what ``--images`` and ``--samples`` count in this study.
        work_dir (`str`): the default folder of the LoRAs and data, named in the help.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--seeds", type=int, default=None, help=f"training seeds (default {full['seeds']})")
    p.add_argument("--steps", type=int, default=None, help=f"LoRA steps (default {full['steps']})")
    p.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate (default 1e-3)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--batch-size", type=int, default=None, help=f"LoRA batch (default {full['batch_size']})")
    p.add_argument("--images", type=int, default=None, help=f"{images_help} (default {full['images']})")
    p.add_argument("--samples", type=int, default=None, help=f"{samples_help} (default {full['samples']})")
    p.add_argument("--inference-steps", type=int, default=None, help=f"DDIM steps (default {full['inference_steps']})")
    p.add_argument("--work-dir", type=Path, default=None, help=f"LoRAs and data (default {work_dir})")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where the table goes (default benchmarks/results)")
    p.add_argument("--tag", default="", help="suffix of the result files and default work folder, e.g. lr3e-4")
    p.add_argument("--figure-only", action="store_true",
                   help="only redraw the pictures (no training): samples from the finished seed-0 LoRAs in --work-dir, "
                        "and curves from the CSV where the study plots them")
    p.add_argument("--model", default="shapes",
                   help="the base model: 'shapes' (the embedded model) or a diffusers pipeline folder (default shapes)")
    return p


def base_pipeline(args: argparse.Namespace) -> Any:
    """The base model of a LoRA study (``--model``): the embedded shapes pipeline or the pipeline folder named."""
    from nlg.shapes import load_pipeline

    return load_pipeline(None if args.model == "shapes" else args.model)


def study_name(base: str, args: argparse.Namespace) -> str:
    """The stem of a study's result files and default work folder: ``base``, then ``_quick`` and ``_<tag>``."""
    return base + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")


def finished_lora(folder: Path) -> Path:
    """``folder`` if it holds a finished LoRA (:data:`nlg.finetune.train.LORA_WEIGHTS`), else a ValueError naming it."""
    from nlg.finetune.train import LORA_WEIGHTS

    if not (Path(folder) / LORA_WEIGHTS).is_file():
        raise ValueError(f"no finished LoRA in {folder}: run the study without --figure-only first")
    return Path(folder)


def sample_sheet(rows: Mapping[str, np.ndarray], texts: Sequence[str], path: Path, *, scale: int = 4) -> Path:
    """A PNG of samples, one row per LoRA (or the base model), each tile labelled ``row: prompt``.

    Args:
        rows (`Mapping[str, np.ndarray]`): per row name, ``(len(texts), H, W, 3)`` images, uint8 or floats in [0, 1].
        texts (`Sequence[str]`): the prompt of each column.
        path (`Path`): the PNG to write (atomically, by :func:`nlg.shapes.labels.contact_sheet`).
        scale (`int`, defaults to 4): upscaling factor (nearest neighbour).
    """
    from nlg.shapes.labels import contact_sheet

    images, labels = [], []
    for name, batch in rows.items():
        if len(batch) != len(texts):
            raise ValueError(f"row {name!r} has {len(batch)} images for {len(texts)} prompts")
        batch = np.asarray(batch)
        images += list(batch if batch.dtype == np.uint8 else np.clip(np.round(batch * 255), 0, 255).astype(np.uint8))
        labels += [f"{name}: {t.replace('a photo of ', '')}" for t in texts]
    return contact_sheet(images, labels, path, columns=len(texts), scale=scale)


def fill_defaults(args: argparse.Namespace, quick: Mapping[str, Any], full: Mapping[str, Any]) -> argparse.Namespace:
    """Set every flag of ``args`` left at None from ``quick`` (under ``--quick``) or ``full``; return ``args``."""
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args
