"""A run folder: ``<id>.png`` images, their manifest and the run's settings, shared safely by processes.

* :class:`Manifest` is an append-only JSONL log, one record per finished image, that tolerates a
  torn last line.
* :class:`RunFolder` ties images, manifest and the run's settings together and refuses to mix runs
  with different settings.  Its locks (:class:`~nlg.eval.locks.FolderLocks`) are state of the
  instance: it claims each id before it is generated, so two runs on one folder never make or record
  an image twice.  :meth:`RunFolder.prepare` (one process, cheap: no image is read) readies the folder;
  :meth:`RunFolder.verify` removes damaged PNGs among the ids it is given, so each process of a
  multi-process run checks its own share and no process waits while another rescans the folder.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set

from ..utils.io import TMP_SUFFIX, atomic_write
from ..utils.types import PathLike
from .captions import Caption, _is_int
from .png import whole_png
from .process import write_json

__all__ = ["Manifest", "RunFolder"]


class Manifest:
    """An append-only JSONL log with one record per finished image.

    Each :meth:`append` is a single ``write`` on a file opened with ``O_APPEND``, so processes of
    one run may share the file.  A line torn by a kill is ignored by :meth:`records` and removed
    by :meth:`repair`.

    Args:
        path (`str` or `Path`): the ``.jsonl`` file.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    def _lines(self) -> List[str]:
        if not self.path.exists():
            return []
        return self.path.read_text(encoding="utf-8", errors="replace").split("\n")

    def records(self) -> Dict[int, Dict[str, Any]]:
        """The last whole record of every id."""
        found: Dict[int, Dict[str, Any]] = {}
        for line in self._lines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # empty or torn line
            if isinstance(record, dict) and _is_int(record.get("id")):
                found[record["id"]] = record
        return found

    def repair(self) -> None:
        """Drop a torn final line (a kill during a write), so the next append starts on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            whole = data[: data.rfind(b"\n") + 1]
            atomic_write(self.path, lambda handle: handle.write(whole))

    def append(self, records: Iterable[Dict[str, Any]]) -> None:
        """Append ``records``, one JSON line each, in one write."""
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        if not payload:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, payload)
            if written != len(payload):  # a full disk: the torn line is ignored and repaired on resume
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            os.fsync(fd)
        except OSError as err:
            if err.filename is None:  # os.write/fsync name no file: say which, for run_cli's message
                raise OSError(err.errno, err.strerror, str(self.path)) from err
            raise
        finally:
            os.close(fd)


class RunFolder:
    """A folder of ``<id>.png`` images, their :class:`Manifest` and the run's settings.

    ``settings`` are whatever determines the images (model, sampler, NLG options, seed, prompts); a
    folder whose recorded settings differ is refused by :meth:`check` unless ``overwrite``.  Use it as a
    context manager (or call :meth:`close`) to release its locks.

    Args:
        path (`str` or `Path`): the folder.
        settings (`Dict[str, Any]`): JSON-serialisable settings of this run.
        accept_previous (`Mapping[str, Any]`, *optional*): setting name → an old value that a recorded run
            may hold instead of this run's value and still be resumed (e.g. a model's removed Hub id and
            its mirror).  :meth:`prepare` then records the change under ``"changes"`` in ``run_config.json``.
        hints (`Mapping[str, str]`, *optional*): setting name → advice added to :meth:`check`'s error when
            that setting differs; ``{old}`` is replaced by the recorded value.
    """

    CONFIG = "run_config.json"
    MANIFEST = "manifest.jsonl"
    #: Key of ``run_config.json`` listing accepted changes of settings; not itself a setting.
    CHANGES = "changes"

    def __init__(
        self,
        path: PathLike,
        settings: Dict[str, Any],
        *,
        accept_previous: Optional[Mapping[str, Any]] = None,
        hints: Optional[Mapping[str, str]] = None,
    ) -> None:
        from .locks import FolderLocks

        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))  # normalised as it will be read back
        if self.CHANGES in self.settings:
            raise ValueError(f"settings: {self.CHANGES!r} is reserved for the record of accepted changes")
        self.accept_previous = json.loads(json.dumps(dict(accept_previous or {})))
        self.hints = dict(hints or {})
        self.manifest = Manifest(self.path / self.MANIFEST)
        self.locks = FolderLocks(self.path)

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release this object's claims and its hold on the folder."""
        self.locks.close()

    def image_path(self, caption_id: int) -> Path:
        return self.path / f"{caption_id}.png"

    def _ours(self) -> List[Path]:
        """Files this class writes: images, manifest, settings and temporaries."""
        if not self.path.is_dir():
            return []
        return [
            p
            for p in self.path.iterdir()
            if (p.suffix == ".png" and p.stem.isdigit())
            or p.name in (self.CONFIG, self.MANIFEST)
            or (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX))
        ]

    def _recorded(self) -> Optional[Dict[str, Any]]:
        """The whole ``run_config.json`` (settings and changes), or None if there is none readable."""
        config = self.path / self.CONFIG
        if not config.is_file():
            return None
        try:
            previous = json.loads(config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return previous if isinstance(previous, dict) else None

    def recorded_settings(self) -> Optional[Dict[str, Any]]:
        """The settings recorded in the folder's ``run_config.json`` (without its changes), or None if there
        are none (or they are unreadable)."""
        recorded = self._recorded()
        if recorded is None:
            return None
        return {k: v for k, v in recorded.items() if k != self.CHANGES}

    def _accepted_changes(self) -> Optional[Dict[str, Any]]:
        """Setting → recorded old value, if the recorded settings equal this run's but for accepted old values
        (empty: identical); None if they differ otherwise or there are none."""
        previous = self.recorded_settings()
        if previous is None:
            return None
        changes = {k: previous[k] for k, old in self.accept_previous.items()
                   if k in previous and previous[k] == old and self.settings.get(k) != old}
        return changes if dict(previous, **{k: self.settings.get(k) for k in changes}) == self.settings else None

    def same_settings(self) -> bool:
        """True if the folder records this run's settings, or accepted old values of them (it is resumed)."""
        return self._accepted_changes() is not None

    def check(self, *, overwrite: bool = False) -> None:
        """Raise ``ValueError`` if the folder holds a run with other settings and not ``overwrite`` (read-only).

        A folder with the same settings is always accepted: the run resumes there.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output_dir: {self.path} exists and is not a folder")
        if overwrite or self.same_settings():
            return
        config = self.path / self.CONFIG
        previous = self.recorded_settings()
        if config.exists() and previous is None:
            raise ValueError(f"output_dir: {config} is unreadable; pass --overwrite to start afresh")
        if previous is not None:
            differ = sorted(k for k in set(previous) | set(self.settings) if previous.get(k) != self.settings.get(k))
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {self.settings.get(k)!r}" for k in differ)
            advice = "".join(f"; {self.hints[k].format(old=previous.get(k))}" for k in differ if k in self.hints)
            raise ValueError(
                f"output_dir: {self.path} holds a run with different settings ({details}); "
                f"use another --output_dir or pass --overwrite to replace it{advice}"
            )
        if any(p.suffix == ".png" for p in self._ours()):
            raise ValueError(
                f"output_dir: {self.path} holds images from a run with unknown settings (no {self.CONFIG}); "
                "pass --overwrite to replace them"
            )

    def prepare(self, *, overwrite: bool = False) -> bool:
        """Create the folder, drop stale temporaries and claims, repair the manifest and record the settings.

        With ``overwrite``, the images, manifest and settings of a run with *other* (or unknown)
        settings are deleted first; a run with the same settings is resumed and loses nothing.  Call
        from one process only, after :meth:`check`.  No image is read here (see :meth:`verify`), so the
        other processes of a run wait only for a directory listing.  Returns True if a previous run was replaced.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self.locks.hold()
        self.check(overwrite=overwrite)
        replace = overwrite and not self.same_settings() and bool(self._ours())
        if replace:  # alone, or not at all: no live run of the old settings may lose its images under it
            self.locks.lock_alone(f"output_dir: a live run is writing {self.path}; --overwrite would delete its "
                                  "images, so stop it first or use another --output_dir")
            replace = not self.same_settings() and bool(self._ours())  # read again under the exclusive lock
        for p in self._ours():
            if replace or (p.name.endswith(TMP_SUFFIX) and not _writer_alive(p)):
                p.unlink(missing_ok=True)
        self.locks.clear_stale_claims()
        self.manifest.repair()
        changes = self._accepted_changes() or {}
        recorded = self._recorded() or {}
        history = list(recorded.get(self.CHANGES, [])) if not replace else []
        history += [{"setting": k, "from": old, "to": self.settings.get(k)} for k, old in sorted(changes.items())]
        wanted = dict(self.settings, **({self.CHANGES: history} if history else {}))
        if recorded != wanted:
            write_json(self.path / self.CONFIG, wanted)
        self.locks.hold()  # back to sharing the folder (after an exclusive replacement)
        return replace

    def verify(self, caption_ids: Iterable[int]) -> int:
        """Remove the damaged ``<id>.png`` (:func:`~nlg.eval.png.whole_png`) among ``caption_ids``; return how
        many, so they are generated again.  Each process of a run verifies its own share."""
        damaged = 0
        for caption_id in caption_ids:
            path = self.image_path(caption_id)
            if path.exists() and not whole_png(path):
                path.unlink(missing_ok=True)  # torn or corrupt (not written by atomic_write, or a bad disk)
                damaged += 1
        if damaged:
            print(f"{self.path}: removed {damaged} damaged image(s); they will be generated again", file=sys.stderr)
        return damaged

    def hold(self) -> None:
        """Hold a shared lock on the folder for the life of this object (see :meth:`~nlg.eval.locks.FolderLocks.hold`)."""
        self.locks.hold()

    def finished(self) -> Set[int]:
        """Ids with both a manifest record and an image (an image is renamed into place before its record)."""
        return {i for i in self.manifest.records() if self.image_path(i).exists()}

    def claim(self, captions: Sequence[Caption]) -> List[Caption]:
        """Claim ``captions`` for this process; return those it got, to generate, then :meth:`release`.

        Ids another live process has claimed, or that were finished since this process looked, are left
        out, so two runs started by mistake on one folder never generate (or record) an image twice.
        """
        self.locks.hold()
        locked = [caption for caption in captions if self.locks.claim(caption.id)]
        records = self.manifest.records() if locked else {}  # read once, after locking: a finished id has its record
        claimed: List[Caption] = []
        for caption in locked:
            if caption.id in records and self.image_path(caption.id).exists():
                self.locks.release(caption.id)  # finished by another process meanwhile
                continue
            claimed.append(caption)
        return claimed

    def release(self, captions: Sequence[Caption]) -> None:
        """Drop this process's claims on ``captions`` (their images and records are written)."""
        for caption in captions:
            self.locks.release(caption.id)


def _writer_alive(tmp: Path) -> bool:
    """Whether the process whose pid is in the temporary file's name (``.<name>.<pid>.tmp``) still runs."""
    try:
        pid = int(tmp.name[: -len(TMP_SUFFIX)].rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
