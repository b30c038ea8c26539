"""Generate images from MS-COCO captions with Stable Diffusion and Noise Level Guidance.

Accepts the public reference script's command line unchanged and adds ``--seed``, ``--scheduler``,
``--dtype``, ``--height``/``--width``, ``--local_files_only``, ``--overwrite``, the reference-bug flags,
``--previous_model_id``, ``--disable_safety_checker`` and ``--process_group_timeout``.  For the same flags
it picks the reference's captions (Python's ``random.shuffle`` seeded with 0), writes to the reference's
folder name ``<output_dir>/images-guidance_…-bound_…/<caption id>.png`` and saves pixels truncated as the
reference does; ``docs/guides/reproducing.md`` lists what equals a reference run and what differs.
``manifest.jsonl`` (one record per image: id, caption, seeds, flags, NLG step norms, whether the safety
checker blacked it out) and ``run_config.json`` sit beside the images.  The folder name does not name the
model: give every model its own ``--output_dir``.

Runs resume: rerunning the same command (with or without ``--overwrite``) skips finished ids;
``--overwrite`` only replaces a folder made with other settings.  Each image is seeded from (seed,
caption id), so it is the same whatever the batch size, the number of processes, or interruptions.
The work is done by :func:`nlg.eval.run_generation`.  Many GPUs::

    accelerate launch core_experiments/generate_images.py --output_dir ... --prompts_path ...
"""

from __future__ import annotations

import argparse
from typing import List, Optional

from nlg.adapters.hub import SD21
from nlg.eval.generation import SCHEDULERS
from nlg.eval.generation_run import DTYPES, GenerationRun, run_generation
from nlg.eval.process import DEFAULT_PROCESS_GROUP_TIMEOUT, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True,
                   help="Folder under which the run's image folder is created; one per model (the folder name does not name it).")
    p.add_argument("--prompts_path", required=True, help="MS-COCO captions JSON ({'annotations': [...]}), e.g. captions_val2014.json.")
    p.add_argument("--stable_diffusion_path", default=SD21,
                   help=f"Hub id or local folder (default {SD21}, the community mirror of SD 2.1); "
                        "'shapes' is nlg's own offline shapes model (nlg.shapes).")
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
    p.add_argument("--previous_model_id", default=None,
                   help="Resume a run folder recorded under this old model id (e.g. a removed Hub repository) with "
                        "--stable_diffusion_path (its mirror); run_config.json records the change.")
    p.add_argument("--disable_safety_checker", action="store_true",
                   help="Turn the pipeline's safety checker off, so no image is saved black (for FID/IS/CLIP runs). "
                        "With it on, each blacked-out image is marked in the manifest ('blacked_out') and counted.")
    p.add_argument("--process_group_timeout", default=DEFAULT_PROCESS_GROUP_TIMEOUT, type=float,
                   help="Seconds a process of a multi-process run may wait for the others (default 7200, 2 h).")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    run = GenerationRun(**vars(args))
    named = None
    if run.stable_diffusion_path == "shapes":
        from nlg.shapes import DEFAULT_PIPELINE

        named = {"shapes": str(DEFAULT_PIPELINE)}
    return run_generation(run, named_models=named)


if __name__ == "__main__":
    run_cli(main)
