"""One request of the web demo: every seed drawn without and with NLG, reporting progress as it goes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from torch import Tensor

from ..guidance import NoiseLevelGuidance
from .backends import Backend, Sample
from .settings import Settings

__all__ = ["Pair", "Comparison", "ProgressFn", "run_comparison"]

#: ``progress(fraction, description)``, fraction in [0, 1]; ``gr.Progress`` has this signature.
ProgressFn = Callable[..., object]


@dataclass
class Pair:
    """The two images of one seed and the NLG direction norms per refining step, shape ``(K,)``."""

    seed: int
    plain: Sample
    guided: Sample
    step_norms: Tensor


@dataclass
class Comparison:
    """A finished request: its settings, one :class:`Pair` per seed, and the wall time."""

    settings: Settings
    pairs: List[Pair]
    seconds: float


def run_comparison(backend: Backend, settings: Settings, progress: Optional[ProgressFn] = None) -> Comparison:
    """Draw every seed of ``settings`` with the plain pipeline and with :class:`nlg.NoiseLevelGuidance`.

    Requests take turns on ``backend.lock`` (one model, one request at a time).  ``progress`` is
    called before each of the ``2 · seeds`` images and once at the end with 1.0.

    Raises:
        ValueError, TypeError: from :class:`nlg.NoiseLevelGuidance` or the pipeline, on options they reject.
    """
    report = progress if progress is not None else (lambda *args, **kwargs: None)
    nlg = NoiseLevelGuidance(**settings.nlg_options())
    total = 2 * len(settings.seeds)
    start = time.perf_counter()
    pairs: List[Pair] = []
    with backend.lock:
        for index, seed in enumerate(settings.seeds):
            report(2 * index / total, desc=f"seed {seed}: without NLG")
            plain = backend.plain(settings, seed)
            report((2 * index + 1) / total, desc=f"seed {seed}: NLG, {settings.refining_steps} refining steps")
            guided, step_norms = backend.guided(settings, nlg, seed)
            pairs.append(Pair(seed=seed, plain=plain, guided=guided, step_norms=step_norms.detach().float().cpu()))
    report(1.0, desc="done")
    return Comparison(settings=settings, pairs=pairs, seconds=time.perf_counter() - start)
