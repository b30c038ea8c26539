"""The web demo's settings: the limits every control shows, and validation of what the page sends.

The sliders already keep values inside :data:`LIMITS`; validation here repeats the check so that
API calls, empty fields and mistyped numbers get a message naming the setting instead of a traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

__all__ = ["FIELDS", "Limits", "LIMITS", "MAX_SEED", "Settings", "SettingsError", "parse_settings"]

#: The page's inputs, in the order the Generate callback receives them.
FIELDS = (
    "condition", "negative_prompt", "seed", "num_seeds", "guidance_scale", "num_inference_steps",
    "refining_steps", "step_size", "clip_threshold", "noise_level",
)

#: Seeds are whole numbers in [0, MAX_SEED], as in most diffusion demos.
MAX_SEED = 2**32 - 1


class SettingsError(ValueError):
    """A setting the demo cannot run with; the message names the setting and what is allowed."""


@dataclass(frozen=True)
class Limits:
    """Inclusive bounds of one numeric control and whether it takes whole numbers only."""

    minimum: float
    maximum: float
    integer: bool = False


#: The range of each numeric setting, by field name; the sliders show it.
LIMITS: Dict[str, Limits] = {
    "num_seeds": Limits(1, 8, integer=True),
    "guidance_scale": Limits(0.0, 20.0),
    "num_inference_steps": Limits(1, 100, integer=True),
    "refining_steps": Limits(0, 100, integer=True),
    "step_size": Limits(0.01, 5.0),
    "clip_threshold": Limits(0.0, 5.0),
    "noise_level": Limits(0.0, 0.1),
}

#: How each setting is called on the page, for messages.
LABELS: Dict[str, str] = {
    "seed": "seed",
    "num_seeds": "number of seeds",
    "guidance_scale": "CFG scale",
    "num_inference_steps": "sampler steps",
    "refining_steps": "refining steps K",
    "step_size": "step size η",
    "clip_threshold": "clip threshold τ",
    "noise_level": "noise level λ",
}

Condition = Union[int, str]


@dataclass(frozen=True)
class Settings:
    """One validated request.

    Args:
        condition: the digit 0…9 (digits model) or the prompt (Stable Diffusion).
        negative_prompt: the null condition for Stable Diffusion; ``None`` means the empty prompt.
        seeds: one seed per image pair; each image gets its own ``torch.Generator``.
        guidance_scale: classifier-free guidance scale of the sampler.
        num_inference_steps: sampler steps.
        refining_steps, step_size, clip_threshold, noise_level: NLG's K, η, τ (``None`` = no clipping), λ.
    """

    condition: Condition
    negative_prompt: Optional[str]
    seeds: Tuple[int, ...]
    guidance_scale: float
    num_inference_steps: int
    refining_steps: int
    step_size: float
    clip_threshold: Optional[float]
    noise_level: float

    def nlg_options(self) -> Dict[str, Any]:
        """Keyword arguments for :class:`nlg.NoiseLevelGuidance`."""
        return {name: getattr(self, name) for name in ("refining_steps", "step_size", "clip_threshold", "noise_level")}


def _number(name: str, value: Any) -> float:
    label = LABELS[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise SettingsError(f"{label} is empty: enter a number")
    if isinstance(value, bool):
        raise SettingsError(f"{label} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{label} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{label} must be a finite number, got {value!r}")
    return number


def _bounded(name: str, value: Any) -> float:
    limits, label = LIMITS[name], LABELS[name]
    number = _number(name, value)
    if limits.integer and number != int(number):
        raise SettingsError(f"{label} must be a whole number, got {value!r}")
    if not limits.minimum <= number <= limits.maximum:
        shown = (int(limits.minimum), int(limits.maximum)) if limits.integer else (limits.minimum, limits.maximum)
        raise SettingsError(f"{label} must be between {shown[0]} and {shown[1]}, got {value!r}")
    return number


def _seed(value: Any) -> int:
    number = _number("seed", value)
    if number != int(number) or not 0 <= number <= MAX_SEED:
        raise SettingsError(f"seed must be a whole number between 0 and {MAX_SEED}, got {value!r}")
    return int(number)


def _digit(value: Any) -> int:
    text = "" if value is None else str(value).strip()
    if not text.isdigit() or len(text) != 1:
        raise SettingsError(f"digit must be one of 0…9, got {value!r}")
    return int(text)


def _prompt(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SettingsError("prompt is empty: describe the image to generate")
    return value.strip()


def parse_settings(
    *,
    kind: str,
    condition: Any,
    negative_prompt: Any,
    seed: Any,
    num_seeds: Any,
    guidance_scale: Any,
    num_inference_steps: Any,
    refining_steps: Any,
    step_size: Any,
    clip_threshold: Any,
    noise_level: Any,
) -> Settings:
    """Check the raw values from the page and build :class:`Settings`; raise :class:`SettingsError` if one is bad.

    Args:
        kind: ``"digits"`` (``condition`` is a digit) or ``"sd"`` (``condition`` is a prompt).
        clip_threshold: 0 turns clipping off.
    """
    if kind not in ("digits", "sd"):
        raise ValueError(f"kind must be 'digits' or 'sd', got {kind!r}")
    parsed_condition: Condition = _digit(condition) if kind == "digits" else _prompt(condition)
    negative = negative_prompt.strip() if kind == "sd" and isinstance(negative_prompt, str) and negative_prompt.strip() else None
    first = _seed(seed)
    count = int(_bounded("num_seeds", num_seeds))
    if first + count - 1 > MAX_SEED:
        raise SettingsError(f"seed + number of seeds − 1 must stay ≤ {MAX_SEED}; lower the seed")
    clip = _bounded("clip_threshold", clip_threshold)
    return Settings(
        condition=parsed_condition,
        negative_prompt=negative,
        seeds=tuple(range(first, first + count)),
        guidance_scale=_bounded("guidance_scale", guidance_scale),
        num_inference_steps=int(_bounded("num_inference_steps", num_inference_steps)),
        refining_steps=int(_bounded("refining_steps", refining_steps)),
        step_size=_bounded("step_size", step_size),
        clip_threshold=clip if clip > 0 else None,
        noise_level=_bounded("noise_level", noise_level),
    )
