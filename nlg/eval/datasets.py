"""Image folders as streaming DataLoaders for :mod:`nlg.eval.metrics`, and the per-image CLIP score files.

Images are opened by DataLoader workers, one at a time, and resized as the public reference scripts
do (PIL bilinear to 299×299 for InceptionV3 and 224×224 for CLIP, kept as uint8), so only a list of
paths is ever held, never the images.  An unreadable image becomes a record naming it rather than an
exception in a worker; :func:`stream` then stops or skips it.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .runs import Caption, atomic_write, reference_rng, shuffled
from ..utils.types import PathLike

__all__ = [
    "INCEPTION_SIZE",
    "CLIP_SIZE",
    "generated_images",
    "real_images",
    "ImageFiles",
    "image_loader",
    "stream",
    "write_clip_scores",
    "read_clip_scores",
    "write_geneval_captions",
    "read_geneval_metadata",
]

INCEPTION_SIZE = 299
CLIP_SIZE = 224


def generated_images(folder: PathLike, *, name: str = "fake_image_dir") -> List[Tuple[int, Path]]:
    """``(id, path)`` of every ``<id>.png`` in ``folder``, by id; other files (manifest, …) are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{name}: {folder} is not a folder")
    found = sorted((int(p.stem), p) for p in folder.glob("*.png") if p.stem.isdigit())
    if not found:
        raise ValueError(f"{name}: {folder} holds no <id>.png images")
    return found


def real_images(
    folder: PathLike,
    count: int,
    *,
    num_captions: int,
    seed: int = 0,
    pattern: str = "*.jpg",
    name: str = "real_image_dir",
) -> List[Path]:
    """The ``count`` real images the reference's FID uses: ``sorted(folder.glob(pattern))`` shuffled by
    Python's ``random.shuffle`` *after* the captions were shuffled with the same generator, then the first
    ``count``.

    The reference seeds ``random`` once (``random.seed(seed)``), shuffles the ``num_captions`` captions
    of the captions file, then the sorted ``*.jpg`` paths; so the subset depends on the number of
    captions, which this reproduces by shuffling a list of that length first.

    Args:
        folder (`str` or `Path`): the real images (e.g. COCO val2014).
        count (`int`): how many (one per generated image).
        num_captions (`int`): the number of annotations in the captions file.
        seed (`int`, defaults to 0): the reference's seed.
        pattern (`str`, defaults to ``"*.jpg"``): the reference's glob (case-sensitive).

    Raises:
        ValueError: if the folder is missing, holds no matching file, or fewer than ``count``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{name}: {folder} is not a folder")
    if isinstance(num_captions, bool) or not isinstance(num_captions, int) or num_captions < 0:
        raise ValueError(f"num_captions must be an int >= 0, got {num_captions!r}")
    paths = sorted(folder.glob(pattern))
    if not paths:
        raise ValueError(f"{name}: {folder} holds no images matching {pattern!r}")
    if len(paths) < count:
        raise ValueError(f"{name}: {folder} holds {len(paths)} images matching {pattern!r} but {count} generated "
                         "images need as many real ones")
    rng = reference_rng(seed)
    rng.shuffle(list(range(num_captions)))  # the captions' shuffle: its draws depend only on their number
    return shuffled(paths, rng)[:count]


def _to_tensor(image: Any, size: Optional[int]) -> Tensor:
    from PIL import Image

    resized = image if size is None else image.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1)


class ImageFiles(Dataset):
    """Images at ``paths`` as uint8 ``(3, size, size)`` tensors, one per entry of ``sizes``.

    Args:
        paths (`Sequence[Path]`): image files.
        sizes (`Dict[str, Optional[int]]`): output key → square size, e.g. ``{"inception": 299, "clip": 224}``;
            ``None`` keeps the image's own size.
        ids (`Sequence[int]`, *optional*): an id per image, returned as ``id``.
        captions (`Sequence[str]`, *optional*): a caption per image, returned as ``caption``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        sizes: Mapping[str, Optional[int]],
        ids: Optional[Sequence[int]] = None,
        captions: Optional[Sequence[str]] = None,
    ) -> None:
        self.paths = list(paths)
        self.sizes = dict(sizes)
        self.ids = list(ids) if ids is not None else list(range(len(self.paths)))
        self.captions = list(captions) if captions is not None else None
        if len(self.ids) != len(self.paths) or (self.captions is not None and len(self.captions) != len(self.paths)):
            raise ValueError("ImageFiles: paths, ids and captions must have the same length")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        from PIL import Image

        item: Dict[str, Any] = {"path": str(self.paths[index]), "id": self.ids[index]}
        if self.captions is not None:
            item["caption"] = self.captions[index]
        try:
            with Image.open(self.paths[index]) as image:
                rgb = image.convert("RGB")
            for key, size in self.sizes.items():
                item[key] = _to_tensor(rgb, size)
        except Exception as err:  # any decoding failure: report it by name, let the policy decide
            item["error"] = f"{type(err).__name__}: {err}"
        return item


def collate(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack the readable items; list the unreadable ones under ``bad`` as ``(path, error)``."""
    good = [it for it in items if "error" not in it]
    batch: Dict[str, Any] = {"bad": [(it["path"], it["error"]) for it in items if "error" in it]}
    batch["id"] = torch.tensor([it["id"] for it in good], dtype=torch.long)
    if items and "caption" in items[0]:
        batch["caption"] = [it["caption"] for it in good]
    for key, value in good[0].items() if good else ():
        if isinstance(value, Tensor):
            batch[key] = torch.stack([it[key] for it in good])
    return batch


def image_loader(dataset: ImageFiles, *, batch_size: int, num_workers: int) -> DataLoader:
    """A DataLoader over ``dataset`` in order, with ``num_workers`` decoding workers."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate, shuffle=False)


def stream(batches: Iterable[Dict[str, Any]], *, skip_bad: bool, skipped: List[str]) -> Iterator[Dict[str, Any]]:
    """Yield batches with at least one readable image; on an unreadable one stop with a ``ValueError``
    naming it, or (``skip_bad``) warn, add its path to ``skipped`` and go on."""
    for batch in batches:
        for path, error in batch["bad"]:
            if not skip_bad:
                raise ValueError(f"unreadable image {path} ({error}); pass --skip_bad_images to skip such images")
            print(f"warning: skipping unreadable image {path} ({error})", file=sys.stderr)
            skipped.append(path)
        if len(batch["id"]):
            yield batch


def write_clip_scores(path: PathLike, scores: Mapping[int, float], captions: Mapping[int, Caption]) -> None:
    """Atomically write per-image CLIP scores as CSV ``id,image_id,caption,clip_score`` (the reference's columns)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "image_id", "caption", "clip_score"])
    for caption_id in sorted(scores):
        c = captions.get(caption_id)
        writer.writerow([caption_id, "" if c is None or c.image_id is None else c.image_id, "" if c is None else c.caption, repr(scores[caption_id])])
    data = out.getvalue().encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


def read_clip_scores(path: PathLike, *, name: str = "clip_scores_load_path") -> Dict[int, float]:
    """Per-image CLIP scores from a CSV with ``id`` and ``clip_score`` columns (ours or the reference's)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: {path} is not a file")
    scores: Dict[int, float] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"id", "clip_score"} <= set(reader.fieldnames):
            raise ValueError(f"{name}: {path} must be a CSV with 'id' and 'clip_score' columns")
        for row in reader:
            if not (row["clip_score"] or "").strip():
                continue  # pandas writes NaN (a prompt the reference did not score) as an empty field
            try:
                score = float(row["clip_score"])
                caption_id = int(float(row["id"]))
            except (TypeError, ValueError):
                raise ValueError(f"{name}: {path} line {reader.line_num} has a bad id or clip_score") from None
            if score == score:  # the reference writes NaN for prompts it did not score
                scores[caption_id] = score
    if not scores:
        raise ValueError(f"{name}: {path} holds no scores")
    return scores


def write_geneval_captions(path: PathLike, prompts: Sequence[Mapping[str, Any]], *, images_per_prompt: int = 1) -> Path:
    """Write GenEval ``evaluation_metadata.jsonl`` rows as a COCO captions JSON for the experiment scripts.

    Prompt ``i`` gets the annotations ``id = i·images_per_prompt + r`` (r = 0 … images_per_prompt − 1),
    ``image_id = i``, ``caption = row["prompt"]``, and the row itself under ``"geneval"`` (read back by
    :func:`read_geneval_metadata`; :func:`nlg.eval.runs.load_captions` ignores it).

    Args:
        path (`str` or `Path`): the JSON to write (atomically; missing folders are created).
        prompts (`Sequence[Mapping]`): rows with at least ``prompt`` and ``tag``.
        images_per_prompt (`int`, defaults to 1): images per prompt (GenEval uses 4).
    """
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be an int >= 1, got {images_per_prompt!r}")
    annotations = []
    for i, row in enumerate(prompts):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("tag"), str):
            raise ValueError(f"prompts[{i}] needs a string 'prompt' and 'tag', got {dict(row)!r:.200}")
        for r in range(images_per_prompt):
            annotations.append({"id": i * images_per_prompt + r, "image_id": i, "caption": row["prompt"], "geneval": dict(row)})
    if not annotations:
        raise ValueError("prompts is empty")
    data = (json.dumps({"annotations": annotations}, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: handle.write(data))
    return Path(path)


def read_geneval_metadata(path: PathLike, *, name: str = "prompts_path") -> Dict[int, Dict[str, Any]]:
    """Caption id → its GenEval metadata, from a captions JSON written by :func:`write_geneval_captions`.

    Raises:
        ValueError: naming ``name`` if no annotation carries ``"geneval"`` metadata.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    found = {a["id"]: a["geneval"] for a in data.get("annotations", []) if isinstance(a, dict) and isinstance(a.get("geneval"), dict)}
    if not found:
        raise ValueError(f"{name}: {path} has no GenEval metadata (write it with nlg.eval.datasets.write_geneval_captions)")
    return found
