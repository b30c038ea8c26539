"""Atomic file writes: a file is either absent, the old one, or the whole new one, never half written.

Every writer goes through :func:`atomic_write`: the bytes go to a hidden temporary file beside the target
(``.<name>.<pid>.tmp``), are flushed and ``fsync``-ed, and the file is renamed into place with
``os.replace``, which POSIX makes atomic within one filesystem.  A killed job (``kill -9``, a pre-empted
cluster node) leaves at most a stray temporary file, never a torn target; a full disk raises an
``OSError`` naming the file being written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, Iterator, Tuple

from .types import PathLike

__all__ = ["TMP_SUFFIX", "DISK_FULL", "atomic_write", "atomic_write_text", "atomic_write_json", "atomic_save_torch", "atomic_save_figure", "sha256_file", "read_json_lines", "atomic_write_json_lines"]

#: Suffix of the temporary files :func:`atomic_write` writes (and that resumable jobs may delete).
TMP_SUFFIX = ".tmp"
#: ``errno`` values that mean "no space left": the disk is full or the quota is used up.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` into a hidden temporary file, then rename it into place.

    Readers (and a resumed run after ``kill -9``) see either the old file, or none, or the whole new
    file, never a partial one.  The temporary file is removed if ``write`` fails.

    Args:
        path (`str` or `Path`): the file to write.
        write (`Callable[[BinaryIO], None]`): writes the content into the open binary file it receives.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in DISK_FULL and err.filename is None:
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err  # name the file being written
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: PathLike, data: Any, *, indent: int = 2, sort_keys: bool = True) -> None:
    """:func:`atomic_write` of ``data`` as JSON (NaN and infinities refused), with a final newline."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=False, default=list) + "\n"
    atomic_write_text(path, text)


def atomic_save_torch(obj: Any, path: PathLike) -> None:
    """:func:`atomic_write` of ``torch.save(obj)`` (checkpoints)."""
    import torch

    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_save_figure(figure: Any, path: PathLike, **savefig_kwargs: Any) -> None:
    """:func:`atomic_write` of a matplotlib ``figure.savefig``, in the format named by the suffix of ``path``.

    Args:
        figure (`matplotlib.figure.Figure`): the figure.
        path (`str` or `Path`): the file, e.g. ``plot.png`` or ``plot.pdf``.
        **savefig_kwargs: passed to ``savefig`` (``dpi``, ``bbox_inches``, ...).
    """
    suffix = Path(path).suffix.lstrip(".").lower()
    if not suffix:
        raise ValueError(f"path must end in an image suffix such as .png, got {str(path)!r}")
    atomic_write(path, lambda handle: figure.savefig(handle, format=suffix, **savefig_kwargs))


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_lines(path: PathLike, name: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """``(line number, row)`` for each non-blank line of a JSON Lines file (a UTF-8 byte-order mark is allowed).

    Raises a ValueError naming ``name`` (the argument the file came from), the file and the line, for a line that is
    not JSON or not a JSON object."""
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}: {path} line {number} is not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{name}: {path} line {number} is not a JSON object")
        yield number, row


def atomic_write_json_lines(path: PathLike, rows: Iterable[Dict[str, Any]]) -> None:
    """:func:`atomic_write` of ``rows`` as JSON Lines, one ``json.dumps`` object per line, read back by
    :func:`read_json_lines`. A row that is not a dict is a TypeError naming ``rows``, and nothing is written."""
    lines = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"rows[{i}] must be a dict (one JSON object per line), got {type(row).__name__}")
        lines.append(json.dumps(row) + "\n")
    atomic_write_text(path, "".join(lines))
