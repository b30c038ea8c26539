"""FID, Inception Score, CLIP score and bottom-k CLIP score of a folder of generated ``<id>.png`` images.

Accepts the public reference script's command line unchanged (``--real_image_dir``,
``--fake_image_dir``, ``--prompts_path``, ``--clip_scores_save_path``, ``--clip_scores_load_path``)
and adds batching, offline model paths and multi-process runs::

    accelerate launch core_experiments/calculate_metrics.py --real_image_dir ... --fake_image_dir ...

FID compares the generated images with as many real ones, the very subset the reference picks: the
sorted ``*.jpg`` files shuffled by Python's ``random`` after the captions, with one generator seeded
with 0 (``docs/guides/reproducing.md``).  Every figure is printed and written to ``--output_json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional

from nlg.eval.runs import load_captions, process_state, run_cli, shard, write_json
from nlg.eval.metrics import DEFAULT_CLIP_MODEL, GenerationMetrics, bottom_k_mean
from nlg.eval.datasets import (
    CLIP_SIZE,
    INCEPTION_SIZE,
    ImageFiles,
    generated_images,
    image_loader,
    read_clip_scores,
    real_images,
    stream,
    write_clip_scores,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real_image_dir", required=True, help="Folder of real images (e.g. COCO val2014).")
    p.add_argument("--fake_image_dir", required=True, help="Folder of generated <id>.png images.")
    p.add_argument("--prompts_path", required=True, help="The captions JSON the images were generated from.")
    p.add_argument("--clip_scores_save_path", default=None, help="Write per-image CLIP scores to this CSV.")
    p.add_argument("--clip_scores_load_path", default=None, help="Score this run on another run's bottom-k prompts.")
    p.add_argument("--bottom_k", default=1000, type=int, help="Size of the bottom-k CLIP score (reference: 1000).")
    p.add_argument("--inception_weights", default=None, help="Local InceptionV3 state dict (offline FID/IS).")
    p.add_argument("--clip_model", default=DEFAULT_CLIP_MODEL, help="CLIP hub id or local folder.")
    p.add_argument("--local_files_only", action="store_true", help="Never contact the model hub.")
    p.add_argument("--batch_size", default=50, type=int, help="Images per forward pass.")
    p.add_argument("--num_workers", default=4, type=int, help="DataLoader workers decoding images.")
    p.add_argument("--is_splits", default=10, type=int, help="Inception Score splits.")
    p.add_argument("--seed", default=0, type=int, help="Seeds the real-image subset (as the reference: 0) and the IS splits.")
    p.add_argument("--real_image_glob", default="*.jpg", help="Real image files (reference: *.jpg, case-sensitive).")
    p.add_argument("--skip_bad_images", action="store_true", help="Skip unreadable images instead of stopping.")
    p.add_argument("--output_json", default=None, help="Where to write the figures (default: <fake_image_dir>/metrics.json).")
    return p


def _check_writable(path: Optional[str], name: str) -> None:
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise ValueError(f"--{name}: the folder of {path} does not exist")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("bottom_k", "batch_size", "is_splits"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_workers < 0:
        raise ValueError(f"--num_workers must be >= 0, got {args.num_workers}")
    output_json = args.output_json or str(Path(args.fake_image_dir) / "metrics.json")
    _check_writable(args.clip_scores_save_path, "clip_scores_save_path")
    _check_writable(output_json, "output_json")

    caption_list = load_captions(args.prompts_path)
    captions = {c.id: c for c in caption_list}
    fakes = generated_images(args.fake_image_dir)
    unknown = [i for i, _ in fakes if i not in captions]
    if unknown:
        raise ValueError(f"--prompts_path has no caption for generated image ids {unknown[:10]}: wrong captions file?")
    reals = real_images(args.real_image_dir, len(fakes), num_captions=len(caption_list), seed=args.seed,
                        pattern=args.real_image_glob)
    loaded = read_clip_scores(args.clip_scores_load_path) if args.clip_scores_load_path else None
    loaded_ids = sorted(loaded, key=lambda i: (loaded[i], i))[: args.bottom_k] if loaded else None
    if loaded_ids:
        missing = sorted(set(loaded_ids) - {i for i, _ in fakes})
        if missing:
            raise ValueError(f"--clip_scores_load_path: {len(missing)} of its bottom-{args.bottom_k} ids have no image here, e.g. {missing[:5]}")

    from tqdm.auto import tqdm

    state = process_state()
    if len(fakes) < state.num_processes:
        raise ValueError(f"{len(fakes)} images cannot be shared among {state.num_processes} processes")
    mine = shard(fakes, state.process_index, state.num_processes)
    fake_set = ImageFiles(
        [p for _, p in mine],
        sizes={"inception": INCEPTION_SIZE, "clip": CLIP_SIZE},
        ids=[i for i, _ in mine],
        captions=[captions[i].caption for i, _ in mine],
    )
    real_set = ImageFiles(shard(reals, state.process_index, state.num_processes), sizes={"inception": INCEPTION_SIZE})
    metrics = GenerationMetrics(
        inception_weights=args.inception_weights,
        clip_model=args.clip_model,
        local_files_only=args.local_files_only,
        is_splits=args.is_splits,
        seed=args.seed,
    ).to(state.device)

    skipped: List[str] = []
    quiet = not state.is_local_main_process
    loader_args = dict(batch_size=args.batch_size, num_workers=args.num_workers)
    with tqdm(total=len(fake_set), desc="Generated images", unit="img", disable=quiet) as bar:
        for batch in stream(image_loader(fake_set, **loader_args), skip_bad=args.skip_bad_images, skipped=skipped):
            metrics.update_fake(batch["inception"], batch["clip"], batch["caption"], batch["id"])
            bar.update(len(batch["id"]))
    with tqdm(total=len(real_set), desc="Real images", unit="img", disable=quiet) as bar:
        for batch in stream(image_loader(real_set, **loader_args), skip_bad=args.skip_bad_images, skipped=skipped):
            metrics.update_real(batch["inception"])
            bar.update(len(batch["id"]))

    result = metrics.compute()
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        skipped = gather_object(skipped)
    k = min(args.bottom_k, len(result.clip_scores))
    figures: Dict[str, Any] = result.figures()
    figures["bottom_k"] = k
    figures["clip_score_bottom_k"], _ = bottom_k_mean(result.clip_scores, k)
    if loaded_ids:
        figures["clip_score_bottom_k_loaded"], _ = bottom_k_mean(result.clip_scores, k, ids=loaded_ids)
    figures["skipped_images"] = sorted(skipped)
    figures["settings"] = {
        k_: getattr(args, k_)
        for k_ in ("real_image_dir", "fake_image_dir", "prompts_path", "clip_scores_load_path", "inception_weights", "clip_model", "is_splits", "seed", "real_image_glob")
    }
    figures["settings"]["num_processes"] = state.num_processes

    if state.is_main_process:
        print(f"FID: {figures['fid']:.4f}")
        print(f"Inception Score: {figures['inception_score']:.4f} ± {figures['inception_score_std']:.4f}")
        print(f"CLIP Score: {figures['clip_score']:.4f}")
        print(f"CLIP Score (Bottom {k} Images): {figures['clip_score_bottom_k']:.4f}")
        if loaded_ids:
            print(f"CLIP Score (Bottom {len(loaded_ids)} Images of {args.clip_scores_load_path}): {figures['clip_score_bottom_k_loaded']:.4f}")
        if args.clip_scores_save_path:
            write_clip_scores(args.clip_scores_save_path, result.clip_scores, captions)
        write_json(output_json, figures)
        print(f"Figures written to {output_json}")
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    run_cli(main)
