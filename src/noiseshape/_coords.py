"""Global coordinates: where an array sits inside a larger one (``docs/rng.md``). Pure Python and NumPy.

A mask element's index ``j`` is the row-major index of its **global** coordinate in the **global**
reduced shape. An array that is a piece of a larger one (a micro-batch, a rank's share of a batch, a
shard of a DTensor) gives its offset along every axis, the global shape, or per-row sample ids, and
draws exactly the elements of the larger array's mask that it holds.

The local reduced mask of such a piece is a set of *rows*: the trailing axes that the piece holds
whole, together with the last axis it holds only in part, are contiguous in ``j``. :func:`locate`
returns the first global index of every row (:class:`Rows`), or one integer when the piece is a single
run (the ``j0`` of the contiguous kernels, bit for bit what ``batch_offset`` gives).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._errors import fail
from ._spec import INDEX_LIMIT, NoiseSpec, _fmt, check_index_range, resolve

__all__ = ["Coords", "Rows", "global_samples", "locate", "row_starts"]


@dataclass(frozen=True)
class Coords:
    """Where an array sits inside a larger (global) array.

    ``offset`` is the global index of the array's first element along each axis (missing trailing
    entries are 0); ``global_shape`` is the larger array's shape (``None``: the array's own shape, with
    an unbounded batch axis); ``sample_ids`` gives, for each index along the batch axis, the global
    sample it holds (rows in any order, e.g. a ``DistributedSampler``'s strided indices). The noise
    shape is resolved against the global shape.

    >>> import numpy as np, noiseshape.numpy as nsn
    >>> whole = nsn.keep_mask((4, 6), 0.5, seed=0)
    >>> part = nsn.keep_mask((2, 3), 0.5, seed=0, coords=Coords(offset=(1, 3), global_shape=(4, 6)))
    >>> bool((part == whole[1:3, 3:6]).all())                    # a block of the whole mask
    True
    >>> rows = nsn.keep_mask((2, 6), 0.5, seed=0, coords=Coords(sample_ids=[3, 0]))
    >>> bool((rows == whole[[3, 0]]).all())                      # rows 3 and 0, in that order
    True
    """

    offset: tuple = ()
    global_shape: tuple | None = None
    sample_ids: Any = None


class Rows(NamedTuple):
    """A local reduced mask as rows of ``run`` consecutive global indices starting at ``starts`` (int64)."""

    starts: np.ndarray
    run: int


#: the enclosing global_samples blocks, innermost last (process-wide: a plain list traces under torch.compile)
_SAMPLES: list = []


@contextlib.contextmanager
def global_samples(offset: int | None = None, count: int | None = None, *, sample_ids=None):
    """Within the block, the batch axis of every noise call holds these global samples.

    Give ``offset`` and ``count`` (this process holds samples ``offset .. offset + count - 1``) or
    ``sample_ids`` (the global sample of each row, in order). Calls that pass ``batch_offset`` or
    ``coords`` themselves are not affected; a call whose batch axis does not have ``count`` rows is an
    error. Re-enter the same block around activation-checkpoint recomputation.
    """
    op = "noiseshape.global_samples"
    if sample_ids is not None:
        if offset is not None:
            raise fail(op, "offset and sample_ids both given; give the offset of a contiguous range or the ids")
        ids = _ids(op, sample_ids, None, None, None)
        value: tuple[int, int, np.ndarray | None] = (0, len(ids), ids)
    else:
        if offset is None or count is None:
            raise fail(op, "give offset and count (the rows this process holds), or sample_ids")
        value = (_nonneg(op, offset, "offset"), _nonneg(op, count, "count"), None)
    _SAMPLES.append(value)
    try:
        yield
    finally:
        _SAMPLES.pop()


def _nonneg(op, v, name, shape=None, spec=None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise fail(op, f"{name} is {v!r}; give a non-negative integer", shape=shape, spec=spec)
    return int(v)


def _ids(op, sample_ids, rows, shape, spec) -> np.ndarray:
    if hasattr(sample_ids, "detach"):  # a torch tensor
        sample_ids = sample_ids.detach().cpu().numpy()
    ids = np.asarray(sample_ids)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "ui"):
        raise fail(
            op,
            f"sample_ids has shape {ids.shape} and dtype {ids.dtype}; give a 1-d sequence of integer sample ids",
            shape=shape,
            spec=spec,
        )
    if rows is not None and ids.size != rows:
        raise fail(
            op,
            f"sample_ids has {ids.size} entries but the batch axis has {rows} rows; give one id per row",
            shape=shape,
            spec=spec,
        )
    if ids.size and (ids.min() < 0 or int(ids.max()) >= INDEX_LIMIT):
        raise fail(op, "sample_ids holds a negative or too large id; ids are in [0, 2**63 - 1)", shape=shape, spec=spec)
    return ids.astype(np.int64)


def _global_shape(op, coords: Coords, shape, axis, spec_text):
    """The checked ``(global_shape, offset, ids)``; the batch axis may have global size ``None``."""
    ndim = len(shape)
    if not isinstance(coords, Coords):
        raise fail(
            op,
            f"coords is a {type(coords).__name__}; give noiseshape.Coords(offset=, global_shape=, sample_ids=)",
            shape=shape,
            spec=spec_text,
        )
    offset = coords.offset
    if isinstance(offset, numbers.Integral):
        offset = (offset,)
    offset = tuple(offset)
    if len(offset) > ndim:
        raise fail(op, f"coords.offset has {len(offset)} entries but x has {ndim} axes", shape=shape, spec=spec_text)
    offset = tuple(_nonneg(op, o, f"coords.offset[{d}]", shape, spec_text) for d, o in enumerate(offset))
    offset += (0,) * (ndim - len(offset))
    if coords.global_shape is None:
        glob = tuple(None if d == axis else n for d, n in enumerate(shape))
    else:
        glob = tuple(coords.global_shape)
        if len(glob) != ndim:
            raise fail(
                op,
                f"coords.global_shape is {_fmt(glob)} but x has {ndim} axes; give one size per axis",
                shape=shape,
                spec=spec_text,
            )
        glob = tuple(
            None if (g is None and d == axis) else _nonneg(op, g, f"coords.global_shape[{d}]", shape, spec_text)
            for d, g in enumerate(glob)
        )
    for d, (n, o, g) in enumerate(zip(shape, offset, glob)):
        if g is None:
            continue
        if o + n > g:
            raise fail(
                op,
                f"x covers indices {o}..{o + n - 1} of axis {d} but the global shape {_fmt(glob)} has only {g}; "
                "fix coords.offset or coords.global_shape",
                shape=shape,
                spec=spec_text,
            )
    ids = None
    if coords.sample_ids is not None:
        if offset[axis]:
            raise fail(
                op,
                f"coords gives both sample_ids and an offset along the batch axis {axis}; give one of them",
                shape=shape,
                spec=spec_text,
            )
        ids = _ids(op, coords.sample_ids, shape[axis] if ndim else 1, shape, spec_text)
        if glob[axis] is not None and ids.size and int(ids.max()) >= glob[axis]:
            raise fail(
                op,
                f"sample_ids reaches {int(ids.max())} but the global batch has {glob[axis]} samples",
                shape=shape,
                spec=spec_text,
            )
    return glob, offset, ids


def locate(op, shape, noise_shape, broadcast_dims, *, batch_offset=0, coords=None, axis=0, spec=None, spec_text=None):
    """Resolve a call's noise spec and place it: ``(local spec, j0 or Rows)``.

    The noise shape is resolved against the global shape (the local one where no ``coords`` give it);
    ``batch_offset`` is the axis-``axis`` shorthand; without either, an enclosing
    :func:`global_samples` block places the batch axis. ``spec`` is the noise shape already resolved
    against ``shape``, if the caller has it.
    """
    shape = tuple(shape)
    if coords is None:
        spec = spec if spec is not None else resolve(shape, noise_shape, broadcast_dims, op=op)
        if not batch_offset:
            return spec, in_context(op, spec, axis, spec_text)
        if not shape or spec.shared[axis]:
            return spec, 0
        j0 = batch_offset * math.prod(spec.shape[axis + 1 :])
        check_index_range(j0, math.prod(spec.shape), batch_offset=batch_offset, op=op, shape=shape, spec=spec_text)
        return spec, j0
    if batch_offset:
        raise fail(
            op, "batch_offset and coords both given; put the offset in coords.offset", shape=shape, spec=spec_text
        )
    glob, offset, ids = _global_shape(op, coords, shape, axis, spec_text)
    resolve_shape = tuple(shape[d] if g is None else g for d, g in enumerate(glob))
    g_spec = resolve(resolve_shape, noise_shape, broadcast_dims, op=op)
    local = NoiseSpec(shape, tuple(1 if s else n for s, n in zip(g_spec.shared, shape)), g_spec.shared)
    g_reduced = tuple(None if g is None else r for g, r in zip(glob, g_spec.shape))
    return local, row_starts(op, local, g_reduced, offset, ids, axis, spec_text)


def in_block() -> bool:
    """Whether a :func:`global_samples` block is open."""
    return bool(_SAMPLES)


def in_context(op, spec: NoiseSpec, axis: int = 0, spec_text=None):
    """Where a mask at ``spec`` sits inside the enclosing :func:`global_samples` block (0 outside any)."""
    shape = spec.input_shape
    if not _SAMPLES or not shape:
        return 0
    offset, count, ids = _SAMPLES[-1]
    if shape[axis] != count:
        raise fail(
            op,
            f"x has {shape[axis]} rows along its batch axis {axis} but the enclosing global_samples block "
            f"holds {count}; noise calls inside it must keep the batch axis whole",
            shape=shape,
            spec=spec_text,
        )
    g_reduced = tuple(None if d == axis else n for d, n in enumerate(spec.shape))
    return row_starts(op, spec, g_reduced, (0,) * axis + (offset,), ids, axis, spec_text)


def row_starts(op, local: NoiseSpec, g_reduced, offset, ids=None, axis=0, spec_text=None):
    """The first global index of every row of ``local``'s reduced mask (see the module docstring)."""
    r_local = local.shape
    ndim = len(r_local)
    if ndim == 0 or math.prod(r_local) == 0:
        return 0
    shared = local.shared
    offset = tuple(offset) + (0,) * (ndim - len(offset))
    offset = tuple(0 if s else o for s, o in zip(shared, offset))
    if ids is not None and shared[axis]:
        ids = None
    for d in range(axis if g_reduced[axis] is None else 0):  # strides of the axes before an unbounded batch axis
        if r_local[d] != 1 or offset[d]:
            raise fail(
                op,
                f"axis {d} comes before the batch axis {axis}; give coords.global_shape so its stride is known",
                shape=local.input_shape,
                spec=spec_text,
            )
    strides = [1] * ndim
    for d in range(ndim - 2, -1, -1):
        strides[d] = strides[d + 1] * (r_local[d + 1] if g_reduced[d + 1] is None else g_reduced[d + 1])

    def whole(d):
        return r_local[d] == g_reduced[d] and not offset[d] and not (ids is not None and d == axis)

    k = max([d for d in range(ndim) if not whole(d)], default=0)
    if ids is not None:
        k = max(k, axis + 1)
    # the largest index, in Python integers (never wraps)
    top = 0
    for d in range(ndim):
        last = int(ids.max()) if ids is not None and d == axis else offset[d] + r_local[d] - 1
        top += last * strides[d]
    if top >= INDEX_LIMIT:
        raise fail(
            op,
            f"the global coordinates put mask indices past 2**63 - 1 (the largest would be {top}), and every "
            "backend draws masks at indices below 2**63 - 1; use smaller offsets or sample ids",
            shape=local.input_shape,
            spec=spec_text,
        )
    starts = np.zeros(r_local[:k], dtype=np.int64)
    for d in range(k):
        coord = ids if ids is not None and d == axis else np.arange(r_local[d], dtype=np.int64) + offset[d]
        starts += (coord * strides[d]).reshape((r_local[d],) + (1,) * (k - d - 1))
    if k < ndim:
        starts += offset[k] * strides[k]
    starts = starts.reshape(-1)
    if starts.size == 1:
        return int(starts[0])
    return Rows(starts, math.prod(r_local[k:]))
