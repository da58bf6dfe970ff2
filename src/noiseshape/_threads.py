"""How many threads the C core uses (all cores unless told otherwise)."""

from __future__ import annotations

import functools
import numbers
import os

from ._errors import fail

__all__ = ["MAX_THREADS", "get_num_threads", "set_num_threads"]

_ENV = "NOISESHAPE_NUM_THREADS"
#: The most threads a call may ask for (the C core also never starts more than it has work for).
MAX_THREADS = 4096
_RANGE = f"1..{MAX_THREADS}"
_requested: int | None = None


_parsed: tuple[str, int | None] = ("", None)  # the last setting read, and its value


def _from_env() -> int | None:
    global _parsed
    raw = os.environ.get(_ENV, "")
    if raw == _parsed[0]:  # read on every call, parsed once
        return _parsed[1]
    if not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise fail(_ENV, f"{_ENV} is {raw!r}; set it to an integer in {_RANGE} or unset it (all CPUs)")
    _parsed = (raw, value)
    return value


def get_num_threads() -> int:
    """Threads used by the CPU kernels: :func:`set_num_threads`, else ``NOISESHAPE_NUM_THREADS``, else all CPUs.

    Results never depend on it: every mask element is a pure function of its global coordinate.
    A bad ``NOISESHAPE_NUM_THREADS`` is reported here, so by every call that runs the C core, however small.
    """
    if _requested is not None:
        return _requested
    env = _from_env()
    if env is not None:
        return env
    return _default_threads()


@functools.cache
def _default_threads() -> int:
    from . import _core

    return int(_core.default_threads())


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads in the CPU kernels: an integer in 1..4096 (NumPy ints too); ``None`` restores the default."""
    global _requested
    if n is None:
        _requested = None
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_THREADS:
        raise fail("set_num_threads", f"n is {n!r}; give an integer in {_RANGE}, or None for all CPUs")
    _requested = int(n)
