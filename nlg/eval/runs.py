"""Deprecated alias, kept for one release: the run-folder building blocks now live in one module per concern.

=========================================  ==============================================================
:mod:`~nlg.eval.captions`                  captions, the reference shuffle, shards (no ``fcntl``)
:mod:`~nlg.eval.process`                   per-image seeds, the process group, ``run_cli``, ``write_json``
:mod:`~nlg.eval.locks`                     the ``flock`` locks of a run folder, held per instance
:mod:`~nlg.eval.runfolder`                 :class:`Manifest` and :class:`RunFolder`
:mod:`~nlg.eval.png`                       PNG checks and the reference's pixel truncation
:mod:`~nlg.eval.reference_bugs`            emulation of the reference script's σ and noise bugs
:mod:`~nlg.eval.generation`                the generation loop :func:`generate_images`
:mod:`~nlg.eval.generation_run`            a whole COCO run (``core_experiments/generate_images.py``)
=========================================  ==============================================================

Import from those modules, or from :mod:`nlg.eval`.
"""

from __future__ import annotations

from ..utils.io import atomic_write
from .captions import Caption, chunks, load_captions, reference_rng, shard, shuffled
from .generation import SCHEDULERS, generate_images
from .png import png_writer, to_uint8, whole_png
from .process import image_generator, image_seed, process_state, run_cli, write_json
from .reference_bugs import reference_sigma_alpha_bars
from .runfolder import Manifest, RunFolder

__all__ = [
    "SCHEDULERS", "Caption", "load_captions", "shuffled", "reference_rng", "to_uint8", "reference_sigma_alpha_bars",
    "shard", "chunks", "process_state", "run_cli", "image_seed", "image_generator", "atomic_write", "write_json",
    "Manifest", "RunFolder", "whole_png", "png_writer", "generate_images",
]
