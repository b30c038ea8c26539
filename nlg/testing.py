"""Tiny, seeded, offline models for tests and benchmarks (as ``diffusers.utils.testing_utils``).

No weights are downloaded: every component is built from a small config with a fixed seed, the way
diffusers' own fast tests build theirs, and the CLIP tokenizer gets a byte-level vocabulary with no
merges (every character is a token).

- :func:`tiny_sd_pipeline` and :func:`tiny_sdxl_pipeline`: SD-1.5/2.1- and SDXL-shaped pipelines on the CPU;
  :func:`save_tiny_pipeline` writes one to a folder, so that ``from_pretrained(..., local_files_only=True)``
  can be exercised;
- :func:`make_scheduler`: a scheduler by short name with Stable Diffusion's noise schedule;
- :func:`save_random_inception_weights` and :func:`save_tiny_clip`: random stand-ins for the FID
  Inception network and a CLIP model, for the metric scripts.

This module imports no test framework; it is public so that benchmarks and users' own tests can build
the same models.
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict

import torch

from .eval.runs import SCHEDULERS
from .shapes.tokenizer import byte_symbols  # CLIP's byte → printable-character table
from .utils.types import PathLike

__all__ = [
    "SD_SCHEDULE",
    "tiny_clip_tokenizer",
    "make_scheduler",
    "tiny_sd_pipeline",
    "tiny_sdxl_pipeline",
    "save_tiny_pipeline",
    "save_random_inception_weights",
    "save_tiny_clip",
]

#: Stable Diffusion's noise schedule (scaled-linear betas over 1000 steps).
SD_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def tiny_clip_tokenizer(model_max_length: int = 77) -> Any:
    """A CLIPTokenizer whose vocabulary is the 256 byte characters (plain and word-final), no merges.

    Args:
        model_max_length (`int`, defaults to 77): the tokenizer's maximum length, CLIP's 77 tokens.
    """
    from transformers import CLIPTokenizer

    alphabet = byte_symbols()
    vocab: Dict[str, int] = {}
    for token in alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab[token] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)



def _global_rng_untouched(build: Callable[..., Any]) -> Callable[..., Any]:
    """Run a builder that seeds torch's global generator on a fork of it, so no test sees the change."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            return build(*args, **kwargs)

    return wrapper

@_global_rng_untouched
def _text_encoder(projection: bool, hidden: int = 32, seed: int = 0) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=514,
        max_position_embeddings=77,
        projection_dim=hidden,
        hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


@_global_rng_untouched
def _vae(seed: int = 0) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    ).eval()


def make_scheduler(name: str, prediction_type: str = "epsilon", **overrides: Any) -> Any:
    """A scheduler by short name with Stable Diffusion's noise schedule (:data:`SD_SCHEDULE`).

    Args:
        name (`str`): a key of :data:`nlg.eval.runs.SCHEDULERS` (``ddim``, ``euler``, ``dpm++``, ...).
        prediction_type (`str`, defaults to ``"epsilon"``): the model's target, ``epsilon`` or ``v_prediction``.
        **overrides: further scheduler config values, applied last.
    """
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {sorted(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    kwargs: Dict[str, Any] = dict(SD_SCHEDULE, prediction_type=prediction_type)
    if name in ("ddim", "pndm"):
        kwargs["steps_offset"] = 1  # as SD's own scheduler configs
    if name == "ddim":
        kwargs["clip_sample"] = False
    if name == "pndm":
        kwargs["skip_prk_steps"] = True
    kwargs.update(overrides)
    return cls(**kwargs)


@_global_rng_untouched
def _tiny_unet(seed: int, sample_size: int, **config: Any) -> Any:
    """A seeded two-block UNet2DConditionModel; ``config`` adds the model family's own options."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        **config,
    ).eval()


def tiny_sd_pipeline(
    prediction_type: str = "epsilon", scheduler: str = "ddim", seed: int = 0, sample_size: int = 16
) -> Any:
    """A seeded SD-1.5-shaped (``epsilon``) or SD-2.1-shaped (``v_prediction``) pipeline on the CPU.

    Latents are (4, sample_size, sample_size); images are twice that (two VAE blocks).

    Args:
        prediction_type (`str`, defaults to ``"epsilon"``): ``epsilon`` (SD 1.5) or ``v_prediction`` (SD 2.1).
        scheduler (`str`, defaults to ``"ddim"``): the scheduler's short name (:func:`make_scheduler`).
        seed (`int`, defaults to 0): seeds every component's random weights.
        sample_size (`int`, defaults to 16): the latent side.
    """
    from diffusers import StableDiffusionPipeline

    unet = _tiny_unet(
        seed,
        sample_size,
        cross_attention_dim=32,
        attention_head_dim=(2, 4) if prediction_type == "v_prediction" else 8,  # SD2.x uses per-block heads
        use_linear_projection=prediction_type == "v_prediction",
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=make_scheduler(scheduler, prediction_type),
        vae=_vae(seed),
        text_encoder=_text_encoder(False, seed=seed),
        tokenizer=tiny_clip_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(scheduler: str = "euler", seed: int = 0, sample_size: int = 16) -> Any:
    """A seeded SDXL-shaped pipeline: two text encoders, pooled embeddings and time-id conditioning.

    Args:
        scheduler (`str`, defaults to ``"euler"``): the scheduler's short name (:func:`make_scheduler`).
        seed (`int`, defaults to 0): seeds the random weights (the second text encoder uses ``seed + 1``).
        sample_size (`int`, defaults to 16): the latent side.
    """
    from diffusers import StableDiffusionXLPipeline

    unet = _tiny_unet(
        seed,
        sample_size,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + 32 pooled
        cross_attention_dim=64,  # 32 + 32 from the two encoders
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        scheduler=make_scheduler(scheduler),
        vae=_vae(seed),
        text_encoder=_text_encoder(False, seed=seed),
        text_encoder_2=_text_encoder(True, seed=seed + 1),
        tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_clip_tokenizer(),
        force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(path: PathLike, kind: str = "sd15", seed: int = 0) -> Path:
    """Save a tiny pipeline as a diffusers folder, for ``from_pretrained(path, local_files_only=True)``.

    Args:
        path (`str` or `Path`): the folder to write.
        kind (`str`, defaults to ``"sd15"``): ``sd15``, ``sd21`` (v-prediction) or ``sdxl``.
        seed (`int`, defaults to 0): seeds the random weights.
    """
    builders = {
        "sd15": lambda: tiny_sd_pipeline("epsilon", seed=seed),
        "sd21": lambda: tiny_sd_pipeline("v_prediction", seed=seed),
        "sdxl": lambda: tiny_sdxl_pipeline(seed=seed),
    }
    if kind not in builders:
        raise ValueError(f"kind must be one of {sorted(builders)}, got {kind!r}")
    path = Path(path)
    builders[kind]().save_pretrained(path, safe_serialization=True)
    return path


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
