"""Functional forms that drop weights and regions, and the mask itself (re-exported by :mod:`.functional`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _coords, _rng
from .._coords import Coords
from .._errors import axes_text, fail
from .._spec import _fmt, _spec_text, check_index_range, check_rate, check_shape, resolve
from .._types import BroadcastDims, NoiseShape
from . import _rows
from . import distributed as _dist
from ._engines import _check_seed, _check_tensor, bernoulli_apply, call_key, draw_key, mask_of, zeros_with_grad

# ---------------------------------------------------------------------------------------------
# weights and regions


def embedding_dropout(
    input: Tensor,
    weight: Tensor,
    p: float = 0.1,
    padding_idx: int | None = None,
    *,
    training: bool = True,
    seed: int | None = None,
    stream: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Embedding lookup with whole rows of ``weight`` dropped (Merity et al., 2017; Gal & Ghahramani, 2016).

    Dropping a row drops every occurrence of that word in the batch; the other rows are scaled by
    the inverse of the realised keep probability.

    >>> import torch
    >>> w = torch.ones(10, 3)
    >>> e = embedding_dropout(torch.tensor([[1, 2, 1]]), w, 0.5, seed=0)
    >>> torch.equal(e[0, 0], e[0, 2])                 # the same word is dropped everywhere or nowhere
    True
    """
    op = "noiseshape.torch.embedding_dropout"
    _check_tensor(op, weight, name="weight")
    shape = tuple(weight.shape)
    p = check_rate(p, op=op, name="p", shape=shape)
    if weight.dim() != 2:
        raise fail(
            op, f"weight has {axes_text(weight.dim())}; an embedding matrix is (num_embeddings, dim)", shape=shape
        )
    seed, stream, _ = _check_seed(op, seed, stream, 0, generator, shape, None)
    if training and p > 0.0:
        spec = resolve(shape, (None, 1), op=op)
        t = _rng.threshold(p)
        weight = bernoulli_apply(weight, spec, call_key(weight, seed, stream, generator), 0, t, _rng.keep_scale(t))
    return F.embedding(input, weight, padding_idx)


def block_centres_rate(op: str, p: float, block_size: int, height, width, shape) -> float:
    """The Bernoulli rate ``gamma`` of block centres that drops about ``p`` of the units (Ghiasi et al., 2018)."""
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size < 1:
        raise fail(op, f"block_size is {block_size!r}; give a positive integer", shape=shape)
    if height == 0 or width == 0:
        return 0.0  # an empty map has no blocks to drop
    if block_size > height or block_size > width:
        raise fail(
            op,
            f"block_size is {block_size} but the feature map is {_fmt((height, width))}; "
            f"use block_size <= {min(height, width)}",
            shape=shape,
        )
    valid = (height - block_size + 1) * (width - block_size + 1)
    return min(1.0, p / block_size**2 * (height * width) / valid)


@_dist.sharded_global
def block_apply(x: Tensor, key: Tensor, j0, p: float, block_size: int, gamma: float, share_batch: bool = False):
    """DropBlock with centres drawn from ``key``; the kept units are rescaled by count / kept."""
    if _rng.threshold(p) == 0:
        return zeros_with_grad(x)
    n, c, h, w = x.shape
    centres = mask_of(
        key, (1 if share_batch else n, c, h - block_size + 1, w - block_size + 1), j0, round(gamma * 65536.0), x.device
    )
    pad = block_size - 1
    blocks = F.max_pool2d(F.pad(centres.float(), (pad, pad, pad, pad)), block_size, stride=1)
    keep = blocks == 0
    scale = keep.numel() / keep.sum().clamp_min(1)
    return torch.where(keep, x * scale.to(x.dtype), 0.0)


def drop_block2d(
    x: Tensor,
    p: float = 0.1,
    block_size: int = 7,
    *,
    training: bool = True,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DropBlock (Ghiasi et al., 2018): drop contiguous ``block_size`` x ``block_size`` regions of (N, C, H, W) maps.

    Block corners are drawn with rate ``gamma = p / block_size**2 * H W / ((H - block_size + 1) (W - block_size + 1))``
    on the same counter-based generator as dropout; kept units are rescaled by ``count / kept``.

    >>> import torch
    >>> y = drop_block2d(torch.ones(1, 1, 12, 12), 0.3, 3, seed=0)
    >>> dropped = (y == 0).nonzero()[0]                 # some dropped unit ...
    >>> r, c = dropped[2].item(), dropped[3].item()
    >>> bool((y[0, 0, r:r + 3, c:c + 3] == 0).all())    # ... is the corner of a dropped 3 x 3 block
    True
    """
    op = "noiseshape.torch.drop_block2d"
    if not training:
        p = check_rate(p, op=op, name="p")
        block_centres_rate(op, p, block_size, block_size, block_size, None)
        _check_seed(op, seed, stream, batch_offset, generator, None, None)
        return x
    _check_tensor(op, x)
    shape = tuple(x.shape)
    p = check_rate(p, op=op, name="p", shape=shape)
    if x.dim() != 4:
        raise fail(op, f"x has {axes_text(x.dim())}; DropBlock2d needs (N, C, H, W)", shape=shape)
    gamma = block_centres_rate(op, p, block_size, shape[2], shape[3], shape)
    seed, stream, batch_offset = _check_seed(op, seed, stream, batch_offset, generator, shape, None)
    if p == 0.0 or x.numel() == 0:
        return x
    inner = math.prod(shape[1:2]) * (shape[2] - block_size + 1) * (shape[3] - block_size + 1)
    j0 = batch_offset * inner
    check_index_range(j0, shape[0] * inner, batch_offset=batch_offset, op=op, shape=shape)
    return block_apply(x, call_key(x, seed, stream, generator), j0, p, int(block_size), gamma)


# ---------------------------------------------------------------------------------------------
# the mask itself


def keep_mask(
    shape: Sequence[int],
    p: float = 0.5,
    noise_shape: NoiseShape | None = None,
    *,
    broadcast_dims: BroadcastDims | None = None,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | int | None = None,
) -> Tensor:
    """The reduced keep mask (bool, at the noise shape) that :func:`dropout` applies to an input of ``shape``.

    >>> m = keep_mask((2, 3, 4), 0.5, (None, 1, 4), seed=0)
    >>> tuple(m.shape), m.dtype
    ((2, 1, 4), torch.bool)
    >>> from noiseshape import _rng
    >>> bool((m.numpy() == _rng.keep_flags((2, 1, 4), 0, 0, _rng.threshold(0.5))).all())   # the reference mask
    True
    """
    op = "noiseshape.torch.keep_mask"
    spec_text = _spec_text(noise_shape, broadcast_dims)
    shape = check_shape(shape, op=op, spec=spec_text)
    p = check_rate(p, op=op, name="p", shape=shape, spec=spec_text)
    spec = resolve(shape, noise_shape, broadcast_dims, op=op) if coords is None else None
    seed, stream, batch_offset = _check_seed(op, seed, stream, batch_offset, generator, shape, spec_text)
    spec, j0 = _coords.locate(
        op, shape, noise_shape, broadcast_dims, batch_offset=batch_offset, coords=coords, spec=spec, spec_text=spec_text
    )
    device = torch.device("cpu") if device is None else torch.device(device)
    key = draw_key(seed, stream, generator, device)
    return _rows.keep(key, spec.shape, j0, _rng.threshold(p)).bool()
