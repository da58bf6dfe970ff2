"""NumPy frontend: shaped dropout on NumPy arrays, served by the C core.

NumPy has no global random generator to borrow a seed from, so every call takes an explicit
``seed`` (an integer, or a :class:`numpy.random.Generator` to draw one from).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import EllipsisType
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _rng
from ._coords import Coords, Rows, locate
from ._errors import fail
from ._spec import (
    NoiseSpec,
    _spec_text,
    check_flag,
    check_rate,
    check_shape,
    check_u64,
    collapse,
    resolve,
)
from ._threads import get_num_threads

__all__ = ["dropout", "keep_mask"]

_DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}

#: A noise shape: one entry per axis (``None``, ``1`` or the axis size), ``...`` once for the rest.
NoiseShape = Sequence[int | EllipsisType | None]
#: ``broadcast_dims``: the axes that share one draw.
BroadcastDims = int | Sequence[int]
#: A seed: an integer in [0, 2**64), or a NumPy generator to draw one from.
Seed = int | np.integer[Any] | np.random.Generator


def _seed(seed: Seed | None, op: str, shape: tuple[int, ...], spec: str) -> int:
    if seed is None:
        raise fail(
            op,
            "seed is required: NumPy has no global generator to draw one from; pass seed=<int> "
            "(e.g. seed=0), or seed=np.random.default_rng() to draw a fresh one",
            shape=shape,
            spec=spec,
        )
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 1 << 64, dtype=np.uint64))
    return check_u64(seed, name="seed", op=op, shape=shape, spec=spec)


def _prepare(
    op: str,
    shape: tuple[int, ...],
    rate: float,
    noise_shape: NoiseShape | None,
    broadcast_dims: BroadcastDims | None,
    seed: Seed | None,
    stream: int,
    batch_offset: int,
    coords: Coords | None = None,
) -> tuple[float, NoiseSpec, int, int, int | Rows]:
    """Check a call's arguments; returns the rate, the (local) spec, the seed, the stream and where the mask sits
    (the first mask index, or the rows of a piece of a larger array)."""
    spec_text = _spec_text(noise_shape, broadcast_dims)
    rate = check_rate(rate, op=op, shape=shape, spec=spec_text)
    spec = resolve(shape, noise_shape, broadcast_dims, op=op) if coords is None else None
    seed = _seed(seed, op, shape, spec_text)
    stream = check_u64(stream, name="stream", op=op, shape=shape, spec=spec_text)
    batch_offset = check_u64(batch_offset, name="batch_offset", op=op, shape=shape, spec=spec_text)
    spec, at = locate(
        op, shape, noise_shape, broadcast_dims, batch_offset=batch_offset, coords=coords, spec=spec, spec_text=spec_text
    )
    return rate, spec, seed, stream, at


def _reduced_mask(spec: NoiseSpec, seed: int, stream: int, at: int | Rows, t: int) -> npt.NDArray[np.uint8]:
    from . import _core

    mask = np.empty(spec.shape, dtype=np.uint8)
    if isinstance(at, Rows):
        starts = np.ascontiguousarray(at.starts)
        _core.keep_mask_rows(
            mask.ctypes.data, starts.size, at.run, starts.ctypes.data, seed, stream, t, get_num_threads()
        )
    else:
        _core.keep_mask(mask.ctypes.data, mask.size, seed, stream, at, t, get_num_threads())
    return mask


def keep_mask(
    shape: Sequence[int],
    rate: float,
    noise_shape: NoiseShape | None = None,
    *,
    broadcast_dims: BroadcastDims | None = None,
    seed: Seed | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
) -> npt.NDArray[np.bool_]:
    """The reduced keep mask (``bool``, drawn at the noise shape) that :func:`dropout` applies.

    >>> m = keep_mask((2, 3, 4), 0.5, (None, 1, 4), seed=0)
    >>> m.shape, m.dtype
    ((2, 1, 4), dtype('bool'))
    >>> bool((keep_mask((2, 3, 4), 0.5, (None, 1, 4), seed=0) == m).all())   # a pure function of the seed
    True
    """
    op = "noiseshape.numpy.keep_mask"
    sizes = check_shape(shape, op=op, spec=_spec_text(noise_shape, broadcast_dims))
    rate, spec, seed, stream, at = _prepare(
        op, sizes, rate, noise_shape, broadcast_dims, seed, stream, batch_offset, coords
    )
    return _reduced_mask(spec, seed, stream, at, _rng.threshold(rate)).view(bool)


def dropout(
    x: npt.ArrayLike,
    rate: float,
    noise_shape: NoiseShape | None = None,
    *,
    broadcast_dims: BroadcastDims | None = None,
    seed: Seed | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    training: bool = True,
) -> npt.NDArray[Any]:
    """Dropout with a Keras ``noise_shape`` (or Flax ``broadcast_dims``) on a NumPy array.

    Each element of the mask drawn at the noise shape is kept with probability ``1 - rate`` and
    broadcast over the axes of size 1; kept values are scaled by the inverse of the realised keep
    probability, dropped values become exactly 0 (also ``nan`` and ``inf``). ``batch_offset`` is the
    global index of ``x[0]`` in a larger batch, so micro-batches reproduce the whole batch's masks;
    ``coords`` (:class:`noiseshape.Coords`) places ``x`` inside a larger array along every axis or by
    per-row sample ids. With ``training=False`` or ``rate == 0`` the input is returned unchanged.
    Arrays of any byte order and alignment are read by value; the result is a new array in native
    byte order.

    >>> import numpy as np
    >>> x = np.ones((2, 3, 4), np.float32)
    >>> y = dropout(x, 0.5, noise_shape=(None, 1, 4), seed=0)
    >>> sorted(set(y.ravel().tolist()))          # kept values are scaled by 1 / 0.5
    [0.0, 2.0]
    >>> bool((y == y[:, :1, :]).all())           # the same features are dropped at every step
    True
    >>> whole = dropout(x, 0.5, (None, 1, 4), seed=0)
    >>> part = dropout(x[1:], 0.5, (None, 1, 4), seed=0, batch_offset=1)
    >>> bool((part == whole[1:]).all())          # micro-batches reproduce the whole batch
    True
    """
    op = "noiseshape.numpy.dropout"
    arr = np.asarray(x)
    name = arr.dtype.name
    if name not in _DTYPE_CODES:
        raise fail(
            op,
            f"x has dtype {name}; dropout needs floating-point values (float16, bfloat16, float32 or "
            f"float64): convert with x.astype(np.float32)",
            shape=arr.shape,
            spec=_spec_text(noise_shape, broadcast_dims),
        )
    rate, spec, seed, stream, at = _prepare(
        op, arr.shape, rate, noise_shape, broadcast_dims, seed, stream, batch_offset, coords
    )
    training = check_flag(
        training, name="training", op=op, shape=arr.shape, spec=_spec_text(noise_shape, broadcast_dims)
    )
    if not training or rate == 0.0:
        return x if isinstance(x, np.ndarray) else arr
    if not arr.dtype.isnative:  # the kernels read native values: swap the bytes once, into a native copy
        arr = arr.astype(arr.dtype.newbyteorder("="))
    t = _rng.threshold(rate)
    if t == 0:
        return np.zeros_like(arr)
    from . import _core

    code = _DTYPE_CODES[name]
    scale = _rng.keep_scale(t)
    y = np.empty(arr.shape, dtype=arr.dtype)
    if y.size == 0:
        return y
    threads = get_num_threads()
    if spec.full and not isinstance(at, Rows):
        src = np.ascontiguousarray(arr)
        _core.dropout(
            code,
            src.ctypes.data,
            y.ctypes.data,
            y.size,
            seed,
            stream,
            at,
            t,
            scale,
            0,
            threads,
        )
        return y
    mask = _reduced_mask(spec, seed, stream, at, t)
    item = arr.itemsize
    if any(s % item for s in arr.strides):  # a view that is not aligned to its items
        arr = np.ascontiguousarray(arr)
    mask_strides = np.broadcast_to(mask, arr.shape).strides
    shape, xs, ys, ms = collapse(
        arr.shape,
        tuple(s // item for s in arr.strides),
        tuple(s // item for s in y.strides),
        mask_strides,
    )
    _core.apply_mask(code, arr.ctypes.data, y.ctypes.data, mask.ctypes.data, shape, xs, ys, ms, scale, threads)
    return y
