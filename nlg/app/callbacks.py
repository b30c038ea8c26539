"""The demo's Generate callback, callable without a browser: raw page values in, page outputs out.

Every failure reaches the page as a ``gr.Error`` with a readable message (a toast), never as a stack
trace: bad settings name the setting; anything unexpected is logged with its traceback on the server
and reported in one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import gradio as gr
from matplotlib.figure import Figure
from PIL import Image

from .backends import Backend
from .compare import Comparison, ProgressFn, run_comparison
from .render import gallery, mean_probabilities, norm_figure, probability_rows, status_text
from .settings import FIELDS, SettingsError, parse_settings

__all__ = ["PageOutputs", "generate"]

logger = logging.getLogger("nlg.app")


@dataclass
class PageOutputs:
    """Everything one Generate click shows, in the order of the page's output components."""

    plain: List[Tuple[Image.Image, str]]
    guided: List[Tuple[Image.Image, str]]
    norms: Figure
    probabilities_plain: Optional[Dict[str, float]]
    probabilities_guided: Optional[Dict[str, float]]
    probability_table: Optional[List[list]]
    status: str
    comparison: Comparison

    def as_tuple(self) -> tuple:
        """The values for the page's outputs (the raw :class:`Comparison` stays server-side)."""
        return (
            self.plain,
            self.guided,
            self.norms,
            self.probabilities_plain,
            self.probabilities_guided,
            self.probability_table,
            self.status,
        )


def generate(backend: Backend, *values: Any, progress: Optional[ProgressFn] = None) -> PageOutputs:
    """Validate the page's values, draw every seed without and with NLG, and render the results.

    Args:
        backend: the model to sample.
        *values: the page's inputs in the order of :data:`~nlg.app.settings.FIELDS` (digit or prompt,
            negative prompt, seed, number of seeds, CFG scale, sampler steps, K, η, τ, λ).
        progress: ``progress(fraction, desc=...)``, e.g. ``gr.Progress``.

    Raises:
        gr.Error: with a readable message, for bad settings or a failed run.
    """
    if len(values) != len(FIELDS):
        raise TypeError(f"generate() takes the {len(FIELDS)} page values {FIELDS}, got {len(values)}")
    try:
        settings = parse_settings(kind=backend.kind, **dict(zip(FIELDS, values)))
        comparison = run_comparison(backend, settings, progress)
    except SettingsError as error:
        raise gr.Error(str(error), title="Invalid setting", print_exception=False) from None
    except (ValueError, TypeError) as error:  # nlg and the pipelines name the option they reject
        logger.warning("rejected request: %s", error)
        raise gr.Error(str(error), title="Invalid setting", print_exception=False) from None
    except Exception as error:
        logger.exception("generation failed")
        raise gr.Error(
            f"Generation failed ({type(error).__name__}: {error}). The server log has the details.",
            title="Generation failed",
            print_exception=False,
        ) from None
    return PageOutputs(
        plain=gallery(comparison, guided=False),
        guided=gallery(comparison, guided=True),
        norms=norm_figure(comparison),
        probabilities_plain=mean_probabilities(comparison, guided=False),
        probabilities_guided=mean_probabilities(comparison, guided=True),
        probability_table=probability_rows(comparison),
        status=status_text(comparison, sampler=backend.sampler_name),
        comparison=comparison,
    )
