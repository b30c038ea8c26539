"""MS-COCO captions and the reference scripts' caption order (no model code, no ``fcntl``: works on every OS).

* :func:`load_captions` reads a COCO captions JSON (``captions_val2014.json`` of
  ``annotations_trainval2014.zip``) and checks it;
* :func:`shuffled` orders it as the public reference scripts do: Python's ``random.shuffle`` from
  ``random.seed(seed)`` (see ``docs/guides/reproducing.md``);
* :func:`shard` and :func:`chunks` split a list among processes and into batches.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Set, TypeVar, Union

from ..utils.types import PathLike

__all__ = ["Caption", "load_captions", "reference_rng", "shuffled", "shard", "chunks"]

T = TypeVar("T")


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


def chunks(items: Sequence[T], size: int) -> Iterator[List[T]]:
    """Consecutive batches of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
