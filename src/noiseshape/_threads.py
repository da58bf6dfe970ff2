"""How many threads the C core uses (all cores unless told otherwise)."""

from __future__ import annotations

import functools
import os

from ._errors import NoiseShapeError

__all__ = ["get_num_threads", "set_num_threads"]

_ENV = "NOISESHAPE_NUM_THREADS"
_requested: int | None = None


def _from_env() -> int | None:
    raw = os.environ.get(_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise NoiseShapeError(f"{_ENV} is {raw!r}; set it to a positive integer or unset it") from None
    if value < 1:
        raise NoiseShapeError(f"{_ENV} is {raw!r}; set it to a positive integer or unset it")
    return value


def get_num_threads() -> int:
    """Threads used by the CPU kernels: :func:`set_num_threads`, else ``NOISESHAPE_NUM_THREADS``, else all CPUs.

    Results never depend on it: every mask element is a pure function of its global coordinate.
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

    return _core.default_threads()


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads in the CPU kernels (``None`` restores the default)."""
    global _requested
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise NoiseShapeError(f"set_num_threads: n is {n!r}; give a positive integer, or None for all CPUs")
    _requested = n
