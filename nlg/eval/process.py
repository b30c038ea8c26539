"""Seeds and process state for the experiment scripts: one generator per image, the process group, the CLI exit.

* :func:`image_seed` / :func:`image_generator` give every image its own generator, seeded from
  ``(seed, caption id)``, so an image does not depend on its batch, its process or a resumption.
* :func:`process_state` is ``accelerate``'s process state with a long, configurable process-group
  timeout (:data:`DEFAULT_PROCESS_GROUP_TIMEOUT`, 2 h) instead of NCCL's 10 minutes.
* :func:`run_cli` runs a script's ``main``: bad input and a full disk become one-line errors.
* :func:`write_json` writes figures atomically, NaN as ``null``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from datetime import timedelta
from typing import Any, Callable, Optional

import torch

from ..utils.io import DISK_FULL, atomic_write_text
from ..utils.types import PathLike

__all__ = ["DEFAULT_PROCESS_GROUP_TIMEOUT", "image_seed", "image_generator", "process_state", "run_cli", "write_json"]

#: Seconds a process of a multi-process run may wait at a collective (a barrier, a gather) before the
#: run is aborted: 2 hours.  The scripts take it from ``--process_group_timeout``.
DEFAULT_PROCESS_GROUP_TIMEOUT = 7200.0


def image_seed(seed: int, caption_id: int) -> int:
    """A 63-bit seed for one image, a hash of ``(seed, caption_id)``: distinct ids give unrelated streams."""
    digest = hashlib.sha256(f"nlg-image:{int(seed)}:{int(caption_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_generator(seed: int, caption_id: int) -> torch.Generator:
    """A CPU generator for one image (CPU draws are identical on every device and machine)."""
    return torch.Generator("cpu").manual_seed(image_seed(seed, caption_id))


def process_state(timeout: Optional[float] = None) -> Any:
    """``accelerate``'s ``PartialState``: this process's rank, the process count and its device.

    Without a GPU it asks for CPU processes, so ``accelerate launch --multi_gpu --num_processes 2``
    (torchrun) gives two gloo-connected CPU processes; on one process it is a no-op.

    Args:
        timeout (`float`, *optional*, defaults to :data:`DEFAULT_PROCESS_GROUP_TIMEOUT`): seconds any
            collective (barrier, gather) may wait before the process group aborts the run.  NCCL's own
            default is 10 minutes, too short for a process that waits while another loads a model.

    Raises:
        ValueError: naming ``timeout`` if it is not a positive finite number.
    """
    from accelerate import PartialState

    seconds = DEFAULT_PROCESS_GROUP_TIMEOUT if timeout is None else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
        raise ValueError(f"timeout (--process_group_timeout) must be a positive number of seconds, got {timeout!r}")
    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=seconds))


def run_cli(main: Callable[[], int]) -> None:
    """Run a script's ``main`` and exit with its code; a ``ValueError`` (bad input) becomes a one-line
    ``error: …`` on stderr and exit code 2, as argparse reports bad flags."""
    try:
        code = main()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        print(f"error: {err.strerror} while writing {err.filename}: free some space and rerun the same command; "
              "the finished images are kept and the run resumes where it stopped", file=sys.stderr)
        code = 1
    sys.exit(code)


def _finite_or_none(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite_or_none(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite_or_none(value) for value in data]
    return data


def write_json(path: PathLike, data: Any) -> None:
    """Atomically write ``data`` as indented UTF-8 JSON; a figure that is NaN (not computed) is written as ``null``."""
    text = json.dumps(_finite_or_none(data), indent=2, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_text(path, text)
