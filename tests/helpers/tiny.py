"""Tiny, seeded, offline Stable Diffusion pipelines for the tests, the notebook tests and the benchmarks.

No weights are downloaded: every component is built from a small config with a fixed seed, the way
diffusers' own fast tests build theirs, and the CLIP tokenizer gets a byte-level vocabulary with no
merges (every character is a token).  ``save_tiny_pipeline`` writes one to a folder so the
``from_pretrained`` loading path can be exercised with ``local_files_only=True``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Dict, Union

import torch

from nlg.eval.generation import SCHEDULERS
from nlg.shapes.tokenizer import byte_symbols  # CLIP's byte → printable-character table

__all__ = ["tiny_clip_tokenizer", "tiny_sd_pipeline", "tiny_sdxl_pipeline", "save_tiny_pipeline", "make_scheduler", "SCHEDULERS"]

SD_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def tiny_clip_tokenizer(model_max_length: int = 77) -> Any:
    """A CLIPTokenizer whose vocabulary is the 256 byte characters (plain and word-final), no merges."""
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
    """A scheduler by short name (see :data:`SCHEDULERS`) with Stable Diffusion's noise schedule."""
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
    """A seeded SDXL-shaped pipeline: two text encoders, pooled embeddings and time-id conditioning."""
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


def save_tiny_pipeline(path: Union[str, Path], kind: str = "sd15", seed: int = 0) -> Path:
    """Save a tiny pipeline (``kind`` in ``sd15``, ``sd21``, ``sdxl``) as a diffusers folder."""
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
