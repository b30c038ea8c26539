"""The fuzz suite's registry of bad-input classes (``tests/scripts/test_fuzz.py``) and its shared strategies.

A *bad-input class* is one kind of wrong value for one argument of one public entry point, named
``<entry point>.<argument>.<kind>`` (e.g. ``refine_noise.step_size.nan_inf``).  Each class has a
hypothesis strategy of values of that kind and a call that passes one of them, every other argument
valid.  The property every class must hold: the call raises ``TypeError`` or ``ValueError`` (argparse
exits with code 2 for the command lines) and the message names the argument.  :data:`COVERED`
collects the classes that held in this session; ``tests/conftest.py`` prints the count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Set

from hypothesis import strategies as st

__all__ = ["BadInput", "REGISTRY", "COVERED", "bad", "NAN_INF", "NOT_A_NUMBER", "NOT_AN_INT", "NON_POSITIVE", "NEGATIVE"]


@dataclass(frozen=True)
class BadInput:
    """One bad-input class: ``call(value)`` must raise a ``TypeError``/``ValueError`` naming ``argument``."""

    name: str
    argument: str
    values: st.SearchStrategy
    call: Callable[[Any], Any]
    examples: int


#: Every registered class, by name, in registration order.
REGISTRY: Dict[str, BadInput] = {}
#: Names of the classes whose property held in this test session.
COVERED: Set[str] = set()


def bad(name: str, argument: str, values: st.SearchStrategy, examples: int = 8) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register ``call`` as the bad-input class ``name`` (decorator)."""

    def register(call: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if name in REGISTRY:
            raise ValueError(f"bad-input class {name!r} registered twice")
        REGISTRY[name] = BadInput(name, argument, values, call, examples)
        return call

    return register


def names() -> List[str]:
    return list(REGISTRY)


#: NaN and both infinities.
NAN_INF = st.sampled_from([math.nan, math.inf, -math.inf])
#: Values of the wrong type where a real number is expected (bools are not numbers here).
NOT_A_NUMBER = st.one_of(
    st.text(max_size=4), st.none(), st.booleans(), st.lists(st.floats(allow_nan=False), max_size=2),
    st.just(object()), st.just(1 + 2j),
)
#: Values of the wrong type where an int is expected.
NOT_AN_INT = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3), st.none(), st.booleans())
#: Finite numbers ≤ 0 (ints and floats).
NON_POSITIVE = st.one_of(st.integers(max_value=0), st.floats(max_value=0.0, allow_nan=False, allow_infinity=False))
#: Finite numbers < 0.
NEGATIVE = st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
