"""The mask contract (``docs/rng.md``) in plain torch integer ops, for every device the C core does not serve.

Philox4x32-10 runs on int64 tensors holding unsigned 32-bit words: the product of two words is taken
modulo 2**64 (two's complement wrap-around), whose low and high halves are exactly the 32-bit
``lo`` and ``hi`` of the contract. The results are bit-identical to :mod:`noiseshape._rng`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["keep_flags", "keep_flags_at", "lanes", "normals", "normals_at", "pack_bits", "unpack_bits", "words"]

_M32 = 0xFFFFFFFF
_M0 = 0xD2511F53
_M1 = 0xCD9E8D57
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85


def words(key: torch.Tensor, first_block, count) -> torch.Tensor:
    """Output words of blocks ``first_block .. first_block + count - 1`` as an int64 ``(count, 4)`` tensor.

    ``key`` is an int64 tensor ``[seed, stream]`` holding the 64-bit values as bit patterns.

    >>> import torch
    >>> words(torch.zeros(2, dtype=torch.int64), 0, 1).tolist() == [[0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]]
    True
    """
    return words_of(key, torch.arange(count, dtype=torch.int64, device=key.device) + first_block)


def words_of(key: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Output words ``(..., 4)`` (int64) of the blocks ``b`` (an int64 tensor of any shape)."""
    seed, stream = key[0], key[1]
    k0 = seed & _M32
    k1 = (seed >> 32) & _M32
    c0 = b & _M32
    c1 = b >> 32
    c2 = (stream & _M32).expand(b.shape)
    c3 = ((stream >> 32) & _M32).expand(b.shape)
    for r in range(10):
        if r:
            k0 = (k0 + _W0) & _M32
            k1 = (k1 + _W1) & _M32
        p0 = c0 * _M0  # < 2**64: exact modulo 2**64 in int64
        p1 = c2 * _M1
        c0, c1, c2, c3 = (
            ((p1 >> 32) & _M32) ^ c1 ^ k0,
            p1 & _M32,
            ((p0 >> 32) & _M32) ^ c3 ^ k1,
            p0 & _M32,
        )
    return torch.stack((c0, c1, c2, c3), dim=-1)


def lanes(key: torch.Tensor, j0, n) -> torch.Tensor:
    """The 16-bit lanes (as int32) of elements ``j0 .. j0 + n - 1``."""
    if n == 0:
        return torch.zeros(0, dtype=torch.int32, device=key.device)
    b0 = j0 // 8
    count = (j0 + n - 1) // 8 - b0 + 1
    w = words(key, b0, count).to(torch.int32)  # values < 2**32 wrap to int32 bit patterns
    per_block = torch.stack((w & 0xFFFF, (w >> 16) & 0xFFFF), dim=-1).reshape(-1)
    start = j0 - 8 * b0
    return per_block[start : start + n]


def keep_flags(key: torch.Tensor, j0, n, t: int) -> torch.Tensor:
    """Keep flags (bool, ``(n,)``) of elements ``j0 .. j0 + n - 1``: lane < t."""
    return lanes(key, j0, n) < t


def keep_flags_at(key: torch.Tensor, j: torch.Tensor, t: int) -> torch.Tensor:
    """Keep flags (bool) at global indices ``j`` (int64, any shape): lane ``j % 8`` of block ``j // 8``."""
    k = j % 8
    w = words_of(key, j // 8).gather(-1, (k // 2).unsqueeze(-1)).squeeze(-1)
    return ((w >> (16 * (k % 2))) & 0xFFFF) < t


def normals_at(key: torch.Tensor, j: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """Standard normal variates at global indices ``j`` (int64, any shape): word pair ``j % 2`` of block ``j // 2``."""
    w = words_of(key, j // 2)
    h = (2 * (j % 2)).unsqueeze(-1)
    return _box_muller(w.gather(-1, h).squeeze(-1), w.gather(-1, h + 1).squeeze(-1), dtype)


def _box_muller(a: torch.Tensor, c: torch.Tensor, dtype) -> torch.Tensor:
    u1 = (a.to(torch.float64) + 0.5) * 2.0**-32
    u2 = c.to(torch.float64) * 2.0**-32
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
    return z.to(dtype)


def normals(key: torch.Tensor, j0, n, dtype=torch.float64) -> torch.Tensor:
    """Standard normal variates ``j0 .. j0 + n - 1`` (Box-Muller in float64, then rounded to ``dtype``)."""
    if n == 0:
        return torch.zeros(0, dtype=dtype, device=key.device)
    b0 = j0 // 2
    count = (j0 + n - 1) // 2 - b0 + 1
    pairs = words(key, b0, count).reshape(-1, 2)
    start = j0 - 2 * b0
    pairs = pairs[start : start + n]
    return _box_muller(pairs[:, 0], pairs[:, 1], dtype)


def _shifts(device) -> torch.Tensor:
    return torch.arange(8, dtype=torch.uint8, device=device)


def pack_bits(flags: torch.Tensor) -> torch.Tensor:
    """Pack bool flags ``(n,)``: element ``i`` is bit ``i % 8`` of byte ``i // 8`` (padding bits 0)."""
    n = flags.numel()
    padded = torch.nn.functional.pad(flags.reshape(-1).to(torch.uint8), (0, (-n) % 8))
    return (padded.view(-1, 8) << _shifts(flags.device)).sum(dim=-1, dtype=torch.uint8)


def unpack_bits(bits: torch.Tensor, n) -> torch.Tensor:
    """The first ``n`` flags (bool) of a packed mask."""
    return ((bits.unsqueeze(-1) >> _shifts(bits.device)) & 1).reshape(-1)[:n].bool()
