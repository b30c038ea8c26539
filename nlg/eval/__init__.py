"""Evaluation infrastructure: experiment runs, image datasets, FID / IS / CLIP-score metrics and plots.

One module per concern:

- :mod:`~nlg.eval.captions`: COCO captions, the reference scripts' shuffle, shards (no ``fcntl``: any OS);
- :mod:`~nlg.eval.process`: per-image seeds, the process group (with a long timeout), ``run_cli``, ``write_json``;
- :mod:`~nlg.eval.locks`: the ``flock`` locks of a run folder, held per :class:`~nlg.eval.locks.FolderLocks`;
- :mod:`~nlg.eval.runfolder`: the manifest and the run folder;
- :mod:`~nlg.eval.png`: PNG checks and the reference's pixel truncation;
- :mod:`~nlg.eval.reference_bugs`: emulation of the reference script's σ and noise bugs;
- :mod:`~nlg.eval.generation`: the generation loop; :mod:`~nlg.eval.generation_run`: a whole COCO run;
- :mod:`~nlg.eval.evaluation_run`: scoring a folder; :mod:`~nlg.eval.datasets`, :mod:`~nlg.eval.metrics`,
  :mod:`~nlg.eval.plotting`;
- :mod:`~nlg.eval.stats`: paired statistics (exact McNemar, Holm, bootstrap over prompts).

The names below are importable from ``nlg.eval`` directly; each is imported on first use, so importing this
package imports none of the modules (the plots do not pull in torchmetrics).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Dict, List

#: Public name → the module that defines it.
_EXPORTS: Dict[str, str] = {
    **dict.fromkeys(["Caption", "load_captions", "reference_rng", "shuffled", "shard", "chunks"], "captions"),
    **dict.fromkeys(["DEFAULT_PROCESS_GROUP_TIMEOUT", "image_seed", "image_generator", "process_state", "run_cli",
                     "write_json"], "process"),
    **dict.fromkeys(["FolderLocks", "LockUnavailableError"], "locks"),
    **dict.fromkeys(["Manifest", "RunFolder"], "runfolder"),
    **dict.fromkeys(["whole_png", "to_uint8", "png_writer"], "png"),
    **dict.fromkeys(["reference_sigma_alpha_bars", "reference_sigma_override", "reference_noise"], "reference_bugs"),
    **dict.fromkeys(["SCHEDULERS", "generate_images", "blacked_out"], "generation"),
    **dict.fromkeys(["GenerationRun", "run_generation", "run_folder_name"], "generation_run"),
    **dict.fromkeys(["MetricsRun", "evaluate_folder"], "evaluation_run"),
    **dict.fromkeys(["GenerationMetrics", "generation_metrics", "bottom_k_mean"], "metrics"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
