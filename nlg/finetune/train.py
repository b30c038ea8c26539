r"""LoRA fine-tuning of a Stable Diffusion 1.x/2.x pipeline through the shared training loop.

The recipe is that of diffusers' ``train_text_to_image_lora.py``: a frozen pipeline; a ``peft``
``LoraConfig`` (rank r, α, Gaussian initialisation, so the update B·A starts at 0) on the UNet's attention
projections ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` (and optionally the text encoder's ``q_proj``,
``k_proj``, ``v_proj``, ``out_proj``), each adapted layer computing :math:`W x + \frac{\alpha}{r} B A x`
(Hu et al. 2021, https://arxiv.org/abs/2106.09685); latents are the VAE's posterior mean × ``scaling_factor``,
computed once; the loss is :func:`nlg.training.weighted_mse` of the prediction against the target of
:func:`nlg.training.training_batch`.  Accelerate's ``Accelerator`` places the models and runs autocast for
``mixed_precision`` and the backward pass; :func:`nlg.training.loop.train_loop` owns the optimiser, the
schedule, gradient accumulation, clipping and the resumable checkpoint (LoRA weights only).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from ..training import weighted_mse, zero_terminal_snr
from ..training.loop import LoopConfig, train_loop, training_record
from ..utils.io import atomic_write, atomic_write_json, atomic_write_text
from .config import FinetuneConfig, batch_options, draw_batch
from .data import load_images, read_image_folder

__all__ = ["UNET_TARGETS", "TEXT_ENCODER_TARGETS", "LORA_WEIGHTS", "load_base_pipeline", "training_scheduler", "save_lora",
           "check_text_encoder_lora",
           "Prepared", "prepare", "finetune"]

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
#: The file ``pipe.load_lora_weights(output_dir)`` reads.
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
_SD_CLASSES = ("StableDiffusionPipeline",)


def _model_class(model: str, local_files_only: bool) -> str:
    """The ``_class_name`` of a pipeline folder or Hub id, or a ValueError naming ``model``."""
    from diffusers import DiffusionPipeline

    folder = Path(model)
    try:
        if folder.exists():
            if not (folder / "model_index.json").is_file():
                raise ValueError(f"model {model}: no model_index.json, so not a diffusers pipeline folder")
            config = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        else:
            config = DiffusionPipeline.load_config(model, local_files_only=local_files_only)
    except (OSError, json.JSONDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model {model!r}: cannot read a diffusers pipeline ({first})") from None
    return str(config.get("_class_name", ""))


def load_base_pipeline(model: str, *, local_files_only: bool = False) -> Any:
    """The frozen ``StableDiffusionPipeline`` to fine-tune, on the CPU in float32.

    Args:
        model (`str`): a pipeline folder, a Hub id, or ``"shapes"`` (:data:`nlg.shapes.DEFAULT_PIPELINE`).
        local_files_only (`bool`, defaults to False): never reach the Hub (always true for ``"shapes"``).

    Raises:
        ValueError: for SDXL (not supported yet), any other non-SD 1.x/2.x pipeline, or a model that cannot be read.
    """
    from diffusers import StableDiffusionPipeline

    if model == "shapes":
        from ..shapes import DEFAULT_PIPELINE

        model, local_files_only = str(DEFAULT_PIPELINE), True
    name = _model_class(model, local_files_only)
    if "XL" in name:
        raise ValueError(f"model {model!r} is {name}: SDXL is not supported by nlg.finetune yet (SD 1.x/2.x only)")
    if name not in _SD_CLASSES:
        raise ValueError(f"model {model!r} is {name or 'not a pipeline'}, not a Stable Diffusion 1.x/2.x pipeline")
    pipe = StableDiffusionPipeline.from_pretrained(
        model, local_files_only=local_files_only, safety_checker=None, requires_safety_checker=False,
        torch_dtype=torch.float32,
    )
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    return pipe


def training_scheduler(pipe: Any, config: FinetuneConfig) -> Any:
    """``DDPMScheduler`` with the pipeline's noise schedule; zero terminal SNR if asked (v-prediction only).

    Raises:
        ValueError: ``zero_terminal_snr`` on an ε-model unless ``prediction_type="v_prediction"`` switches the
            objective: ε cannot be predicted at SNR 0, where x_T holds no signal (Lin et al. 2024, §3.2,
            https://arxiv.org/abs/2305.08891).
    """
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = config.prediction_type or scheduler.config.prediction_type
    if config.zero_terminal_snr:
        if prediction != "v_prediction":
            raise ValueError(
                f"zero_terminal_snr needs v-prediction, and this model trains {prediction!r}: at zero terminal SNR "
                "an ε-model has nothing to predict from (Lin et al. 2024, arXiv 2305.08891); pass "
                "--prediction_type v_prediction to switch the objective while fine-tuning"
            )
        scheduler = zero_terminal_snr(scheduler, prediction_type=prediction)
    return scheduler


def check_text_encoder_lora() -> None:
    """Raise a ValueError naming ``train_text_encoder`` if the installed transformers cannot load text-encoder LoRAs.

    ``pipe.load_lora_weights`` loads a text-encoder LoRA through transformers' ``load_adapter``, which needs the
    peft version transformers names (``MIN_PEFT_VERSION``, 0.22 for transformers 5): a LoRA trained without it
    could be saved but never loaded, so it is refused before training.
    """
    from importlib.metadata import version

    from transformers.integrations.peft import MIN_PEFT_VERSION
    from transformers.utils.peft_utils import check_peft_version

    try:
        check_peft_version(min_version=MIN_PEFT_VERSION)
    except ValueError:
        raise ValueError(
            f"train_text_encoder needs peft >= {MIN_PEFT_VERSION} with transformers {version('transformers')} "
            f"(pipe.load_lora_weights loads text-encoder LoRAs through it); peft {version('peft')} is installed"
        ) from None


def _add_lora(module: Any, targets: Tuple[str, ...], config: FinetuneConfig, seed: int) -> None:
    from peft import LoraConfig

    lora = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
                      target_modules=list(targets))
    with torch.random.fork_rng(devices=[]):  # A ~ N(0, 1/r) from the seed; B = 0
        torch.manual_seed(seed)
        module.add_adapter(lora)


class Prepared:
    """Everything :func:`finetune` builds before its first step (so every check has run)."""

    def __init__(self, config: FinetuneConfig, pipe: Any, scheduler: Any, pairs: list, latents: torch.Tensor,
                 resolution: int) -> None:
        self.config, self.pipe, self.scheduler, self.pairs = config, pipe, scheduler, pairs
        self.latents, self.resolution = latents, resolution
        self.options = batch_options(config, scheduler)


@torch.no_grad()
def prepare(config: FinetuneConfig) -> Prepared:
    """Read the data, load and check the model, build the scheduler and every batch option, and cache the
    latents: every problem is raised here, before anything is written.
    """
    if not isinstance(config, FinetuneConfig):
        raise TypeError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    pairs = read_image_folder(config.data_dir)
    if config.train_text_encoder:
        check_text_encoder_lora()
    pipe = load_base_pipeline(config.model, local_files_only=config.local_files_only)
    scheduler = training_scheduler(pipe, config)
    scale = pipe.vae_scale_factor
    resolution = config.resolution or int(pipe.unet.config.sample_size) * scale
    if resolution % scale:
        raise ValueError(f"resolution must be a multiple of the VAE scale factor {scale}, got {resolution}")
    images = load_images([path for path, _ in pairs], resolution)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe.vae.to(device)
    latents = torch.cat([pipe.vae.encode(chunk.to(device)).latent_dist.mean.cpu() for chunk in images.split(16)])
    return Prepared(config, pipe, scheduler, pairs, latents * pipe.vae.config.scaling_factor, resolution)


def _lora_state(pipe: Any, train_text_encoder: bool) -> Dict[str, Any]:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    out = {"unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet)),
           "unet_lora_adapter_metadata": pipe.unet.peft_config["default"].to_dict()}
    if train_text_encoder:
        out["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.text_encoder))
        out["text_encoder_lora_adapter_metadata"] = pipe.text_encoder.peft_config["default"].to_dict()
    return out


def save_lora(pipe: Any, folder: Path, train_text_encoder: bool) -> Path:
    """``StableDiffusionPipeline.save_lora_weights`` into ``folder``, each file moved in atomically."""
    from diffusers import StableDiffusionPipeline

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".staging-") as staging:
        StableDiffusionPipeline.save_lora_weights(staging, safe_serialization=True, **_lora_state(pipe, train_text_encoder))
        for staged in Path(staging).iterdir():
            data = staged.read_bytes()
            atomic_write(folder / staged.name, lambda handle: handle.write(data))
    return folder / LORA_WEIGHTS


def finetune(
    config: FinetuneConfig,
    *,
    prepared: Optional[Prepared] = None,
    progress: bool = True,
    command: Optional[str] = None,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> Dict[str, Any]:
    """Fine-tune a LoRA and write ``output_dir/pytorch_lora_weights.safetensors`` and ``training_args.json``.

    A rerun of the same settings resumes bit-exactly from ``output_dir/checkpoint.pt`` (written every
    ``checkpoint_every`` steps, LoRA weights, optimiser and generator state only); it is removed when the run ends.

    Args:
        config (`FinetuneConfig`): the settings.
        prepared (`Prepared`, *optional*): :func:`prepare`'s result, if already built (used once: its pipeline
            receives the LoRA layers).
        progress (`bool`, defaults to True): a tqdm bar.
        command (`str`, *optional*): the command recorded (default ``shlex.join(sys.argv)``).
        callback (`Callable[[dict], None]`, *optional*): after every step, with ``{"step", "loss", "lr", "elapsed"}``.

    Returns:
        The metadata written to ``training_args.json``.
    """
    from accelerate import Accelerator

    if prepared is not None and prepared.config != config:
        raise ValueError("prepared was built for other settings than config")
    prepared = prepare(config) if prepared is None else prepared
    c, pipe, scheduler = config, prepared.pipe, prepared.scheduler
    accelerator = Accelerator(mixed_precision=c.mixed_precision, cpu=not torch.cuda.is_available())
    device = accelerator.device
    _add_lora(pipe.unet, UNET_TARGETS, c, c.seed)
    if c.train_text_encoder:
        _add_lora(pipe.text_encoder, TEXT_ENCODER_TARGETS, c, c.seed + 1)
    pipe.to(device)
    latents = prepared.latents.to(device)
    tokenizer = pipe.tokenizer
    captions = [text for _, text in prepared.pairs]
    ids = tokenizer(captions + [""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    ids, empty = ids[:-1], ids[-1]
    cached = None
    if not c.train_text_encoder:
        with torch.no_grad():
            cached = torch.cat([pipe.text_encoder(chunk)[0] for chunk in torch.cat([ids, empty[None]]).split(32)])

    def loss_fn(step: int, generator: torch.Generator) -> torch.Tensor:
        index, dropped, (noisy, timesteps, target, weights) = draw_batch(
            latents, scheduler, prepared.options, batch_size=c.batch_size, caption_dropout=c.caption_dropout,
            generator=generator,
        )
        index, dropped = index.to(device), dropped.to(device)
        with accelerator.autocast():
            if cached is None:
                tokens = torch.where(dropped[:, None], empty[None], ids[index])
                hidden = pipe.text_encoder(tokens)[0]
            else:
                hidden = torch.where(dropped[:, None, None], cached[-1][None], cached[index])
            prediction = pipe.unet(noisy, timesteps, encoder_hidden_states=hidden).sample
        return weighted_mse(prediction, target, weights)

    modules = {"unet": pipe.unet} | ({"text_encoder": pipe.text_encoder} if c.train_text_encoder else {})
    parameters = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    settings = c.to_dict()
    loop = LoopConfig(steps=c.steps, lr=c.lr, warmup_steps=c.warmup_steps, max_grad_norm=c.max_grad_norm,
                      checkpoint_every=c.checkpoint_every, gradient_accumulation_steps=c.gradient_accumulation_steps)
    out = c.output_dir
    out.mkdir(parents=True, exist_ok=True)

    def on_step(info: Dict[str, Any]) -> None:
        if c.save_every is not None and info["step"] % c.save_every == 0 and info["step"] < c.steps:
            save_lora(pipe, out / f"step-{info['step']}", c.train_text_encoder)
        if callback is not None:
            callback(info)

    checkpoint = out / "checkpoint.pt"
    result = train_loop(modules, loss_fn, loop, generator=torch.Generator().manual_seed(c.seed), checkpoint=checkpoint,
                        settings=settings, parameters=parameters, progress=progress, desc="LoRA", callback=on_step,
                        trainable_only=True, backward=accelerator.backward)
    for module in modules.values():
        module.eval()
    weights = save_lora(pipe, out, c.train_text_encoder)
    if c.zero_terminal_snr or c.prediction_type not in (None, pipe.scheduler.config.prediction_type):
        sampling = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=scheduler.config.prediction_type,
                                                    **({"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
                                                       if c.zero_terminal_snr else {}))
        (out / "scheduler").mkdir(exist_ok=True)  # the scheduler the LoRA must be sampled with
        atomic_write_text(out / "scheduler" / "scheduler_config.json", sampling.to_json_string())
    meta = training_record(
        settings, result, threads=torch.get_num_threads(), command=command,
        resolution=prepared.resolution, images=len(prepared.pairs), prediction_type=scheduler.config.prediction_type,
        trainable_parameters=sum(p.numel() for p in parameters), lora_weights=weights.name,
        resumed_from=result.resumed_from,
    )
    atomic_write_json(out / "training_args.json", meta)
    checkpoint.unlink(missing_ok=True)
    return meta
