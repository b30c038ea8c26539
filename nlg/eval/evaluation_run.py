"""Scoring a folder of generated images as ``core_experiments/calculate_metrics.py`` does: :func:`evaluate_folder`.

FID compares the generated images with as many real ones, the very subset the reference picks
(:func:`~nlg.eval.datasets.real_images`); the Inception Score, the CLIP score and the bottom-k CLIP score are
computed by :class:`~nlg.eval.metrics.GenerationMetrics`.  Beside the figures the JSON holds how many
images the safety checker blacked out (from the folder's ``manifest.jsonl``) and a warning when the folder
holds fewer images than its run asked for.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..utils.checks import check_int, check_number
from .captions import load_captions, shard
from .datasets import (
    CLIP_SIZE, INCEPTION_SIZE, ImageFiles, generated_images, image_loader, read_clip_scores, read_geneval_metadata,
    real_images, stream, write_clip_scores,
)
from .metrics import DEFAULT_CLIP_MODEL, GenerationMetrics, bottom_k_mean
from .process import DEFAULT_PROCESS_GROUP_TIMEOUT, process_state, write_json
from .runfolder import Manifest, RunFolder

__all__ = ["MetricsRun", "evaluate_folder", "run_record_summary"]

#: Settings copied into the JSON's ``settings``.
RECORDED = ("real_image_dir", "fake_image_dir", "prompts_path", "clip_scores_load_path", "inception_weights", "clip_model",
            "is_splits", "seed", "real_image_glob", "feature_extractor", "geneval", "is_split_order")


@dataclass(frozen=True)
class MetricsRun:
    """The settings of one scoring run; each field is the script's flag of the same name.

    Args:
        real_image_dir (`str`): real images (e.g. COCO ``val2014/``).
        fake_image_dir (`str`): generated ``<id>.png`` images.
        prompts_path (`str`): the captions JSON the images were generated from.
        clip_scores_save_path, clip_scores_load_path (`str`, *optional*): per-image CLIP scores to write, or
            another run's scores whose bottom-k prompts this run is also scored on.
        bottom_k (`int`, defaults to 1000): size of the bottom-k CLIP score.
        inception_weights (`str`, *optional*): local InceptionV3 state dict (offline FID/IS).
        clip_model (`str`, defaults to :data:`~nlg.eval.metrics.DEFAULT_CLIP_MODEL`): CLIP id or folder; ``"none"`` skips CLIP.
        feature_extractor (`str`, defaults to ``"inception"``): ``"inception"`` or ``"shapes"`` (given to
            :func:`evaluate_folder` as ``feature_network``).
        geneval (`bool`): also score the mini-GenEval accuracy (needs ``geneval_score`` and ``geneval_summary``).
        local_files_only (`bool`), batch_size (`int`, 50), num_workers (`int`, 4), is_splits (`int`, 10),
            seed (`int`, 0), is_split_order (`str`, ``"reference"``), real_image_glob (`str`, ``"*.jpg"``),
            skip_bad_images (`bool`): as the script's flags.
        output_json (`str`, *optional*): where to write the figures (default ``<fake_image_dir>/metrics.json``).
        process_group_timeout (`float`, defaults to 7200): seconds a process may wait at a collective.
    """

    real_image_dir: str
    fake_image_dir: str
    prompts_path: str
    clip_scores_save_path: Optional[str] = None
    clip_scores_load_path: Optional[str] = None
    bottom_k: int = 1000
    inception_weights: Optional[str] = None
    clip_model: str = DEFAULT_CLIP_MODEL
    feature_extractor: str = "inception"
    geneval: bool = False
    local_files_only: bool = False
    batch_size: int = 50
    num_workers: int = 4
    is_splits: int = 10
    seed: int = 0
    is_split_order: str = "reference"
    real_image_glob: str = "*.jpg"
    skip_bad_images: bool = False
    output_json: Optional[str] = None
    process_group_timeout: float = DEFAULT_PROCESS_GROUP_TIMEOUT

    def __post_init__(self) -> None:
        for name, minimum in (("bottom_k", 1), ("batch_size", 1), ("is_splits", 1), ("num_workers", 0)):
            check_int(getattr(self, name), f"--{name}", minimum=minimum)
        check_number(self.process_group_timeout, "--process_group_timeout", strict=True)
        for name in ("clip_scores_save_path", "output_json"):
            path = getattr(self, name) if name != "output_json" else self.json_path
            if path is not None and not Path(path).resolve().parent.is_dir():
                raise ValueError(f"--{name}: the folder of {path} does not exist")
        if self.clip is None and (self.clip_scores_save_path or self.clip_scores_load_path):
            raise ValueError("--clip_scores_save_path / --clip_scores_load_path need a CLIP model (--clip_model is 'none')")

    @property
    def json_path(self) -> str:
        return self.output_json or str(Path(self.fake_image_dir) / "metrics.json")

    @property
    def clip(self) -> Optional[str]:
        return None if self.clip_model.lower() == "none" else self.clip_model


def run_record_summary(folder: Path, ids: Sequence[int]) -> Tuple[Optional[int], Optional[int]]:
    """From a generated folder's ``manifest.jsonl``: how many of ``ids`` the safety checker blacked out, and
    how many images the run asked for (its largest ``total_images``); each None where the manifest does not say."""
    manifest = Manifest(Path(folder) / RunFolder.MANIFEST)
    records = manifest.records()
    if not records:
        return None, None
    black = sum(bool(records.get(i, {}).get("blacked_out")) for i in ids)
    asked = [r["total_images"] for r in records.values() if isinstance(r.get("total_images"), int)]
    return black, max(asked) if asked else None


def evaluate_folder(
    run: MetricsRun,
    *,
    feature_network: Optional[torch.nn.Module] = None,
    geneval_score: Optional[Callable[[Any, Mapping[str, Any]], Dict[str, Any]]] = None,
    geneval_summary: Optional[Callable[[List[str], List[bool]], Dict[str, float]]] = None,
) -> Dict[str, Any]:
    """Score ``run.fake_image_dir``; print the figures, write them to ``run.json_path`` (process 0) and return them.

    Args:
        run (`MetricsRun`): the settings.
        feature_network (`torch.nn.Module`, *optional*): FID/IS features in place of InceptionV3 (e.g.
            :class:`nlg.shapes.features.ShapesFeatures`); images reach it at their own size.
        geneval_score (`Callable`, *optional*): ``(uint8 HWC image, metadata) → {"correct", "off_palette", …}``,
            for ``run.geneval`` (e.g. :func:`nlg.shapes.geneval.score_image`).
        geneval_summary (`Callable`, *optional*): ``(tags, correct) → accuracies`` (e.g. :func:`nlg.shapes.geneval.task_accuracies`).

    Raises:
        ValueError: naming the flag, on bad input (before anything is written).
    """
    if run.geneval and (geneval_score is None or geneval_summary is None):
        raise ValueError("--geneval needs geneval_score and geneval_summary (the shapes scorer)")
    caption_list = load_captions(run.prompts_path)
    captions = {c.id: c for c in caption_list}
    fakes = generated_images(run.fake_image_dir)
    unknown = [i for i, _ in fakes if i not in captions]
    if unknown:
        raise ValueError(f"--prompts_path has no caption for generated image ids {unknown[:10]}: wrong captions file?")
    geneval = read_geneval_metadata(run.prompts_path) if run.geneval else None
    if geneval is not None:
        missing = [i for i, _ in fakes if i not in geneval]
        if missing:
            raise ValueError(f"--prompts_path has no GenEval metadata for generated image ids {missing[:10]}")
    reals = real_images(run.real_image_dir, len(fakes), num_captions=len(caption_list), seed=run.seed,
                        pattern=run.real_image_glob)
    loaded = read_clip_scores(run.clip_scores_load_path) if run.clip_scores_load_path else None
    loaded_ids = sorted(loaded, key=lambda i: (loaded[i], i))[: run.bottom_k] if loaded else None
    if loaded_ids:
        missing = sorted(set(loaded_ids) - {i for i, _ in fakes})
        if missing:
            raise ValueError(f"--clip_scores_load_path: {len(missing)} of its bottom-{run.bottom_k} ids have no image here, e.g. {missing[:5]}")
    black, asked = run_record_summary(Path(run.fake_image_dir), [i for i, _ in fakes])

    from tqdm.auto import tqdm

    state = process_state(run.process_group_timeout)
    if len(fakes) < state.num_processes:
        raise ValueError(f"{len(fakes)} images cannot be shared among {state.num_processes} processes")
    mine = shard(fakes, state.process_index, state.num_processes)
    feature_size = None if feature_network is not None else INCEPTION_SIZE
    fake_sizes: Dict[str, Optional[int]] = {"inception": feature_size}
    if run.clip is not None:
        fake_sizes["clip"] = CLIP_SIZE
    if geneval is not None:
        fake_sizes["native"] = None
    fake_set = ImageFiles([p for _, p in mine], sizes=fake_sizes, ids=[i for i, _ in mine],
                          captions=[captions[i].caption for i, _ in mine])
    real_set = ImageFiles(shard(reals, state.process_index, state.num_processes), sizes={"inception": feature_size})
    metrics = GenerationMetrics(
        inception_weights=run.inception_weights, clip_model=run.clip, feature_extractor=feature_network,
        local_files_only=run.local_files_only, is_splits=run.is_splits, seed=run.seed,
        inception_score_order=run.is_split_order,
    ).to(state.device)

    skipped: List[str] = []
    scored: List[Tuple[int, str, Dict[str, Any]]] = []
    quiet = not state.is_local_main_process
    loader_args = dict(batch_size=run.batch_size, num_workers=run.num_workers)
    with tqdm(total=len(fake_set), desc="Generated images", unit="img", disable=quiet) as bar:
        for batch in stream(image_loader(fake_set, **loader_args), skip_bad=run.skip_bad_images, skipped=skipped):
            metrics.update_fake(batch["inception"], batch.get("clip"), batch["caption"], batch["id"])
            if geneval is not None:
                for image, caption_id in zip(batch["native"], batch["id"].tolist()):
                    scored.append((caption_id, geneval[caption_id]["tag"],
                                   geneval_score(image.permute(1, 2, 0).numpy(), geneval[caption_id])))
            bar.update(len(batch["id"]))
    with tqdm(total=len(real_set), desc="Real images", unit="img", disable=quiet) as bar:
        for batch in stream(image_loader(real_set, **loader_args), skip_bad=run.skip_bad_images, skipped=skipped):
            metrics.update_real(batch["inception"])
            bar.update(len(batch["id"]))

    result = metrics.compute()
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        skipped = gather_object(skipped)
        scored = gather_object(scored)
    k = min(run.bottom_k, len(result.clip_scores))
    figures: Dict[str, Any] = result.figures()
    figures["bottom_k"] = k
    figures["clip_score_bottom_k"], _ = bottom_k_mean(result.clip_scores, k)
    if loaded_ids:
        # an image skipped by --skip_bad_images has no score: its id is left out and named, the run is kept
        scored_ids = [i for i in loaded_ids if i in result.clip_scores]
        figures["clip_score_bottom_k_loaded"], _ = bottom_k_mean(result.clip_scores, k, ids=scored_ids)
        figures["clip_score_bottom_k_loaded_unscored_ids"] = sorted(set(loaded_ids) - set(scored_ids))
    if geneval is not None:
        scored.sort(key=lambda item: item[0])
        figures["geneval"] = geneval_summary([tag for _, tag, _ in scored], [r["correct"] for _, _, r in scored])
        figures["geneval"]["off_palette"] = sum(r["off_palette"] for _, _, r in scored) / max(len(scored), 1)
        figures["geneval"]["images"] = len(scored)
    figures["skipped_images"] = sorted(skipped)
    figures["blacked_out_images"] = black
    figures["requested_images"] = asked
    figures["warnings"] = []
    if asked is not None and len(fakes) < asked:
        figures["warnings"].append(
            f"{run.fake_image_dir} holds {len(fakes)} of the {asked} images its run asked for (--total_images): "
            "these figures are of a half-finished run; rerun generate_images.py with the same flags to finish it")
    if black:
        figures["warnings"].append(f"{black} scored images were blacked out by the safety checker; "
                                   "generate with --disable_safety_checker for metric runs")
    figures["settings"] = {key: getattr(run, key) for key in RECORDED}
    figures["settings"]["num_processes"] = state.num_processes

    if state.is_main_process:
        for warning in figures["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"FID: {figures['fid']:.4f}")
        print(f"Inception Score: {figures['inception_score']:.4f} ± {figures['inception_score_std']:.4f}")
        if run.clip is not None:
            print(f"CLIP Score: {figures['clip_score']:.4f}")
            print(f"CLIP Score (Bottom {k} Images): {figures['clip_score_bottom_k']:.4f}")
        if geneval is not None:
            print("Mini-GenEval: " + ", ".join(f"{key} {value:.4f}" for key, value in figures["geneval"].items()))
        if loaded_ids:
            print(f"CLIP Score (Bottom {len(loaded_ids)} Images of {run.clip_scores_load_path}): {figures['clip_score_bottom_k_loaded']:.4f}")
        if black is not None:
            print(f"Blacked out by the safety checker: {black}")
        if run.clip_scores_save_path:
            write_clip_scores(run.clip_scores_save_path, result.clip_scores, captions)
        write_json(run.json_path, figures)
        print(f"Figures written to {run.json_path}")
    state.wait_for_everyone()
    return figures
