"""Image folders with captions, as the common fine-tuning tools read them.

A folder holds images (``.png``, ``.jpg``, ``.jpeg``, ``.webp``, ``.bmp``) and their captions, either

* a ``metadata.jsonl`` with one ``{"file_name": ..., "text": ...}`` object per line (Hugging Face's
  ``imagefolder`` format, which diffusers' ``train_text_to_image_lora.py`` reads), or
* a ``.txt`` file beside each image with the same stem (``cat.png`` + ``cat.txt``, as kohya and ai-toolkit).

Every problem (no folder, no image, an image without a caption, a caption naming a missing file, an
unreadable image) is a ``ValueError`` naming the file, raised before any training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..utils.io import read_json_lines
from ..utils.types import PathLike

__all__ = ["IMAGE_EXTENSIONS", "read_image_folder", "load_images"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _listing(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_image_folder(folder: PathLike) -> List[Tuple[Path, str]]:
    """``(image path, caption)`` pairs of a folder, sorted by file name.

    Args:
        folder (`str` or `Path`): the ``data_dir``.

    Raises:
        ValueError: naming the folder or the files at fault.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"data_dir {folder} is not a folder")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        captions = {}
        for number, row in read_json_lines(metadata, "data_dir"):
            if not isinstance(row.get("file_name"), str) or not isinstance(row.get("text"), str):
                raise ValueError(f'data_dir: {metadata} line {number} needs "file_name" and "text" strings')
            captions[row["file_name"]] = row["text"]
        missing = sorted(name for name in captions if not (folder / name).is_file())
        if missing:
            raise ValueError(f"data_dir: {metadata} names images that do not exist: {_listing(missing)}")
        pairs = [(folder / name, text) for name, text in sorted(captions.items())]
        uncaptioned = sorted(p.name for p in images if p.name not in captions)
    else:
        pairs = [(p, p.with_suffix(".txt").read_text(encoding="utf-8").strip()) for p in images if p.with_suffix(".txt").is_file()]
        uncaptioned = sorted(p.name for p in images if not p.with_suffix(".txt").is_file())
    if not images and not pairs:
        raise ValueError(f"data_dir {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if uncaptioned:
        raise ValueError(
            f"data_dir: images without a caption: {_listing(uncaptioned)} "
            "(add a metadata.jsonl line or a .txt file beside each image)"
        )
    return pairs


def load_images(paths: Sequence[Path], resolution: int) -> Tensor:
    r"""Images as a float tensor in [−1, 1] of shape (N, 3, R, R), R = ``resolution``.

    Each image is converted to RGB, resized (bicubic) so its shorter side is R, and centre-cropped to R × R,
    as diffusers' training scripts do without augmentation.

    Args:
        paths (`Sequence[Path]`): image files.
        resolution (`int`): R.
    """
    from PIL import Image, UnidentifiedImageError

    out = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"data_dir: cannot read image {path.name} ({err})") from None
        w, h = image.size
        scale = resolution / min(w, h)
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        if size != (w, h):
            image = image.resize(size, Image.BICUBIC)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        out.append(torch.from_numpy(array).permute(2, 0, 1))
    return torch.stack(out)
