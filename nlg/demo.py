"""``make demo``: NLG on a tiny built-in pipeline (placeholder until the digits model ships)."""

from __future__ import annotations

import torch

from .guidance import NoiseLevelGuidance
from .testing import tiny_sd_pipeline


def main() -> None:
    print("NLG demo on a tiny random-weight SD-shaped pipeline (the trained digits model is not shipped yet).")
    pipe = tiny_sd_pipeline()
    result = NoiseLevelGuidance(refining_steps=20).refine(pipe, "a red cube", generator=torch.Generator().manual_seed(0))
    print("direction norm per step:", [round(float(v), 4) for v in result.step_norms[:, 0]])


if __name__ == "__main__":
    main()
