"""Triton kernels for masks of a piece of a larger tensor: rows of consecutive global indices (``docs/rng.md``).

Element ``e`` of the output is element ``e % run`` of row ``e // run``, whose global index is
``starts[row] + e % run``; each element computes its own Philox block, so rows may start anywhere.
Bit-identical to :mod:`noiseshape._rng` (Bernoulli lanes) and to the contiguous kernels of
:mod:`noiseshape.torch._triton`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _triton
from ._triton import tl, triton

__all__ = ["keep_mask_rows", "normal_rows"]

if tl is not None:
    from ._triton import _philox_words

    @triton.jit
    def _element_index(starts_ptr, run, total, BLOCK: tl.constexpr):
        e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        inside = e < total
        row = e // run
        j = tl.load(starts_ptr + row, mask=inside, other=0) + (e - row * run)
        return e, inside, j

    @triton.jit(do_not_specialize=["run", "total", "t"])
    def keep_rows_kernel(
        out_ptr, key_ptr, starts_ptr, run: tl.int64, total: tl.int64, t: tl.int32, BLOCK: tl.constexpr
    ):
        e, inside, j = _element_index(starts_ptr, run, total, BLOCK)
        w0, w1, w2, w3 = _philox_words(key_ptr, j // 8)
        k = j % 8
        w = tl.where(k < 2, w0, tl.where(k < 4, w1, tl.where(k < 6, w2, w3)))
        lane = (w >> ((k & 1) * 16).to(tl.uint32)) & 0xFFFF
        tl.store(out_ptr + e, (lane.to(tl.int32) < t).to(tl.uint8), mask=inside)

    @triton.jit(do_not_specialize=["run", "total"])
    def normal_rows_kernel(out_ptr, key_ptr, starts_ptr, run: tl.int64, total: tl.int64, BLOCK: tl.constexpr):
        e, inside, j = _element_index(starts_ptr, run, total, BLOCK)
        w0, w1, w2, w3 = _philox_words(key_ptr, j // 2)
        first = (j % 2) == 0
        u1 = (tl.where(first, w0, w2).to(tl.float64) + 0.5) * 2.3283064365386963e-10  # 2**-32
        u2 = tl.where(first, w1, w3).to(tl.float64) * 2.3283064365386963e-10
        z = tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)
        tl.store(out_ptr + e, z.to(out_ptr.dtype.element_ty), mask=inside)


def _launch(kernel, out: Tensor, key: Tensor, starts: Tensor, run: int, *extra) -> Tensor:
    total = out.numel()
    if total == 0:
        return out
    _triton._require()
    block = 4096 if _triton._interpreted() else 1024
    grid = (_triton.triton_cdiv(total, block),)
    kernel[grid](
        out, key, starts.to(device=out.device, dtype=torch.int64).contiguous(), run, total, *extra, BLOCK=block
    )
    return out


def keep_mask_rows(key: Tensor, starts: Tensor, run: int, t: int) -> Tensor:
    """Keep flags (uint8, ``(rows * run,)``) of the rows starting at the global indices ``starts``."""
    out = torch.empty(starts.numel() * run, dtype=torch.uint8, device=key.device)
    return _launch(keep_rows_kernel, out, key, starts, run, _triton._check_t(t))


def normal_rows(key: Tensor, starts: Tensor, run: int, dtype: torch.dtype) -> Tensor:
    """Standard normal variates (``(rows * run,)``, float32 or float64) of the rows starting at ``starts``."""
    out = torch.empty(starts.numel() * run, dtype=dtype, device=key.device)
    return _launch(normal_rows_kernel, out, key, starts, run)
