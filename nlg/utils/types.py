"""The two type aliases every layer shares, defined once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Union

import torch

__all__ = ["GeneratorLike", "PathLike"]

#: One ``torch.Generator`` for the whole batch, one per sample, or ``None`` (the global RNG).
GeneratorLike = Union[torch.Generator, List[torch.Generator], None]
#: A filesystem path as users pass it.
PathLike = Union[str, Path, "os.PathLike[str]"]
