"""Tables and figures for the digits demo and benchmark: a Markdown metrics table, a side-by-side grid, the frontier plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from torch import Tensor

from ..utils.io import atomic_save_figure
from ..utils.tables import markdown_table
from .data import NUM_CLASSES, to_intensity
from .evaluator import DigitsEvaluator, DigitsMetrics

__all__ = ["metrics_table", "reference_lines", "save_grid", "plot_frontier"]


def _fmt_metrics(metrics: DigitsMetrics) -> List[str]:
    return [
        f"{100 * metrics.accuracy:.1f}%",
        f"{metrics.mean_p_class:.3f}",
        f"{metrics.fd_overall:.2f}",
        f"{metrics.fd_per_class:.2f}",
        f"{metrics.diversity:.2f} ({metrics.diversity_ratio:.2f})",
    ]


def metrics_table(rows: Sequence[Any]) -> str:
    """A Markdown table of :class:`nlg.digits.experiment.ConfigResult` rows."""
    header = ["configuration", "accuracy", "p(class)", "FD overall", "FD per class", "diversity (÷ real)", "seconds"]
    cells = [[row.config.name] + _fmt_metrics(row.metrics) + [f"{row.seconds:.0f}"] for row in rows]
    return markdown_table(header, cells, align=["left"] + ["right"] * (len(header) - 1))


def reference_lines(evaluator: DigitsEvaluator) -> str:
    """What real digits score: the evaluator's held-out accuracy and the training split's FD/diversity."""
    real = evaluator.real_reference()
    return (
        f"evaluator: logistic regression on pixels, held-out accuracy {100 * evaluator.heldout_accuracy:.1f}%. "
        f"Real training digits vs held-out: FD overall {real.fd_overall:.2f}, per class {real.fd_per_class:.2f}; "
        f"diversity {real.diversity:.2f} (held-out real {evaluator.diversity_real:.2f})."
    )


def _pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Union[str, Path]) -> Path:
    """Lay out, write as a 150-dpi PNG (creating folders), close, return the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_figure(fig, path, dpi=150)
    _pyplot().close(fig)
    return path


def _tile(images: Tensor, rows: int, cols: int, pad: int = 1) -> np.ndarray:
    """``rows × cols`` 8×8 images (row-major) on a white canvas with ``pad`` pixels between tiles."""
    pixels = 1.0 - to_intensity(images).squeeze(1).numpy()  # dark ink on white, as the dataset looks
    size = pixels.shape[-1]
    canvas = np.ones((rows * (size + pad) - pad, cols * (size + pad) - pad))
    for index in range(rows * cols):
        r, c = divmod(index, cols)
        canvas[r * (size + pad) : r * (size + pad) + size, c * (size + pad) : c * (size + pad) + size] = pixels[index]
    return canvas


def save_grid(
    panels: Sequence[Tensor],
    titles: Sequence[str],
    path: Union[str, Path],
    *,
    samples_per_class: int,
    columns: int = 8,
) -> Path:
    """Side-by-side panels, one row per digit, the first ``columns`` samples of each digit.

    Args:
        panels (`Sequence[torch.Tensor]`): per panel, images ``(10·samples_per_class, 1, 8, 8)`` ordered
            by digit (as :func:`nlg.digits.experiment.requested_labels`); same seeds in every panel.
        titles (`Sequence[str]`): one title per panel.
        path (`str` or `Path`): where to write the PNG (folders are created).
        samples_per_class (`int`): images per digit in each panel.
        columns (`int`, defaults to 8): samples shown per digit and panel.
    """
    plt = _pyplot()
    if len(panels) != len(titles):
        raise ValueError(f"got {len(panels)} panels but {len(titles)} titles")
    columns = min(columns, samples_per_class)
    index = np.concatenate([np.arange(columns) + d * samples_per_class for d in range(NUM_CLASSES)])
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels) + 0.3, 3.25), squeeze=False)
    for ax, images, title in zip(axes[0], panels, titles):
        ax.imshow(_tile(images[index], NUM_CLASSES, columns), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([4 + 9 * d for d in range(NUM_CLASSES)], [str(d) for d in range(NUM_CLASSES)])
        ax.tick_params(length=0, labelsize=8)
    return _save(fig, path)


def plot_frontier(rows: Sequence[Dict[str, Any]], path: Union[str, Path], *, reference_fd: Optional[float] = None) -> Path:
    """Accuracy vs per-class Fréchet distance, one curve per ``refining_steps`` (points = CFG scales).

    Rows with non-default ``step_size``/``clip_threshold`` are drawn as separate labelled markers.

    Args:
        rows (`Sequence[Dict]`): benchmark rows with ``refining_steps``, ``guidance_scale``, ``step_size``,
            ``clip_threshold``, ``accuracy``, ``fd_per_class``.
        path (`str` or `Path`): the PNG to write.
        reference_fd (`float`, *optional*): per-class FD of real training digits, drawn as a line.
    """
    from matplotlib.ticker import NullLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10.0, 5.2))
    main = [r for r in rows if float(r["step_size"]) == 1.0 and str(r["clip_threshold"]) in ("0.5", "0.50")]
    for k in sorted({int(r["refining_steps"]) for r in main}):
        curve = sorted((r for r in main if int(r["refining_steps"]) == k), key=lambda r: float(r["guidance_scale"]))
        xs = [float(r["fd_per_class"]) for r in curve]
        ys = [100 * float(r["accuracy"]) for r in curve]
        ax.plot(xs, ys, marker="o", label=f"K = {k}" + (" (plain CFG)" if k == 0 else ""))
        for r, x, y in zip(curve, xs, ys):
            ax.annotate(f"{float(r['guidance_scale']):g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    variants = [r for r in rows if r not in main]
    markers = {0.0: "x", 1.0: "+"}
    for r in variants:
        scale = float(r["guidance_scale"])
        clip = r["clip_threshold"] if str(r["clip_threshold"]) == "none" else f"{float(r['clip_threshold']):g}"
        label = f"CFG {scale:g}, K={r['refining_steps']} η={float(r['step_size']):g} τ={clip}"
        ax.scatter([float(r["fd_per_class"])], [100 * float(r["accuracy"])], marker=markers.get(scale, "*"), s=45, label=label)
    if reference_fd is not None:
        ax.axvline(reference_fd, color="gray", linestyle=":", label="real train digits")
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks([2, 3, 4, 5, 7, 10, 15, 20], ["2", "3", "4", "5", "7", "10", "15", "20"])
    ax.set_xlabel("Fréchet distance to held-out digits, per class, log scale (lower = closer to real)")
    ax.set_ylabel("class accuracy of the evaluator (%)")
    ax.set_title("Digits: adherence vs quality (numbers at points = CFG scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return _save(fig, path)
