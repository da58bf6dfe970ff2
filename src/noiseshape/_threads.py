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


#: ``NOISESHAPE_NUM_THREADS`` as read at the first call (``_env_read``). A bad value is not kept, so
#: every call reports it until it is fixed; a good one is read once, like ``OMP_NUM_THREADS``.
_env_threads: int | None = None
_env_read = False


def _from_env() -> int | None:
    global _env_threads, _env_read
    if _env_read:
        return _env_threads
    raw = os.environ.get(_ENV, "")
    if not raw.strip():
        _env_threads, _env_read = None, True
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise fail(_ENV, f"{_ENV} is {raw!r}; set it to an integer in {_RANGE} or unset it (all CPUs)")
    _env_threads, _env_read = value, True
    return value


def get_num_threads() -> int:
    """Threads used by the CPU kernels: :func:`set_num_threads`, else ``NOISESHAPE_NUM_THREADS``, else all CPUs.

    Results never depend on it: every mask element is a pure function of its global coordinate.
    ``NOISESHAPE_NUM_THREADS`` is read at the first call; a bad value is reported here, so by every
    call that runs the C core, however small, until it is fixed.
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
