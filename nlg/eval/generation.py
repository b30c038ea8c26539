"""The generation loop of the experiment scripts: :func:`generate_images` over :class:`nlg.NoiseLevelGuidance`.

It claims each id first (:meth:`~nlg.eval.runfolder.RunFolder.claim`), so two runs on one folder never make
or record an image twice; saves ``uint8(clip(255·x, 0, 255))`` (truncation, as the reference does) through
:func:`nlg.utils.io.atomic_write`; and records per image whether the pipeline's safety checker blacked it
out (diffusers' ``nsfw_content_detected``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..utils.io import atomic_write
from .captions import Caption, chunks
from .png import png_writer, to_uint8
from .process import image_generator, image_seed
from .reference_bugs import alpha_bar_at
from .runfolder import RunFolder

__all__ = ["SCHEDULERS", "generate_images", "blacked_out"]

#: The schedulers SD / SDXL pipelines ship with, by short name.
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def blacked_out(output: Any, count: int) -> List[bool]:
    """Per image of a pipeline ``output``, whether the safety checker replaced it by a black image.

    diffusers' SD pipelines return ``nsfw_content_detected``: a list of bools, or None when no checker ran
    (``safety_checker=None``, SDXL, nlg's own models): then no image was blacked out.
    """
    flags = getattr(output, "nsfw_content_detected", None)
    if flags is None:
        return [False] * count
    if len(flags) != count:
        raise ValueError(f"the pipeline returned {len(flags)} safety-checker flags for {count} images")
    return [bool(flag) for flag in flags]


def generate_images(
    pipe: Any,
    guidance: Any,
    captions: Sequence[Caption],
    folder: RunFolder,
    *,
    seed: int,
    batch_size: int,
    pipeline_kwargs: Optional[Dict[str, Any]] = None,
    extra_record: Optional[Dict[str, Any]] = None,
    progress: Optional[Any] = None,
    alpha_bar_override: Optional[Callable[[int], Optional[float]]] = None,
    fixed_noise: Optional[Callable[[int], torch.Tensor]] = None,
) -> int:
    """Generate ``<id>.png`` for every caption not yet finished in ``folder``; return how many were made.

    Every image has its own generator (:func:`~nlg.eval.process.image_generator`), which draws its initial noise, its
    NLG refinement noise and any sampler noise, so images do not depend on ``batch_size``.  Each
    batch is refined (:meth:`nlg.NoiseLevelGuidance.refine`), sampled by the unmodified pipeline with
    ``output_type="np"``, saved as :func:`~nlg.eval.png.to_uint8` (the reference's truncation) atomically,
    then its manifest records are appended, each with ``blacked_out`` (:func:`blacked_out`).

    Args:
        pipe: a diffusers Stable Diffusion (XL) pipeline, or any pipeline NLG supports.
        guidance (`NoiseLevelGuidance`): the refinement; ``refining_steps=0`` is plain generation.
        captions (`Sequence[Caption]`): this process's captions, in order.
        folder (`RunFolder`): where images and records go; must have been prepared.
        seed (`int`): the run seed.
        batch_size (`int`): images per pipeline call.
        pipeline_kwargs (`Dict[str, Any]`, *optional*): e.g. ``num_inference_steps``, ``guidance_scale``,
            ``height``, ``width``.
        extra_record (`Dict[str, Any]`, *optional*): added to every manifest record (e.g. the process index).
        progress (*optional*): a tqdm bar, advanced by one per image.
        alpha_bar_override (`Callable[[int], Optional[float]]`, *optional*): caption id → the ᾱ NLG
            converts the model output with at its reference timestep (None: the scheduler's own).  Used
            to reproduce the reference script's σ bug (``--reference_sigma_bug``).
        fixed_noise (`Callable[[int], torch.Tensor]`, *optional*): caption id → the one refinement noise ``z``
            repeated at every NLG step (one image's latent shape).  Used to reproduce the reference
            script's repeated noise (``--reference_noise_bug``).
    """
    done = folder.finished()
    todo = [c for c in captions if c.id not in done]
    groups: Dict[Optional[float], List[Caption]] = {}
    for c in todo:
        groups.setdefault(None if alpha_bar_override is None else alpha_bar_override(c.id), []).append(c)
    call_kwargs = dict(pipeline_kwargs or {})
    size = {k: call_kwargs.pop(k) for k in ("height", "width") if k in call_kwargs}
    made = 0
    for alpha_bar, group in groups.items():
        for batch in chunks(group, batch_size):
            batch = folder.claim(batch)  # without ids another process is generating or has finished
            if not batch:
                continue
            generators = [image_generator(seed, c.id) for c in batch]
            prompts = [c.caption for c in batch]
            with alpha_bar_at(pipe.scheduler, guidance.reference_timestep, alpha_bar):
                repeated = None if fixed_noise is None else torch.stack([fixed_noise(c.id) for c in batch])
                refinement = guidance.refine(pipe, prompts, generator=generators, fixed_noise=repeated, **size)
            with torch.inference_mode():
                output = pipe(
                    latents=refinement.latents,
                    generator=generators,
                    num_images_per_prompt=1,
                    output_type="np",
                    **size,
                    **refinement.conditioning,
                    **call_kwargs,
                )
            for caption, array in zip(batch, to_uint8(output.images)):
                atomic_write(folder.image_path(caption.id), png_writer(array))
            norms = refinement.step_norms.t().tolist()  # (B, K)
            black = blacked_out(output, len(batch))
            folder.manifest.append(
                {
                    "id": c.id,
                    "image_id": c.image_id,
                    "caption": c.caption,
                    "seed": seed,
                    "image_seed": image_seed(seed, c.id),
                    "flags": folder.settings,
                    "step_norms": norms[i],
                    "blacked_out": black[i],
                    **({} if alpha_bar is None else {"alpha_bar": alpha_bar}),
                    **(extra_record or {}),
                }
                for i, c in enumerate(batch)
            )
            folder.release(batch)
            made += len(batch)
            if progress is not None:
                progress.update(len(batch))
    return made
