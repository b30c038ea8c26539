"""A Gradio web demo of Noise Level Guidance (``make app`` / ``python -m nlg.app [--model PATH_OR_ID]``).

By default it serves the embedded digits model on the CPU; with ``--model`` any Stable Diffusion /
SDXL pipeline :class:`nlg.NoiseLevelGuidance` supports.  Each seed is drawn without and with NLG,
side by side, with the per-step direction norms and, for digits, the evaluator's class probabilities.
The app holds no algorithm: every image comes from the pipeline or from :class:`nlg.NoiseLevelGuidance`.

Modules: :mod:`~nlg.app.settings` (limits, validation), :mod:`~nlg.app.backends` (digits / SD),
:mod:`~nlg.app.compare` (one request), :mod:`~nlg.app.render` (page outputs),
:mod:`~nlg.app.callbacks` (the Generate callback), :mod:`~nlg.app.ui` (the page), :mod:`~nlg.app.cli`.
Importing this package does not import gradio.
"""
