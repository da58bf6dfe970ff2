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

import contextlib
import functools
import sys

import torch
from torch import Tensor

from .. import _coords
from .._coords import Coords, Rows, global_samples
from .._errors import fail
from .._spec import NoiseSpec

__all__ = [
    "Coords",
    "accumulate",
    "agree_seed",
    "global_samples",
    "rank_offset",
    "row_offsets",
    "sharded",
    "sharded_global",
]

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


class _SameLayout(torch.autograd.Function):
    """Noise on a DTensor whose gradient is laid out like the incoming gradient (as for DTensor's elementwise ops).

    ``apply(t)`` draws the noise of a DTensor ``t`` at ``t``'s own placements; for multiplicative noise the
    backward is the same map applied to the gradient (whatever its placements, Partial included), for
    additive noise it is the identity. No layout change, so no collective appears downstream either.
    """

    @staticmethod
    def forward(ctx, x, apply, identity_backward):
        ctx.noise, ctx.identity = apply, identity_backward
        y = apply(x)
        ctx.inplace = y is x
        if ctx.inplace:
            ctx.mark_dirty(x)
        return y

    @staticmethod
    def backward(ctx, grad):
        if ctx.identity:
            return grad, None, None
        # an in-place call writes into its argument: give it a gradient of its own (it may be an expanded view)
        return ctx.noise(grad.clone() if ctx.inplace else grad), None, None


def sharded(kind: str):
    """Make an engine ``fn(x, spec, key, j0, ...)`` accept a DTensor ``x`` (``spec`` resolved against its global shape).

    ``kind`` says how the noise combines with ``x``: ``"multiplicative"`` noise also takes Partial inputs.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind is {kind!r}; give one of {_KINDS}")

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(x, spec, key, j0, *args, **kwargs):
            if type(x) is Tensor or not is_dtensor(x):  # the plain-tensor path pays one type check
                return fn(x, spec, key, j0, *args, **kwargs)
            op = _op_name(fn)

            def at_layout(t):
                local_shape, offset = _layout(op, t, kind)
                shared = spec.shared
                local_spec = NoiseSpec(local_shape, tuple(1 if s else n for s, n in zip(shared, local_shape)), shared)
                at = _coords.row_starts(op, local_spec, spec.shape, offset)
                local = t.to_local()
                return _wrap(t, fn(local, local_spec, key, _shift(op, at, j0, tuple(t.shape)), *args, **kwargs), local)

            if kind == "affine":  # backward is not the noise itself: differentiate through to_local / from_local
                return at_layout(x)
            return _SameLayout.apply(x, at_layout, kind == "additive")

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
        if type(x) is Tensor or not is_dtensor(x):
            return fn(x, key, j0, *args, **kwargs)

        def at_layout(t):
            local_shape, offset = _layout(_op_name(fn), t, "multiplicative")
            local = t.to_local()
            factor = fn(torch.ones(t.shape, dtype=local.dtype, device=local.device), key, j0, *args, **kwargs)
            block = factor[tuple(slice(o, o + n) for o, n in zip(offset, local_shape))]
            y = torch.where(block != 0, local * block, torch.zeros((), dtype=local.dtype, device=local.device))
            return _wrap(t, y, local)

        return _SameLayout.apply(x, at_layout, False)

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
        from ._eager import draw_seed

        seed = draw_seed(None)  # the draw an unseeded call makes
    seed = check_u64(seed, name="seed", op="noiseshape.torch.distributed.agree_seed")
    buf = torch.tensor([seed - (1 << 64) if seed >> 63 else seed], dtype=torch.int64)
    dist.broadcast(buf, src=dist.get_global_rank(group, src) if group is not None else src, group=group)
    return int(buf.item()) & ((1 << 64) - 1)


@contextlib.contextmanager
def accumulate(model: torch.nn.Module):
    """Gradient accumulation: every forward call of ``model`` inside the block draws the masks of one step.

    A seeded noise layer advances its stream once per training call, so ``k`` micro-batches would
    otherwise draw ``k`` different streams. Inside the block each call of ``model`` starts from the
    streams the block was entered with, and the block leaves them as one call left them. Combine it
    with :func:`global_samples` so each micro-batch takes its rows' masks:

    >>> import torch, noiseshape.torch as nst
    >>> from noiseshape.torch.distributed import accumulate, global_samples
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 3), nst.Dropout(0.5, seed=1))
    >>> x = torch.randn(6, 3)
    >>> with accumulate(model):
    ...     parts = []
    ...     for start in (0, 2, 4):
    ...         with global_samples(start, 2):
    ...             parts.append(model(x[start : start + 2]))
    >>> whole = nst.Dropout(0.5, seed=1)(model[0](x))
    >>> torch.equal(torch.cat(parts), whole), model[1].rng_key.tolist()    # one step: the stream moved once
    (True, [1, 1])
    """
    from .modules import _NoiseLayer

    layers = [m for m in model.modules() if isinstance(m, _NoiseLayer) and m.seed is not None]
    start = [m.rng_key.clone() for m in layers]

    def rewind(module, args):
        with torch.no_grad():
            for m, k in zip(layers, start):
                m.rng_key.copy_(k)

    handle = model.register_forward_pre_hook(rewind)
    try:
        yield
    finally:
        handle.remove()
