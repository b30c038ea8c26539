"""Deprecated aliases kept for one release after a rename: calling or reading one warns with the new name."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Dict, Tuple

__all__ = ["deprecated_function", "deprecated_attributes"]


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}", DeprecationWarning, stacklevel=3)


def deprecated_function(fn: Callable[..., Any], old: str, new: str) -> Callable[..., Any]:
    """``fn`` under its old name ``old``: same signature and docstring, a ``DeprecationWarning`` naming ``new`` on each call."""

    @functools.wraps(fn)
    def alias(*args: Any, **kwargs: Any) -> Any:
        _warn(old, new)
        return fn(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old.rsplit(".", 1)[-1]
    alias.__doc__ = f"Deprecated alias of :func:`{new}` (one release).\n\n" + (fn.__doc__ or "")
    return alias


def deprecated_attributes(module: str, aliases: Dict[str, Tuple[str, Callable[[], Any]]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) serving ``aliases`` (old name → (new name, getter)) with a ``DeprecationWarning``."""

    def __getattr__(name: str) -> Any:
        if name in aliases:
            new, get = aliases[name]
            _warn(f"{module}.{name}", new)
            return get()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
