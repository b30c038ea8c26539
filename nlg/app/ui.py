"""The page: controls on the left; both galleries, the norm plot and the class probabilities on the right."""

from __future__ import annotations

from typing import Any, Dict

import gradio as gr

from ..guidance import NoiseLevelGuidance
from .backends import Backend
from .callbacks import generate
from .render import PROBABILITY_COLUMNS
from .settings import LIMITS, MAX_SEED

__all__ = ["build_app", "THEME", "CSS"]

#: System fonts only; the page must not fetch web fonts (offline machines, no phoning home).
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)
#: Pixelated, uncropped thumbnails that share the gallery's width (gradio's default is 100 px each).
CSS = """
.nlg-gallery img { image-rendering: pixelated; object-fit: contain !important; }
.nlg-gallery .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
.nlg-gallery .thumbnail-item { width: 100% !important; height: auto !important; aspect-ratio: 1 / 1; }
"""

INTRO = (
    "# Noise Level Guidance\n"
    "[NLG](https://arxiv.org/abs/2509.13936) refines the initial noise before sampling by stepping against "
    "ε(n|c) − ε(n|∅) at the last training timestep. Each seed is drawn twice from the same noise: "
    "**without NLG** (the unmodified pipeline) and **with NLG**. With K = 0 both columns are identical."
)


def _slider(name: str, value: float, label: str, step: float, info: str = "") -> gr.Slider:
    limits = LIMITS[name]
    return gr.Slider(
        minimum=limits.minimum, maximum=limits.maximum, value=value, step=step, label=label, info=info or None,
        elem_id=name.replace("_", "-"),
    )


def build_app(backend: Backend, *, max_queue: int = 16) -> gr.Blocks:
    """The Gradio app over ``backend``; Generate requests are queued and run one at a time.

    Args:
        backend: what to sample (:class:`~nlg.app.backends.DigitsBackend` or
            :class:`~nlg.app.backends.StableDiffusionBackend`).
        max_queue: requests waiting beyond this are refused with a "queue full" message.
    """
    digits = backend.kind == "digits"
    with gr.Blocks(title="Noise Level Guidance demo", analytics_enabled=False) as app:
        gr.Markdown(INTRO + f"\n\nModel: {backend.name}.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                if digits:
                    condition = gr.Radio([str(d) for d in range(10)], value="3", label="digit", elem_id="digit")
                else:
                    condition = gr.Textbox(label="prompt", value=backend.default_prompt, lines=2, elem_id="prompt")
                negative = gr.Textbox(label="negative prompt", value="", visible=not digits, elem_id="negative-prompt")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="first seed", info=f"0…{MAX_SEED}", elem_id="seed")
                    num_seeds = _slider("num_seeds", 4, "number of seeds", 1)
                guidance = _slider("guidance_scale", backend.default_guidance_scale, "CFG scale", 0.1,
                                   "0 = unconditional sampler" if digits else "")
                steps = _slider("num_inference_steps", backend.default_inference_steps, f"sampler steps ({backend.sampler_name})", 1)
                paper = NoiseLevelGuidance().config
                gr.Markdown(
                    f"**NLG** (paper defaults: K = {paper['refining_steps']}, η = {paper['step_size']:g}, "
                    f"τ = {paper['clip_threshold']:g}, λ = {paper['noise_level']:g})"
                )
                refining = _slider("refining_steps", paper["refining_steps"], "refining steps K", 1, "0 = no NLG")
                step_size = _slider("step_size", paper["step_size"], "step size η", 0.01)
                clip = _slider("clip_threshold", paper["clip_threshold"], "clip threshold τ", 0.05, "0 = no clipping")
                noise = _slider("noise_level", paper["noise_level"], "noise level λ", 0.001)
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                gallery_options: Dict[str, Any] = dict(
                    columns=4, height=250, format="png", object_fit="contain", allow_preview=False,
                    interactive=False, elem_classes=["nlg-gallery"],
                )
                with gr.Row():
                    plain = gr.Gallery(label="without NLG", elem_id="gallery-plain", **gallery_options)
                    guided = gr.Gallery(label="with NLG", elem_id="gallery-nlg", **gallery_options)
                with gr.Row(visible=digits):
                    probs_plain = gr.Label(label="class probabilities without NLG (mean over seeds)", num_top_classes=3, elem_id="probs-plain")
                    probs_guided = gr.Label(label="class probabilities with NLG (mean over seeds)", num_top_classes=3, elem_id="probs-nlg")
                table = gr.Dataframe(headers=PROBABILITY_COLUMNS, label="evaluator, per seed", visible=digits,
                                     interactive=False, elem_id="probability-table")
                plot = gr.Plot(label="direction norms", format="png", elem_id="norm-plot")
                status = gr.Markdown("Set the options and press **Generate**.", elem_id="status")

        def on_generate(*values: Any, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:
            return generate(backend, *values, progress=progress).as_tuple()

        button.click(
            on_generate,
            inputs=[condition, negative, seed, num_seeds, guidance, steps, refining, step_size, clip, noise],
            outputs=[plain, guided, plot, probs_plain, probs_guided, table, status],
            concurrency_limit=1,
            api_name="generate",
        )
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    return app
