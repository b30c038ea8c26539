"""Paired statistics for prompt-adherence benchmarks: exact McNemar, Holm, and a bootstrap over prompts.

A GenEval-style benchmark scores every image right or wrong.  Two sampling configurations run on the
same prompts with the same per-image seeds give *paired* verdicts, and an image's seeds are nested in its
prompt.  Three functions cover what a reviewer asks of such a comparison:

* :func:`mcnemar_exact`: the exact (binomial) McNemar test on the discordant pairs of two paired 0/1
  vectors (McNemar 1947; the exact form conditions on the number of discordant pairs);
* :func:`holm`: Holm's step-down adjustment of a family of p-values (Holm 1979), e.g. one test per task;
* :func:`prompt_bootstrap`: percentile intervals for per-task and overall accuracy (or an accuracy
  difference) from a bootstrap that resamples *prompts* with replacement within each task and keeps
  each prompt's images together, so the interval covers the choice of prompts as well as of seeds.

:func:`paired_comparison` combines them per task.  Everything is functional: arrays in, plain
dataclasses and dicts out; the only random draws take a ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["McNemarResult", "Interval", "mcnemar_exact", "holm", "prompt_bootstrap", "paired_comparison", "task_means"]


@dataclass(frozen=True)
class McNemarResult:
    """An exact McNemar test: ``b`` pairs right only in the second vector, ``c`` right only in the first."""

    b: int
    c: int
    p_value: float

    @property
    def discordant(self) -> int:
        """Pairs on which the two verdicts differ, ``b + c``."""
        return self.b + self.c


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval ``[low, high]``."""

    estimate: float
    low: float
    high: float


def _binary(name: str, values: Sequence) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold 0/1 or boolean verdicts")
    return array.astype(bool)


def mcnemar_exact(first: Sequence, second: Sequence) -> McNemarResult:
    r"""Two-sided exact McNemar test of paired 0/1 outcomes.

    With ``b`` = pairs right in ``second`` only and ``c`` = pairs right in ``first`` only, under the null
    hypothesis of equal accuracy ``b ~ Binomial(b + c, ½)`` given ``b + c``, and

    .. math::
        p = \min\Big(1,\; 2 \sum_{k=0}^{\min(b, c)} \binom{b+c}{k} 2^{-(b+c)}\Big),

    with ``p = 1`` when no pair is discordant.  Computed with exact integer arithmetic.

    Args:
        first (`Sequence`): 0/1 (or boolean) verdicts of the first configuration, one per image.
        second (`Sequence`): the paired verdicts of the second configuration (same images, same order).
    """
    a, b_ = _binary("first", first), _binary("second", second)
    if a.shape != b_.shape:
        raise ValueError(f"first and second must be paired (same length), got {a.size} and {b_.size}")
    b = int(np.sum(~a & b_))
    c = int(np.sum(a & ~b_))
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0)
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return McNemarResult(b, c, min(1.0, 2 * tail / 2**n))


def holm(p_values: Sequence[float]) -> List[float]:
    r"""Holm's step-down adjusted p-values, in the input order.

    Sorting the m p-values ascending, :math:`p_{(1)} \le \dots \le p_{(m)}`, the adjusted values are

    .. math::
        \tilde p_{(i)} = \min\Big(1,\; \max_{j \le i} (m - j + 1)\, p_{(j)}\Big),

    so rejecting ``adjusted < α`` controls the family-wise error rate at α (Holm 1979, Scand. J. Statist.
    6:65-70).  Ties keep their input order.

    Args:
        p_values (`Sequence[float]`): the family's p-values, each in [0, 1].
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    if p.size and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1):
        raise ValueError("p_values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = scaled
    return adjusted.tolist()


def _groups(values: Sequence, prompts: Sequence, tags: Sequence[str], tasks: Optional[Sequence[str]]):
    """Per task: the prompts' sums and image counts, as arrays (prompts in order of first appearance)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {x.shape}")
    if not (len(prompts) == len(tags) == x.size):
        raise ValueError(f"values, prompts and tags must have one entry per image, got {x.size}, {len(prompts)}, {len(tags)}")
    order = list(dict.fromkeys(tags)) if tasks is None else [t for t in tasks if t in set(tags)]
    sums: Dict[str, Dict] = {t: {} for t in order}
    counts: Dict[str, Dict] = {t: {} for t in order}
    task_of: Dict = {}
    for value, prompt, tag in zip(x, prompts, tags):
        if task_of.setdefault(prompt, tag) != tag:
            raise ValueError(f"prompt {prompt!r} appears under two tasks ({task_of[prompt]!r} and {tag!r})")
        if tag in sums:
            sums[tag][prompt] = sums[tag].get(prompt, 0.0) + value
            counts[tag][prompt] = counts[tag].get(prompt, 0) + 1
    return {t: (np.array(list(sums[t].values())), np.array(list(counts[t].values()), dtype=np.float64)) for t in order}


def task_means(values: Sequence, tags: Sequence[str], tasks: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Mean of ``values`` per task, and ``overall`` = the unweighted mean of the task means (GenEval's score).

    Args:
        values (`Sequence`): one number per image (a 0/1 verdict, or a paired difference).
        tags (`Sequence[str]`): the task of each image.
        tasks (`Sequence[str]`, *optional*): the tasks to report, in order; default: as they appear.
    """
    groups = _groups(values, list(range(len(tags))), tags, tasks)
    out = {t: float(s.sum() / n.sum()) for t, (s, n) in groups.items()}
    out["overall"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


def prompt_bootstrap(
    values: Sequence,
    prompts: Sequence,
    tags: Sequence[str],
    *,
    tasks: Optional[Sequence[str]] = None,
    resamples: int = 2000,
    confidence: float = 0.95,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, Interval]:
    r"""Per-task and overall means with percentile intervals from a bootstrap over prompts.

    Within each task the P prompts are drawn P times with replacement; a drawn prompt brings *all* its
    images (its seeds stay together), so the replicate task mean is

    .. math::
        \hat\mu^*_t = \frac{\sum_{i} S_{\pi(i)}}{\sum_i N_{\pi(i)}},

    with :math:`S_p` the sum of ``values`` over prompt p's images, :math:`N_p` their number and π the
    draw.  Resampling within each task keeps the task sizes fixed, as the benchmark fixes them; the
    replicate overall score is the mean of the replicate task means.  The interval is the central
    ``confidence`` percentile interval of the replicates (Efron and Tibshirani 1993, ch. 13); the
    estimate is the observed mean.

    Pass 0/1 verdicts for accuracy, or the paired differences ``second − first`` for an accuracy
    difference (same images in the same order in both configurations).

    Args:
        values (`Sequence`): one number per image.
        prompts (`Sequence`): the prompt (any hashable id) of each image; a prompt belongs to one task.
        tags (`Sequence[str]`): the task of each image.
        tasks (`Sequence[str]`, *optional*): the tasks to report, in order; default: as they appear.
        resamples (`int`, defaults to 2000): bootstrap replicates.
        confidence (`float`, defaults to 0.95): the interval's nominal coverage, in (0, 1).
        generator (`torch.Generator`, *optional*): drives the draws; a fresh one seeded 0 if omitted.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be an int >= 1, got {resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    groups = _groups(values, prompts, tags, tasks)
    tail = 100 * (1 - confidence) / 2
    out: Dict[str, Interval] = {}
    replicates = []
    for task, (sums, counts) in groups.items():
        picks = torch.randint(0, sums.size, (resamples, sums.size), generator=generator).numpy()
        draws = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
        replicates.append(draws)
        low, high = np.percentile(draws, [tail, 100 - tail])
        out[task] = Interval(float(sums.sum() / counts.sum()), float(low), float(high))
    if out:
        overall = np.mean(replicates, axis=0)
        low, high = np.percentile(overall, [tail, 100 - tail])
        out["overall"] = Interval(float(np.mean([i.estimate for i in out.values()])), float(low), float(high))
    return out


def paired_comparison(
    first: Sequence, second: Sequence, prompts: Sequence, tags: Sequence[str], **bootstrap: Any
) -> Dict[str, Dict[str, float]]:
    """Compare two configurations on paired images, per task and overall.

    For each task: the accuracy difference ``second − first`` with its :func:`prompt_bootstrap` interval,
    the exact McNemar test (:func:`mcnemar_exact`) on that task's images, and its Holm-adjusted p-value
    across the family of task tests (:func:`holm`).  ``overall`` has the difference of GenEval's overall
    scores with its interval and McNemar on all images, outside the family (not adjusted).

    McNemar treats a task's image pairs as independent; images of one prompt are not, which the
    prompt bootstrap's interval accounts for and the test does not.

    Args:
        first, second (`Sequence`): the 0/1 verdicts of the two configurations on the same images, in one order.
        prompts (`Sequence`), tags (`Sequence[str]`): each image's prompt id and task, as in :func:`prompt_bootstrap`.
        **bootstrap: ``tasks``, ``resamples`` (defaults to 2000), ``confidence`` (defaults to 0.95) and
            ``generator``, passed to :func:`prompt_bootstrap` for the intervals; any other keyword is refused.

    Returns:
        ``{task: {"difference", "low", "high", "b", "c", "p_value", "p_holm"}}``.
    """
    a, b = _binary("first", first).astype(float), _binary("second", second).astype(float)
    if a.shape != b.shape:
        raise ValueError(f"first and second must be paired (same length), got {a.size} and {b.size}")
    intervals = prompt_bootstrap(b - a, prompts, tags, **bootstrap)
    tag_array = np.asarray(tags)
    tests = {t: mcnemar_exact(a[tag_array == t], b[tag_array == t]) for t in intervals if t != "overall"}
    tests["overall"] = mcnemar_exact(a, b)
    adjusted = dict(zip([t for t in tests if t != "overall"], holm([r.p_value for t, r in tests.items() if t != "overall"])))
    adjusted["overall"] = tests["overall"].p_value
    return {
        t: {"difference": i.estimate, "low": i.low, "high": i.high, "b": tests[t].b, "c": tests[t].c,
            "p_value": tests[t].p_value, "p_holm": adjusted[t]}
        for t, i in intervals.items()
    }
