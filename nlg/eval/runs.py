"""Building blocks for large, resumable generation runs (``core_experiments/generate_images.py``).

* :func:`load_captions` reads a COCO captions JSON and checks it; :func:`shuffled` orders it as the
  public reference scripts do: Python's ``random.shuffle`` from ``random.seed(seed)`` (see
  ``docs/guides/reproducing.md``).
* :func:`image_seed` / :func:`image_generator` give every image its own generator, seeded from
  ``(seed, caption id)``, so an image does not depend on its batch, its process or a resumption.
* :func:`atomic_write` writes through a temporary file and ``os.replace``: a file is whole or absent.
* :class:`Manifest` is an append-only JSONL log, one record per finished image, that tolerates a
  torn last line; :class:`RunFolder` ties images, manifest and the run's settings together and
  refuses to mix runs with different settings.
* :func:`generate_images` is the generation loop itself, over :class:`nlg.NoiseLevelGuidance`; it
  saves ``uint8(clip(255·x, 0, 255))`` (truncation, as the reference does), not diffusers' rounding.
  It claims each id first (:meth:`RunFolder.claim`, an ``flock``), so two runs on one folder never
  make or record an image twice; :meth:`RunFolder.prepare` removes damaged PNGs (:func:`whole_png`),
  so a resume regenerates them.
* :func:`run_cli` reports a full disk in one line (exit code 1); rerunning the command resumes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar, Union

import numpy as np
import torch

from ..utils.io import DISK_FULL, TMP_SUFFIX, atomic_write
from ..utils.types import PathLike

__all__ = [
    "SCHEDULERS",
    "Caption",
    "load_captions",
    "shuffled",
    "reference_rng",
    "to_uint8",
    "reference_sigma_alpha_bars",
    "shard",
    "process_state",
    "run_cli",
    "image_seed",
    "image_generator",
    "atomic_write",
    "Manifest",
    "RunFolder",
    "whole_png",
    "generate_images",
]

T = TypeVar("T")
#: The schedulers SD / SDXL pipelines ship with, by short name.
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}
#: Per-id claim files (``.<id>.claim``), locked with ``flock`` while a process generates that id.
CLAIM_SUFFIX = ".claim"
#: Claims this process holds: claim file -> the descriptor that holds its lock (see :meth:`RunFolder.claim`).
_CLAIMS: Dict[Path, int] = {}
#: Every live process of a run holds a shared ``flock`` on the folder's ``.run.lock`` (see :meth:`RunFolder.hold`).
RUN_LOCK = ".run.lock"
_HELD: Dict[Path, int] = {}


@dataclass(frozen=True)
class Caption:
    """One COCO caption annotation.

    Args:
        id (`int`): the annotation id; the image is saved as ``<id>.png``.
        caption (`str`): the prompt.
        image_id (`int`, *optional*): the COCO image the caption describes.
    """

    id: int
    caption: str
    image_id: Optional[int] = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_captions(path: PathLike, *, name: str = "prompts_path") -> List[Caption]:
    """Read ``{"annotations": [{"id", "image_id", "caption"}, ...]}`` (MS-COCO captions format).

    Raises:
        ValueError: naming ``name`` if the file is missing, not JSON, has no ``annotations`` list, or
            holds an entry without an integer ``id`` and a string ``caption``, or a repeated id.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: {path} does not exist or is not a file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{name}: {path} is not valid UTF-8 JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f'{name}: {path} must be a COCO captions JSON, an object with an "annotations" list')
    captions: List[Caption] = []
    seen: Set[int] = set()
    for index, entry in enumerate(data["annotations"]):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or not isinstance(entry.get("caption"), str):
            raise ValueError(f'{name}: annotations[{index}] needs an integer "id" and a string "caption", got {entry!r:.200}')
        image_id = entry.get("image_id")
        if image_id is not None and not _is_int(image_id):
            raise ValueError(f'{name}: annotations[{index}] has a non-integer "image_id" {image_id!r}')
        if entry["id"] in seen:
            raise ValueError(f"{name}: caption id {entry['id']} appears more than once")
        seen.add(entry["id"])
        captions.append(Caption(id=entry["id"], caption=entry["caption"], image_id=image_id))
    if not captions:
        raise ValueError(f"{name}: {path} has an empty annotations list")
    return captions


def reference_rng(seed: int) -> random.Random:
    """The Python generator the reference scripts shuffle with: ``random.seed(seed)`` of the global
    ``random`` module holds the same state as ``random.Random(seed)``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return random.Random(seed)


def shuffled(items: Sequence[T], rng: Union[int, random.Random]) -> List[T]:
    """A copy of ``items`` shuffled in place by Python's ``random.shuffle`` (Fisher-Yates), as the reference does.

    Args:
        items (`Sequence`): e.g. every caption of the captions file, in file order.
        rng (`int` or `random.Random`): a seed for a fresh :func:`reference_rng`, or a generator whose
            state continues (the reference's metrics script shuffles the captions, then the real images,
            with one generator).
    """
    generator = reference_rng(rng) if not isinstance(rng, random.Random) else rng
    order = list(items)
    generator.shuffle(order)
    return order


def shard(items: Sequence[T], index: int, count: int) -> List[T]:
    """Process ``index``'s share of ``items`` among ``count`` processes: every ``count``-th item.

    The shards are disjoint and their union is ``items``.  Interleaving keeps shards balanced even
    when a resumed run has finished a prefix of the list.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got {index}")
    return list(items[index::count])


def image_seed(seed: int, caption_id: int) -> int:
    """A 63-bit seed for one image, a hash of ``(seed, caption_id)``: distinct ids give unrelated streams."""
    digest = hashlib.sha256(f"nlg-image:{int(seed)}:{int(caption_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_generator(seed: int, caption_id: int) -> torch.Generator:
    """A CPU generator for one image (CPU draws are identical on every device and machine)."""
    return torch.Generator("cpu").manual_seed(image_seed(seed, caption_id))


def process_state() -> Any:
    """``accelerate``'s ``PartialState``: this process's rank, the process count and its device.

    Without a GPU it asks for CPU processes, so ``accelerate launch --multi_gpu --num_processes 2``
    (torchrun) gives two gloo-connected CPU processes; on one process it is a no-op.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


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


def chunks(items: Sequence[T], size: int) -> Iterator[List[T]]:
    """Consecutive batches of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


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
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


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
    folder whose recorded settings differ is refused by :meth:`check` unless ``overwrite``.

    Args:
        path (`str` or `Path`): the folder.
        settings (`Dict[str, Any]`): JSON-serialisable settings of this run.
    """

    CONFIG = "run_config.json"
    MANIFEST = "manifest.jsonl"

    def __init__(self, path: PathLike, settings: Dict[str, Any]) -> None:
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))  # normalised as it will be read back
        self.manifest = Manifest(self.path / self.MANIFEST)

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

    def recorded_settings(self) -> Optional[Dict[str, Any]]:
        """The settings recorded in the folder's ``run_config.json``, or None if there are none (or unreadable)."""
        return self._previous()

    def _previous(self) -> Optional[Dict[str, Any]]:
        """The recorded settings, or None if there is no readable ``run_config.json``."""
        config = self.path / self.CONFIG
        if not config.is_file():
            return None
        try:
            previous = json.loads(config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return previous if isinstance(previous, dict) else None

    def same_settings(self) -> bool:
        """True if the folder records exactly this run's settings (its images can be kept and resumed)."""
        return self._previous() == self.settings

    def check(self, *, overwrite: bool = False) -> None:
        """Raise ``ValueError`` if the folder holds a run with other settings and not ``overwrite`` (read-only).

        A folder with the same settings is always accepted: the run resumes there.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output_dir: {self.path} exists and is not a folder")
        if overwrite or self.same_settings():
            return
        config = self.path / self.CONFIG
        previous = self._previous()
        if config.exists() and previous is None:
            raise ValueError(f"output_dir: {config} is unreadable; pass --overwrite to start afresh")
        if previous is not None:
            differ = sorted(k for k in set(previous) | set(self.settings) if previous.get(k) != self.settings.get(k))
            details = ", ".join(f"{k}: {previous.get(k)!r} -> {self.settings.get(k)!r}" for k in differ)
            raise ValueError(
                f"output_dir: {self.path} holds a run with different settings ({details}); "
                "use another --output_dir or pass --overwrite to replace it"
            )
        if any(p.suffix == ".png" for p in self._ours()):
            raise ValueError(
                f"output_dir: {self.path} holds images from a run with unknown settings (no {self.CONFIG}); "
                "pass --overwrite to replace them"
            )

    def prepare(self, *, overwrite: bool = False) -> bool:
        """Create the folder, drop stale temporaries, repair the manifest and record the settings.

        With ``overwrite``, the images, manifest and settings of a run with *other* (or unknown)
        settings are deleted first; a run with the same settings is resumed and loses nothing.  Call
        from one process only, after :meth:`check`.  Returns True if a previous run was replaced.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self.hold()
        self.check(overwrite=overwrite)
        replace = overwrite and not self.same_settings() and bool(self._ours())
        if replace:  # alone, or not at all: no live run of the old settings may lose its images under it
            self._lock_alone()
            replace = not self.same_settings() and bool(self._ours())  # read again under the exclusive lock
        damaged = 0
        for p in self._ours():
            if replace or (p.name.endswith(TMP_SUFFIX) and not _writer_alive(p)):
                p.unlink(missing_ok=True)
            elif p.suffix == ".png" and not whole_png(p):
                p.unlink()  # torn or corrupt (not written by atomic_write, or a bad disk): it is regenerated
                damaged += 1
        if damaged:
            print(f"{self.path}: removed {damaged} damaged image(s); they will be generated again", file=sys.stderr)
        _clear_stale_claims(self.path)
        self.manifest.repair()
        if not self.same_settings():
            write_json(self.path / self.CONFIG, self.settings)
        self.hold()  # back to sharing the folder (after an exclusive replacement)
        return replace

    def _lock_path(self) -> Path:
        return (self.path / RUN_LOCK).resolve()

    def _lock_alone(self) -> None:
        """Take the run lock exclusively, or refuse: another live process is using the folder."""
        path = self._lock_path()
        held = _HELD.pop(path, None)
        if held is not None:
            os.close(held)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # a fresh description: flock has no atomic upgrade
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"output_dir: a live run is writing {self.path}; --overwrite would delete its images, "
                             "so stop it first or use another --output_dir") from None
        _HELD[path] = fd

    def hold(self) -> None:
        """Hold a shared lock on the folder for the life of this process (idempotent).

        Processes of runs that may share the folder hold it together; only :meth:`prepare` replacing a
        run with other settings needs it alone, and refuses while anyone else holds it.
        """
        path = self._lock_path()
        fd = _HELD.get(path)
        if fd is None:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            _HELD[path] = fd
        fcntl.flock(fd, fcntl.LOCK_SH)  # converts an exclusive lock of this process; waits out a replacement

    def finished(self) -> Set[int]:
        """Ids with both a manifest record and an image (an image is renamed into place before its record)."""
        return {i for i in self.manifest.records() if self.image_path(i).exists()}

    def claim(self, captions: Sequence[Caption]) -> List[Caption]:
        """Claim ``captions`` for this process; return those it got, to generate, then :meth:`release`.

        A claim is an exclusive ``flock`` on ``.<id>.claim`` in the folder.  Ids another live process
        has claimed, or that were finished since this process looked, are left out, so two runs started
        by mistake on one folder never generate (or record) an image twice.  The kernel drops a dead
        process's locks, so its claims lapse with it.
        """
        self.hold()
        claimed: List[Caption] = []
        for caption in captions:
            path = self.path / f".{caption.id}{CLAIM_SUFFIX}"
            stale = _CLAIMS.pop(path, None)
            if stale is not None:  # still held from a batch of this process that failed
                os.close(stale)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # another process is generating it
                continue
            if not _same_file(fd, path):  # the claim was released (or cleared) between open and lock
                os.close(fd)
                continue
            if self.image_path(caption.id).exists() and caption.id in self.manifest.records():
                path.unlink(missing_ok=True)  # finished by another process meanwhile (we may have re-created the file)
                os.close(fd)
                continue
            _CLAIMS[path] = fd
            claimed.append(caption)
        return claimed

    def release(self, captions: Sequence[Caption]) -> None:
        """Drop this process's claims on ``captions`` (their images and records are written)."""
        for caption in captions:
            path = self.path / f".{caption.id}{CLAIM_SUFFIX}"
            fd = _CLAIMS.pop(path, None)
            if fd is not None:
                path.unlink(missing_ok=True)  # while still locked: a waiting process re-checks and skips
                os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _clear_stale_claims(folder: Path) -> None:
    """Remove claim files no live process holds (left by a crash)."""
    for path in folder.glob(f".*{CLAIM_SUFFIX}"):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                path.unlink()
        except BlockingIOError:
            pass  # a live process is generating that id
        finally:
            os.close(fd)


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


def _save_png(array: np.ndarray) -> Callable[[BinaryIO], None]:
    from PIL import Image

    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return lambda handle: image.save(handle, format="PNG")


def reference_sigma_alpha_bars(scheduler: Any, inference_steps: int) -> Tuple[float, float]:
    """The ᾱ the reference script's v→ε conversion implies on its first batch and on every later one.

    The reference converts NLG's model output with ``σ = scheduler.sigmas[0]`` (``α = 1/√(1+σ²)``,
    i.e. ``ᾱ = 1/(1+σ²)``) instead of the reference timestep's own σ.  Before the first pipeline call
    ``set_timesteps`` has not run, so its first batch reads the *training* schedule's ``sigmas[0]``,
    the σ of t = 0 (≈ 0.029 for Stable Diffusion: ε ≈ v); later batches read the first sampling σ
    (σ of t = 999 for DPM-Solver++ with ``linspace`` spacing, the correct value).

    Returns:
        ``(first_batch, later_batches)`` values of ᾱ.

    Raises:
        ValueError: if the scheduler has no ``sigmas`` before ``set_timesteps``.
    """
    fresh = type(scheduler).from_config(scheduler.config)
    sigmas = getattr(fresh, "sigmas", None)
    if sigmas is None or len(sigmas) == 0:
        raise ValueError(f"{type(scheduler).__name__} has no sigmas before set_timesteps; the reference's σ bug needs "
                         "a scheduler that has them (--scheduler dpm++, the reference's)")
    first = float(sigmas[0])
    fresh.set_timesteps(inference_steps)
    later = float(fresh.sigmas[0])
    return 1.0 / (1.0 + first**2), 1.0 / (1.0 + later**2)


@contextmanager
def _alpha_bar_at(scheduler: Any, timestep: Optional[int], alpha_bar: Optional[float]) -> Iterator[None]:
    """Within the block, ``scheduler.alphas_cumprod[timestep]`` reads ``alpha_bar`` (nothing if None)."""
    if alpha_bar is None:
        yield
        return
    original = scheduler.alphas_cumprod
    patched = original.clone()
    patched[len(original) - 1 if timestep is None else timestep] = alpha_bar
    scheduler.alphas_cumprod = patched
    try:
        yield
    finally:
        scheduler.alphas_cumprod = original


def generate_images(
    pipe: Any,
    guidance: Any,
    captions: Sequence[Caption],
    folder: RunFolder,
    *,
    seed: int,
    batch_size: int,
    pipeline_kwargs: Optional[Dict[str, Any]] = None,
    extra_record: Optional[Dict[str, Any]] = None,
    progress: Optional[Any] = None,
    alpha_bar_override: Optional[Callable[[int], Optional[float]]] = None,
    fixed_noise: Optional[Callable[[int], torch.Tensor]] = None,
) -> int:
    """Generate ``<id>.png`` for every caption not yet finished in ``folder``; return how many were made.

    Every image has its own generator (:func:`image_generator`), which draws its initial noise, its
    NLG refinement noise and any sampler noise, so images do not depend on ``batch_size``.  Each
    batch is refined (:meth:`nlg.NoiseLevelGuidance.refine`), sampled by the unmodified pipeline with
    ``output_type="np"``, saved as :func:`to_uint8` (the reference's truncation) atomically, then its
    manifest records are appended.

    Args:
        pipe: a diffusers Stable Diffusion (XL) pipeline, or any pipeline NLG supports.
        guidance (`NoiseLevelGuidance`): the refinement; ``refining_steps=0`` is plain generation.
        captions (`Sequence[Caption]`): this process's captions, in order.
        folder (`RunFolder`): where images and records go; must have been prepared.
        seed (`int`): the run seed.
        batch_size (`int`): images per pipeline call.
        pipeline_kwargs (`Dict[str, Any]`, *optional*): e.g. ``num_inference_steps``, ``guidance_scale``,
            ``height``, ``width``.
        extra_record (`Dict[str, Any]`, *optional*): added to every manifest record (e.g. the process index).
        progress (*optional*): a tqdm bar, advanced by one per image.
        alpha_bar_override (`Callable[[int], Optional[float]]`, *optional*): caption id → the ᾱ NLG
            converts the model output with at its reference timestep (None: the scheduler's own).  Used
            to reproduce the reference script's σ bug (``--reference_sigma_bug``).
        fixed_noise (`Callable[[int], torch.Tensor]`, *optional*): caption id → the one refinement noise ``z``
            repeated at every NLG step (one image's latent shape).  Used to reproduce the reference
            script's repeated noise (``--reference_noise_bug``).
    """
    done = folder.finished()
    todo = [c for c in captions if c.id not in done]
    groups: Dict[Optional[float], List[Caption]] = {}
    for c in todo:
        groups.setdefault(None if alpha_bar_override is None else alpha_bar_override(c.id), []).append(c)
    call_kwargs = dict(pipeline_kwargs or {})
    size = {k: call_kwargs.pop(k) for k in ("height", "width") if k in call_kwargs}
    made = 0
    for alpha_bar, group in groups.items():
        for batch in chunks(group, batch_size):
            batch = folder.claim(batch)  # without ids another process is generating or has finished
            if not batch:
                continue
            generators = [image_generator(seed, c.id) for c in batch]
            prompts = [c.caption for c in batch]
            with _alpha_bar_at(pipe.scheduler, guidance.reference_timestep, alpha_bar):
                repeated = None if fixed_noise is None else torch.stack([fixed_noise(c.id) for c in batch])
                refinement = guidance.refine(pipe, prompts, generator=generators, fixed_noise=repeated, **size)
            with torch.inference_mode():
                output = pipe(
                    latents=refinement.latents,
                    generator=generators,
                    num_images_per_prompt=1,
                    output_type="np",
                    **size,
                    **refinement.conditioning,
                    **call_kwargs,
                )
            for caption, array in zip(batch, to_uint8(output.images)):
                atomic_write(folder.image_path(caption.id), _save_png(array))
            norms = refinement.step_norms.t().tolist()  # (B, K)
            folder.manifest.append(
                {
                    "id": c.id,
                    "image_id": c.image_id,
                    "caption": c.caption,
                    "seed": seed,
                    "image_seed": image_seed(seed, c.id),
                    "flags": folder.settings,
                    "step_norms": norms[i],
                    **({} if alpha_bar is None else {"alpha_bar": alpha_bar}),
                    **(extra_record or {}),
                }
                for i, c in enumerate(batch)
            )
            folder.release(batch)
            made += len(batch)
            if progress is not None:
                progress.update(len(batch))
    return made
