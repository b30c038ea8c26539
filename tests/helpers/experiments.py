"""Helpers for testing the experiment scripts offline, on a small shared CPU.

The stand-ins for the metric networks (seeded random Inception and CLIP weights) live in
:mod:`nlg.testing`, with the tiny pipelines.

* :func:`load_script` imports a ``core_experiments`` script as a module, to call its ``main(argv)``.
* :func:`single_thread`: tiny models run far faster on one thread than on oversubscribed cores.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator, List, Tuple

import torch

from nlg.app.load import free_port
from nlg.utils.types import PathLike

__all__ = ["load_script", "single_thread", "cpu_launch", "base_args", "run_folder"]



def load_script(path: PathLike) -> ModuleType:
    """Import the script at ``path`` as a module (its ``if __name__ == "__main__"`` block does not run)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"nlg_script_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"path: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, then restore the previous thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def cpu_launch(script: PathLike, num_processes: int = 2) -> Tuple[List[str], Dict[str, str]]:
    """The command and environment to run ``script`` as ``num_processes`` CPU processes under ``accelerate launch``.

    ``accelerate launch --cpu`` starts several processes only through MPI; ``--multi_gpu`` with no GPU
    visible starts them with torchrun, and :func:`nlg.eval.process.process_state` makes them CPU (gloo)
    processes.  One torch thread each.
    """
    accelerate = str(Path(sys.executable).parent / "accelerate")
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), str(script)]
    return command, dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


def base_args(assets: Dict[str, Path], out: Path) -> List[str]:
    """``generate_images.py``'s required flags for a tiny local model: ``assets`` holds ``captions`` and ``model``."""
    return ["--output_dir", str(out), "--prompts_path", str(assets["captions"]),
            "--stable_diffusion_path", str(assets["model"]), "--local_files_only"]


def run_folder(out: Path) -> Path:
    """The one image folder ``generate_images.py`` made under ``--output_dir out``."""
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder
