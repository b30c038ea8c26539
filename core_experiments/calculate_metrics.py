"""FID, Inception Score, CLIP score and bottom-k CLIP score of a folder of generated ``<id>.png`` images.

Accepts the public reference script's command line unchanged (``--real_image_dir``,
``--fake_image_dir``, ``--prompts_path``, ``--clip_scores_save_path``, ``--clip_scores_load_path``)
and adds batching, offline model paths and multi-process runs (and, for the shapes model of
:mod:`nlg.shapes`, an offline feature extractor and the mini-GenEval accuracy:
``--feature_extractor shapes --clip_model none --geneval --real_image_glob '*.png'``)::

    accelerate launch core_experiments/calculate_metrics.py --real_image_dir ... --fake_image_dir ...

FID compares the generated images with as many real ones, the very subset the reference picks: the
sorted ``*.jpg`` files shuffled by Python's ``random`` after the captions, with one generator seeded
with 0 (``docs/guides/reproducing.md``).  Every figure is printed and written to ``--output_json``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from nlg.eval.runs import load_captions, process_state, run_cli, shard, write_json
from nlg.eval.metrics import DEFAULT_CLIP_MODEL, GenerationMetrics, bottom_k_mean
from nlg.eval.datasets import (
    CLIP_SIZE,
    INCEPTION_SIZE,
    ImageFiles,
    generated_images,
    image_loader,
    read_clip_scores,
    read_geneval_metadata,
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
    p.add_argument("--clip_model", default=DEFAULT_CLIP_MODEL, help="CLIP hub id or local folder; 'none' skips the CLIP score.")
    p.add_argument("--feature_extractor", default="inception", choices=["inception", "shapes"],
                   help="FID/IS features: InceptionV3 (the paper's) or the shapes scorer's (offline, for nlg.shapes).")
    p.add_argument("--geneval", action="store_true",
                   help="Also score the mini-GenEval accuracy (nlg.shapes); the captions JSON must carry 'geneval' metadata.")
    p.add_argument("--local_files_only", action="store_true", help="Never contact the model hub.")
    p.add_argument("--batch_size", default=50, type=int, help="Images per forward pass.")
    p.add_argument("--num_workers", default=4, type=int, help="DataLoader workers decoding images.")
    p.add_argument("--is_splits", default=10, type=int, help="Inception Score splits.")
    p.add_argument("--seed", default=0, type=int, help="Seeds the real-image subset (as the reference: 0) and the IS splits.")
    p.add_argument("--is_split_order", default="reference", choices=["reference", "id"],
                   help="Inception Score split: the reference's (file-name order, its generator state) or by id.")
    p.add_argument("--real_image_glob", default="*.jpg", help="Real image files (reference: *.jpg, case-sensitive).")
    p.add_argument("--skip_bad_images", action="store_true", help="Skip unreadable images instead of stopping.")
    p.add_argument("--output_json", default=None, help="Where to write the figures (default: <fake_image_dir>/metrics.json).")
    return p


class ShapesFeatures(nn.Module):
    """FID / IS features from the shapes scorer (:mod:`nlg.shapes.geneval`): no neural network, no download.

    For a uint8 image at its own size (32×32 for the shapes model):

    * features (26): the number of detected objects of each (colour, shape) pair (6 × 3), the share of
      pixels nearest to each of the 7 reference colours (background first) and the off-palette share;
    * logits (18): ``log(1 + area)`` of the detected objects of each (colour, shape) pair, so the
      Inception Score's ``p(y|x)`` is the smoothed share of object area per pair.
    """

    num_features = 26
    num_classes = 18

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        from nlg.shapes import COLOURS, SHAPES
        from nlg.shapes.geneval import assign_pixels, detect_objects

        pairs = [(c, s) for c in COLOURS for s in SHAPES]
        features, logits = [], []
        for image in images:
            array = image.permute(1, 2, 0).cpu().numpy()
            labels, off = assign_pixels(array)
            detections, _ = detect_objects(array)
            counts = [sum(d.colour == c and d.shape == s for d in detections) for c, s in pairs]
            areas = [sum(d.area for d in detections if d.colour == c and d.shape == s) for c, s in pairs]
            shares = [float((labels[~off] == k).sum()) / labels.size for k in range(len(COLOURS) + 1)]
            features.append(counts + shares + [float(off.mean())])
            logits.append([math.log1p(a) for a in areas])
        return torch.tensor(features, dtype=torch.float64), torch.tensor(logits, dtype=torch.float64)


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
    clip_model = None if args.clip_model.lower() == "none" else args.clip_model
    if clip_model is None and (args.clip_scores_save_path or args.clip_scores_load_path):
        raise ValueError("--clip_scores_save_path / --clip_scores_load_path need a CLIP model (--clip_model is 'none')")

    caption_list = load_captions(args.prompts_path)
    captions = {c.id: c for c in caption_list}
    fakes = generated_images(args.fake_image_dir)
    unknown = [i for i, _ in fakes if i not in captions]
    if unknown:
        raise ValueError(f"--prompts_path has no caption for generated image ids {unknown[:10]}: wrong captions file?")
    geneval = read_geneval_metadata(args.prompts_path) if args.geneval else None
    if geneval is not None:
        missing = [i for i, _ in fakes if i not in geneval]
        if missing:
            raise ValueError(f"--prompts_path has no GenEval metadata for generated image ids {missing[:10]}")
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
    feature_size = None if args.feature_extractor == "shapes" else INCEPTION_SIZE
    fake_sizes: Dict[str, Optional[int]] = {"inception": feature_size}
    if clip_model is not None:
        fake_sizes["clip"] = CLIP_SIZE
    if geneval is not None:
        fake_sizes["native"] = None
    fake_set = ImageFiles(
        [p for _, p in mine],
        sizes=fake_sizes,
        ids=[i for i, _ in mine],
        captions=[captions[i].caption for i, _ in mine],
    )
    real_set = ImageFiles(shard(reals, state.process_index, state.num_processes), sizes={"inception": feature_size})
    metrics = GenerationMetrics(
        inception_weights=args.inception_weights,
        clip_model=clip_model,
        feature_extractor=ShapesFeatures() if args.feature_extractor == "shapes" else None,
        local_files_only=args.local_files_only,
        is_splits=args.is_splits,
        seed=args.seed,
        inception_score_order=args.is_split_order,
    ).to(state.device)

    skipped: List[str] = []
    scored: List[Tuple[int, str, Dict[str, Any]]] = []
    if geneval is not None:
        from nlg.shapes.geneval import score_image
    quiet = not state.is_local_main_process
    loader_args = dict(batch_size=args.batch_size, num_workers=args.num_workers)
    with tqdm(total=len(fake_set), desc="Generated images", unit="img", disable=quiet) as bar:
        for batch in stream(image_loader(fake_set, **loader_args), skip_bad=args.skip_bad_images, skipped=skipped):
            metrics.update_fake(batch["inception"], batch.get("clip"), batch["caption"], batch["id"])
            if geneval is not None:
                for image, caption_id in zip(batch["native"], batch["id"].tolist()):
                    scored.append((caption_id, geneval[caption_id]["tag"],
                                   score_image(image.permute(1, 2, 0).numpy(), geneval[caption_id])))
            bar.update(len(batch["id"]))
    with tqdm(total=len(real_set), desc="Real images", unit="img", disable=quiet) as bar:
        for batch in stream(image_loader(real_set, **loader_args), skip_bad=args.skip_bad_images, skipped=skipped):
            metrics.update_real(batch["inception"])
            bar.update(len(batch["id"]))

    result = metrics.compute()
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        skipped = gather_object(skipped)
        scored = gather_object(scored)
    k = min(args.bottom_k, len(result.clip_scores))
    figures: Dict[str, Any] = result.figures()
    figures["bottom_k"] = k
    figures["clip_score_bottom_k"], _ = bottom_k_mean(result.clip_scores, k)
    if loaded_ids:
        # an image skipped by --skip_bad_images has no score: its id is left out and named, the run is kept
        scored_ids = [i for i in loaded_ids if i in result.clip_scores]
        figures["clip_score_bottom_k_loaded"], _ = bottom_k_mean(result.clip_scores, k, ids=scored_ids)
        figures["clip_score_bottom_k_loaded_unscored_ids"] = sorted(set(loaded_ids) - set(scored_ids))
    if geneval is not None:
        from nlg.shapes.geneval import task_accuracies

        scored.sort(key=lambda item: item[0])
        figures["geneval"] = task_accuracies([tag for _, tag, _ in scored], [r["correct"] for _, _, r in scored])
        figures["geneval"]["off_palette"] = sum(r["off_palette"] for _, _, r in scored) / max(len(scored), 1)
        figures["geneval"]["images"] = len(scored)
    figures["skipped_images"] = sorted(skipped)
    figures["settings"] = {
        k_: getattr(args, k_)
        for k_ in ("real_image_dir", "fake_image_dir", "prompts_path", "clip_scores_load_path", "inception_weights", "clip_model", "is_splits", "seed", "real_image_glob", "feature_extractor", "geneval", "is_split_order")
    }
    figures["settings"]["num_processes"] = state.num_processes

    if state.is_main_process:
        print(f"FID: {figures['fid']:.4f}")
        print(f"Inception Score: {figures['inception_score']:.4f} ± {figures['inception_score_std']:.4f}")
        if clip_model is not None:
            print(f"CLIP Score: {figures['clip_score']:.4f}")
            print(f"CLIP Score (Bottom {k} Images): {figures['clip_score_bottom_k']:.4f}")
        if geneval is not None:
            print("Mini-GenEval: " + ", ".join(f"{key} {value:.4f}" for key, value in figures["geneval"].items()))
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
