r"""Train the shapes text-to-image model on CPU and save it as a Stable Diffusion pipeline folder.

    python -m nlg.shapes.train --threads 1                # the shipped recipe, into nlg/shapes/weights/shapes_ldm
    python -m nlg.shapes.train --quick --out /tmp/shapes  # a ~1-minute smoke run of the whole recipe
    python -m nlg.shapes.train --threads 1 --seed 1 --out shapes-seed1  # a second training seed

Both phases run through :func:`nlg.training.loop.train_loop` (warm-up + cosine AdamW, gradients clipped to norm
1, atomic checkpoints in ``<out>.partial/``; rerunning the same command resumes bit-exactly; a run is bit-exact
per CPU and thread count, so the shipped files come back only on a CPU like the one that trained them; records
written from now on name the CPU, ``cpu``):

1. **VAE.** ``AutoencoderKL`` on the rendered scenes, loss
   :math:`\lVert D(z) - x\rVert_1 + \lVert D(z) - x\rVert_2^2 + \beta\,\mathrm{KL}(q(z|x)\,\Vert\,\mathcal N(0, I))
   + w\,\lVert \mu_{0:3}(x) - \mathrm{pool}_2(x)\rVert_2^2`
   (means over elements, β = 1e-5; the last term ties latent channels 0–2 to the 2×2-pooled colours).  Then the
   latent space is whitened (:func:`nlg.shapes.model.whiten_vae`, folded into the VAE's 1×1 convolutions, so
   the pipeline is unmodified): one direction (object vs. white background) carries most of the latent variance,
   and without whitening the diffusion loss barely notices a wrong colour.  ``scaling_factor`` = 1 / std of the
   latents, as in Stable Diffusion.
2. **UNet + text encoder, jointly**, on the DDPM objective (Ho et al. 2020, https://arxiv.org/abs/2006.11239)
   in latent space (Rombach et al. 2022, https://arxiv.org/abs/2112.10752) with v-prediction (Salimans & Ho
   2022, https://arxiv.org/abs/2202.00512), batches from :func:`nlg.training.training_batch` with its defaults —
   uniform t on SD's ``scaled_linear`` schedule and **plain Gaussian ε, the noise an unmodified pipeline samples
   from**:

   .. math::
       x_t = \sqrt{\bar\alpha_t} z_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\qquad
       \mathcal L = \lVert v_\theta(x_t, t, \tau(c)) - (\sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,z_0)\rVert_2^2,
       \qquad c = \text{""} \text{ with probability } p_{\text{drop}},

   where :math:`z_0` is the VAE's posterior mean (no posterior sampling) times ``scaling_factor``.  In terms of
   the predicted image this loss is :math:`(1 + \mathrm{SNR}_t)\lVert \hat z_0 - z_0\rVert^2` where the
   ε-objective (``prediction_type="epsilon"``) gives :math:`\mathrm{SNR}_t\lVert \hat z_0 - z_0\rVert^2`,
   about 0.005 of it at t = 999: the ε model barely learnt what the prompt says about colours and layout, decided
   at the noisiest steps, and took them from the initial noise.  The caption dropout trains the unconditional
   prediction that classifier-free guidance and NLG need.  The shipped weights are an exponential moving average
   of the UNet's and text encoder's (:class:`nlg.training.loop.EMA`).

   Position captions (44% of the mix, :data:`~nlg.shapes.data.TASK_WEIGHTS`) add a relation loss
   λ · CE(W h_j, r) on the text encoder's states from the relation word on (λ = 0.1,
   ``ShapesTraining.relation_loss_weight``): trained jointly without it, the encoder merges ``left of`` and
   ``right of`` and the model places objects left or right at chance.

The finished pipeline is written with ``save_pretrained`` into a staging folder and renamed into place, with
``<out>.json`` (settings, the command, wall time, thread count, sha256 of every weights file) beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..training import training_batch, weighted_mse
from ..training.loop import LoopConfig, train_loop, training_record
from ..utils.checks import check_bool, check_number
from ..utils.deprecation import deprecated_function
from ..utils.io import atomic_write_json, sha256_file
from ..utils.types import PathLike
from .data import RELATIONS, TASK_WEIGHTS, TASKS, check_task_weights, mirror_scene, render_dataset
from .model import (
    PREDICTION_TYPE,
    PREDICTION_TYPES,
    SCHEDULER_CONFIG,
    TEXT_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
    build_text_encoder,
    build_unet,
    build_vae,
    check_prediction_type,
    sampling_scheduler,
    training_scheduler,
    unet_levels,
    whiten_vae,
)
from .tokenizer import build_tokenizer

__all__ = ["ShapesTraining", "DEFAULT_TRAINING", "QUICK_TRAINING", "WEIGHTS_ROOT", "DEFAULT_FOLDER", "TRAIN_SEED_OFFSET",
           "safetensors_sha256", "initial_text_encoder", "relation_labels", "train", "main"]

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
DEFAULT_FOLDER = WEIGHTS_ROOT / "shapes_ldm"
#: Training scenes are ``scene_from_seed(TRAIN_SEED_OFFSET + i)``; tests and benchmarks use other seeds.
TRAIN_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class ShapesTraining:
    """Settings of :func:`train`, validated once.

    Args:
        scenes (`int`, defaults to 40000): rendered training scenes (seeds ``TRAIN_SEED_OFFSET + i``).
        vae_steps (`int`, defaults to 600): VAE optimiser steps.
        vae_batch_size (`int`, defaults to 32): VAE batch.
        vae_lr (`float`, defaults to 1e-3): VAE peak learning rate.
        kl_weight (`float`, defaults to 1e-5): β of the VAE's KL term.
        latent_rgb_weight (`float`, defaults to 1.0): weight tying latent channels 0–2 to the pooled colours (0: off).
        whiten_latents (`bool`, defaults to True): fold a latent whitening into the VAE.
        steps (`int`, defaults to 5600): UNet + text encoder optimiser steps.
        batch_size (`int`, defaults to 32): diffusion batch.
        lr (`float`, defaults to 5e-4): UNet + text encoder peak learning rate.
        caption_dropout (`float`, defaults to 0.1): probability of training a caption as ``""``.
        ema_decay (`float`, *optional*, defaults to 0.999): EMA decay of the shipped weights (``None``: the last weights).
        min_snr_gamma (`float`, *optional*): Min-SNR-γ loss weights (Hang et al. 2023, https://arxiv.org/abs/2303.09556).
        prediction_type (`str`, defaults to ``"v_prediction"``): the UNet's target, ``"v_prediction"`` or
            ``"epsilon"`` (the v1 and first v2 models); written into the pipeline's scheduler config.
        unet_channels (`Tuple[int, ...]`, defaults to ``(64, 128, 128)``): the UNet's channels per level, top (16×16)
            first (:func:`~nlg.shapes.model.unet_levels`).
        top_level_attention (`bool`, defaults to False): cross-attention at the UNet's top level (SDXL has none,
            nor have v2.2 and the shipped v2.3: their three levels then cost 0.64 of v2.1's two-level step, measured interleaved).
        task_weights (`Tuple[float, ...]`, defaults to :data:`~nlg.shapes.data.TASK_WEIGHTS`): relative frequency
            of each GenEval task among the training captions, in :data:`~nlg.shapes.data.TASKS` order.
        text_layers (`int`, defaults to 2): the text encoder's transformer layers.
        train_text_encoder (`bool`, defaults to True): train the text encoder jointly with the UNet. ``False`` keeps
            it at its seeded initialisation, as Stable Diffusion keeps its pretrained CLIP encoder frozen: trained
            jointly without the relation loss (``relation_loss_weight=0``, the v2.2 recipe), the encoder learns to
            map ``left of`` and ``right of`` to nearly the same states (2% apart at the end-of-text token, against
            21% at initialisation; ``benchmarks/shapes_relation_probe.py``). Frozen,
            the words stay apart, but the UNet still does not learn the side, and colours suffer (shapes guide).
        coloured_position (`float`, defaults to 0.0): share of the position captions that also name the two objects'
            colours (a training-only template, :func:`~nlg.shapes.data.sample_scene`): there the relation word
            decides where each colour goes, a far larger change of the image than which blob is the circle.
        mirror_pairs (`float`, defaults to 0.0): share of each diffusion batch given to counterfactual pairs: a
            ``left of``/``right of`` scene and its mirror image with the other word
            (:func:`~nlg.shapes.data.mirror_scene`), noised with the same ε and timestep, so only the relation word
            tells the two targets apart (0: off, the plain recipe).
        relation_loss_weight (`float`, defaults to 0.1): weight λ of an auxiliary loss on the text encoder that keeps
            the relation word readable, by a linear map, from every token from that word on (``left of`` …
            ``below``, ``nlg.shapes.data.RELATIONS``): the loss becomes ``L + λ · CE(W h_j, r)``, the cross-entropy
            averaged over those tokens j of the batch's position captions (:func:`relation_labels`), with ``W`` a
            4-way linear head trained alongside and not shipped. Trained jointly without it, the encoder maps
            ``left of`` and ``right of`` to nearly the same states and the UNet never learns the side; with
            λ = 0.1 it does (shapes guide, results) (0: off, the v2.2 recipe).
        seed (`int`, defaults to 0): seeds the initial weights and every draw.
    """

    scenes: int = 40000
    vae_steps: int = 600
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-5
    latent_rgb_weight: float = 1.0
    whiten_latents: bool = True
    steps: int = 5600
    batch_size: int = 32
    lr: float = 5e-4
    caption_dropout: float = 0.1
    ema_decay: Optional[float] = 0.999
    min_snr_gamma: Optional[float] = None
    prediction_type: str = PREDICTION_TYPE
    unet_channels: Tuple[int, ...] = UNET_CONFIG["block_out_channels"]
    top_level_attention: bool = False
    task_weights: Tuple[float, ...] = TASK_WEIGHTS
    text_layers: int = TEXT_CONFIG["num_hidden_layers"]
    train_text_encoder: bool = True
    coloured_position: float = 0.0
    mirror_pairs: float = 0.0
    relation_loss_weight: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("scenes", "vae_steps", "vae_batch_size", "steps", "batch_size", "text_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        for name in ("whiten_latents", "train_text_encoder"):
            check_bool(getattr(self, name), name)
        for name in ("vae_lr", "lr", "kl_weight", "latent_rgb_weight", "caption_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not (self.vae_lr > 0 and self.lr > 0):
            raise ValueError("vae_lr and lr must be > 0")
        check_number(self.coloured_position, "coloured_position", maximum=1.0)
        check_number(self.mirror_pairs, "mirror_pairs", maximum=1.0)
        check_number(self.relation_loss_weight, "relation_loss_weight")
        if not self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        check_prediction_type(self.prediction_type)
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0 or None, got {self.min_snr_gamma}")
        unet_levels(self.unet_channels, self.top_level_attention)
        object.__setattr__(self, "task_weights", check_task_weights(self.task_weights))
        has_position = self.task_weights[TASKS.index("position")] > 0
        if self.mirror_pairs > 0 and not has_position:
            raise ValueError("mirror_pairs needs position captions: give task_weights a positive position weight")
        if self.relation_loss_weight > 0 and not (has_position and self.train_text_encoder):
            raise ValueError("relation_loss_weight needs position captions and a trained text encoder (a positive "
                             "position weight in task_weights, train_text_encoder=True); set relation_loss_weight=0 "
                             "(--relation-loss 0) to train without it")

    def to_dict(self) -> Dict[str, Any]:
        """The settings as plain JSON values (``unet_channels`` a list), as recorded and compared on resume.

        ``relation_loss_weight`` is left out at 0, so checkpoints written before the field existed still resume: in
        a record, a missing ``relation_loss_weight`` means 0 (those runs had no relation loss), not the default."""
        out = dict(dataclasses.asdict(self), unet_channels=list(self.unet_channels), task_weights=list(self.task_weights))
        if self.relation_loss_weight == 0:
            del out["relation_loss_weight"]
        return out


#: The settings of the shipped model.
DEFAULT_TRAINING = ShapesTraining()
#: ``--quick``: a smoke run of the whole recipe.
QUICK_TRAINING = dataclasses.replace(DEFAULT_TRAINING, scenes=256, vae_steps=20, vae_batch_size=16, steps=20, batch_size=16)


def safetensors_sha256(folder: PathLike) -> Dict[str, str]:
    """sha256 of every ``*.safetensors`` file in a pipeline folder, keyed by relative path.

    (Was ``weights_sha256``, which in ``benchmarks/nlg_cost.csv`` is one digest string.)"""
    folder = Path(folder)
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*.safetensors"))}


def initial_text_encoder(settings: ShapesTraining = DEFAULT_TRAINING) -> Any:
    """The text encoder as :func:`train` builds it before the first step: ``settings.text_layers`` deep, seeded
    with ``settings.seed + 1``; with ``train_text_encoder=False`` it is also the shipped one.

    Args:
        settings (`ShapesTraining`, defaults to :data:`DEFAULT_TRAINING`): the recipe.
    """
    return build_text_encoder(seed=settings.seed + 1, layers=settings.text_layers)


def relation_labels(ids: Tensor, relation_ids: Sequence[int]) -> Tensor:
    """Targets of the relation loss: at every token from a caption's relation word on, that word's index.

    Args:
        ids (`torch.Tensor`): token ids, shape ``(B, L)``.
        relation_ids (`Sequence[int]`): the token id of the first word of each relation of
            ``nlg.shapes.data.RELATIONS`` (``left``, ``right``, ``above``, ``below``), in that order.

    Returns:
        ``(B, L)`` int64: the relation's index at its word and every later position (padding included, which the
        UNet also attends to), ``-100`` (cross-entropy's ignore index) before it and in captions without one.
    """
    found = torch.stack([ids == token for token in relation_ids], dim=-1)  # (B, L, R)
    if bool((found.sum(dim=(1, 2)) > 1).any()):
        raise ValueError("ids: a caption holds more than one relation word")
    index = (found.long() * torch.arange(len(relation_ids))).sum(-1)  # the relation at its word, 0 elsewhere
    seen = found.any(-1).long().cumsum(1) > 0
    return torch.where(seen, index.max(dim=1, keepdim=True).values.expand_as(index), torch.full_like(index, -100))


@torch.no_grad()
def _posterior_means(vae: Any, images: Tensor) -> Tensor:
    """The VAE's posterior means of every image, in chunks."""
    return torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(256)])


def _vae_loss(vae: Any, images: Tensor, s: ShapesTraining):
    def loss_fn(step: int, generator: torch.Generator) -> Tensor:
        x = images[torch.randint(0, len(images), (s.vae_batch_size,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(z).sample
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + s.kl_weight * kl
        if s.latent_rgb_weight > 0:  # latent channels 0-2 follow the 2×2-pooled colours
            loss = loss + s.latent_rgb_weight * F.mse_loss(posterior.mean[:, :3], F.avg_pool2d(x, 2))
        return loss

    return loss_fn


def _diffusion_loss(unet: Any, text_encoder: Any, latents: Tensor, ids: Tensor, empty: Tensor, s: ShapesTraining,
                    twins: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
                    relation: Optional[Tuple[torch.nn.Module, Sequence[int]]] = None):
    """The diffusion loss; ``twins`` = (scene indices, their mirrored latents, their mirrored captions' ids);
    ``relation`` = (the relation head, the relation words' token ids) adds the relation loss."""
    scheduler = training_scheduler(s.prediction_type)
    pairs = round(s.mirror_pairs * s.batch_size / 2) if twins is not None else 0

    def loss_fn(step: int, generator: torch.Generator) -> Tensor:
        single = s.batch_size - 2 * pairs
        index = torch.randint(0, len(latents), (single,), generator=generator)
        tokens = ids[index].clone()
        tokens[torch.rand(single, generator=generator) < s.caption_dropout] = empty
        x, noise_generator = latents[index], generator
        if pairs:  # each scene and its mirror twin share one generator seed: the same timestep and ε
            j = torch.randint(0, len(twins[0]), (pairs,), generator=generator)
            x = torch.cat([x, latents[twins[0][j]], twins[1][j]])
            tokens = torch.cat([tokens, ids[twins[0][j]], twins[2][j]])
            seeds = torch.randint(0, 2**62, (single + pairs,), generator=generator).tolist()
            noise_generator = [torch.Generator().manual_seed(seed) for seed in seeds + seeds[single:]]
        noisy, timesteps, target, weights = training_batch(
            x, scheduler, generator=noise_generator, min_snr_gamma=s.min_snr_gamma
        )
        states = text_encoder(tokens)[0]
        loss = weighted_mse(unet(noisy, timesteps, encoder_hidden_states=states).sample, target, weights)
        if relation is not None:
            head, relation_ids = relation
            labels = relation_labels(tokens, relation_ids)
            if bool((labels >= 0).any()):
                loss = loss + s.relation_loss_weight * F.cross_entropy(head(states).flatten(0, 1), labels.flatten())
        return loss

    return loss_fn


def train(
    out: PathLike,
    *,
    settings: ShapesTraining = DEFAULT_TRAINING,
    threads: int = 1,
    checkpoint_every: int = 200,
    progress: bool = True,
    command: Optional[str] = None,
) -> Dict[str, Any]:
    """Train VAE, then UNet and text encoder; write the pipeline folder ``out`` and ``out.json``.

    Args:
        out (`str` or `Path`): the pipeline folder to create (replaced atomically if it exists).
        settings (`ShapesTraining`, defaults to :data:`DEFAULT_TRAINING`): the recipe.
        threads (`int`, defaults to 1): torch threads (recorded; results are bit-exact per thread count).
        checkpoint_every (`int`, defaults to 200): steps between checkpoints in ``<out>.partial/``.
        progress (`bool`, defaults to True): tqdm bars.
        command (`str`, *optional*): the command recorded in the metadata (default ``shlex.join(sys.argv)``).

    Returns:
        The metadata written to ``out.json``.
    """
    from diffusers import StableDiffusionPipeline

    if not isinstance(settings, ShapesTraining):
        raise TypeError(f"settings must be a ShapesTraining, got {type(settings).__name__}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    s = settings
    record = s.to_dict()
    torch.set_num_threads(threads)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)

    images, captions, scenes = render_dataset(range(TRAIN_SEED_OFFSET, TRAIN_SEED_OFFSET + s.scenes), s.task_weights, s.coloured_position)
    tokenizer = build_tokenizer()
    vae = build_vae(seed=s.seed)
    vae_result = train_loop(
        {"vae": vae}, _vae_loss(vae, images, s),
        LoopConfig(steps=s.vae_steps, lr=s.vae_lr, checkpoint_every=checkpoint_every),
        generator=torch.Generator().manual_seed(s.seed), checkpoint=partial / "vae.pt", settings=record,
        progress=progress, desc="VAE",
    )
    vae.eval().requires_grad_(False)
    latents = _posterior_means(vae, images)
    if s.whiten_latents:  # deterministic given the VAE, so a resumed run folds in the same whitening
        whiten_vae(vae, latents)
        latents = _posterior_means(vae, images)
    scaling_factor = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling_factor)
    latents = latents * scaling_factor

    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids[0]
    twins = None
    if s.mirror_pairs > 0:
        mirrored = {i: mirror_scene(scene).caption for i, scene in enumerate(scenes) if scene.task == "position"}
        mirrored = {i: caption for i, caption in mirrored.items() if caption != captions[i]}  # left of / right of
        if not mirrored:
            raise ValueError(f"mirror_pairs: none of the {s.scenes} training scenes is a left/right position scene")
        horizontal = list(mirrored)
        twin_ids = tokenizer(list(mirrored.values()), padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        twins = (torch.tensor(horizontal), _posterior_means(vae, images[horizontal].flip(-1)) * scaling_factor, twin_ids)
    text_encoder, unet = initial_text_encoder(s), build_unet(seed=s.seed + 2, **unet_levels(s.unet_channels, s.top_level_attention))
    text_encoder.requires_grad_(s.train_text_encoder)  # train_loop optimises only what requires grad
    modules, relation = {"unet": unet, "text_encoder": text_encoder}, None
    if s.relation_loss_weight > 0:  # trained with the encoder, dropped from the pipeline; zeros need no draw
        modules["relation_head"] = torch.nn.Linear(text_encoder.config.hidden_size, len(RELATIONS))
        torch.nn.init.zeros_(modules["relation_head"].weight)
        torch.nn.init.zeros_(modules["relation_head"].bias)
        relation = (modules["relation_head"], [tokenizer.convert_tokens_to_ids(r.split()[0] + "</w>") for r in RELATIONS])
    result = train_loop(
        modules, _diffusion_loss(unet, text_encoder, latents, ids, empty, s, twins, relation),
        LoopConfig(steps=s.steps, lr=s.lr, ema_decay=s.ema_decay, checkpoint_every=checkpoint_every),
        generator=torch.Generator().manual_seed(s.seed + 1), checkpoint=partial / "unet.pt", settings=record,
        progress=progress, desc="UNet + text encoder",
    )
    if result.ema is not None:
        result.ema.copy_to()
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sampling_scheduler(s.prediction_type),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    staging = out.with_name(out.name + ".staging")
    if staging.exists():
        shutil.rmtree(staging)
    pipe.save_pretrained(staging, safe_serialization=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    meta = training_record(
        record, result, threads=threads, command=command,
        vae_wall_minutes=round(vae_result.elapsed / 60, 1),
        final_vae_loss_mean_last_50=round(sum(vae_result.losses[-50:]) / len(vae_result.losses[-50:]), 5),
        latent_scaling_factor=scaling_factor,
        parameters={name: sum(p.numel() for p in m.parameters())
                    for name, m in (("vae", vae), ("text_encoder", text_encoder), ("unet", unet))},
        configs={"vae": VAE_CONFIG, "text_encoder": dict(TEXT_CONFIG, num_hidden_layers=s.text_layers), "unet": {**UNET_CONFIG, **unet_levels(s.unet_channels, s.top_level_attention)}, "scheduler": dict(SCHEDULER_CONFIG, prediction_type=s.prediction_type)},
        train_seeds=[TRAIN_SEED_OFFSET, TRAIN_SEED_OFFSET + s.scenes],
        sha256=safetensors_sha256(out),
        size_bytes=sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    )
    meta["wall_minutes_total"] = round((vae_result.elapsed + result.elapsed) / 60, 1)
    atomic_write_json(out.with_name(out.name + ".json"), meta)
    shutil.rmtree(partial)
    print(f"wrote {out} ({meta['size_bytes'] / 1e6:.1f} MB); training took {meta['wall_minutes_total']} min", flush=True)
    return meta


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line for :func:`train`."""
    parser = argparse.ArgumentParser(description="Train the shapes text-to-image model (CPU, seeded, resumable).")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run of the whole recipe (default --out ./shapes-quick)")
    parser.add_argument("--out", type=Path, default=None, help=f"pipeline folder to write (default {DEFAULT_FOLDER})")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2; results are bit-exact per thread count)")
    parser.add_argument("--steps", type=int, default=None, help="UNet steps (overrides the preset)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    parser.add_argument("--lr", type=float, default=None, help="UNet + text encoder peak learning rate")
    parser.add_argument("--ema-decay", type=float, default=None, help="EMA decay of the shipped weights (0: no EMA)")
    parser.add_argument("--min-snr-gamma", type=float, default=None, help="Min-SNR-γ loss weights (default: off)")
    parser.add_argument("--prediction-type", choices=PREDICTION_TYPES, default=None,
                        help=f"the UNet's target (default {PREDICTION_TYPE})")
    parser.add_argument("--unet-channels", type=int, nargs="+", default=None,
                        help="UNet channels per level, top first (default 64 128 128)")
    parser.add_argument("--top-level-attention", action=argparse.BooleanOptionalAction, default=None,
                        help="cross-attention at the UNet's top level (default: off)")
    parser.add_argument("--task-weights", type=float, nargs=len(TASKS), default=None, metavar="W",
                        help=f"relative frequency of each training task, in the order {' '.join(TASKS)} (default {' '.join(map(str, TASK_WEIGHTS))})")
    parser.add_argument("--text-layers", type=int, default=None, help="text encoder layers (default 2)")
    parser.add_argument("--frozen-text-encoder", action="store_true",
                        help="keep the text encoder at its seeded initialisation instead of training it with the UNet")
    parser.add_argument("--coloured-position", type=float, default=None,
                        help="share of position captions that also name the colours, a training-only template (default 0)")
    parser.add_argument("--mirror-pairs", type=float, default=None,
                        help="share of each batch given to left/right position scenes paired with their mirror twins (default 0)")
    parser.add_argument("--relation-loss", type=float, default=None, dest="relation_loss_weight",
                        help="weight of an auxiliary loss keeping the relation word readable from the text encoder's later tokens "
                             "(default 0.1; 0 when --frozen-text-encoder or --task-weights leave it nothing to train)")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (default 200)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars (for log files)")
    args = parser.parse_args(argv)
    settings = QUICK_TRAINING if args.quick else DEFAULT_TRAINING
    overrides: Dict[str, Any] = {}
    for name in ("steps", "seed", "lr", "min_snr_gamma", "prediction_type", "text_layers", "mirror_pairs", "coloured_position",
                 "relation_loss_weight"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.frozen_text_encoder:
        overrides["train_text_encoder"] = False
    if args.unet_channels is not None:
        overrides["unet_channels"] = tuple(args.unet_channels)
    if args.task_weights is not None:
        overrides["task_weights"] = tuple(args.task_weights)
    if args.top_level_attention is not None:
        overrides["top_level_attention"] = args.top_level_attention
    if args.ema_decay is not None:
        overrides["ema_decay"] = args.ema_decay or None
    relation_possible = (overrides.get("train_text_encoder", settings.train_text_encoder)
                         and overrides.get("task_weights", settings.task_weights)[TASKS.index("position")] > 0)
    if args.relation_loss_weight is None and not relation_possible:  # the default loss has nothing to act on: off
        overrides["relation_loss_weight"] = 0.0
    try:
        settings = dataclasses.replace(settings, **overrides)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    out = args.out if args.out is not None else (Path("shapes-quick") if args.quick else DEFAULT_FOLDER)
    train(out, settings=settings, threads=args.threads, checkpoint_every=args.checkpoint_every, progress=not args.no_progress)


if __name__ == "__main__":
    main()


#: Deprecated alias (one release) of :func:`safetensors_sha256`.
weights_sha256 = deprecated_function(safetensors_sha256, "nlg.shapes.train.weights_sha256", "nlg.shapes.train.safetensors_sha256")
