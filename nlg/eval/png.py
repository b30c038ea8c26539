"""PNG files of a run: whole-file checks, and pixels saved as the reference scripts save them.

* :func:`whole_png` checks the signature, the final IEND chunk and every chunk's CRC;
* :func:`to_uint8` truncates float images as the reference does (``uint8(clip(255·x, 0, 255))``),
  not diffusers' rounding;
* :func:`png_writer` gives the writer :func:`nlg.utils.io.atomic_write` needs for one image.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from ..utils.types import PathLike

__all__ = ["PNG_SIGNATURE", "PNG_END", "whole_png", "to_uint8", "png_writer"]


#: The PNG signature and the end of its last (IEND) chunk.
PNG_SIGNATURE, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def whole_png(path: PathLike) -> bool:
    """Whether ``path`` is a complete PNG: its signature, an IEND chunk at the very end, and every chunk's
    CRC as PIL's ``verify`` checks them (so truncated, overwritten or bit-flipped files fail)."""
    from PIL import Image

    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - len(PNG_END), 0))
            tail = handle.read()
        if head != PNG_SIGNATURE or tail != PNG_END:
            return False
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises SyntaxError, OSError, ValueError, struct.error … on broken files
        return False


def to_uint8(images: Any) -> np.ndarray:
    """Float images in [0, 1] as the reference saves them: ``uint8(clip(255·x, 0, 255))``, truncating.

    diffusers' ``output_type="pil"`` rounds instead (``round(255·x)``), which makes images brighter by
    1/255 wherever the fractional part is ≥ 0.5.  Accepts ``(B, H, W, C)`` NumPy arrays
    (``output_type="np"``) or ``(B, C, H, W)`` tensors (``output_type="pt"``).
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4:
        raise ValueError(f"images must be a batch (B, H, W, C), got shape {array.shape}")
    return np.clip(array * 255, 0, 255).astype(np.uint8)


def png_writer(array: np.ndarray) -> Callable[[BinaryIO], None]:
    """A function writing ``array`` (``(H, W, C)`` uint8, C = 1 or 3) as PNG into the binary file it receives."""
    from PIL import Image

    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return lambda handle: image.save(handle, format="PNG")
