"""Generate images from MS-COCO captions with Stable Diffusion and Noise Level Guidance.

Accepts the public reference script's command line unchanged and adds ``--seed``, ``--scheduler``,
``--dtype``, ``--height``/``--width``, ``--local_files_only``, ``--overwrite`` and
``--reference_sigma_bug``.  For the same flags it picks the reference's captions (Python's
``random.shuffle`` seeded with 0), writes to the reference's folder name
``<output_dir>/images-guidance_…-bound_…/<caption id>.png`` and saves pixels truncated as the
reference does; ``docs/guides/reproducing.md`` lists what equals a reference run and what differs.
``manifest.jsonl`` (one record per image: id, caption, seeds, flags, NLG step norms) and
``run_config.json`` sit beside the images.

Runs resume: rerunning the same command (with or without ``--overwrite``) skips finished ids;
``--overwrite`` only replaces a folder made with other settings.  Each image is seeded from (seed,
caption id), so it is the same whatever the batch size, the number of processes, or interruptions.
Many GPUs::

    accelerate launch core_experiments/generate_images.py --output_dir ... --prompts_path ...
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from nlg import NoiseLevelGuidance
from nlg.eval.runs import (
    SCHEDULERS,
    RunFolder,
    generate_images,
    load_captions,
    process_state,
    reference_sigma_alpha_bars,
    run_cli,
    shard,
    shuffled,
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: The reference's ``--guidance_formula`` weight γ.
GUIDANCE_FORMULA_GAMMA = 3.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True, help="Folder under which the run's image folder is created.")
    p.add_argument("--prompts_path", required=True, help="MS-COCO captions JSON ({'annotations': [...]}).")
    p.add_argument("--stable_diffusion_path", default="stabilityai/stable-diffusion-2-1",
                   help="Hub id or local folder; 'shapes' is nlg's own offline shapes model (nlg.shapes).")
    p.add_argument("--total_images", default=30000, type=int, help="Number of images (the first N shuffled captions).")
    p.add_argument("--inference_steps", default=20, type=int, help="Sampler steps N.")
    p.add_argument("--batch_size", default=8, type=int, help="Images per pipeline call (does not change images).")
    p.add_argument("--refining_steps", default=0, type=int, help="NLG refinement steps K; 0 is plain generation.")
    # default=1 (an int) as in the reference: argparse converts only strings, so the default folder name
    # says "step_size_1" while an explicit "--step_size 1" gives the float 1.0 and "step_size_1.0".
    p.add_argument("--step_size", default=1, type=float, help="NLG step size η.")
    p.add_argument("--guidance_level", default=7.5, type=float, help="Classifier-free guidance scale while sampling.")
    p.add_argument("--clip_threshold", default=1.0, type=float, help="Direction norm bound τ (with --clip_grads).")
    p.add_argument("--noise_level", default=0.0, type=float, help="Variance λ of the added noise (with --add_noise).")
    p.add_argument("--clip_grads", action="store_true", help="Clip the NLG direction to --clip_threshold.")
    p.add_argument("--normalize_latents", action="store_true", help="Rescale latents to norm √D after each step.")
    p.add_argument("--guidance_formula", action="store_true", help="Use the guidance-formula direction (γ = 3).")
    p.add_argument("--add_noise", action="store_true", help="Add noise of variance --noise_level each step.")
    p.add_argument("--boundary_control", action="store_true", help="Clamp latents to [-3, 3] each step.")
    p.add_argument("--seed", default=0, type=int,
                   help="Seeds the caption shuffle (Python random, 0 as in the reference) and every image's generator.")
    p.add_argument("--scheduler", default="dpm++", choices=sorted(SCHEDULERS), help="Sampler (reference: dpm++).")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="auto: float16 on GPU, float32 on CPU.")
    p.add_argument("--height", default=None, type=int, help="Image height in pixels (default: the model's).")
    p.add_argument("--width", default=None, type=int, help="Image width in pixels (default: the model's).")
    p.add_argument("--local_files_only", action="store_true", help="Never contact the model hub.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace a previous run with other settings (a run with the same settings is resumed, never deleted).")
    p.add_argument("--reference_sigma_bug", action="store_true",
                   help="Reproduce the reference's v->eps conversion with scheduler.sigmas[0] (wrong on its first batch "
                        "of --batch_size images); needs a v-prediction model.")
    p.add_argument("--reference_noise_bug", action="store_true",
                   help="Reproduce the reference's --add_noise noise: the same z at every NLG step, row (position in "
                        "its batch of --batch_size) of numpy.random.RandomState(0).randn(batch_size, C, h, w); needs --add_noise.")
    return p


def validate(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the first bad option."""
    for name in ("total_images", "inference_steps", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.refining_steps < 0:
        raise ValueError(f"--refining_steps must be >= 0, got {args.refining_steps}")
    if not 0 <= args.guidance_level < float("inf"):  # also rejects NaN
        raise ValueError(f"--guidance_level must be a finite number >= 0, got {args.guidance_level}")
    for name in ("height", "width"):
        value = getattr(args, name)
        if value is not None and (value < 8 or value % 8):
            raise ValueError(f"--{name} must be a positive multiple of 8, got {value}")
    if args.reference_noise_bug and not args.add_noise:
        raise ValueError("--reference_noise_bug reproduces the noise of --add_noise: pass --add_noise as well")
    build_guidance(args)  # checks the NLG options themselves


def build_guidance(args: argparse.Namespace) -> NoiseLevelGuidance:
    """The reference flags as :class:`nlg.NoiseLevelGuidance` options."""
    return NoiseLevelGuidance(
        refining_steps=args.refining_steps,
        step_size=args.step_size,
        clip_threshold=args.clip_threshold if args.clip_grads else None,
        noise_level=args.noise_level if args.add_noise else 0.0,
        normalize_latents=args.normalize_latents,
        boundary_control=args.boundary_control,
        guidance_formula_gamma=GUIDANCE_FORMULA_GAMMA if args.guidance_formula else None,
    )


def run_folder_name(args: argparse.Namespace) -> str:
    """The reference script's image folder name, built from its flags."""
    a = args
    parts = [
        ("images-guidance_", a.guidance_level), ("-inf_steps_", a.inference_steps), ("-ref_steps_", a.refining_steps),
        ("-step_size_", a.step_size), ("-norm_", a.normalize_latents), ("-clip_", a.clip_grads),
        ("-clip_thresh_", a.clip_threshold), ("-guid_form_", a.guidance_formula), ("-noise_", a.noise_level),
        ("-bound_", a.boundary_control),
    ]
    return "".join(label + str(value) for label, value in parts)  # str() of the parsed values, as the reference


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def run_settings(args: argparse.Namespace, dtype: torch.dtype, prompts_sha256: str) -> Dict[str, Any]:
    """Everything that determines the images; a folder made with other settings is refused."""
    keys = (
        "stable_diffusion_path inference_steps refining_steps step_size guidance_level clip_threshold noise_level "
        "clip_grads normalize_latents guidance_formula add_noise boundary_control seed scheduler height width"
    ).split()
    settings = {k: getattr(args, k) for k in keys}
    if Path(args.stable_diffusion_path).is_dir():  # one local model, however its path is spelled
        settings["stable_diffusion_path"] = str(Path(args.stable_diffusion_path).resolve())
    settings.update(dtype=str(dtype).replace("torch.", ""), prompts_sha256=prompts_sha256, pixels="truncate",
                    caption_shuffle="python-random")
    if args.reference_sigma_bug:  # then the reference's first batch (of --batch_size) is treated differently
        settings.update(reference_sigma_bug=True, batch_size=args.batch_size)
    if args.reference_noise_bug:  # then an image's NLG noise depends on its position in a batch
        settings.update(reference_noise_bug=True, batch_size=args.batch_size)
    return settings


def load_pipeline(args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> Any:
    """``DiffusionPipeline.from_pretrained`` (hub id or local folder) with the chosen sampler, on ``device``."""
    import diffusers

    path, local_only = args.stable_diffusion_path, args.local_files_only
    if path == "shapes":
        from nlg.shapes import DEFAULT_PIPELINE

        path, local_only = str(DEFAULT_PIPELINE), True
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(path, torch_dtype=dtype, local_files_only=local_only)
    except (OSError, ValueError) as err:
        raise ValueError(f"--stable_diffusion_path: cannot load {args.stable_diffusion_path!r}: {err}") from err
    pipe.scheduler = getattr(diffusers, SCHEDULERS[args.scheduler]).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def reference_sigma_override(args: argparse.Namespace, pipe: Any, selection: List[Any]) -> Callable[[int], float]:
    """Caption id → the ᾱ the reference's conversion implies: its first batch (the first ``--batch_size``
    selected captions) reads ``sigmas[0]`` before ``set_timesteps``, later batches after it."""
    prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
    if prediction_type != "v_prediction":
        raise ValueError(f"--reference_sigma_bug reproduces the reference's v-prediction conversion; "
                         f"{args.stable_diffusion_path} predicts {prediction_type!r}")
    first, later = reference_sigma_alpha_bars(pipe.scheduler, args.inference_steps)
    first_ids = {c.id for c in selection[: args.batch_size]}
    return lambda caption_id: first if caption_id in first_ids else later


def reference_noise(args: argparse.Namespace, pipe: Any, selection: List[Any]) -> Callable[[int], torch.Tensor]:
    """Caption id → the one NLG noise z the reference adds at every step: it restores NumPy's random state
    around its draw, so the i-th image of every batch gets row i of ``RandomState(0).randn(B, C, h, w)``."""
    import numpy as np

    from nlg import get_adapter

    shape = get_adapter(pipe).latent_shape(args.batch_size, args.height, args.width)
    table = torch.from_numpy(np.random.RandomState(0).randn(*shape)).float()
    position = {c.id: i % args.batch_size for i, c in enumerate(selection)}
    return lambda caption_id: table[position[caption_id]]


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    validate(args)
    captions = load_captions(args.prompts_path)
    if args.total_images > len(captions):
        raise ValueError(f"--total_images {args.total_images} exceeds the {len(captions)} captions in {args.prompts_path}")
    selection = shuffled(captions, args.seed)[: args.total_images]  # the reference's random.shuffle

    from tqdm.auto import tqdm

    state = process_state()
    dtype = resolve_dtype(args.dtype, state.device)
    prompts_sha256 = hashlib.sha256(Path(args.prompts_path).read_bytes()).hexdigest()
    settings = run_settings(args, dtype, prompts_sha256)
    folder = RunFolder(Path(args.output_dir) / run_folder_name(args), settings)
    recorded = (folder.recorded_settings() or {}).get("stable_diffusion_path")
    if isinstance(recorded, str) and recorded != settings["stable_diffusion_path"] and Path(recorded).is_dir() \
            and Path(recorded).resolve() == Path(settings["stable_diffusion_path"]).resolve():
        settings["stable_diffusion_path"] = recorded  # a run recorded before paths were resolved: the same model
        folder = RunFolder(folder.path, settings)
    folder.check(overwrite=args.overwrite)  # before the (slow) model load: refuse early, write nothing
    pipe = load_pipeline(args, dtype, state.device)
    alpha_bar_override = reference_sigma_override(args, pipe, selection) if args.reference_sigma_bug else None
    fixed_noise = reference_noise(args, pipe, selection) if args.reference_noise_bug else None
    if state.is_main_process:
        folder.prepare(overwrite=args.overwrite)
    state.wait_for_everyone()

    mine = shard(selection, state.process_index, state.num_processes)
    done = folder.finished()
    with tqdm(
        total=len(mine),
        initial=sum(c.id in done for c in mine),
        desc=f"Generating images [{state.process_index + 1}/{state.num_processes}]",
        unit="img",
        disable=not state.is_local_main_process,
    ) as bar:
        made = generate_images(
            pipe,
            build_guidance(args),
            mine,
            folder,
            seed=args.seed,
            batch_size=args.batch_size,
            pipeline_kwargs=dict(
                num_inference_steps=args.inference_steps,
                guidance_scale=args.guidance_level,
                height=args.height,
                width=args.width,
            ),
            extra_record={"process_index": state.process_index},
            progress=bar,
            alpha_bar_override=alpha_bar_override,
            fixed_noise=fixed_noise,
        )
    state.wait_for_everyone()
    if state.is_main_process:
        total = len(folder.finished() & {c.id for c in selection})
        print(f"{total}/{args.total_images} images in {folder.path} ({made} new in process 0)")
    return 0


if __name__ == "__main__":
    run_cli(main)
