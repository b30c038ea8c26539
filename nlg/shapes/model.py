"""The shapes model's parts: configs of a tiny Stable-Diffusion-shaped latent diffusion model.

* ``AutoencoderKL``: 32×32×3 pixels ↔ 16×16×4 latents (two levels, 16/32 channels, no attention), trained here;
* ``CLIPTextModel``: 2 layers, width 64, 16 positions, on :mod:`nlg.shapes.tokenizer`'s vocabulary;
* ``UNet2DConditionModel``: 16×16×4 latents, three levels (16×16, 8×8 and 4×4 with 64/128/128 channels),
  cross-attention to the text at the two lower levels and in the middle block but none at 16×16 (as in SDXL), and
  the attention-pooled prompt added to the time embedding, so every ResNet block sees the prompt.

The sizes were chosen by measured CPU cost (a UNet training step of batch 32 takes about 0.7 s on one thread
of the shared 2-core machine), so that ``python -m nlg.shapes.train`` fits in 90 minutes (64 min measured).

* the noise schedule is Stable Diffusion's (``scaled_linear`` betas 0.00085 → 0.012, 1000 steps, so
  ᾱ_999 ≈ 0.0047: the non-zero terminal SNR that gives NLG its signal at t = 999), with v-prediction as in
  Stable Diffusion 2.1 (:data:`PREDICTION_TYPE`; the noise is plain Gaussian ε either way); sampling
  uses ``DDIMScheduler`` with ``timestep_spacing="trailing"``, so the first sampling step is t = 999, the
  timestep NLG refines at.

Every builder takes a ``seed``; the global RNG is forked, not disturbed.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..core.schedule import STABLE_DIFFUSION_SCHEDULE
from ..utils.checks import check_bool, check_int
from .data import IMAGE_SIZE
from .tokenizer import MODEL_MAX_LENGTH, build_vocab

__all__ = [
    "VAE_CONFIG",
    "TEXT_CONFIG",
    "UNET_CONFIG",
    "SCHEDULER_CONFIG",
    "LATENT_SIZE",
    "PREDICTION_TYPE",
    "PREDICTION_TYPES",
    "check_prediction_type",
    "build_vae",
    "whiten_vae",
    "build_text_encoder",
    "build_unet",
    "unet_levels",
    "training_scheduler",
    "sampling_scheduler",
]

#: The ``AutoencoderKL`` configuration.
VAE_CONFIG: Dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(16, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=IMAGE_SIZE,
    mid_block_add_attention=False,
)
#: 32×32 pixels → 16×16 latents (the VAE downsamples once per level after the first).
LATENT_SIZE = IMAGE_SIZE // 2 ** (len(VAE_CONFIG["block_out_channels"]) - 1)

#: The ``CLIPTextConfig`` settings (vocabulary and special-token ids are added by ``text_config()``).
TEXT_CONFIG: Dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=MODEL_MAX_LENGTH,
    projection_dim=64,
    hidden_act="quick_gelu",
)

#: The ``UNet2DConditionModel`` configuration.
UNET_CONFIG: Dict[str, Any] = dict(
    sample_size=LATENT_SIZE,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(64, 128, 128),
    layers_per_block=1,
    cross_attention_dim=TEXT_CONFIG["hidden_size"],
    attention_head_dim=8,
    norm_num_groups=32,
    addition_embed_type="text",
    addition_embed_type_num_heads=4,
)

#: The shipped model's prediction type, v-prediction (Salimans and Ho 2022, arXiv 2202.00512).  It weighs the
#: error in the predicted image by 1 + SNR(t) where ε-prediction weighs it by SNR(t), about 0.005 at t = 999, so
#: an ε model hardly learns what the prompt says about colours and layout, which are decided at the noisiest
#: timesteps, and takes them from the initial noise instead (measured with the first v2 model, whose colour word
#: barely changed the image of a seed; see the shapes guide's model card).
PREDICTION_TYPE = "v_prediction"
#: The prediction types the shapes recipe trains and samples.
PREDICTION_TYPES = ("epsilon", "v_prediction")

#: Stable Diffusion's training schedule with :data:`PREDICTION_TYPE`.
SCHEDULER_CONFIG: Dict[str, Any] = dict(STABLE_DIFFUSION_SCHEDULE, prediction_type=PREDICTION_TYPE)


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_vae(*, seed: int = 0) -> AutoencoderKL:
    """A freshly initialised VAE (:data:`VAE_CONFIG`); ``scaling_factor`` is set after training."""
    return _seeded(seed, lambda: AutoencoderKL(**VAE_CONFIG))


def text_config(layers: int = TEXT_CONFIG["num_hidden_layers"]) -> CLIPTextConfig:
    """:data:`TEXT_CONFIG` on the tokenizer's vocabulary, with its start/end/padding ids.

    Args:
        layers (`int`, defaults to 2): transformer layers (``num_hidden_layers``).
    """
    check_int(layers, "layers", minimum=1)
    vocab, _ = build_vocab()
    return CLIPTextConfig(
        vocab_size=len(vocab),
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        **dict(TEXT_CONFIG, num_hidden_layers=layers),
    )


@torch.no_grad()
def whiten_vae(vae: AutoencoderKL, latents: torch.Tensor, *, floor: float = 0.01) -> torch.Tensor:
    r"""Fold a whitening of the latent space into the VAE's two 1×1 convolutions; returns the whitening matrix.

    ``latents`` are posterior means ``(N, C, H, W)`` of training images.  With ``μ`` and ``Σ = U Λ Uᵀ`` the
    mean and covariance of their pixels (C-vectors), the new latent is ``z' = W (z − μ)``,
    ``W = max(Λ, floor·λ_max)^{-1/2} Uᵀ``: every direction of the latent space gets about unit variance, so
    the few-pixel colour directions weigh in the diffusion loss as much as the object/background
    direction that dominates ``Σ`` (the floor bounds the gain of nearly unused directions).  The encoder's
    ``quant_conv`` now outputs ``W (mean − μ)``; its log-variance rows become the mean of the old ones plus
    ``log Σ_j W_kj²`` (exact when the posterior variance is the same in every channel, as it nearly is).
    The decoder's ``post_quant_conv`` takes ``z'`` and first undoes the map, so
    ``decode(encode(x).mean)`` is unchanged and an unmodified ``StableDiffusionPipeline`` works as before.
    """
    channels = latents.shape[1]
    pixels = latents.permute(0, 2, 3, 1).reshape(-1, channels).double()
    mu = pixels.mean(dim=0)
    eigenvalues, vectors = torch.linalg.eigh(torch.cov(pixels.T))
    eigenvalues = eigenvalues.clamp(min=floor * float(eigenvalues.max()))
    whiten = torch.diag(eigenvalues.rsqrt()) @ vectors.T  # (C, C)
    unwhiten = vectors @ torch.diag(eigenvalues.sqrt())
    q_w = vae.quant_conv.weight.double()[:, :, 0, 0]
    q_b = vae.quant_conv.bias.double()
    mean_w, logvar_w = q_w[:channels], q_w[channels:]
    mean_b, logvar_b = q_b[:channels], q_b[channels:]
    new_w = torch.cat([whiten @ mean_w, logvar_w.mean(dim=0, keepdim=True).expand(channels, -1)])
    gain = (whiten**2).sum(dim=1).log()
    new_b = torch.cat([whiten @ (mean_b - mu), logvar_b.mean().expand(channels) + gain])
    vae.quant_conv.weight.copy_(new_w[:, :, None, None].to(vae.quant_conv.weight.dtype))
    vae.quant_conv.bias.copy_(new_b.to(vae.quant_conv.bias.dtype))
    p_w = vae.post_quant_conv.weight.double()[:, :, 0, 0]
    p_b = vae.post_quant_conv.bias.double()
    vae.post_quant_conv.weight.copy_((p_w @ unwhiten)[:, :, None, None].to(vae.post_quant_conv.weight.dtype))
    vae.post_quant_conv.bias.copy_((p_b + p_w @ mu).to(vae.post_quant_conv.bias.dtype))
    return whiten.float()


def build_text_encoder(*, seed: int = 0, layers: int = TEXT_CONFIG["num_hidden_layers"]) -> CLIPTextModel:
    """A freshly initialised ``CLIPTextModel`` (:data:`TEXT_CONFIG`, 2 layers unless ``layers`` says otherwise)."""
    config = text_config(layers)
    return _seeded(seed, lambda: CLIPTextModel(config))


def unet_levels(channels: Tuple[int, ...], top_level_attention: bool = True) -> Dict[str, Any]:
    """The :data:`UNET_CONFIG` keys that set the UNet's levels: ``block_out_channels`` and the block types.

    Every level has cross-attention to the prompt, except the top (16×16) one when ``top_level_attention`` is off,
    as in SDXL, whose top level has none: self-attention over 256 positions is most of a step's cost there.

    Args:
        channels (`Tuple[int, ...]`): channels per level, top first; each a multiple of ``norm_num_groups`` (32),
            at most 4 levels (16×16 latents halve per level).
        top_level_attention (`bool`, defaults to True): cross-attention at the top level.
    """
    if not isinstance(channels, (tuple, list)) or not 1 <= len(channels) <= 4 or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 and c % UNET_CONFIG["norm_num_groups"] == 0
        for c in channels
    ):
        raise ValueError(f"unet_channels must be 1 to 4 positive multiples of {UNET_CONFIG['norm_num_groups']}, got {channels!r}")
    check_bool(top_level_attention, "top_level_attention")
    down = ["CrossAttnDownBlock2D"] * len(channels)
    if not top_level_attention:
        down[0] = "DownBlock2D"
    up = [name.replace("Down", "Up") for name in reversed(down)]
    return dict(block_out_channels=tuple(channels), down_block_types=tuple(down), up_block_types=tuple(up))


def build_unet(*, seed: int = 0, **overrides: Any) -> UNet2DConditionModel:
    """A freshly initialised ``UNet2DConditionModel`` (:data:`UNET_CONFIG`).

    Args:
        seed (`int`, defaults to 0): seeds the initial weights (the global RNG is left alone).
        **overrides: keys of :data:`UNET_CONFIG` to change (e.g. from :func:`unet_levels`).
    """
    unknown = set(overrides) - set(UNET_CONFIG)
    if unknown:
        raise TypeError(f"build_unet() got unknown config keys {sorted(unknown)}; known: {sorted(UNET_CONFIG)}")
    return _seeded(seed, lambda: UNet2DConditionModel(**{**UNET_CONFIG, **overrides}))


def check_prediction_type(prediction_type: Any) -> None:
    """Raise a ValueError naming ``prediction_type`` unless it is one of :data:`PREDICTION_TYPES`."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def _schedule(prediction_type: str) -> Dict[str, Any]:
    check_prediction_type(prediction_type)
    return dict(SCHEDULER_CONFIG, prediction_type=prediction_type)


def training_scheduler(prediction_type: str = PREDICTION_TYPE) -> DDPMScheduler:
    """``DDPMScheduler`` with SD's betas: the training noise schedule.

    Args:
        prediction_type (`str`, defaults to :data:`PREDICTION_TYPE`): ``"epsilon"`` or ``"v_prediction"``.
    """
    return DDPMScheduler(**_schedule(prediction_type))


def sampling_scheduler(prediction_type: str = PREDICTION_TYPE) -> DDIMScheduler:
    """``DDIMScheduler`` with SD's betas, ``set_alpha_to_one=False`` and trailing spacing (first step at t = 999).

    Args:
        prediction_type (`str`, defaults to :data:`PREDICTION_TYPE`): must match the training's.
    """
    return DDIMScheduler(**_schedule(prediction_type), steps_offset=1, set_alpha_to_one=False, timestep_spacing="trailing")
