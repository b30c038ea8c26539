"""Figures for comparing NLG with the plain pipeline; used by the notebooks in ``notebooks/``.

Matplotlib is imported lazily, so ``import nlg`` never needs it.

* :func:`side_by_side` puts each seed's plain image next to its NLG image, one row per prompt.
* :func:`plot_step_norms` draws ‖ε(n|c) − ε(n|∅)‖₂ per refinement step (``NLGRefinement.step_norms``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["side_by_side", "plot_step_norms"]


def _as_hwc(image: Any) -> np.ndarray:
    """An image as an (H, W, C) or (H, W) float array in [0, 1]: accepts PIL images, NumPy arrays, tensors."""
    if hasattr(image, "detach"):  # torch.Tensor, channels first
        image = image.detach().float().cpu().numpy()
        if image.ndim == 3:
            image = image.transpose(1, 2, 0)
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array / 255.0
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def side_by_side(
    baseline: Sequence[Sequence[Any]],
    guided: Sequence[Sequence[Any]],
    row_labels: Sequence[str],
    seeds: Sequence[int],
    *,
    names: Sequence[str] = ("plain", "NLG"),
    cell_size: float = 2.2,
    cmap: Optional[str] = None,
) -> Any:
    """One row per prompt; for every seed, the plain image and then the NLG image from the same seed.

    Args:
        baseline, guided: ``[row][seed]`` images (PIL, ``(H, W, C)`` arrays in [0, 1] or uint8, or
            ``(C, H, W)`` tensors); ``guided[r][s]`` started from the same seed as ``baseline[r][s]``.
        row_labels: one label per row (the prompt), written to the left of the row.
        seeds: the seed of every column pair, for the column titles.
        names: the titles of the two images in a pair.
        cell_size: inches per image.
        cmap: colormap for single-channel images (e.g. ``"gray_r"``).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    import matplotlib.pyplot as plt

    rows, n_seeds = len(baseline), len(seeds)
    if len(guided) != rows or len(row_labels) != rows:
        raise ValueError(f"baseline, guided and row_labels must have the same length, got {rows}, {len(guided)}, {len(row_labels)}")
    for r in range(rows):
        if len(baseline[r]) != n_seeds or len(guided[r]) != n_seeds:
            raise ValueError(f"row {r} must hold one image per seed ({n_seeds}) in baseline and guided")
    fig, axes = plt.subplots(
        rows, 2 * n_seeds, figsize=(2 * n_seeds * cell_size, rows * cell_size + 0.4), squeeze=False
    )
    for r in range(rows):
        for s, seed in enumerate(seeds):
            for k, image in enumerate((baseline[r][s], guided[r][s])):
                ax = axes[r][2 * s + k]
                ax.imshow(_as_hwc(image), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"seed {seed} · {names[k]}", fontsize=9)
        axes[r][0].set_ylabel(_wrap(row_labels[r]), fontsize=8)
    fig.tight_layout()
    return fig


def plot_step_norms(
    step_norms: Any, labels: Sequence[str], *, clip_threshold: Optional[float] = None, band: bool = True, ax: Any = None
) -> Any:
    """Per-step direction norms: one line per entry of ``labels``, the mean over its images, the range shaded.

    Args:
        step_norms: a sequence (one entry per label) of ``(K, B)`` arrays or tensors, e.g. the
            ``step_norms`` of one ``NLGRefinement`` per prompt.
        labels: one legend entry per entry of ``step_norms``.
        clip_threshold: if given, drawn as a dashed line (norms above it are clipped to it).
        band: shade the range (min to max over the images) around each line.
        ax: an existing axes to draw on; a new figure otherwise.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if len(step_norms) != len(labels):
        raise ValueError(f"need one label per step_norms entry, got {len(labels)} labels for {len(step_norms)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.5))
    for norms, label in zip(step_norms, labels):
        norms = np.asarray(norms.detach().cpu() if hasattr(norms, "detach") else norms, dtype=np.float64)
        if norms.ndim == 1:
            norms = norms[:, None]
        steps = np.arange(1, norms.shape[0] + 1)
        (line,) = ax.plot(steps, norms.mean(axis=1), marker="o", markersize=3, label=_wrap(label, 40))
        if band and norms.shape[1] > 1:
            ax.fill_between(steps, norms.min(axis=1), norms.max(axis=1), color=line.get_color(), alpha=0.2)
    if clip_threshold is not None:
        ax.axhline(clip_threshold, color="black", linestyle="--", linewidth=1, label=f"clip threshold τ = {clip_threshold}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("refinement step k")
    ax.set_ylabel("‖ε(n|y) − ε(n|∅)‖₂")
    if len(labels) > 4:  # many lines: the legend goes to the right of the axes
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.figure.tight_layout()
    return ax.figure


def _wrap(text: str, width: int = 24) -> str:
    """Break ``text`` into lines of at most ``width`` characters at spaces."""
    lines, line = [], ""
    for word in str(text).split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)
