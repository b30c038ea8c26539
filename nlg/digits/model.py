"""The digits model: a small class-conditional diffusers ``UNet2DModel``, its noise schedule, and I/O.

The UNet (≈0.70M parameters) works on 8×8×1 pixels; two resolution levels (8×8, 4×4) with
self-attention at 4×4 and in the middle block.  ``num_class_embeds = 11``: the digits 0–9 plus the
null class 10 that classifier-free guidance needs.

The noise schedule is Stable Diffusion's (``scaled_linear`` betas 0.00085 → 0.012 over 1000 steps,
ε-prediction).  Its ᾱ_999 ≈ 0.0047 leaves a little signal in x_T; Noise Level Guidance
(arXiv 2509.13936) works through exactly that signal.

Weights are stored as safetensors next to a JSON file that holds the UNet config, the scheduler
config and how the weights were trained (:func:`save_digits_model`, :func:`load_digits_model`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from diffusers import DDPMScheduler, UNet2DModel

from ..core.schedule import STABLE_DIFFUSION_SCHEDULE
from .data import IMAGE_SIZE, NUM_CLASSES

__all__ = [
    "UNET_CONFIG",
    "SCHEDULER_CONFIG",
    "WEIGHTS_DIR",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "build_unet",
    "sd_scheduler",
    "save_digits_model",
    "load_digits_model",
]

#: The shipped weights live here (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_NAME = "digits_unet.safetensors"
CONFIG_NAME = "digits_unet.json"

#: The ``UNet2DModel`` configuration of the shipped digits model.
UNET_CONFIG: Dict[str, Any] = dict(
    sample_size=IMAGE_SIZE,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=32,
    num_class_embeds=NUM_CLASSES + 1,
)

#: Stable Diffusion's training schedule, ε-prediction.
SCHEDULER_CONFIG: Dict[str, Any] = dict(STABLE_DIFFUSION_SCHEDULE)


def build_unet(*, seed: int = 0, **overrides: Any) -> UNet2DModel:
    """A freshly initialised digits UNet, seeded so that the same ``seed`` gives the same weights.

    Args:
        seed (`int`, defaults to 0):
            Seed of the weight initialisation; the global RNG is forked, not disturbed.
        **overrides:
            Keys of :data:`UNET_CONFIG` to change (e.g. ``block_out_channels``).
    """
    unknown = set(overrides) - set(UNET_CONFIG)
    if unknown:
        raise TypeError(f"build_unet() got unknown config keys {sorted(unknown)}; known: {sorted(UNET_CONFIG)}")
    config = {**UNET_CONFIG, **overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(**config)


def sd_scheduler(**overrides: Any) -> DDPMScheduler:
    """A ``DDPMScheduler`` with Stable Diffusion's betas (``scaled_linear`` 0.00085 → 0.012, 1000 steps)."""
    return DDPMScheduler(**{**SCHEDULER_CONFIG, **overrides})


def _json_ready(config: Any) -> Dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(config).items() if not k.startswith("_")}


def save_digits_model(
    unet: UNet2DModel,
    directory: Union[str, Path],
    *,
    scheduler: Optional[DDPMScheduler] = None,
    training: Optional[Dict[str, Any]] = None,
) -> Tuple[Path, Path]:
    """Write ``digits_unet.safetensors`` and ``digits_unet.json`` into ``directory``.

    Args:
        unet (`UNet2DModel`): the model to save.
        directory (`str` or `Path`): target folder, created if missing.
        scheduler (`DDPMScheduler`, *optional*): the training noise schedule; defaults to :func:`sd_scheduler`.
        training (`Dict[str, Any]`, *optional*): how the weights were made (steps, seed, …), stored as is.

    Returns:
        The paths of the weights file and the config file.
    """
    from safetensors.torch import save_file

    if not isinstance(unet, UNet2DModel):
        raise TypeError(f"unet must be a diffusers UNet2DModel, got {type(unet).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in unet.state_dict().items()}
    save_file(state, str(weights_path), metadata={"format": "pt"})
    meta = {
        "unet": _json_ready(unet.config),
        "scheduler": _json_ready((scheduler or sd_scheduler()).config),
        "training": training or {},
    }
    config_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return weights_path, config_path


def _read_config(config_path: Path) -> Dict[str, Any]:
    if not config_path.is_file():
        raise FileNotFoundError(f"digits model config not found: {config_path}")
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("unet"), dict) or not isinstance(meta.get("scheduler"), dict):
        raise ValueError(f"{config_path} must hold a JSON object with 'unet' and 'scheduler' configs")
    return meta


def load_digits_model(
    directory: Union[str, Path, None] = None,
) -> Tuple[UNet2DModel, DDPMScheduler, Dict[str, Any]]:
    """Load a digits UNet, its training scheduler and its training record.

    Args:
        directory (`str` or `Path`, *optional*):
            Folder holding ``digits_unet.safetensors`` and ``digits_unet.json``; defaults to the
            weights shipped with the package.

    Returns:
        ``(unet, scheduler, training)``: the UNet in eval mode (float32, CPU), a ``DDPMScheduler``
        built from the stored config, and the stored training record.

    Raises:
        FileNotFoundError: if either file is missing (the message names it).
        ValueError: if either file is corrupt or the weights do not fit the config (names the file).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = WEIGHTS_DIR if directory is None else Path(directory)
    weights_path, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    meta = _read_config(config_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"digits model weights not found: {weights_path}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights_path} is not a readable safetensors file ({err})") from None
    try:
        unet = UNet2DModel.from_config(meta["unet"])
        scheduler = DDPMScheduler.from_config(meta["scheduler"])
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{config_path} holds an invalid UNet or scheduler config ({err})") from None
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{weights_path} does not match the UNet config in {config_path}: {first}") from None
    unet.eval().requires_grad_(False)
    return unet, scheduler, dict(meta.get("training", {}))
