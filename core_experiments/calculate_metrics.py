"""FID, Inception Score, CLIP score and bottom-k CLIP score of a folder of generated ``<id>.png`` images.

Accepts the public reference script's command line unchanged (``--real_image_dir``,
``--fake_image_dir``, ``--prompts_path``, ``--clip_scores_save_path``, ``--clip_scores_load_path``)
and adds batching, offline model paths and multi-process runs (and, for the shapes model of
:mod:`nlg.shapes`, an offline feature extractor and the mini-GenEval accuracy:
``--feature_extractor shapes --clip_model none --geneval --real_image_glob '*.png'``)::

    accelerate launch core_experiments/calculate_metrics.py --real_image_dir ... --fake_image_dir ...

FID compares the generated images with as many real ones, the very subset the reference picks: the
sorted ``*.jpg`` files shuffled by Python's ``random`` after the captions, with one generator seeded
with 0 (``docs/guides/reproducing.md``).  Every figure is printed and written to ``--output_json``, with
the number of images the safety checker blacked out (read from the folder's ``manifest.jsonl``) and a
warning, also on stderr, when the folder holds fewer images than its run asked for.  The work is done by
:func:`nlg.eval.evaluate_folder`.
"""

from __future__ import annotations

import argparse
from typing import List, Optional

from nlg.eval.evaluation_run import MetricsRun, evaluate_folder
from nlg.eval.metrics import DEFAULT_CLIP_MODEL
from nlg.eval.process import DEFAULT_PROCESS_GROUP_TIMEOUT, run_cli


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
    p.add_argument("--process_group_timeout", default=DEFAULT_PROCESS_GROUP_TIMEOUT, type=float,
                   help="Seconds a process of a multi-process run may wait for the others (default 7200, 2 h).")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    run = MetricsRun(**vars(build_parser().parse_args(argv)))
    options = {}
    if run.feature_extractor == "shapes":
        from nlg.shapes.features import ShapesFeatures

        options["feature_network"] = ShapesFeatures()
    if run.geneval:
        from nlg.shapes.geneval import score_image, task_accuracies

        options.update(geneval_score=score_image, geneval_summary=task_accuracies)
    evaluate_folder(run, **options)
    return 0


if __name__ == "__main__":
    run_cli(main)
