"""noiseshape on ``torch.distributed``: DTensor inputs, data-parallel rows, seeds agreed across ranks.

Masks are a pure function of (seed, stream, global coordinate) (``docs/rng.md``), so a layout only has
to tell each process *where* its piece sits; nothing is communicated and no RNG state is forked.

* **DTensor.** Every function and module of :mod:`noiseshape.torch` takes a DTensor and returns one with
  the same placements: the local shard is drawn at its global coordinates
  (``compute_local_shape_and_global_offset``) with the noise shape resolved against the global shape,
  so ``y.full_tensor()`` is bit for bit the single-process result, on any mesh and any sharding.
  ``Partial`` inputs are accepted by the ops whose noise multiplies (a mask commutes with the sum).
* **Data parallelism.** :func:`global_samples` (a ``with`` block) tells every noise call inside it which
  global samples the batch axis holds; :func:`rank_offset` computes a rank's offset (prefix sum of the
  ranks' batch sizes); or pass the sample ids the data pipeline already has.
* **Seeds.** Unseeded calls draw from torch's default generator, which differs between ranks that were
  not seeded alike: :func:`agree_seed` gives every rank of a group the same seed.
"""

from __future__ import annotations

import functools
import sys

import torch
from torch import Tensor

from .. import _coords
from .._coords import Coords, Rows, global_samples
from .._errors import fail
from .._spec import NoiseSpec

__all__ = ["Coords", "agree_seed", "global_samples", "rank_offset", "row_offsets", "sharded", "sharded_global"]

_KINDS = ("multiplicative", "affine", "additive")


def is_dtensor(x) -> bool:
    """Whether ``x`` is a DTensor (without importing ``torch.distributed.tensor`` when nothing did)."""
    if "torch.distributed.tensor" not in sys.modules:
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(x, DTensor)


def _op_name(fn) -> str:
    return f"noiseshape.torch.{fn.__name__.removesuffix('_apply')}"


def _layout(op: str, x, kind: str):
    """The mesh, placements, local shape and global offset of a DTensor ``x``, checked for ``kind`` of noise."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape = tuple(x.shape)
    for p in x.placements:
        if type(p).__name__ == "_StridedShard":
            raise fail(
                op,
                f"x is sharded with {p!r}, whose shards are not contiguous blocks of the global tensor; "
                "redistribute it to Shard or Replicate placements first",
                shape=shape,
            )
        if p.is_partial():
            if kind != "multiplicative":
                raise fail(
                    op,
                    f"x has a Partial placement ({p!r}) but this noise is {kind}, so it does not commute with the "
                    "pending reduction; reduce first (x.redistribute(placements=[Replicate()]))",
                    shape=shape,
                )
            if getattr(p, "reduce_op", "sum") not in ("sum", "avg"):
                raise fail(
                    op,
                    f"x has a Partial placement with reduce_op {p.reduce_op!r}; a mask commutes only with 'sum' and "
                    "'avg': reduce first",
                    shape=shape,
                )
    local_shape, offset = compute_local_shape_and_global_offset(x.shape, x.device_mesh, x.placements)
    return tuple(local_shape), tuple(offset)


def _wrap(x, y_local: Tensor, local: Tensor):
    from torch.distributed.tensor import DTensor

    if y_local is local:  # an in-place call
        return x
    return DTensor.from_local(y_local, x.device_mesh, x.placements, run_check=False, shape=x.shape, stride=x.stride())


def _shift(op, at, j0, shape):
    if isinstance(j0, Rows):
        raise fail(op, "sample_ids with a DTensor input: the DTensor's placements already place every row", shape=shape)
    if not j0:
        return at
    return Rows(at.starts + j0, at.run) if isinstance(at, Rows) else at + j0


def sharded(kind: str):
    """Make an engine ``fn(x, spec, key, j0, ...)`` accept a DTensor ``x`` (``spec`` resolved against its global shape).

    ``kind`` says how the noise combines with ``x``: ``"multiplicative"`` noise also takes Partial inputs.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind is {kind!r}; give one of {_KINDS}")

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(x, spec, key, j0, *args, **kwargs):
            if not is_dtensor(x):
                return fn(x, spec, key, j0, *args, **kwargs)
            op = _op_name(fn)
            local_shape, offset = _layout(op, x, kind)
            local_spec = NoiseSpec(
                local_shape, tuple(1 if s else n for s, n in zip(spec.shared, local_shape)), spec.shared
            )
            at = _coords.row_starts(op, local_spec, spec.shape, offset, spec_text=None)
            local = x.to_local()
            y = fn(local, local_spec, key, _shift(op, at, j0, tuple(x.shape)), *args, **kwargs)
            return _wrap(x, y, local)

        return wrapper

    return deco


def sharded_global(fn):
    """Make ``fn(x, key, j0, ...)``, whose noise depends on statistics of the whole tensor, accept a DTensor ``x``.

    Each process draws the noise of the whole (global) tensor, as a factor ``fn(ones)`` that is 0 where
    ``x`` is dropped and the scale elsewhere, and applies its block of it: no communication, at the
    cost of one global-size tensor per process. Only multiplicative noise qualifies.
    """

    @functools.wraps(fn)
    def wrapper(x, key, j0, *args, **kwargs):
        if not is_dtensor(x):
            return fn(x, key, j0, *args, **kwargs)
        local_shape, offset = _layout(_op_name(fn), x, "multiplicative")
        local = x.to_local()
        factor = fn(torch.ones(x.shape, dtype=local.dtype, device=local.device), key, j0, *args, **kwargs)
        block = factor[tuple(slice(o, o + n) for o, n in zip(offset, local_shape))]
        y = torch.where(block != 0, local * block, torch.zeros((), dtype=local.dtype, device=local.device))
        return _wrap(x, y, local)

    return wrapper


def check_same_placements(op: str, x, other, name: str) -> None:
    """``other`` must be laid out like ``x`` (both DTensors with equal placements, or both plain tensors)."""
    if not (is_dtensor(x) or is_dtensor(other)):
        return
    same = (
        is_dtensor(x) and is_dtensor(other) and x.placements == other.placements and x.device_mesh == other.device_mesh
    )
    if not same:
        where = {True: "a DTensor", False: "a plain tensor"}
        desc_x = f"{where[is_dtensor(x)]}" + (f" {x.placements}" if is_dtensor(x) else "")
        desc_o = f"{where[is_dtensor(other)]}" + (f" {other.placements}" if is_dtensor(other) else "")
        raise fail(
            op,
            f"x is {desc_x} but {name} is {desc_o}; give {name} the same mesh and placements as x "
            "(noiseshape never communicates to align them)",
            shape=tuple(x.shape),
        )


# ---------------------------------------------------------------------------------------------
# data parallelism


def row_offsets(sizes) -> list[int]:
    """The global offset of each rank's rows: the exclusive prefix sum of the ranks' batch sizes.

    >>> row_offsets([4, 4, 3])                    # an uneven last batch
    [0, 4, 8]
    """
    out, total = [], 0
    for n in sizes:
        n = int(n)
        if n < 0:
            raise fail("noiseshape.torch.distributed.row_offsets", f"a batch size is {n}; sizes cannot be negative")
        out.append(total)
        total += n
    return out


def rank_offset(rows: int, group=None) -> int:
    """This rank's global row offset in a batch split over ``group``, rank by rank (one all-gather of sizes).

    Use it with :func:`global_samples`: ``with global_samples(rank_offset(len(x)), len(x)): model(x)``.
    """
    import torch.distributed as dist

    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor([int(rows)], dtype=torch.int64), group=group)
    return row_offsets([s.item() for s in sizes])[dist.get_rank(group)]


# ---------------------------------------------------------------------------------------------
# seeds


def agree_seed(seed: int | None = None, group=None, src: int = 0) -> int:
    """One 64-bit seed for every rank of ``group``: ``seed`` (or a draw from torch's default generator) on rank ``src``.

    Use it for seeded modules (``Dropout(p, seed=agree_seed())``), for ``seed=`` in functional calls,
    or to seed a ``torch.Generator`` passed as ``generator=``. Without it, unseeded calls on ranks that
    were not seeded alike draw unrelated seeds, so replicated (and DTensor) activations get different
    masks on different ranks.
    """
    import torch.distributed as dist

    from .._spec import check_u64

    if seed is None:
        seed = int(torch.randint(0, 1 << 62, (1,)).item()) << 2 | int(torch.randint(0, 4, (1,)).item())
    seed = check_u64(seed, name="seed", op="noiseshape.torch.distributed.agree_seed")
    buf = torch.tensor([seed - (1 << 64) if seed >> 63 else seed], dtype=torch.int64)
    dist.broadcast(buf, src=dist.get_global_rank(group, src) if group is not None else src, group=group)
    return int(buf.item()) & ((1 << 64) - 1)
