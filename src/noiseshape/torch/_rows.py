"""Masks of a piece of a larger tensor: the ``noiseshape::*_rows`` custom ops and the dispatch on where a mask sits.

A piece (a micro-batch, a rank's rows, a DTensor shard) draws its reduced mask as rows of consecutive
global indices (:class:`noiseshape._coords.Rows`); a piece that is one run keeps the integer ``j0`` of
the contiguous ops, so nothing changes for it. CPU tensors use the C core, CUDA tensors the Triton
kernels, other devices the pure-torch contract, bit for bit alike.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._coords import Rows
from . import _ops, _philox

__all__ = ["gaussian_mul", "is_rows", "keep", "key_for", "normal"]


def is_rows(at) -> bool:
    """Whether a mask position is a set of rows (else it is the integer ``j0`` of one run)."""
    return isinstance(at, Rows)


def key_for(key, at, device):
    """The key to draw at ``at`` with: a ``(seed, stream)`` pair of the eager path becomes the key tensor for rows."""
    if type(key) is tuple and is_rows(at):
        return _ops.make_key(key[0], key[1], device)
    return key


def _starts(at: Rows, device) -> Tensor:
    return torch.from_numpy(at.starts).to(device)


def _element_indices(starts: Tensor, run: int) -> Tensor:
    return (starts.unsqueeze(-1) + torch.arange(run, dtype=torch.int64, device=starts.device)).reshape(-1)


def _tr(device):
    tr = _ops.triton_for(device)
    if tr is None:
        return None
    from . import _triton_rows

    return _triton_rows


@torch.library.custom_op("noiseshape::keep_mask_rows", mutates_args=())
def keep_mask_rows(key: Tensor, shape: list[int], starts: Tensor, t: int) -> Tensor:
    mask = torch.empty(shape, dtype=torch.uint8, device=key.device)
    n = mask.numel()
    if n == 0:
        return mask
    run = n // starts.numel()
    core = _ops.core_for(key.device)
    tr = _tr(key.device)
    if tr is not None:  # CUDA, or CPU tensors forced down that path
        return tr.keep_mask_rows(key, starts, run, t).view(mask.shape)
    if core is not None:
        seed, stream = _ops._key_ints(key)
        st = starts.contiguous()
        core.keep_mask_rows(mask.data_ptr(), st.numel(), run, st.data_ptr(), seed, stream, t, _ops._threads(n))
    else:
        mask.copy_(_philox.keep_flags_at(key, _element_indices(starts, run), t).view(mask.shape))
    return mask


@keep_mask_rows.register_fake
def _(key, shape, starts, t):
    return key.new_empty(shape, dtype=torch.uint8)


@torch.library.custom_op("noiseshape::normal_rows", mutates_args=())
def normal_rows(key: Tensor, shape: list[int], starts: Tensor, double: bool) -> Tensor:
    dtype = torch.float64 if double else torch.float32
    out = torch.empty(shape, dtype=dtype, device=key.device)
    n = out.numel()
    if n == 0:
        return out
    run = n // starts.numel()
    core = _ops.core_for(key.device)
    tr = _tr(key.device)
    if tr is not None:  # CUDA, or CPU tensors forced down that path
        return tr.normal_rows(key, starts, run, dtype).view(out.shape)
    if core is not None:
        seed, stream = _ops._key_ints(key)
        st = starts.contiguous()
        core.normal_rows(
            out.data_ptr(), 1 if double else 0, st.numel(), run, st.data_ptr(), seed, stream, _ops._threads(n)
        )
    else:
        out.copy_(_philox.normals_at(key, _element_indices(starts, run), dtype).view(out.shape))
    return out


@normal_rows.register_fake
def _(key, shape, starts, double):
    return key.new_empty(shape, dtype=torch.float64 if double else torch.float32)


def keep(key: Tensor, shape, at, t: int) -> Tensor:
    """The reduced keep mask (uint8) at ``shape``, placed at ``at`` (an integer ``j0`` or :class:`Rows`)."""
    if is_rows(at):
        return keep_mask_rows(key, list(shape), _starts(at, key.device), t)
    return _ops.keep_mask(key, list(shape), at, t)


def normal(key: Tensor, shape, at, double: bool) -> Tensor:
    """Standard normal variates at ``shape``, placed at ``at`` (an integer ``j0`` or :class:`Rows`)."""
    if is_rows(at):
        return normal_rows(key, list(shape), _starts(at, key.device), double)
    return _ops.normal(key, list(shape), at, double)


def gaussian_mul(x: Tensor, key: Tensor, shape, at, sigma: float) -> Tensor:
    """``x * (1 + sigma * z)`` with ``z`` drawn at rows: the composition of the ``gaussian_mul`` op, bit for bit."""
    factor = normal(key, shape, at, x.dtype == torch.float64).mul_(sigma).add_(1.0)
    if x.dtype in (torch.float16, torch.bfloat16):
        return (x.float() * factor).to(x.dtype)
    return x * factor
