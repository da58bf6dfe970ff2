"""The mask contract (``docs/rng.md``) in ``jax.numpy``: Philox4x32-10 on uint32 words, fused by XLA.

Every step is an elementwise ``uint32`` operation, so the same code runs on CPU, GPU and TPU and under
every transformation (``jit``, ``vmap``, ``grad``, sharding). The 32x32 -> 64-bit products of a round
are ``a * M`` (the low word, wrapping) and :func:`mulhi` (the high word, from 16-bit limbs). Nothing here needs
64-bit types, so it behaves the same with ``jax_enable_x64`` on or off. Results are bit-identical to
:mod:`noiseshape._rng` (the Bernoulli lanes); normal variates are computed in float64 when x64 is
enabled and otherwise in float32 with exact range reduction (see :func:`normals`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["Key", "block_words", "first_index", "keep_flags", "lanes", "normals"]

_U32 = jnp.uint32
_M0 = np.uint32(0xD2511F53)
_M1 = np.uint32(0xCD9E8D57)
_W0 = np.uint32(0x9E3779B9)
_W1 = np.uint32(0xBB67AE85)
_LOW16 = np.uint32(0xFFFF)


class Key:
    """A (seed, stream) pair as four uint32 words: ``seed = hi << 32 | lo``, likewise ``stream``.

    The words may be Python integers or traced uint32 scalars (a key taken from a JAX PRNG key).
    """

    __slots__ = ("seed_hi", "seed_lo", "stream_hi", "stream_lo")

    def __init__(self, seed_hi, seed_lo, stream_hi, stream_lo):
        self.seed_hi, self.seed_lo = _word(seed_hi), _word(seed_lo)
        self.stream_hi, self.stream_lo = _word(stream_hi), _word(stream_lo)

    @classmethod
    def from_ints(cls, seed: int, stream: int) -> Key:
        return cls(seed >> 32, seed & 0xFFFFFFFF, stream >> 32, stream & 0xFFFFFFFF)


def _word(v):
    return jnp.asarray(np.uint32(v) if isinstance(v, (int, np.integer)) else v, _U32)


def mulhi(a, b):
    """The high word of the 64-bit product of uint32 ``a`` and ``b``, from 16-bit limbs (every partial fits 32 bits).

    ``lax.mulhi`` does the same in one op but does not lower for sharded arrays; this is plain
    multiply, add and shift, which every backend and the SPMD partitioner take.
    """
    a_lo, a_hi = a & _LOW16, a >> np.uint32(16)
    b_lo, b_hi = b & _LOW16, b >> np.uint32(16)
    t = a_lo * b_lo
    u = a_hi * b_lo + (t >> np.uint32(16))
    v = a_lo * b_hi + (u & _LOW16)
    return a_hi * b_hi + (u >> np.uint32(16)) + (v >> np.uint32(16))


#: Fewer blocks than this run the 10 rounds as a loop (fast to compile); more run them unrolled (fast to run).
UNROLL_FROM = 1 << 13


def block_words(key: Key, b_lo, b_hi):
    """Philox4x32-10 of the blocks with 64-bit indices ``b_hi << 32 | b_lo`` (uint32 arrays): four word arrays."""
    c2 = jnp.broadcast_to(jnp.asarray(key.stream_lo, _U32), jnp.shape(b_lo))
    c3 = jnp.broadcast_to(jnp.asarray(key.stream_hi, _U32), jnp.shape(b_lo))

    def round_(r, state):
        c0, c1, c2, c3 = state
        r = jnp.asarray(r, _U32)
        k0 = key.seed_lo + r * _W0  # the key after r bumps
        k1 = key.seed_hi + r * _W1
        hi0, lo0 = mulhi(c0, _M0), c0 * _M0
        hi1, lo1 = mulhi(c2, _M1), c2 * _M1
        return hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0

    unroll = math.prod(jnp.shape(b_lo)) >= UNROLL_FROM
    return lax.fori_loop(0, 10, round_, (b_lo, b_hi, c2, c3), unroll=10 if unroll else 1)


def unfused_block_words(key: Key, b_lo, b_hi):
    """:func:`block_words` materialised once per block, even when the consumer reads a block many times.

    XLA fuses cheap integer chains into their consumers and would then recompute a block for each of
    its 8 lanes, and for every element a reduced mask is broadcast to. A one-trip ``while`` loop whose
    trip count XLA cannot infer (its exit flag is ``(seed_lo | 1) != 0``) keeps the block words in a
    fusion of their own; it changes no value.
    """
    zeros = jnp.zeros(jnp.shape(b_lo), _U32)

    def body(state):
        return ((key.seed_lo | np.uint32(1)) != 0, *block_words(key, b_lo, b_hi))

    return lax.while_loop(lambda state: ~state[0], body, (jnp.bool_(False), zeros, zeros, zeros, zeros))[1:]


def first_index(batch_offset, per_sample: int):
    """The global index ``batch_offset * per_sample`` as a ``(hi, lo)`` pair of uint32 words.

    ``batch_offset`` may be a Python integer (the pair is then exact Python integers) or a traced
    unsigned or non-negative integer scalar below 2**32.
    """
    if isinstance(batch_offset, (int, np.integer)):
        j0 = int(batch_offset) * per_sample
        return j0 >> 32, j0 & 0xFFFFFFFF
    off = jnp.asarray(batch_offset).astype(_U32)
    p_lo, p_hi = np.uint32(per_sample & 0xFFFFFFFF), np.uint32((per_sample >> 32) & 0xFFFFFFFF)
    return mulhi(off, p_lo) + off * p_hi, off * p_lo


def _blocks_from(j_hi, j_lo, count: int, per_block: int):
    """Block indices ``(j0 // per_block) + 0 .. count - 1`` as ``(lo, hi)`` uint32 arrays, and ``j0 % per_block``."""
    shift = per_block.bit_length() - 1
    if isinstance(j_lo, int) and isinstance(j_hi, int):
        j0 = (j_hi << 32) | j_lo
        b0, start = j0 >> shift, j0 & (per_block - 1)
        b0_lo, b0_hi = np.uint32(b0 & 0xFFFFFFFF), np.uint32(b0 >> 32)
    else:
        j_hi, j_lo = jnp.asarray(j_hi, _U32), jnp.asarray(j_lo, _U32)
        b0_lo = (j_lo >> np.uint32(shift)) | (j_hi << np.uint32(32 - shift))
        b0_hi = j_hi >> np.uint32(shift)
        start = (j_lo & np.uint32(per_block - 1)).astype(jnp.int32)
    step = lax.iota(_U32, count)
    b_lo = step + b0_lo
    b_hi = (b_lo < step).astype(_U32) + b0_hi  # carry out of the low word
    return b_lo, b_hi, start


def _take(flat, start, n: int):
    if isinstance(start, int):
        return flat[start : start + n]
    return lax.dynamic_slice(flat, (start,), (n,))


def lanes(key: Key, j0, n: int):
    """The 16-bit lanes (uint32) of elements ``j0 .. j0 + n - 1``; ``j0`` is a ``(hi, lo)`` pair."""
    count = -(-(n + 7) // 8)  # enough blocks for any start in 0..7
    b_lo, b_hi, start = _blocks_from(*j0, count, 8)
    if isinstance(start, int):
        count = -(-(start + n) // 8)
        b_lo, b_hi = b_lo[:count], b_hi[:count]
    words = jnp.stack(unfused_block_words(key, b_lo, b_hi), axis=-1)
    per_block = lax.bitcast_convert_type(words, jnp.uint16)
    return _take(per_block.reshape(-1), start, n)


def keep_flags(key: Key, shape, j0, t: int):
    """The keep mask (bool, ``shape``) of the contract: element ``j0 + i`` is kept iff its lane is below ``t``."""
    n = math.prod(shape)
    if n == 0:
        return jnp.zeros(shape, bool)
    return (lanes(key, j0, n).astype(_U32) < np.uint32(t)).reshape(shape)


def _uniform_log_f32(a):
    """``log((a + 0.5) / 2**32)`` in float32 with a small relative error: ``log1p`` near 1."""
    small = a < np.uint32(1 << 31)
    near = jnp.log((a.astype(jnp.float32) + np.float32(0.5)) * np.float32(2.0**-32))
    far = jnp.log1p(-((~a).astype(jnp.float32) + np.float32(0.5)) * np.float32(2.0**-32))
    return jnp.where(small, near, far)


def _cos_turns_f32(c):
    """``cos(2 pi c / 2**32)`` in float32, reduced to an angle in [0, pi/4] with integer arithmetic."""
    quadrant = c >> np.uint32(30)
    r = c & np.uint32((1 << 30) - 1)
    swap = r > np.uint32(1 << 29)
    rr = jnp.where(swap, np.uint32(1 << 30) - r, r)  # <= 2**29: the angle to the nearest axis
    angle = rr.astype(jnp.float32) * np.float32(2.0 * math.pi / 2.0**32)
    s, co = jnp.sin(angle), jnp.cos(angle)
    cos_phi, sin_phi = jnp.where(swap, s, co), jnp.where(swap, co, s)
    return jnp.select([quadrant == 0, quadrant == 1, quadrant == 2], [cos_phi, -sin_phi, -cos_phi], sin_phi)


def normals(key: Key, j0, n: int, dtype):
    """Standard normal variates ``j0 .. j0 + n - 1`` (Box-Muller, cosine branch) as ``dtype`` (float32/float64).

    float64 (x64 enabled) evaluates the contract's formula in float64. float32 evaluates it in float32
    with ``log1p`` for ``u1`` near 1 and the angle reduced to [0, pi/4] by integer arithmetic, so the
    relative error stays within a few float32 ulp of the float64 value (the tests bound it).
    """
    if n == 0:
        return jnp.zeros((0,), dtype)
    count = -(-(n + 1) // 2)
    b_lo, b_hi, start = _blocks_from(*j0, count, 2)
    if isinstance(start, int):
        count = -(-(start + n) // 2)
        b_lo, b_hi = b_lo[:count], b_hi[:count]
    w0, w1, w2, w3 = unfused_block_words(key, b_lo, b_hi)
    a = _take(jnp.stack([w0, w2], axis=-1).reshape(-1), start, n)
    c = _take(jnp.stack([w1, w3], axis=-1).reshape(-1), start, n)
    if dtype == jnp.float64:
        u1 = (a.astype(jnp.float64) + 0.5) * 2.0**-32
        u2 = c.astype(jnp.float64) * 2.0**-32
        return jnp.sqrt(-2.0 * jnp.log(u1)) * jnp.cos((2.0 * math.pi) * u2)
    return jnp.sqrt(np.float32(-2.0) * _uniform_log_f32(a)) * _cos_turns_f32(c)
