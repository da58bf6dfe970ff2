"""Noise shapes and rates: validation and resolution. Pure Python, no framework import.

A *noise shape* has one entry per input axis: ``None`` (an independent draw along this axis, whatever
its size at run time), ``1`` (one draw shared along this axis) or the axis' size. ``...`` may stand
once for all remaining axes. ``broadcast_dims`` is the other spelling: the axes that share a draw.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from ._errors import NoiseShapeError, axes_text, fail

__all__ = [
    "INDEX_LIMIT",
    "NoiseSpec",
    "check_flag",
    "check_index_range",
    "check_noise_args",
    "check_rate",
    "check_shape",
    "check_u64",
    "collapse",
    "resolve",
    "resolve_noise_shape",
]

#: Global mask indices ``j`` stay below this bound on every backend (torch carries them as int64).
INDEX_LIMIT = (1 << 63) - 1


@dataclass(frozen=True)
class NoiseSpec:
    """A noise shape resolved against an input shape.

    ``shape`` is the reduced shape ``R`` the mask is drawn at (sizes may be symbolic);
    ``shared[i]`` is true where the user asked for one draw along axis ``i`` (a literal ``1`` in
    ``noise_shape`` or ``i`` in ``broadcast_dims``); ``input_shape`` is the shape it was resolved for.
    """

    input_shape: tuple[Any, ...]
    shape: tuple[Any, ...]
    shared: tuple[bool, ...]

    @property
    def batch_shared(self) -> bool:
        """Whether axis 0 shares one draw by request (then ``batch_offset`` changes nothing)."""
        return not self.shape or self.shared[0]

    @property
    def full(self) -> bool:
        """Whether the mask has the input's shape (an independent draw per element)."""
        return all(not s or n == 1 for s, n in zip(self.shared, self.input_shape))

    def first_index(self, batch_offset: int = 0) -> Any:
        """Global index ``j`` of this array's first mask element: ``batch_offset * prod(R[1:])``."""
        if self.batch_shared or not batch_offset:
            return 0
        return batch_offset * math.prod(self.shape[1:])


def _fmt(value) -> str:
    if value is Ellipsis:
        return "..."
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_fmt(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if _is_plain_int(value):
        return str(int(value))
    return str(value) if _is_symbolic(value) else repr(value)


def _is_plain_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_numpy_bool(value) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")


def _is_symbolic(value) -> bool:
    return type(value).__name__ in ("SymInt", "SymFloat")


def _is_int(value) -> bool:
    return _is_plain_int(value) or _is_symbolic(value)


def _is_size_like(value) -> bool:
    """An integer that may not be concrete yet: a symbolic size, or an object that converts with ``__index__``."""
    if isinstance(value, bool) or _is_numpy_bool(value) or hasattr(value, "ndim"):
        return False
    return _is_symbolic(value) or hasattr(type(value), "__index__")


def _check_sizes(shape, *, name: str, op: str, spec: str | None, concrete: bool) -> tuple[Any, ...]:
    """``shape`` as a tuple of sizes; a clear error for anything but non-negative integers.

    With ``concrete=False`` sizes that are integers only at run time (``torch.SymInt``) pass through
    untouched; with ``concrete=True`` every size becomes an ``int``.
    """
    fix = "give a tuple of non-negative integers, e.g. (8, 3, 4)"
    entries = _entries(shape)
    if entries is None:
        raise fail(op, f"{name} is {shape!r} ({type(shape).__name__}); {fix}", spec=spec)
    sizes = tuple(entries)
    for axis, size in enumerate(sizes):
        if _is_plain_int(size):
            if size < 0:
                raise fail(op, f"{name}[{axis}] is {int(size)}; sizes cannot be negative: {fix}", spec=spec)
        elif concrete or not _is_size_like(size):
            raise fail(op, f"{name}[{axis}] is {size!r} ({type(size).__name__}); {fix}", spec=spec)
    if concrete:
        return tuple(int(s) for s in sizes)
    return sizes


def check_shape(shape: Iterable[int], *, op: str, name: str = "shape", spec: str | None = None) -> tuple[int, ...]:
    """Validate a concrete shape (non-negative Python or NumPy integers, never ``bool``) and return it as ints."""
    return _check_sizes(shape, name=name, op=op, spec=spec, concrete=True)


def _spec_text(noise_shape, broadcast_dims) -> str:
    parts = []
    if noise_shape is not None:
        parts.append(f"noise_shape={_fmt(noise_shape)}")
    if broadcast_dims is not None:
        parts.append(f"broadcast_dims={_fmt(broadcast_dims)}")
    return ", ".join(parts)


def _entries(value: Any) -> list[Any] | None:
    """The entries of an ordered collection (tuple, list, ``torch.Size``, 1-d array); None for anything else.

    Strings, mappings and sets iterate too, but not over sizes or axes in order; a 0-d array does not iterate.
    """
    if isinstance(value, (str, bytes, Mapping, AbstractSet)) or not isinstance(value, Iterable):
        return None
    try:
        return list(value)
    except TypeError:
        return None


def _as_sequence(value, name, op, shape, spec):
    entries = _entries(value)
    if entries is None:
        example = "(None, 1, None)" if name == "noise_shape" else "(1,)"
        raise fail(
            op,
            f"{name} is {value!r}; give a tuple with "
            + ("one entry per input axis" if name == "noise_shape" else "the axes that share a draw")
            + f", e.g. {name}={example}",
            shape=shape,
            spec=spec,
        )
    return entries


def _noise_entries(noise_shape, op, shape, spec, *, positive=False) -> tuple[list[Any], int]:
    """The entries of ``noise_shape`` and how many are ``...``; each is checked for its type and sign.

    With ``positive`` an entry 0 is refused too (a layer built for any input: 0 matches only an empty axis).
    """
    entries = _as_sequence(noise_shape, "noise_shape", op, shape, spec)
    n_ellipsis = sum(1 for e in entries if e is Ellipsis)  # `is`, never `==`: entries may be arrays
    if n_ellipsis > 1:
        raise fail(
            op,
            f"noise_shape has {n_ellipsis} ellipses; '...' may stand only once (for all remaining axes)",
            shape=shape,
            spec=spec,
        )
    for axis, entry in enumerate(entries):
        if entry is None or entry is Ellipsis:
            continue
        where = f"noise_shape[{axis}] is {_fmt(entry)}"
        if isinstance(entry, bool) or not _is_int(entry):
            if isinstance(entry, float) and entry.is_integer():
                fix = f"use the integer {int(entry)}"
            else:
                fix = "use None (same as the input), 1 (share one draw along this axis) or the axis size"
            raise fail(
                op,
                f"{where} ({type(entry).__name__}); each entry must be None, 1 or the axis size: {fix}",
                shape=shape,
                spec=spec,
            )
        if _is_plain_int(entry) and (entry < 0 or (positive and entry == 0)):
            what = "sizes cannot be negative" if entry < 0 else "a size 0 matches only an empty axis"
            raise fail(
                op,
                f"{where}; {what}: use None for the input's size whatever it is at run time, or 1 to share "
                "one draw along this axis",
                shape=shape,
                spec=spec,
            )
    return entries, n_ellipsis


def check_noise_args(noise_shape: Any, broadcast_dims: Any, *, op: str) -> tuple[Any, Any]:
    """Check ``noise_shape`` / ``broadcast_dims`` before any input is seen (a layer's constructor).

    Returns them normalised: ``noise_shape`` as a tuple, ``broadcast_dims`` as an ``int`` or a tuple
    of ints (``None`` stays ``None``). Entries are checked for type and sign here; sizes against an
    input are checked by :func:`resolve` at call time.
    """
    spec = _spec_text(noise_shape, broadcast_dims)
    if noise_shape is not None and broadcast_dims is not None:
        resolve((), noise_shape, broadcast_dims, op=op)  # raises the standard error
    if noise_shape is not None:
        noise_shape = tuple(_noise_entries(noise_shape, op, None, spec, positive=True)[0])
    if broadcast_dims is not None:
        if _is_plain_int(broadcast_dims):
            return noise_shape, int(broadcast_dims)
        broadcast_dims = tuple(_broadcast_axes(broadcast_dims, op, None, spec))
        for pos, d in enumerate(broadcast_dims):
            if d in broadcast_dims[:pos]:
                first = broadcast_dims.index(d)
                raise fail(
                    op,
                    f"broadcast_dims names axis {d} twice (entries {first} and {pos}); list each axis once",
                    spec=spec,
                )
    return noise_shape, broadcast_dims


def resolve(
    input_shape: Iterable[Any], noise_shape: Any = None, broadcast_dims: Any = None, *, op: str = "resolve_noise_shape"
) -> NoiseSpec:
    """Resolve ``noise_shape`` or ``broadcast_dims`` against ``input_shape``.

    Sizes of ``input_shape`` are passed through untouched where the spec does not constrain them,
    so symbolic sizes (``torch.SymInt``) are never forced to concrete integers.
    """
    spec = _spec_text(noise_shape, broadcast_dims)
    input_shape = _check_sizes(input_shape, name="input shape", op=op, spec=spec, concrete=False)
    ndim = len(input_shape)
    if noise_shape is not None and broadcast_dims is not None:
        raise fail(
            op,
            "noise_shape and broadcast_dims both given; they are two spellings of the same thing, "
            f"give only one{_same_as(input_shape, broadcast_dims, op)}",
            shape=input_shape,
            spec=spec,
        )
    if broadcast_dims is not None:
        return _resolve_broadcast_dims(input_shape, broadcast_dims, op, spec)
    if noise_shape is None:
        return NoiseSpec(input_shape, input_shape, (False,) * ndim)

    entries, n_ellipsis = _noise_entries(noise_shape, op, input_shape, spec)
    explicit = len(entries) - n_ellipsis
    if (n_ellipsis and explicit > ndim) or (not n_ellipsis and explicit != ndim):
        example = _fmt(tuple([None] + [1] * (ndim - 1))) if ndim else "()"
        raise fail(
            op,
            f"noise_shape has {explicit} entr{'y' if explicit == 1 else 'ies'} but the input has {axes_text(ndim)} "
            f"(input shape {_fmt(input_shape)}); give one entry per axis, "
            f"e.g. {example}, or write '...' for the axes you leave independent",
            shape=input_shape,
            spec=spec,
        )
    if n_ellipsis:
        at = next(i for i, e in enumerate(entries) if e is Ellipsis)
        entries = entries[:at] + [None] * (ndim - explicit) + entries[at + 1 :]

    reduced = []
    shared = []
    for axis, (entry, size) in enumerate(zip(entries, input_shape)):
        if entry is None:
            reduced.append(size)
            shared.append(False)
        elif entry == 1:
            reduced.append(1)
            shared.append(True)
        elif entry == size:
            reduced.append(size)
            shared.append(False)
        else:
            raise fail(
                op,
                f"noise_shape[{axis}] is {_fmt(entry)} but input axis {axis} has size {size} "
                f"(input shape {_fmt(input_shape)}); use {size}, None (same as the input) or 1 (share one draw "
                "along this axis)",
                shape=input_shape,
                spec=spec,
            )
    return NoiseSpec(input_shape, tuple(reduced), tuple(shared))


def _same_as(input_shape: tuple, broadcast_dims, op: str) -> str:
    """`` (broadcast_dims=(1,) is noise_shape=(None, 1, None))`` at the input's rank, for the error above."""
    ndim = len(input_shape)
    try:
        shared = _resolve_broadcast_dims(input_shape, broadcast_dims, op, "").shared
    except NoiseShapeError:  # not valid dims for this input: show the spelling of axis 1 instead
        if ndim < 2:
            return ""
        broadcast_dims, shared = (1,), tuple(i == 1 for i in range(ndim))
    noise_shape = tuple(1 if s else None for s in shared)
    return f" (broadcast_dims={_fmt(broadcast_dims)} is noise_shape={_fmt(noise_shape)})"


def _broadcast_axes(broadcast_dims, op, shape, spec) -> list[int]:
    """The entries of ``broadcast_dims`` (an int stands for a one-entry tuple), checked to be integers."""
    if _is_plain_int(broadcast_dims):
        broadcast_dims = (broadcast_dims,)
    dims = _as_sequence(broadcast_dims, "broadcast_dims", op, shape, spec)
    for pos, d in enumerate(dims):
        if isinstance(d, bool) or not _is_plain_int(d):
            raise fail(
                op,
                f"broadcast_dims[{pos}] is {d!r} ({type(d).__name__}); give integer axes, e.g. broadcast_dims=(1,)",
                shape=shape,
                spec=spec,
            )
    return [int(d) for d in dims]


def _resolve_broadcast_dims(input_shape, broadcast_dims, op, spec) -> NoiseSpec:
    ndim = len(input_shape)
    seen: dict[int, int] = {}
    for pos, d in enumerate(_broadcast_axes(broadcast_dims, op, input_shape, spec)):
        if not -ndim <= d < ndim:
            raise fail(
                op,
                f"broadcast_dims[{pos}] is {d} but the input has {axes_text(ndim)} "
                f"(input shape {_fmt(input_shape)}); valid axes are {-ndim}..{ndim - 1}",
                shape=input_shape,
                spec=spec,
            )
        axis = d % ndim
        if axis in seen:
            raise fail(
                op,
                f"broadcast_dims names axis {axis} twice (entries {seen[axis]} and {pos}); list each axis once",
                shape=input_shape,
                spec=spec,
            )
        seen[axis] = pos
    reduced = tuple(1 if i in seen else s for i, s in enumerate(input_shape))
    shared = tuple(i in seen for i in range(ndim))
    return NoiseSpec(input_shape, reduced, shared)


def resolve_noise_shape(
    input_shape: Iterable[Any], noise_shape: Any = None, *, broadcast_dims: Any = None
) -> tuple[Any, ...]:
    """The reduced shape a mask is drawn at, for an input of shape ``input_shape``.

    >>> resolve_noise_shape((2, 3, 4), (None, 1, 4))
    (2, 1, 4)
    >>> resolve_noise_shape((2, 3, 4), broadcast_dims=(1,))
    (2, 1, 4)
    >>> resolve_noise_shape((8, 64, 50, 1), (None, 1, ...))
    (8, 1, 50, 1)
    >>> resolve_noise_shape((8, 64, 50, 1), (None, 32, 1, 1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    noiseshape.NoiseShapeError: resolve_noise_shape(noise_shape=(None, 32, 1, 1)) on input of shape (8, 64, 50, 1):
      noise_shape[1] is 32 but input axis 1 has size 64 (input shape (8, 64, 50, 1)); use 64, None ...
    """
    return resolve(input_shape, noise_shape, broadcast_dims).shape


def check_rate(rate: Any, *, op: str, name: str = "rate", shape: Any = None, spec: str | None = None) -> float:
    """Validate a probability in [0, 1] and return it as a float."""
    if isinstance(rate, bool) or _is_numpy_bool(rate) or not isinstance(rate, numbers.Real):
        raise fail(
            op,
            f"{name} is {rate!r} ({type(rate).__name__}); give a real number in [0, 1], "
            "the probability of dropping an element",
            shape=shape,
            spec=spec,
        )
    value = float(rate)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        hint = f"; if you meant {value:g}%, use {value / 100:g}" if 1.0 < value <= 100.0 else ""
        raise fail(
            op,
            f"{name} is {value!r}; it is the probability of dropping an element and must lie in [0, 1]{hint}",
            shape=shape,
            spec=spec,
        )
    return value


def check_u64(value: Any, *, name: str, op: str, shape: Any = None, spec: str | None = None) -> int:
    """Validate an integer in [0, 2**64) (a seed, a stream, an offset) and return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise fail(
            op,
            f"{name} is {value!r} ({type(value).__name__}); give an integer in [0, 2**64)",
            shape=shape,
            spec=spec,
        )
    value = int(value)
    if not 0 <= value < 1 << 64:
        raise fail(op, f"{name} is {value}; give an integer in [0, 2**64)", shape=shape, spec=spec)
    return value


def collapse(shape: Sequence[int], *strides: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Merge adjacent axes that every stride set walks contiguously; drop axes of size 1.

    ``strides`` are per-axis element strides. Returns ``(shape, strides...)`` as tuples; an empty
    shape means a single element.

    >>> collapse((4, 5, 6), (30, 6, 1), (6, 0, 1))
    ((4, 5, 6), (30, 6, 1), (6, 0, 1))
    >>> collapse((4, 5, 6), (30, 6, 1), (0, 0, 1))
    ((20, 6), (6, 1), (0, 1))
    """
    axes = [(n, [s[i] for s in strides]) for i, n in enumerate(shape) if n != 1]
    merged: list = []
    for n, st in axes:
        if merged:
            pn, pst = merged[-1]
            if all(p == q * n for p, q in zip(pst, st)):
                merged[-1] = (pn * n, st)
                continue
        merged.append((n, st))
    out_shape = tuple(n for n, _ in merged)
    out_strides = tuple(tuple(st[k] for _, st in merged) for k in range(len(strides)))
    return (out_shape, *out_strides)


def check_index_range(
    j0: Any, n: Any, *, batch_offset: int, op: str, shape: Any = None, spec: str | None = None
) -> None:
    """Refuse a mask whose global indices ``j0 .. j0 + n - 1`` would leave the range every backend covers.

    Indices are ``batch_offset * prod(R[1:]) + rowmajor(rest)``; they must stay below
    :data:`INDEX_LIMIT` (2**63 - 1), so a large ``batch_offset`` never wraps around to other masks.
    Symbolic sizes are not checked.
    """
    if isinstance(j0, int) and isinstance(n, int) and j0 + n > INDEX_LIMIT:
        raise fail(
            op,
            f"batch_offset {batch_offset} puts the mask's global indices past 2**63 - 1: they would run from {j0} "
            f"to {j0 + n - 1}, and every backend draws masks at indices below 2**63 - 1; use a smaller batch_offset",
            shape=shape,
            spec=spec,
        )


def check_flag(value: Any, *, name: str, op: str, shape: Any = None, spec: str | None = None) -> bool:
    """Validate a switch (``training``, ``inplace``, ...): ``True`` or ``False`` (NumPy bools too), not just truthy."""
    if isinstance(value, bool) or _is_numpy_bool(value):
        return bool(value)
    raise fail(op, f"{name} is {value!r} ({type(value).__name__}); give True or False", shape=shape, spec=spec)
