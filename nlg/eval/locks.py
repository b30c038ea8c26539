"""``flock`` locks that let several processes share one run folder (Unix only; imported by :mod:`~nlg.eval.runfolder`).

* Every live process of a run holds a shared lock on the folder's ``.run.lock`` (:meth:`FolderLocks.hold`);
  replacing a run with other settings needs it alone (:meth:`FolderLocks.lock_alone`).
* A process claims each caption id before generating it with an exclusive lock on ``.<id>.claim``
  (:meth:`FolderLocks.claim`).  The kernel drops a dead process's locks, so its claims lapse with it.

The descriptors that hold the locks are state of one :class:`FolderLocks` (one per run folder), not of
the module.  Where the filesystem has no ``flock`` (Lustre mounted with ``noflock``, gcsfuse, some NFS
set-ups) the first lock raises :class:`LockUnavailableError`, a one-line error naming the filesystem
problem, rather than running two processes without mutual exclusion.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Dict

__all__ = ["RUN_LOCK", "CLAIM_SUFFIX", "LockUnavailableError", "FolderLocks"]

#: Every live process of a run holds a shared ``flock`` on the folder's ``.run.lock``.
RUN_LOCK = ".run.lock"
#: Per-id claim files (``.<id>.claim``), locked with ``flock`` while a process generates that id.
CLAIM_SUFFIX = ".claim"
#: ``errno`` values of ``flock`` on a filesystem that does not implement it.
NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class LockUnavailableError(ValueError):
    """The run folder's filesystem does not support ``flock`` (a ``ValueError``: the scripts print it as one line)."""


def _fcntl() -> Any:
    """The ``fcntl`` module, or :class:`LockUnavailableError` on a platform without it (Windows)."""
    try:
        import fcntl
    except ImportError:
        raise LockUnavailableError("output_dir: sharing a run folder needs flock file locks, which this platform "
                                   "lacks (no fcntl module); run the generation on Linux or macOS") from None
    return fcntl


def _flock(fd: int, operation: int, path: Path) -> None:
    """``fcntl.flock(fd, operation)``; a filesystem without ``flock`` becomes :class:`LockUnavailableError`."""
    fcntl = _fcntl()
    try:
        fcntl.flock(fd, operation)
    except BlockingIOError:
        raise
    except OSError as err:
        if err.errno not in NO_FLOCK:
            raise
        raise LockUnavailableError(
            f"output_dir: the filesystem of {path.parent} does not support file locks (flock: {os.strerror(err.errno)}), "
            "which processes sharing a run folder need; write to a local disk, or mount the filesystem with flock "
            "(Lustre: -o flock), and copy the images afterwards"
        ) from None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class FolderLocks:
    """The ``flock`` locks one process holds in one run folder.

    Args:
        folder (`Path`): the run folder (created by :meth:`hold` if missing).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._run: int = -1  # descriptor holding the run lock, -1 if none
        self._claims: Dict[int, int] = {}  # caption id -> descriptor holding its claim

    def claim_path(self, caption_id: int) -> Path:
        return self.folder / f".{caption_id}{CLAIM_SUFFIX}"

    def _run_lock(self) -> Path:
        return self.folder / RUN_LOCK

    def hold(self) -> None:
        """Hold a shared lock on ``.run.lock`` for the life of this object (idempotent).

        Processes of runs that may share the folder hold it together; it converts this object's exclusive
        lock back to a shared one, and waits out another process's replacement of the folder.
        """
        if self._run < 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._run = os.open(self._run_lock(), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl = _fcntl()
        _flock(self._run, fcntl.LOCK_SH, self._run_lock())

    def lock_alone(self, busy_message: str) -> None:
        """Take ``.run.lock`` exclusively, or raise ``ValueError(busy_message)``: another live process uses the folder."""
        fcntl = _fcntl()
        if self._run >= 0:  # a fresh open file description: flock has no atomic upgrade
            os.close(self._run)
            self._run = -1
        fd = os.open(self._run_lock(), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, self._run_lock())
        except BlockingIOError:
            os.close(fd)
            raise ValueError(busy_message) from None
        except BaseException:
            os.close(fd)
            raise
        self._run = fd

    def claim(self, caption_id: int) -> bool:
        """Lock ``.<id>.claim`` exclusively without waiting; False if another live process holds it."""
        fcntl = _fcntl()
        path = self.claim_path(caption_id)
        stale = self._claims.pop(caption_id, None)
        if stale is not None:  # still held from a batch of this process that failed
            os.close(stale)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
        except BlockingIOError:
            os.close(fd)  # another process is generating it
            return False
        except BaseException:
            os.close(fd)
            raise
        if not _same_file(fd, path):  # the claim was released (or cleared) between open and lock
            os.close(fd)
            return False
        self._claims[caption_id] = fd
        return True

    def release(self, caption_id: int) -> None:
        """Drop this object's claim on ``caption_id``: the file is removed while still locked, so a waiting
        process re-checks and skips the id."""
        fd = self._claims.pop(caption_id, None)
        if fd is not None:
            self.claim_path(caption_id).unlink(missing_ok=True)
            os.close(fd)

    def clear_stale_claims(self) -> None:
        """Remove claim files no live process holds (left by a crash)."""
        fcntl = _fcntl()
        for path in self.folder.glob(f".*{CLAIM_SUFFIX}"):
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
                if _same_file(fd, path):
                    path.unlink()
            except BlockingIOError:
                pass  # a live process is generating that id
            finally:
                os.close(fd)

    def close(self) -> None:
        """Release every lock this object holds (claims first, then the run lock)."""
        for caption_id in list(self._claims):
            self.release(caption_id)
        if self._run >= 0:
            os.close(self._run)
            self._run = -1
