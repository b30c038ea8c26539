"""Helpers for testing and benchmarking the experiment scripts offline, on a small shared CPU.

* Stand-ins for the metric networks: the real architectures with seeded random weights.  The
  Inception and CLIP weights of FID / IS / CLIP score cannot be downloaded here, so tests and
  benchmarks save these where the real loading code (``feature_extractor_weights_path``,
  ``CLIPModel.from_pretrained(local folder)``) reads them.
* :func:`load_script` imports a ``core_experiments`` script as a module, to call its ``main(argv)``.
* :func:`single_thread`: tiny models run far faster on one thread than on oversubscribed cores.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator, List, Tuple, Union

import torch

from .tiny import tiny_clip_tokenizer

__all__ = ["save_random_inception_weights", "save_tiny_clip", "load_script", "single_thread", "free_port", "cpu_launch",
           "base_args", "run_folder"]

PathLike = Union[str, Path]


def save_random_inception_weights(path: PathLike, *, generator: torch.Generator) -> Path:
    """Save a state dict for torch-fidelity's InceptionV3 (``inception-v3-compat``) with random weights.

    Convolutions get He-normal weights and the classifier ``N(0, 12²/2048)``, so features neither vanish
    nor explode.  Batch norms get non-identity statistics and affine terms (running mean ``0.2·N(0, 1)``,
    running variance in [0.5, 2], scale in [0.8, 1.2], shift ``0.1·N(0, 1)``), so code that folds or
    skips them is exercised.  Draws come from ``generator`` only.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            return None  # keep the freshly built layers; they are overwritten below

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pt"
        torch.save({}, empty)
        skeleton = _Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    state = skeleton.state_dict()
    for key, value in state.items():
        if value.ndim == 4:
            value.copy_(torch.randn(value.shape, generator=generator) * math.sqrt(2.0 / value[0].numel()))
        elif key == "fc.weight":
            value.copy_(12.0 * torch.randn(value.shape, generator=generator) / math.sqrt(value.shape[1]))
        elif key == "fc.bias":
            value.copy_(0.1 * torch.randn(value.shape, generator=generator))
        elif key.endswith("running_mean") or (key.endswith(".bias") and ".bn." in key):
            value.copy_((0.2 if key.endswith("running_mean") else 0.1) * torch.randn(value.shape, generator=generator))
        elif key.endswith("running_var"):
            value.copy_(0.5 + 1.5 * torch.rand(value.shape, generator=generator))
        elif key.endswith(".weight") and ".bn." in key:
            value.copy_(0.8 + 0.4 * torch.rand(value.shape, generator=generator))
    path = Path(path)
    torch.save(state, path)
    return path


def save_tiny_clip(path: PathLike, *, generator: torch.Generator) -> Path:
    """Save a tiny random ``CLIPModel`` and its ``CLIPProcessor`` (224-pixel images, byte-level tokenizer)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=514, bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32,
            intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
        ),
        vision_config=dict(
            image_size=224, patch_size=32, hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2,
        ),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(path)
    return path


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


def free_port() -> int:
    """A TCP port free right now on this machine, for ``accelerate launch --main_process_port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
