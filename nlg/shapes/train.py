r"""Train the shapes text-to-image model on CPU and save it as a Stable Diffusion pipeline folder.

    python -m nlg.shapes.train                          # the shipped model (nlg/shapes/weights/shapes_ldm)
    python -m nlg.shapes.train --quick --out /tmp/shapes  # a ~1-minute smoke run
    python -m nlg.shapes.train --init-from DIR --seed 1 --lr 2e-4 --steps 1200   # continue DIR (the same recipe)

Two phases, every random draw from one ``torch.Generator`` seeded with ``--seed``:

1. **VAE.** ``AutoencoderKL`` on the rendered scenes, loss
   :math:`\lVert D(z) - x\rVert_1 + \lVert D(z) - x\rVert_2^2 + \beta\,\mathrm{KL}(q(z|x)\,\Vert\,\mathcal N(0, I))
   + w\,\lVert \mu_{0:3}(x) - \mathrm{pool}_2(x)\rVert_2^2`
   (means over elements, β = 1e-5; the last term, ``latent_rgb_weight`` w = 1, ties latent channels 0–2 to
   the 2×2-pooled colours).  Then the latent space is whitened (:func:`nlg.shapes.model.whiten_vae`,
   folded into the VAE's 1×1 convolutions): on these scenes one direction (object vs. white background)
   carries most of the latent variance and the colours differ along directions with a few percent of
   it, so without whitening the diffusion loss barely notices a wrong colour.  ``scaling_factor`` =
   1 / std of the latents, as in Stable Diffusion.
2. **UNet + text encoder, jointly**, on the DDPM ε-objective (Ho et al. 2020,
   https://arxiv.org/abs/2006.11239) in latent space (Rombach et al. 2022, https://arxiv.org/abs/2112.10752):

   .. math::
       \mathcal L = \lVert \epsilon_\theta(\sqrt{\bar\alpha_t} z_0 + \sqrt{1-\bar\alpha_t}\,\epsilon, t, \tau(c)) - \epsilon\rVert_2^2,
       \qquad c = \text{""} \text{ with probability } p_{\text{drop}} = 0.12,

   with ``t ~ U{0…999}`` on SD's ``scaled_linear`` schedule and ε pyramid noise
   (:func:`nlg.training.pyramid_noise`, discount 0.5): plain ε leaves the low frequencies of a scene —
   where an object's colour lives — readable at t ≈ 950, so a model trained on it takes the colour from
   the initial noise rather than from the prompt.  Optionally each sample's loss is weighted by
   Min-SNR-γ, min(SNR_t, γ)/SNR_t (Hang et al. 2023, https://arxiv.org/abs/2303.09556; ``--min-snr-gamma``).  The caption dropout (each caption
   independently) trains the unconditional ``ε(·|"")`` that classifier-free guidance and NLG need.

``--init-from DIR`` continues from a pipeline folder instead: the VAE (and its ``scaling_factor``) is
kept as it is and only phase 2 runs, with a fresh optimiser.

AdamW with linear warm-up over 5% of the steps, then cosine decay; gradients clipped to norm 1.  A
checkpoint is written atomically every ``--checkpoint-every`` steps into ``<out>.partial/``; rerunning
the same command resumes from it with the same result.  The finished pipeline is written with
``save_pretrained`` into a temporary folder and renamed into place, with ``<out>.json`` (settings,
wall time, thread count, sha256 of every weights file) next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..training.pyramid import pyramid_noise
from .data import render_dataset
from .model import (
    SCHEDULER_CONFIG,
    TEXT_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
    build_text_encoder,
    build_unet,
    build_vae,
    whiten_vae,
    sampling_scheduler,
    training_scheduler,
)
from .tokenizer import build_tokenizer

__all__ = ["DEFAULT_TRAINING", "QUICK_TRAINING", "WEIGHTS_ROOT", "DEFAULT_FOLDER", "TRAIN_SEED_OFFSET", "train", "main"]

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
DEFAULT_FOLDER = WEIGHTS_ROOT / "shapes_ldm"
#: Training scenes are ``scene_from_seed(TRAIN_SEED_OFFSET + i)``; tests and benchmarks use other seeds.
TRAIN_SEED_OFFSET = 1_000_000

#: The settings of the shipped model.
DEFAULT_TRAINING: Dict[str, Any] = dict(
    scenes=24000,
    vae_steps=600,
    vae_batch_size=32,
    vae_lr=1e-3,
    kl_weight=1e-5,
    latent_rgb_weight=1.0,
    whiten_latents=True,
    steps=4000,
    batch_size=32,
    lr=6e-4,
    caption_dropout=0.12,
    min_snr_gamma=None,
    pyramid_discount=0.5,
    low_snr_weight_cap=None,
    init_from=None,
    seed=0,
)
#: ``--quick``: a smoke run of the whole recipe.
QUICK_TRAINING: Dict[str, Any] = dict(DEFAULT_TRAINING, scenes=256, vae_steps=20, vae_batch_size=16, steps=20, batch_size=16)


def _lr_lambda(steps: int) -> Callable[[int], float]:
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return factor


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(folder: Path) -> Dict[str, str]:
    """sha256 of every ``*.safetensors`` file in a pipeline folder, keyed by relative path."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*.safetensors"))}


@torch.no_grad()
def _encode_all(vae: Any, images: Tensor) -> Tuple[Tensor, Tensor]:
    """Posterior means and standard deviations of every image, in chunks."""
    means, stds = [], []
    for chunk in images.split(256):
        posterior = vae.encode(chunk).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


class _Phase:
    """Optimiser, LR schedule and step counter of one training phase, checkpointed together."""

    def __init__(self, params: List[torch.nn.Parameter], lr: float, steps: int) -> None:
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(steps))
        self.params = params

    def step(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.schedule.step()

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])


def train(
    out: Path,
    *,
    settings: Dict[str, Any] = DEFAULT_TRAINING,
    threads: int = 1,
    checkpoint_every: int = 200,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: str = "python -m nlg.shapes.train",
) -> Dict[str, Any]:
    """Train VAE, then UNet and text encoder; write the pipeline folder ``out`` and ``out.json``.

    Args:
        out (`Path`): the pipeline folder to create (replaced atomically if it exists).
        settings (`Dict[str, Any]`, defaults to :data:`DEFAULT_TRAINING`): scenes, steps, batch sizes, rates, seed.
        threads (`int`, defaults to 1): torch threads (recorded; results are bit-exact per thread count).
        checkpoint_every (`int`, defaults to 200): steps between checkpoints in ``<out>.partial/``.
        progress (`bool`, defaults to True): tqdm bars.
        log (`Callable[[str], None]`, defaults to print): receives progress lines.
        command (`str`): the command recorded in the metadata.

    Returns:
        The metadata written to ``out.json``.
    """
    from diffusers import StableDiffusionPipeline

    s = dict(settings)
    unknown = set(s) - set(DEFAULT_TRAINING)
    if unknown:
        raise ValueError(f"settings has unknown keys {sorted(unknown)}")
    for key in ("scenes", "vae_steps", "vae_batch_size", "steps", "batch_size", "seed"):
        if isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] < (0 if key == "seed" else 1):
            raise ValueError(f"settings[{key!r}] must be a positive int, got {s[key]!r}")
    gamma = s["min_snr_gamma"]
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0):
        raise ValueError(f"min_snr_gamma must be a positive number or None, got {gamma!r}")
    for key in ("pyramid_discount", "low_snr_weight_cap", "latent_rgb_weight"):
        value = s[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise ValueError(f"{key} must be a positive number or None, got {value!r}")
    if not 0.0 <= s["caption_dropout"] < 1.0:
        raise ValueError(f"caption_dropout must be in [0, 1), got {s['caption_dropout']}")
    init = None
    if s["init_from"] is not None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        init = Path(s["init_from"])
        if not (init / "model_index.json").is_file():
            raise FileNotFoundError(f"init_from {init} is not a pipeline folder (model_index.json missing)")
    vae_steps = 0 if init is not None else s["vae_steps"]  # a continuation keeps the VAE as it is
    torch.set_num_threads(threads)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    ckpt_path = partial / "checkpoint.pt"
    state = torch.load(ckpt_path, weights_only=False) if ckpt_path.is_file() else None
    if state is not None and state["settings"] != s:
        raise ValueError(f"{ckpt_path} was written with other settings; delete {partial} to start afresh")
    elapsed_before = state["elapsed"] if state is not None else 0.0
    start = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - start

    generator = torch.Generator().manual_seed(s["seed"])
    images, captions, _ = render_dataset(range(TRAIN_SEED_OFFSET, TRAIN_SEED_OFFSET + s["scenes"]))
    log(f"rendered {len(images)} scenes in {time.perf_counter() - start:.0f} s")
    tokenizer = build_tokenizer()
    vae = build_vae(seed=s["seed"]) if init is None else AutoencoderKL.from_pretrained(init / "vae")
    vae_phase = _Phase(list(vae.parameters()), s["vae_lr"], max(1, vae_steps))
    vae_step = 0
    whitened = False  # whether the VAE held in memory has its whitening folded in already
    if state is not None:
        whitened = bool(state.get("whitened", False))
        vae.load_state_dict(state["vae"])
        vae_phase.load_state_dict(state["vae_phase"])
        vae_step = state["vae_step"]
        generator.set_state(state["generator"])

    if init is None:
        text_encoder = build_text_encoder(seed=s["seed"] + 1)
        unet = build_unet(seed=s["seed"] + 2)
    else:
        text_encoder = CLIPTextModel.from_pretrained(init / "text_encoder")
        unet = UNet2DConditionModel.from_pretrained(init / "unet")
    unet_phase = _Phase(list(unet.parameters()) + list(text_encoder.parameters()), s["lr"], s["steps"])
    unet_step = 0
    if state is not None and state.get("unet") is not None:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        unet_phase.load_state_dict(state["unet_phase"])
        unet_step = state["unet_step"]

    losses: Dict[str, List[float]] = {"vae": list(state["losses"]["vae"]) if state else [],
                                      "unet": list(state["losses"]["unet"]) if state else []}

    def checkpoint() -> None:
        _atomic_save(
            {
                "settings": s,
                "vae": vae.state_dict(),
                "vae_phase": vae_phase.state_dict(),
                "vae_step": vae_step,
                "whitened": whitened,
                "unet": unet.state_dict() if unet_step > 0 else None,
                "text_encoder": text_encoder.state_dict(),
                "unet_phase": unet_phase.state_dict(),
                "unet_step": unet_step,
                "generator": generator.get_state(),
                "losses": losses,
                "elapsed": elapsed(),
            },
            ckpt_path,
        )

    # -- phase 1: VAE ------------------------------------------------------------------------------
    vae.train()
    bar = tqdm(range(vae_step, vae_steps), desc="VAE", disable=not progress, mininterval=2.0)
    for step in bar:
        index = torch.randint(0, len(images), (s["vae_batch_size"],), generator=generator)
        x = images[index]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(z).sample
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + s["kl_weight"] * kl
        if s["latent_rgb_weight"] is not None:  # latent channels 0-2 follow the 2×2-pooled colours
            loss = loss + s["latent_rgb_weight"] * F.mse_loss(posterior.mean[:, :3], F.avg_pool2d(x, 2))
        vae_phase.step(loss)
        vae_step = step + 1
        losses["vae"].append(float(loss.detach()))
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses['vae'][-1]:.4f}")
        if vae_step % checkpoint_every == 0 or vae_step == vae_steps:
            checkpoint()
            log(f"VAE step {vae_step}/{vae_steps} loss {sum(losses['vae'][-25:]) / len(losses['vae'][-25:]):.4f} "
                f"elapsed {elapsed() / 60:.1f} min")
    vae.eval().requires_grad_(False)

    # Encode every scene once (posterior mean and std); latents are sampled per step.
    latent_mean, latent_std = _encode_all(vae, images)
    if init is None and s["whiten_latents"] and not whitened:  # once: a resumed checkpoint holds the folded VAE
        whiten = whiten_vae(vae, latent_mean)
        whitened = True
        latent_mean, latent_std = _encode_all(vae, images)  # through the folded convolutions: W (mean − μ)
        log(f"whitened the latent space (W = {whiten.numpy().round(3).tolist()})")
    if init is None:
        scaling_factor = float(1.0 / torch.sqrt(latent_mean.var() + latent_std.pow(2).mean()))
        vae.register_to_config(scaling_factor=scaling_factor)
    else:  # keep the scale the loaded UNet was trained with
        scaling_factor = float(vae.config.scaling_factor)
    log(f"latent scaling factor {scaling_factor:.4f}")

    encoded = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids[0]
    scheduler = training_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.float()

    # -- phase 2: UNet + text encoder -----------------------------------------------------------
    unet.train()
    text_encoder.train()
    bar = tqdm(range(unet_step, s["steps"]), desc="UNet + text encoder", disable=not progress, mininterval=2.0)
    for step in bar:
        index = torch.randint(0, len(images), (s["batch_size"],), generator=generator)
        z0 = latent_mean[index] + latent_std[index] * torch.randn(latent_mean[index].shape, generator=generator)
        z0 = z0 * scaling_factor
        ids = encoded[index].clone()
        drop = torch.rand(s["batch_size"], generator=generator) < s["caption_dropout"]
        ids[drop] = empty
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (s["batch_size"],), generator=generator)
        if s["pyramid_discount"] is None:
            noise = torch.randn(z0.shape, generator=generator)
        else:
            noise = pyramid_noise(z0, discount=s["pyramid_discount"], generator=generator)
        noisy = scheduler.add_noise(z0, noise, timesteps)
        hidden = text_encoder(ids)[0]
        prediction = unet(noisy, timesteps, encoder_hidden_states=hidden).sample
        per_sample = F.mse_loss(prediction, noise, reduction="none").flatten(1).mean(dim=1)
        snr = alphas_cumprod[timesteps] / (1.0 - alphas_cumprod[timesteps])
        if s["min_snr_gamma"] is not None:
            per_sample = per_sample * snr.clamp(max=s["min_snr_gamma"]) / snr
        if s["low_snr_weight_cap"] is not None:
            per_sample = per_sample * (1.0 + 1.0 / snr).clamp(max=s["low_snr_weight_cap"])
        loss = per_sample.mean()
        unet_phase.step(loss)
        unet_step = step + 1
        losses["unet"].append(float(loss.detach()))
        if step % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses['unet'][-25:]) / len(losses['unet'][-25:]):.4f}")
        if unet_step % checkpoint_every == 0 or unet_step == s["steps"]:
            checkpoint()
            tail = losses["unet"][-100:]
            log(f"UNet step {unet_step}/{s['steps']} loss(last {len(tail)}) {sum(tail) / len(tail):.4f} "
                f"elapsed {elapsed() / 60:.1f} min")
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    wall = elapsed()

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sampling_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    staging = out.with_name(out.name + ".staging")
    if staging.exists():
        shutil.rmtree(staging)
    pipe.save_pretrained(staging, safe_serialization=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    tail = losses["unet"][-200:]
    meta = {
        "command": command,
        "settings": s,
        "threads": threads,
        "wall_seconds": round(wall, 1),
        "wall_minutes": round(wall / 60, 1),
        "final_unet_loss_mean_last_200": round(sum(tail) / len(tail), 5),
        "final_vae_loss_mean_last_50": (round(sum(losses["vae"][-50:]) / len(losses["vae"][-50:]), 5)
                                        if losses["vae"] else None),
        "init_from_sha256": weights_sha256(init) if init is not None else None,
        "latent_scaling_factor": scaling_factor,
        "parameters": {
            "vae": sum(p.numel() for p in vae.parameters()),
            "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
            "unet": sum(p.numel() for p in unet.parameters()),
        },
        "configs": {"vae": VAE_CONFIG, "text_encoder": TEXT_CONFIG, "unet": UNET_CONFIG, "scheduler": SCHEDULER_CONFIG},
        "train_seeds": [TRAIN_SEED_OFFSET, TRAIN_SEED_OFFSET + s["scenes"]],
        "torch": torch.__version__,
        "sha256": weights_sha256(out),
        "size_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    }
    meta_path = out.with_name(out.name + ".json")
    tmp = meta_path.with_name(meta_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=list) + "\n")
    os.replace(tmp, meta_path)
    shutil.rmtree(partial)
    log(f"wrote {out} ({meta['size_bytes'] / 1e6:.1f} MB) and {meta_path}; training took {wall / 60:.1f} min")
    return meta


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line for :func:`train`."""
    parser = argparse.ArgumentParser(description="Train the shapes text-to-image model (CPU, seeded, resumable).")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run of the whole recipe (default --out ./shapes-quick)")
    parser.add_argument("--out", type=Path, default=None, help=f"pipeline folder to write (default {DEFAULT_FOLDER})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1; on the shared 2-core machine 2 threads ran 3-9x slower per step)")
    parser.add_argument("--steps", type=int, default=None, help="UNet steps (overrides the preset)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="UNet + text encoder peak learning rate (overrides the preset)")
    parser.add_argument("--min-snr-gamma", type=float, default=None,
                        help="Min-SNR-γ loss weighting min(SNR, γ)/SNR (Hang et al. 2023); default: the preset's")
    parser.add_argument("--pyramid-discount", type=float, default=None,
                        help="train on pyramid noise with this discount (nlg.training.pyramid_noise; 0: plain ε); default: the preset's")
    parser.add_argument("--low-snr-weight-cap", type=float, default=None,
                        help="weight each ε-loss by min(1 + 1/SNR, cap) (the v-loss weighting, capped); default: the preset's")
    parser.add_argument("--whiten-latents", action=argparse.BooleanOptionalAction, default=None,
                        help="fold a latent whitening into the VAE (model.whiten_vae); default: the preset's (on)")
    parser.add_argument("--latent-rgb-weight", type=float, default=None,
                        help="weight of the VAE term tying latent channels 0-2 to the 2x2-pooled RGB (0: none); default: the preset's")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="continue training from this pipeline folder (VAE kept as is, UNet and text encoder fine-tuned)")
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars (for log files)")
    args = parser.parse_args(argv)
    settings = dict(QUICK_TRAINING if args.quick else DEFAULT_TRAINING)
    if args.steps is not None:
        settings["steps"] = args.steps
    if args.seed is not None:
        settings["seed"] = args.seed
    if args.lr is not None:
        settings["lr"] = args.lr
    if args.min_snr_gamma is not None:
        settings["min_snr_gamma"] = args.min_snr_gamma
    if args.init_from is not None:
        settings["init_from"] = str(args.init_from)
    if args.pyramid_discount is not None:
        settings["pyramid_discount"] = args.pyramid_discount or None
    if args.latent_rgb_weight is not None:
        settings["latent_rgb_weight"] = args.latent_rgb_weight or None
    if args.whiten_latents is not None:
        settings["whiten_latents"] = args.whiten_latents
    if args.low_snr_weight_cap is not None:
        settings["low_snr_weight_cap"] = args.low_snr_weight_cap
    out = args.out if args.out is not None else (Path("shapes-quick") if args.quick else DEFAULT_FOLDER)
    command = "python -m nlg.shapes.train" + (" --quick" if args.quick else "") + (
        f" --steps {args.steps}" if args.steps is not None else "") + (f" --seed {args.seed}" if args.seed is not None else "") + (
        f" --lr {args.lr:g}" if args.lr is not None else "") + (
        f" --min-snr-gamma {args.min_snr_gamma:g}" if args.min_snr_gamma is not None else "") + (
        f" --init-from {args.init_from}" if args.init_from is not None else "") + (
        f" --pyramid-discount {args.pyramid_discount:g}" if args.pyramid_discount is not None else "") + (
        f" --latent-rgb-weight {args.latent_rgb_weight:g}" if args.latent_rgb_weight is not None else "") + (
        ("" if args.whiten_latents is None else " --whiten-latents" if args.whiten_latents else " --no-whiten-latents")) + (
        f" --low-snr-weight-cap {args.low_snr_weight_cap:g}" if args.low_snr_weight_cap is not None else "")
    train(out, settings=settings, threads=args.threads, checkpoint_every=args.checkpoint_every,
          progress=not args.no_progress, log=lambda line: print(line, flush=True), command=command)


if __name__ == "__main__":
    main()
