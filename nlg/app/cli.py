"""``python -m nlg.app [--model shapes|PATH_OR_ID] [--host 127.0.0.1] [--port 7860]`` (``make app``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from .backends import Backend

__all__ = ["parse_args", "load_backend", "main", "SHAPES"]

#: ``--model shapes`` serves the embedded text-to-image model (:func:`nlg.shapes.load_pipeline`'s folder).
SHAPES = "shapes"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line of the web demo."""
    parser = argparse.ArgumentParser(
        prog="python -m nlg.app",
        description="Web demo of Noise Level Guidance: the same seeds with and without NLG, side by side.",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="'shapes' (the embedded text-to-image model), or a diffusers Stable Diffusion / SDXL pipeline folder "
        "or hub id (default: the embedded digits model)",
    )
    parser.add_argument("--weights", type=Path, default=None, help="digits weights folder (default: the shipped weights)")
    parser.add_argument("--device", default=None, help="device for --model (default: cuda if available, else cpu)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1…65535, got {args.port}")
    if args.model is not None and args.weights is not None:
        parser.error("--weights is for the digits model; with --model the pipeline folder holds the weights")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def load_backend(model: Optional[str], device: Optional[str] = None, weights: Optional[Path] = None) -> "Backend":
    """The digits backend (``weights``: a folder, default the shipped ones) when ``model`` is None; the
    embedded shapes text-to-image pipeline, with its documented defaults, when ``model`` is ``"shapes"``;
    else ``model`` loaded as a Stable Diffusion pipeline."""
    from .backends import DigitsBackend, ModelLoadError, StableDiffusionBackend

    if model is None:
        from ..digits import DigitsPipeline

        try:
            pipe = DigitsPipeline.from_pretrained(weights)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"could not load the digits weights: {error}") from None
        return DigitsBackend(pipe)
    if model == SHAPES:
        from ..shapes import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, DEFAULT_PIPELINE

        backend = StableDiffusionBackend.load(str(DEFAULT_PIPELINE), device=device or "cpu")
        backend.name = SHAPES
        backend.default_guidance_scale = DEFAULT_GUIDANCE_SCALE
        backend.default_inference_steps = DEFAULT_INFERENCE_STEPS
        backend.default_prompt = "a photo of a red circle left of a blue square"
        return backend
    return StableDiffusionBackend.load(model, device=device)


def main(argv: Optional[List[str]] = None) -> None:
    """Load the model, build the page and serve it until interrupted."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no usage reports, no version check
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from .backends import ModelLoadError
    from .ui import CSS, THEME, build_app

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"loading {args.model or 'the embedded digits model'} …", flush=True)
    try:
        backend = load_backend(args.model, args.device, args.weights)
    except ModelLoadError as error:
        sys.exit(f"error: {error}")
    app = build_app(backend)
    app.launch(
        server_name=args.host, server_port=args.port, share=False, show_error=True, ssr_mode=False,
        theme=THEME, css=CSS, footer_links=[],
    )

