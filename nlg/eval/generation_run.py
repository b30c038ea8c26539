"""A COCO generation run as ``core_experiments/generate_images.py`` makes it: :class:`GenerationRun` and :func:`run_generation`.

The settings are the public reference script's flags (same names, same defaults but the model) plus
this package's additions; :func:`run_folder_name` is the reference's folder name.  The default model is
:data:`nlg.adapters.hub.SD21`, the community mirror of Stable Diffusion 2.1 (Stability AI removed its
own repository).  A run folder recorded under an old Hub id is resumed with ``previous_model_id``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from ..adapters.hub import SD21
from ..utils.checks import check_int, check_number
from ..utils.io import sha256_file
from .captions import load_captions, shard, shuffled
from .generation import SCHEDULERS, generate_images
from .process import DEFAULT_PROCESS_GROUP_TIMEOUT, process_state
from .reference_bugs import reference_noise, reference_sigma_override
from .runfolder import RunFolder

__all__ = ["DTYPES", "GUIDANCE_FORMULA_GAMMA", "GenerationRun", "run_folder_name", "run_settings", "load_pipeline",
           "build_guidance", "run_generation"]

#: ``--dtype`` names → torch dtypes (``"auto"``: float16 on GPU, float32 on CPU).
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: The reference's ``--guidance_formula`` weight γ.
GUIDANCE_FORMULA_GAMMA = 3.0
#: Advice in the error for a folder recorded under another model id.
PREVIOUS_MODEL_HINT = ("if only the model's Hub id changed (a removed repository and its mirror, see "
                       "docs/guides/paper_scripts.md), resume with --previous_model_id {old}")


@dataclass(frozen=True)
class GenerationRun:
    """The settings of one generation run; each field is the script's flag of the same name.

    Args:
        output_dir (`str`): folder under which the run's image folder (:func:`run_folder_name`) is created.
        prompts_path (`str`): MS-COCO captions JSON (e.g. ``captions_val2014.json``).
        stable_diffusion_path (`str`, defaults to :data:`nlg.adapters.hub.SD21`): Hub id or local folder;
            ``"shapes"`` is nlg's own offline shapes model.
        total_images (`int`, defaults to 30000): the first N shuffled captions.
        inference_steps (`int`, defaults to 20): sampler steps.
        batch_size (`int`, defaults to 8): images per pipeline call (does not change the images).
        refining_steps (`int`, defaults to 0): NLG steps K; 0 is plain generation.
        step_size (`float`, defaults to 1): NLG step size η (the int 1, as the reference, names the folder).
        guidance_level (`float`, defaults to 7.5): classifier-free guidance scale while sampling.
        clip_threshold (`float`, defaults to 1.0), clip_grads (`bool`): direction norm bound τ, used if ``clip_grads``.
        noise_level (`float`, defaults to 0.0), add_noise (`bool`): added noise variance λ, used if ``add_noise``.
        normalize_latents, guidance_formula, boundary_control (`bool`): the reference's NLG switches.
        seed (`int`, defaults to 0): caption shuffle and every image's generator.
        scheduler (`str`, defaults to ``"dpm++"``): a key of :data:`~nlg.eval.generation.SCHEDULERS`.
        dtype (`str`, defaults to ``"auto"``): float16 on GPU, float32 on CPU, or a key of :data:`~nlg.eval.generation_run.DTYPES`.
        height, width (`int`, *optional*): image size in pixels (default: the model's).
        local_files_only (`bool`): never contact the Hub.
        overwrite (`bool`): replace a run with other settings (one with the same settings is resumed).
        reference_sigma_bug, reference_noise_bug (`bool`): reproduce the reference's bugs (:mod:`~nlg.eval.reference_bugs`).
        previous_model_id (`str`, *optional*): resume a folder recorded under this old model id (e.g. a removed
            Hub id) as if it had been recorded under ``stable_diffusion_path``; the change is kept in ``run_config.json``.
        disable_safety_checker (`bool`): run without the pipeline's safety checker, so no image is blacked out
            (for metric runs); recorded in the settings.
        process_group_timeout (`float`, defaults to 7200): seconds a process may wait at a collective.
    """

    output_dir: str
    prompts_path: str
    stable_diffusion_path: str = SD21
    total_images: int = 30000
    inference_steps: int = 20
    batch_size: int = 8
    refining_steps: int = 0
    step_size: Union[int, float] = 1
    guidance_level: float = 7.5
    clip_threshold: float = 1.0
    noise_level: float = 0.0
    clip_grads: bool = False
    normalize_latents: bool = False
    guidance_formula: bool = False
    add_noise: bool = False
    boundary_control: bool = False
    seed: int = 0
    scheduler: str = "dpm++"
    dtype: str = "auto"
    height: Optional[int] = None
    width: Optional[int] = None
    local_files_only: bool = False
    overwrite: bool = False
    reference_sigma_bug: bool = False
    reference_noise_bug: bool = False
    previous_model_id: Optional[str] = None
    disable_safety_checker: bool = False
    process_group_timeout: float = DEFAULT_PROCESS_GROUP_TIMEOUT

    def __post_init__(self) -> None:
        for name, minimum in (("total_images", 1), ("inference_steps", 1), ("batch_size", 1), ("refining_steps", 0)):
            check_int(getattr(self, name), f"--{name}", minimum=minimum)
        check_number(self.guidance_level, "--guidance_level")  # finite and >= 0
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (value < 8 or value % 8):
                raise ValueError(f"--{name} must be a positive multiple of 8, got {value}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler must be one of {sorted(SCHEDULERS)}, got {self.scheduler!r}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be 'auto' or one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.reference_noise_bug and not self.add_noise:
            raise ValueError("--reference_noise_bug reproduces the noise of --add_noise: pass --add_noise as well")
        check_number(self.process_group_timeout, "--process_group_timeout", strict=True)
        if self.previous_model_id is not None and self.previous_model_id == self.stable_diffusion_path:
            raise ValueError("--previous_model_id names the model id the folder was recorded under; it equals "
                             "--stable_diffusion_path, so it is not needed")
        build_guidance(self)  # checks the NLG options themselves


def build_guidance(run: Any) -> Any:
    """The reference flags of ``run`` as :class:`nlg.NoiseLevelGuidance` options."""
    from ..guidance import NoiseLevelGuidance

    return NoiseLevelGuidance(
        refining_steps=run.refining_steps,
        step_size=run.step_size,
        clip_threshold=run.clip_threshold if run.clip_grads else None,
        noise_level=run.noise_level if run.add_noise else 0.0,
        normalize_latents=run.normalize_latents,
        boundary_control=run.boundary_control,
        guidance_formula_gamma=GUIDANCE_FORMULA_GAMMA if run.guidance_formula else None,
    )


def run_folder_name(run: Any) -> str:
    """The reference script's image folder name, built from its flags (a :class:`GenerationRun` or parsed arguments)."""
    a = run
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


def run_settings(run: GenerationRun, dtype: torch.dtype, prompts_sha256: str) -> Dict[str, Any]:
    """Everything that determines the images; a folder made with other settings is refused."""
    keys = (
        "stable_diffusion_path inference_steps refining_steps step_size guidance_level clip_threshold noise_level "
        "clip_grads normalize_latents guidance_formula add_noise boundary_control seed scheduler height width"
    ).split()
    settings = {k: getattr(run, k) for k in keys}
    if Path(run.stable_diffusion_path).is_dir():  # one local model, however its path is spelled
        settings["stable_diffusion_path"] = str(Path(run.stable_diffusion_path).resolve())
    settings.update(dtype=str(dtype).replace("torch.", ""), prompts_sha256=prompts_sha256, pixels="truncate",
                    caption_shuffle="python-random")
    if run.reference_sigma_bug:  # then the reference's first batch (of --batch_size) is treated differently
        settings.update(reference_sigma_bug=True, batch_size=run.batch_size)
    if run.reference_noise_bug:  # then an image's NLG noise depends on its position in a batch
        settings.update(reference_noise_bug=True, batch_size=run.batch_size)
    if run.disable_safety_checker:  # recorded only when off: folders of earlier runs keep their settings
        settings.update(safety_checker=False)
    return settings


def load_pipeline(run: GenerationRun, dtype: torch.dtype, device: torch.device,
                  named: Optional[Mapping[str, str]] = None) -> Any:
    """``DiffusionPipeline.from_pretrained`` (Hub id or local folder) with the chosen sampler, on ``device``;
    without its safety checker if ``run.disable_safety_checker``.

    Args:
        named (`Mapping[str, str]`, *optional*): short model names → local folders, loaded offline (the script
            maps ``"shapes"`` to :data:`nlg.shapes.DEFAULT_PIPELINE`).
    """
    import diffusers

    path, local_only = run.stable_diffusion_path, run.local_files_only
    if named and path in named:
        path, local_only = str(named[path]), True
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(path, torch_dtype=dtype, local_files_only=local_only)
    except (OSError, ValueError) as err:
        raise ValueError(f"--stable_diffusion_path: cannot load {run.stable_diffusion_path!r}: {err}") from err
    pipe.scheduler = getattr(diffusers, SCHEDULERS[run.scheduler]).from_config(pipe.scheduler.config)
    if run.disable_safety_checker and getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # the SD pipelines then return nsfw_content_detected=None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _run_folder(run: GenerationRun, settings: Dict[str, Any]) -> RunFolder:
    """The run's folder; a local model recorded before paths were resolved is the same model."""
    path = Path(run.output_dir) / run_folder_name(run)
    accept = {} if run.previous_model_id is None else {"stable_diffusion_path": run.previous_model_id}
    hints = {"stable_diffusion_path": PREVIOUS_MODEL_HINT}
    folder = RunFolder(path, settings, accept_previous=accept, hints=hints)
    recorded = (folder.recorded_settings() or {}).get("stable_diffusion_path")
    model = settings["stable_diffusion_path"]
    if isinstance(recorded, str) and recorded != model and Path(recorded).is_dir() and Path(recorded).resolve() == Path(model).resolve():
        folder = RunFolder(path, dict(settings, stable_diffusion_path=recorded), accept_previous=accept, hints=hints)
    return folder


def run_generation(run: GenerationRun, *, named_models: Optional[Mapping[str, str]] = None) -> int:
    """Generate the run's images (resuming a folder with the same settings); return the exit code 0.

    Process 0 readies the folder (:meth:`~nlg.eval.runfolder.RunFolder.prepare`: a directory listing, no image
    read) while the others wait at one barrier, bounded by ``process_group_timeout``; then every process
    verifies the PNGs of its own share (:meth:`~nlg.eval.runfolder.RunFolder.verify`) and generates it.  No
    process waits for another after that: each reports its own count, and the folder's.

    Args:
        run (`GenerationRun`): the settings.
        named_models (`Mapping[str, str]`, *optional*): short model names → local folders (see :func:`load_pipeline`).
    """
    captions = load_captions(run.prompts_path)
    if run.total_images > len(captions):
        raise ValueError(f"--total_images {run.total_images} exceeds the {len(captions)} captions in {run.prompts_path}")
    selection = shuffled(captions, run.seed)[: run.total_images]  # the reference's random.shuffle

    from tqdm.auto import tqdm

    state = process_state(run.process_group_timeout)
    dtype = resolve_dtype(run.dtype, state.device)
    settings = run_settings(run, dtype, sha256_file(run.prompts_path))
    with _run_folder(run, settings) as folder:
        folder.check(overwrite=run.overwrite)  # before the (slow) model load: refuse early, write nothing
        pipe = load_pipeline(run, dtype, state.device, named_models)
        sigma = reference_sigma_override(pipe, selection, inference_steps=run.inference_steps,
                                         batch_size=run.batch_size) if run.reference_sigma_bug else None
        noise = reference_noise(pipe, selection, batch_size=run.batch_size, height=run.height,
                                width=run.width) if run.reference_noise_bug else None
        if state.is_main_process:
            folder.prepare(overwrite=run.overwrite)
        state.wait_for_everyone()  # only for prepare (no image is read there); bounded by --process_group_timeout
        mine = shard(selection, state.process_index, state.num_processes)
        folder.verify([c.id for c in mine])  # each process checks its own share's images
        done = folder.finished()
        with tqdm(total=len(mine), initial=sum(c.id in done for c in mine),
                  desc=f"Generating images [{state.process_index + 1}/{state.num_processes}]", unit="img",
                  disable=not state.is_local_main_process) as bar:
            made = generate_images(
                pipe, build_guidance(run), mine, folder, seed=run.seed, batch_size=run.batch_size,
                pipeline_kwargs=dict(num_inference_steps=run.inference_steps, guidance_scale=run.guidance_level,
                                     height=run.height, width=run.width),
                extra_record={"process_index": state.process_index, "total_images": run.total_images},
                progress=bar, alpha_bar_override=sigma, fixed_noise=noise,
            )
        wanted = {c.id for c in selection}
        records = {i: r for i, r in folder.manifest.records().items() if i in wanted and folder.image_path(i).exists()}
        black = sum(bool(r.get("blacked_out")) for r in records.values())
        print(f"{len(records)}/{run.total_images} images in {folder.path}, {black} blacked out by the safety checker "
              f"({made} new in process {state.process_index})")
        if black:
            print(f"{black} of them were blacked out by the safety checker (manifest field 'blacked_out'); "
                  "pass --disable_safety_checker for metric runs", file=sys.stderr)
    return 0

