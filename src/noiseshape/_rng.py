"""The mask contract: Philox4x32-10 and the reference (NumPy) implementation of every draw.

Everything in this module is plain NumPy and deliberately slow and obvious: it is the
oracle that the C core, the pure-torch path and the GPU kernels are tested against.
The contract itself is written down in ``docs/rng.md``.

Counter layout, for a 64-bit ``seed`` and a 64-bit ``stream``:

* key     = ``(seed & 0xffffffff, seed >> 32)``
* counter = ``(b & 0xffffffff, b >> 32, stream & 0xffffffff, stream >> 32)`` for block ``b``

Bernoulli masks read 16-bit lanes: element ``j`` uses lane ``j % 8`` of block ``j // 8``.
Normal variates read 32-bit word pairs: variate ``j`` uses words ``(0, 1)`` of block ``j // 2``
when ``j`` is even and words ``(2, 3)`` when it is odd.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "PHILOX_M0",
    "PHILOX_M1",
    "PHILOX_W0",
    "PHILOX_W1",
    "block_words",
    "global_indices",
    "keep_flags",
    "keep_scale",
    "lanes",
    "lanes_at",
    "normals",
    "normals_at",
    "philox4x32",
    "threshold",
]

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85

_MASK32 = np.uint64(0xFFFFFFFF)
_U64_MAX = (1 << 64) - 1


def philox4x32(counter: ArrayLike, key: ArrayLike, rounds: int = 10) -> np.ndarray:
    """Philox4x32 with ``rounds`` rounds (Salmon et al., SC'11, "Parallel random numbers: as easy as 1, 2, 3").

    ``counter`` has shape ``(..., 4)`` and ``key`` shape ``(..., 2)``; both are unsigned 32-bit words
    and broadcast against each other. Returns the ``(..., 4)`` output words as ``uint32``.

    >>> import numpy as np
    >>> out = philox4x32(np.zeros(4, np.uint32), np.zeros(2, np.uint32))
    >>> [f"{w:08x}" for w in out]
    ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
    """
    from ._errors import NoiseShapeError

    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise NoiseShapeError(f"philox4x32: rounds is {rounds!r}; give a non-negative integer (10 is the standard)")
    c = np.asarray(counter)
    k = np.asarray(key)
    for name, arr, width in (("counter", c, 4), ("key", k, 2)):
        if arr.ndim == 0 or arr.shape[-1] != width:
            raise NoiseShapeError(f"philox4x32: {name} has shape {arr.shape}; its last axis must have {width} words")
        if arr.dtype.kind not in "ui" or (arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF)):
            raise NoiseShapeError(
                f"philox4x32: {name} must hold unsigned 32-bit words (dtype {arr.dtype}); pass a uint32 array"
            )
    shape = np.broadcast_shapes(c.shape[:-1], k.shape[:-1])
    c = np.broadcast_to(c, (*shape, 4)).astype(np.uint64)
    k = np.broadcast_to(k, (*shape, 2)).astype(np.uint64)
    c0, c1, c2, c3 = (c[..., i] for i in range(4))
    k0, k1 = k[..., 0], k[..., 1]
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    w0, w1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)
    shift = np.uint64(32)
    for r in range(int(rounds)):
        if r:
            k0 = (k0 + w0) & _MASK32
            k1 = (k1 + w1) & _MASK32
        p0 = m0 * c0  # exact: both factors are below 2**32
        p1 = m1 * c2
        c0, c1, c2, c3 = (
            (p1 >> shift) ^ c1 ^ k0,
            p1 & _MASK32,
            (p0 >> shift) ^ c3 ^ k1,
            p0 & _MASK32,
        )
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def _check_u64(name: str, value: object) -> int:
    from ._errors import NoiseShapeError

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise NoiseShapeError(f"{name} is {value!r}; give an integer in [0, 2**64)")
    value = int(value)
    if not 0 <= value <= _U64_MAX:
        raise NoiseShapeError(f"{name} is {value}; give an integer in [0, 2**64)")
    return value


def threshold(rate: float) -> int:
    """The 16-bit keep threshold ``t = round((1 - rate) * 65536)`` (round half to even).

    An element is kept iff its lane is below ``t``; the realised keep probability is ``t / 65536``.

    >>> threshold(0.1), threshold(0.5), threshold(0.0), threshold(1.0)
    (58982, 32768, 65536, 0)
    """
    return round((1.0 - float(rate)) * 65536.0)


def keep_scale(t: int) -> float:
    """The scale applied to kept values, ``65536 / t`` (0.0 when nothing is kept).

    >>> keep_scale(32768), keep_scale(65536), keep_scale(0)
    (2.0, 1.0, 0.0)
    """
    return 65536.0 / t if t else 0.0


def block_words(seed: int, stream: int, first_block: int, count: int, rounds: int = 10) -> np.ndarray:
    """Output words of blocks ``first_block .. first_block + count - 1``: shape ``(count, 4)`` uint32."""
    seed = _check_u64("seed", seed)
    stream = _check_u64("stream", stream)
    b = np.arange(count, dtype=np.uint64) + np.uint64(first_block)
    counter = np.stack(
        [
            b & _MASK32,
            b >> np.uint64(32),
            np.full(count, stream & 0xFFFFFFFF, np.uint64),
            np.full(count, stream >> 32, np.uint64),
        ],
        axis=-1,
    ).astype(np.uint32)
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint32)
    return philox4x32(counter, key, rounds)


def lanes(seed: int, stream: int, j0: int, n: int) -> np.ndarray:
    """The 16-bit lanes of elements ``j0 .. j0 + n - 1`` as ``uint16``.

    Element ``j`` reads lane ``j % 8`` of block ``j // 8``.
    """
    if n == 0:
        return np.zeros(0, np.uint16)
    b0, b1 = j0 // 8, (j0 + n - 1) // 8
    words = block_words(seed, stream, b0, b1 - b0 + 1)
    w = words.astype(np.uint32)
    lo = (w & np.uint32(0xFFFF)).astype(np.uint16)
    hi = (w >> np.uint32(16)).astype(np.uint16)
    per_block = np.stack([lo, hi], axis=-1).reshape(-1)  # lane k = (w[k // 2] >> 16 * (k % 2)) & 0xffff
    start = j0 - 8 * b0
    return per_block[start : start + n]


def global_indices(
    reduced_shape: Sequence[int],
    global_reduced: Sequence[int | None],
    offset: Sequence[int] | None = None,
    sample_ids: Any = None,
    ids_axis: int = 0,
) -> np.ndarray:
    """The global index ``j`` of every element of a local reduced mask (int64, shape ``reduced_shape``).

    The element at local index ``i`` sits at global coordinate ``g = i + offset`` (``g[ids_axis] =
    sample_ids[i[ids_axis]]`` when sample ids are given) and ``j`` is the row-major index of ``g`` in
    ``global_reduced``. Offsets of shared axes (size 1 in both shapes) must be 0; the size of axis 0 of
    ``global_reduced`` never enters (it may be ``None``).
    """
    shape = tuple(int(s) for s in reduced_shape)
    offset = tuple(int(o) for o in (offset or ())) + (0,) * (len(shape) - len(offset or ()))
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        size = global_reduced[d + 1]
        strides[d] = strides[d + 1] * (shape[d + 1] if size is None else int(size))
    j = np.zeros(shape, dtype=np.int64)
    for d, n in enumerate(shape):
        coord = np.arange(n, dtype=np.int64) + offset[d]
        if sample_ids is not None and d == ids_axis:
            coord = np.asarray(sample_ids, dtype=np.int64).reshape(n)
        j += (coord * strides[d]).reshape((n,) + (1,) * (len(shape) - d - 1))
    return j


def _words_at(seed: int, stream: int, b: np.ndarray) -> np.ndarray:
    """Output words ``(..., 4)`` of the blocks ``b`` (int64, any shape)."""
    seed = _check_u64("seed", seed)
    stream = _check_u64("stream", stream)
    b = b.astype(np.uint64)
    counter = np.stack(
        [b & _MASK32, b >> np.uint64(32), np.full_like(b, stream & 0xFFFFFFFF), np.full_like(b, stream >> 32)],
        axis=-1,
    ).astype(np.uint32)
    return philox4x32(counter, np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint32))


def lanes_at(seed: int, stream: int, j: Any) -> np.ndarray:
    """The 16-bit lanes (``uint16``) at global indices ``j`` (any shape): lane ``j % 8`` of block ``j // 8``."""
    j = np.asarray(j, dtype=np.int64)
    k = j % 8
    w = np.take_along_axis(_words_at(seed, stream, j // 8), (k // 2)[..., None], axis=-1)[..., 0]
    return ((w >> (16 * (k % 2)).astype(np.uint32)) & np.uint32(0xFFFF)).astype(np.uint16)


def normals_at(seed: int, stream: int, j: Any) -> np.ndarray:
    """Normal variates (float64) at global indices ``j`` (any shape): word pair ``j % 2`` of block ``j // 2``."""
    j = np.asarray(j, dtype=np.int64)
    words = _words_at(seed, stream, j // 2).astype(np.float64)
    h = (2 * (j % 2))[..., None]
    a = np.take_along_axis(words, h, axis=-1)[..., 0]
    c = np.take_along_axis(words, h + 1, axis=-1)[..., 0]
    u1 = (a + 0.5) * 2.0**-32
    u2 = c * 2.0**-32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def keep_flags(
    reduced_shape: Sequence[int],
    seed: int,
    stream: int,
    t: int,
    *,
    batch_offset: int = 0,
    batch_shared: bool = False,
    global_reduced: Sequence[int | None] | None = None,
    offset: Sequence[int] | None = None,
    sample_ids: Any = None,
    ids_axis: int = 0,
) -> np.ndarray:
    """The reduced keep mask (``bool``, shape ``reduced_shape``) of the contract.

    ``batch_offset`` is the global index of this array's first sample; it is ignored when axis 0
    shares one draw by request (``batch_shared``). ``global_reduced``, ``offset`` and ``sample_ids``
    place the array inside a larger one (see :func:`global_indices`).
    """
    if global_reduced is not None or offset is not None or sample_ids is not None:
        shape = tuple(int(s) for s in reduced_shape)
        g = shape if global_reduced is None else global_reduced
        return lanes_at(seed, stream, global_indices(shape, g, offset, sample_ids, ids_axis)).astype(np.int64) < t
    shape = tuple(int(s) for s in reduced_shape)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if shape and not batch_shared:
        j0 = int(batch_offset) * (int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1)
    else:
        j0 = 0
    return (lanes(seed, stream, j0, n).astype(np.int64) < t).reshape(shape)


def normals(seed: int, stream: int, j0: int, n: int) -> np.ndarray:
    """Standard normal variates ``j0 .. j0 + n - 1`` as float64 (Box-Muller, one variate per word pair).

    Variate ``j`` takes words ``(a, b)`` = ``(w0, w1)`` of block ``j // 2`` when ``j`` is even and
    ``(w2, w3)`` when odd; ``u1 = (a + 0.5) / 2**32`` (never 0), ``u2 = b / 2**32`` and
    ``z = sqrt(-2 log u1) * cos(2 pi u2)``, evaluated in float64.
    """
    if n == 0:
        return np.zeros(0, np.float64)
    b0, b1 = j0 // 2, (j0 + n - 1) // 2
    words = block_words(seed, stream, b0, b1 - b0 + 1).reshape(-1, 2)  # row 2*i + h: pair h of block b0+i
    start = j0 - 2 * b0
    pairs = words[start : start + n].astype(np.float64)
    u1 = (pairs[:, 0] + 0.5) * 2.0**-32
    u2 = pairs[:, 1] * 2.0**-32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
