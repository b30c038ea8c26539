"""What the web demo runs: the digits model (default) or a Stable Diffusion pipeline (``--model``).

A backend draws one image of a seed without NLG (the unmodified pipeline) and one with NLG
(:class:`nlg.NoiseLevelGuidance` around the same pipeline).  Each image gets its own CPU
``torch.Generator`` seeded with its seed, so an image never depends on the other seeds in the grid and
can be reproduced outside the app with ``torch.Generator().manual_seed(seed)``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..guidance import NoiseLevelGuidance
from .settings import Settings

__all__ = ["Sample", "Backend", "DigitsBackend", "StableDiffusionBackend", "ModelLoadError", "DIGIT_SCALE"]

#: Digits are 8×8 pixels; the page shows them enlarged by this factor (nearest neighbour).
DIGIT_SCALE = 16


class ModelLoadError(RuntimeError):
    """``--model`` could not be loaded as a pipeline nlg supports."""


@dataclass
class Sample:
    """One generated image and, for the digits model, the evaluator's class probabilities (10,)."""

    image: Image.Image
    probabilities: Optional[np.ndarray] = None


def seeded_generator(seed: int) -> torch.Generator:
    """The per-image CPU generator (CPU draws give the same noise on every device)."""
    return torch.Generator("cpu").manual_seed(seed)


class Backend:
    """Base of the two backends: a name, defaults for the page, and one lock so requests take turns."""

    kind: str = ""
    name: str = ""
    default_guidance_scale: float = 1.0
    default_inference_steps: int = 25
    sampler_name: str = "sampler"

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def plain(self, settings: Settings, seed: int) -> Sample:
        """The image of ``seed`` from the unmodified pipeline."""
        raise NotImplementedError

    def guided(self, settings: Settings, nlg: NoiseLevelGuidance, seed: int) -> Tuple[Sample, Tensor]:
        """The image of ``seed`` with NLG, and the direction norms of its refining steps, shape ``(K,)``."""
        raise NotImplementedError


class DigitsBackend(Backend):
    """The embedded class-conditional digits model; the digit is the prompt.

    Args:
        pipe: a :class:`nlg.digits.DigitsPipeline`; defaults to the shipped weights.
        evaluator: a :class:`nlg.digits.DigitsEvaluator` for the class probabilities; built if omitted.
    """

    kind = "digits"
    name = "embedded digits model"

    def __init__(self, pipe: Any = None, evaluator: Any = None) -> None:
        super().__init__()
        from ..digits import DigitsEvaluator, DigitsPipeline
        from ..digits.pipeline import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS

        self.pipe = pipe if pipe is not None else DigitsPipeline.from_pretrained()
        self.evaluator = evaluator if evaluator is not None else DigitsEvaluator()
        self.default_guidance_scale = DEFAULT_GUIDANCE_SCALE
        self.default_inference_steps = DEFAULT_INFERENCE_STEPS
        self.sampler_name = type(self.pipe.scheduler).__name__.replace("Scheduler", "")

    def _sample(self, images: Tensor) -> Sample:
        from ..digits.data import to_intensity

        ink = 1.0 - to_intensity(images[0, 0].float().cpu())  # dark ink on white, as the dataset looks
        pixels = (ink.numpy() * 255.0).round().astype(np.uint8)
        size = pixels.shape[0] * DIGIT_SCALE
        image = Image.fromarray(pixels, mode="L").resize((size, size), Image.NEAREST)
        return Sample(image=image, probabilities=self.class_probabilities(images)[0])

    def class_probabilities(self, images: Tensor) -> np.ndarray:
        """The evaluator's p(digit) for images ``(B, 1, 8, 8)`` in [-1, 1], shape ``(B, 10)``.

        The evaluator's classifier reads the 64 pixels as float64 in [-1, 1], as it was fitted.
        """
        pixels = images.detach().to("cpu", torch.float64).clamp(-1.0, 1.0).flatten(1).numpy()
        return self.evaluator.classifier.predict_proba(pixels)

    def _kwargs(self, settings: Settings, seed: int) -> dict:
        return dict(
            guidance_scale=settings.guidance_scale,
            num_inference_steps=settings.num_inference_steps,
            generator=[seeded_generator(seed)],
            progress=True,
        )

    def plain(self, settings: Settings, seed: int) -> Sample:
        out = self.pipe([settings.condition], **self._kwargs(settings, seed))
        return self._sample(out.images)

    def guided(self, settings: Settings, nlg: NoiseLevelGuidance, seed: int) -> Tuple[Sample, Tensor]:
        out, refinement = nlg(self.pipe, [settings.condition], return_refinement=True, **self._kwargs(settings, seed))
        return self._sample(out.images), refinement.step_norms[:, 0]


class StableDiffusionBackend(Backend):
    """A diffusers text-to-image pipeline nlg supports (SD 1.x/2.x, SDXL, SD3); the prompt is a text box.

    Args:
        pipe: a pipeline :class:`nlg.NoiseLevelGuidance` supports.
        name: how the page names the model (its id or folder).
    """

    kind = "sd"
    default_guidance_scale = 7.5
    default_inference_steps = 25
    #: The prompt the page starts with.
    default_prompt = "a red cube on a blue sphere"

    def __init__(self, pipe: Any, name: str) -> None:
        super().__init__()
        from ..adapters import get_adapter

        try:
            get_adapter(pipe)
        except (TypeError, ValueError) as error:
            raise ModelLoadError(f"{name}: {error}") from None
        self.pipe = pipe
        self.name = name
        self.sampler_name = type(pipe.scheduler).__name__.replace("Scheduler", "")

    @classmethod
    def load(cls, model: str, *, device: Optional[str] = None) -> "StableDiffusionBackend":
        """``DiffusionPipeline.from_pretrained(model)``: a local folder (read offline) or a hub id.

        Args:
            model: a diffusers pipeline folder or a Hugging Face model id.
            device: ``"cuda"``, ``"cpu"``, …; defaults to CUDA when available (then in float16).
        """
        from diffusers import DiffusionPipeline

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        folder = Path(model).expanduser()
        looks_local = folder.is_absolute() or model.startswith(".") or folder.exists()
        if looks_local and not (folder / "model_index.json").is_file():
            raise ModelLoadError(f"{model}: not a diffusers pipeline folder (no model_index.json there)")
        try:
            pipe = DiffusionPipeline.from_pretrained(
                str(folder) if looks_local else model, torch_dtype=dtype, local_files_only=looks_local
            )
        except Exception as error:  # diffusers/hub raise many types; the page needs one readable message
            raise ModelLoadError(f"could not load {model!r}: {type(error).__name__}: {error}") from None
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(leave=False)
        return cls(pipe, model)

    def _kwargs(self, settings: Settings, seed: int) -> dict:
        return dict(
            negative_prompt=settings.negative_prompt,
            guidance_scale=settings.guidance_scale,
            num_inference_steps=settings.num_inference_steps,
            generator=seeded_generator(seed),
        )

    def plain(self, settings: Settings, seed: int) -> Sample:
        return Sample(self.pipe(settings.condition, **self._kwargs(settings, seed)).images[0])

    def guided(self, settings: Settings, nlg: NoiseLevelGuidance, seed: int) -> Tuple[Sample, Tensor]:
        out, refinement = nlg(self.pipe, settings.condition, return_refinement=True, **self._kwargs(settings, seed))
        return Sample(out.images[0]), refinement.step_norms[:, 0]
