"""Building blocks for large, resumable generation runs (``core_experiments/generate_images.py``).

* :func:`load_captions` reads a COCO captions JSON and checks it; :func:`shuffled` orders it with a
  seeded ``torch.randperm``.
* :func:`image_seed` / :func:`image_generator` give every image its own generator, seeded from
  ``(seed, caption id)``, so an image does not depend on its batch, its process or a resumption.
* :func:`atomic_write` writes through a temporary file and ``os.replace``: a file is whole or absent.
* :class:`Manifest` is an append-only JSONL log, one record per finished image, that tolerates a
  torn last line; :class:`RunFolder` ties images, manifest and the run's settings together and
  refuses to mix runs with different settings.
* :func:`generate_images` is the generation loop itself, over :class:`nlg.NoiseLevelGuidance`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, TypeVar, Union

import torch

__all__ = [
    "SCHEDULERS",
    "Caption",
    "load_captions",
    "shuffled",
    "shard",
    "process_state",
    "run_cli",
    "image_seed",
    "image_generator",
    "atomic_write",
    "Manifest",
    "RunFolder",
    "generate_images",
]

PathLike = Union[str, Path]
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
#: Temporary files are hidden and end in ``.tmp``, so no ``*.png`` glob ever sees a partial image.
TMP_SUFFIX = ".tmp"


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


def shuffled(items: Sequence[T], seed: int) -> List[T]:
    """``items`` in the order of ``torch.randperm`` drawn from a generator seeded with ``seed``."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))
    return [items[i] for i in order.tolist()]


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
    sys.exit(code)


def chunks(items: Sequence[T], size: int) -> Iterator[List[T]]:
    """Consecutive batches of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` into a hidden temporary file, then rename it into place.

    Readers (and a resumed run after ``kill -9``) see either the old file, or none, or the whole new
    file, never a partial one.  The temporary file is removed if ``write`` fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: PathLike, data: Any) -> None:
    """Atomically write ``data`` as indented UTF-8 JSON."""
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
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
            os.write(fd, payload)
            os.fsync(fd)
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

    def check(self, *, overwrite: bool = False) -> None:
        """Raise ``ValueError`` if the folder holds a run with other settings (read-only)."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output_dir: {self.path} exists and is not a folder")
        if overwrite:
            return
        config = self.path / self.CONFIG
        if config.exists():
            try:
                previous = json.loads(config.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                previous = None
            if not isinstance(previous, dict):
                raise ValueError(f"output_dir: {config} is unreadable; pass --overwrite to start afresh")
            differ = sorted(k for k in set(previous) | set(self.settings) if previous.get(k) != self.settings.get(k))
            if differ:
                details = ", ".join(f"{k}: {previous.get(k)!r} -> {self.settings.get(k)!r}" for k in differ)
                raise ValueError(
                    f"output_dir: {self.path} holds a run with different settings ({details}); "
                    "use another --output_dir or pass --overwrite to replace it"
                )
        elif any(p.suffix == ".png" for p in self._ours()):
            raise ValueError(
                f"output_dir: {self.path} holds images from a run with unknown settings (no {self.CONFIG}); "
                "pass --overwrite to replace them"
            )

    def prepare(self, *, overwrite: bool = False) -> None:
        """Create the folder, clear it if ``overwrite``, drop stale temporaries, repair the manifest and
        record the settings.  Call from one process only, after :meth:`check`."""
        self.check(overwrite=overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        for p in self._ours():
            if overwrite or p.name.endswith(TMP_SUFFIX):
                p.unlink(missing_ok=True)
        self.manifest.repair()
        write_json(self.path / self.CONFIG, self.settings)

    def finished(self) -> Set[int]:
        """Ids with both a manifest record and an image (an image is renamed into place before its record)."""
        return {i for i in self.manifest.records() if self.image_path(i).exists()}


def _save_png(image: Any) -> Callable[[BinaryIO], None]:
    return lambda handle: image.save(handle, format="PNG")


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
) -> int:
    """Generate ``<id>.png`` for every caption not yet finished in ``folder``; return how many were made.

    Every image has its own generator (:func:`image_generator`), which draws its initial noise, its
    NLG refinement noise and any sampler noise, so images do not depend on ``batch_size``.  Each
    batch's images are written atomically, then their manifest records appended.

    Args:
        pipe: a diffusers Stable Diffusion (XL) pipeline.
        guidance (`NoiseLevelGuidance`): the refinement; ``refining_steps=0`` is plain generation.
        captions (`Sequence[Caption]`): this process's captions, in order.
        folder (`RunFolder`): where images and records go; must have been prepared.
        seed (`int`): the run seed.
        batch_size (`int`): images per pipeline call.
        pipeline_kwargs (`Dict[str, Any]`, *optional*): e.g. ``num_inference_steps``, ``guidance_scale``,
            ``height``, ``width``.
        extra_record (`Dict[str, Any]`, *optional*): added to every manifest record (e.g. the process index).
        progress (*optional*): a tqdm bar, advanced by one per image.
    """
    done = folder.finished()
    todo = [c for c in captions if c.id not in done]
    made = 0
    for batch in chunks(todo, batch_size):
        generators = [image_generator(seed, c.id) for c in batch]
        output, refinement = guidance(
            pipe,
            [c.caption for c in batch],
            generator=generators,
            output_type="pil",
            return_refinement=True,
            **(pipeline_kwargs or {}),
        )
        for caption, image in zip(batch, output.images):
            atomic_write(folder.image_path(caption.id), _save_png(image))
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
                **(extra_record or {}),
            }
            for i, c in enumerate(batch)
        )
        made += len(batch)
        if progress is not None:
            progress.update(len(batch))
    return made
