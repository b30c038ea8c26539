"""Turn a :class:`~nlg.app.compare.Comparison` into what the page shows: galleries, plot, probabilities, status."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .compare import Comparison

__all__ = ["gallery", "norm_figure", "mean_probabilities", "probability_rows", "status_text", "PROBABILITY_COLUMNS"]

#: Headers of the per-seed class-probability table.
PROBABILITY_COLUMNS = ["seed", "p(digit) without NLG", "p(digit) with NLG", "classified without", "classified with"]


def gallery(comparison: Comparison, *, guided: bool) -> List[Tuple[Image.Image, str]]:
    """``(image, caption)`` per seed for one column (``guided=False``: without NLG)."""
    items = []
    for pair in comparison.pairs:
        sample = pair.guided if guided else pair.plain
        items.append((sample.image, f"seed {pair.seed}"))
    return items


def norm_figure(comparison: Comparison) -> Figure:
    """‖ε(n|c) − ε(n|∅)‖₂ per refining step (before clipping), one line per seed, τ dashed."""
    figure = Figure(figsize=(6.0, 3.0), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    settings = comparison.settings
    if settings.refining_steps == 0:
        axes.text(0.5, 0.5, "refining steps K = 0: no NLG steps to plot", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    steps = np.arange(1, settings.refining_steps + 1)
    for pair in comparison.pairs:
        axes.plot(steps, pair.step_norms.numpy(), marker="o", markersize=2.5, linewidth=1.2, label=f"seed {pair.seed}")
    if settings.clip_threshold is not None:
        axes.axhline(settings.clip_threshold, color="0.4", linestyle="--", linewidth=1.0, label=f"τ = {settings.clip_threshold:g}")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("refining step k")
    axes.set_ylabel("‖ε(n|c) − ε(n|∅)‖₂")
    axes.set_title("NLG direction norm per step (before clipping)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncols=2)
    return figure


def mean_probabilities(comparison: Comparison, *, guided: bool) -> Optional[Dict[str, float]]:
    """The evaluator's class probabilities averaged over the seeds, ``{"0": p, …, "9": p}``; None without an evaluator."""
    rows = [(pair.guided if guided else pair.plain).probabilities for pair in comparison.pairs]
    if any(row is None for row in rows):
        return None
    mean = np.mean(np.stack(rows), axis=0)
    return {str(digit): float(p) for digit, p in enumerate(mean)}


def probability_rows(comparison: Comparison) -> Optional[List[list]]:
    """Per seed: p(requested digit) and the classified digit, without and with NLG (see :data:`PROBABILITY_COLUMNS`)."""
    digit = comparison.settings.condition
    if not isinstance(digit, int) or any(p.plain.probabilities is None for p in comparison.pairs):
        return None
    rows = []
    for pair in comparison.pairs:
        plain, guided = pair.plain.probabilities, pair.guided.probabilities
        rows.append([pair.seed, round(float(plain[digit]), 3), round(float(guided[digit]), 3), int(plain.argmax()), int(guided.argmax())])
    return rows


def status_text(comparison: Comparison, *, sampler: str) -> str:
    """One Markdown line: what ran, how long it took and, for digits, the mean p(digit) without → with NLG."""
    s = comparison.settings
    what = f"digit **{s.condition}**" if isinstance(s.condition, int) else f"prompt **{s.condition}**"
    seeds = f"seed {s.seeds[0]}" if len(s.seeds) == 1 else f"seeds {s.seeds[0]}–{s.seeds[-1]}"
    tau = "off" if s.clip_threshold is None else f"{s.clip_threshold:g}"
    text = (
        f"{what}, {seeds}: NLG with K = {s.refining_steps} refining steps (η = {s.step_size:g}, τ = {tau}, "
        f"λ = {s.noise_level:g}); {sampler} {s.num_inference_steps} steps, CFG {s.guidance_scale:g}. "
        f"Done in {comparison.seconds:.1f} s."
    )
    plain, guided = mean_probabilities(comparison, guided=False), mean_probabilities(comparison, guided=True)
    if plain is not None and guided is not None and isinstance(s.condition, int):
        key = str(s.condition)
        text += f" Mean p({key}): {plain[key]:.3f} without NLG → {guided[key]:.3f} with NLG."
    return text
