"""Plans of plain eager dropout calls: what a call derives from its input's shape and dtype, worked out once.

A training call of Bernoulli dropout (or one of its fixed-shape forms) on a plain CPU tensor,
outside tracing, with no generator, coords or batch offset, is decided by the input's shape and
dtype, the noise shape and the rate: the mask's shape and size, the threshold and scale, the
template backward's native multiply allocates its mask like, the mask's layout over a contiguous
input. :func:`drop` looks all of it up with one dictionary probe and runs the call in one function,
reading only the tensor attributes that can change from call to call. Such a call often runs right
after a backward pass, with cold caches, where every Python call and attribute on the way costs
about a microsecond. Anything else (tracing, a dispatch mode, ``torch.func``, another device or
layout, a dtype or rank the plan does not serve) returns None before a seed is drawn, and the
caller takes its checked path, which explains bad arguments.

The noise of a plan is ``None`` (the input's own shape), a Keras noise shape (a tuple of ``None``,
ints and ``...``), or a :class:`Rule`: the noise shape of spatial, locked or drop-path dropout,
which follows the input's rank.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from . import _eager, _ops
from ._engines import _ENTRY_TYPES, _resolve_eager

__all__ = ["Rule", "drop", "drop_path_rule", "locked_rule", "spatial_rule"]

_grad_enabled = torch.is_grad_enabled
_empty_like = torch.empty_like
_mul = torch.mul
_cpu_seed = _eager._cpu_seed
_plain_call = _eager.plain_call
_UNIT = (1,)
_refs = sys.getrefcount
_storage_uses = torch._C._storage_Use_Count


class Rule:
    """A noise shape that follows the input's rank; ``of(shape)`` is None where the rank does not fit."""

    __slots__ = ("name", "of")

    def __init__(self, name: str, of) -> None:
        self.name, self.of = name, of

    def __repr__(self) -> str:
        return f"Rule({self.name})"


def _spatial(dims: int, channels_first: bool) -> Rule:
    shape = (None, None) + (1,) * dims if channels_first else (None,) + (1,) * dims + (None,)
    return Rule(f"spatial {dims}-d {'channels_first' if channels_first else 'channels_last'}",
                lambda s: shape if len(s) == dims + 2 else None)  # fmt: skip


_SPATIAL = {(d, f): _spatial(d, f == "channels_first") for d in (1, 2, 3) for f in ("channels_first", "channels_last")}
_LOCKED = {
    True: Rule("locked, batch first", lambda s: (None, 1) + (None,) * (len(s) - 2) if len(s) >= 2 else None),
    False: Rule("locked, time first", lambda s: (1, None) + (None,) * (len(s) - 2) if len(s) >= 2 else None),
}
_DROP_PATH = Rule("drop path", lambda s: (None,) + (1,) * (len(s) - 1) if len(s) else None)
_NONE = Rule("none", lambda s: None)  # no plan: the checked path reports the argument


def spatial_rule(dims: int, data_format) -> Rule:
    """The rule of ``dims``-d spatial dropout in ``data_format`` (one that plans nothing for an unknown format)."""
    return _SPATIAL.get((dims, data_format), _NONE) if type(data_format) is str else _NONE


def locked_rule(batch_first) -> Rule:
    return _LOCKED[batch_first] if type(batch_first) is bool else _NONE


def drop_path_rule() -> Rule:
    return _DROP_PATH


class Plan:
    """What a plain call on an input of one shape and dtype does (see the module's text)."""

    __slots__ = (
        "bdims",
        "code",
        "direct",
        "full",
        "k",
        "layout",
        "limit",
        "n",
        "native",
        "noise",
        "scale",
        "shape",
        "spare",
        "t",
        "template",
    )  # fmt: skip

    bdims: object  # the broadcast dims the plan was made for (kept, like ``noise``)
    code: int  # the dtype's code in the C core
    direct: bool  # whether the C core draws the call (it has an input, and p < 1)
    full: bool  # whether the mask has the input's shape
    k: int  # mask elements
    layout: tuple  # (loop, x strides, y strides, mask strides) of the mask over a contiguous input and output
    limit: int  # the least ``_eager.NATIVE_MAX`` under which the call takes the native multiply
    n: int  # input elements
    native: int | None  # the native multiply's dtype code (float32 and float64 only), else None
    noise: object  # the noise the plan was made for (kept, so a tuple's identity tells it apart)
    scale: float  # the kept elements' factor
    shape: tuple  # the mask's shape
    t: int  # the keep threshold
    template: Tensor | None  # a tensor to allocate backward's scaled mask like, where the native multiply may serve
    spare: list  # the mask tensor of an earlier call, to reuse once nothing refers to it (at most one)


_PLANS: dict = {}


def _free_refs() -> int:
    """What ``sys.getrefcount`` says of a tensor that only a local variable refers to (as ``m`` in :func:`drop`)."""
    m = torch.empty(0)
    return _refs(m)


_FREE_REFS = _free_refs()


def _make(x_shape, dtype, p: float, noise, bdims, scale_by_keep: bool, op: str) -> Plan | None:
    """The plan of a call; None where the call needs the checked path (which reports what is wrong)."""
    from .functional import _threshold_and_scale

    code = _ops.DTYPE_CODES.get(dtype)
    core = _ops.core_for(torch.device("cpu"))
    if code is None or core is None or not 0.0 < p <= 1.0:
        return None
    if type(noise) is Rule:
        noise_shape = noise.of(x_shape)
        if noise_shape is None or bdims is not None:
            return None
    elif (noise is None or _plain(noise)) and (bdims is None or _plain(bdims)):
        noise_shape = noise
    else:
        return None
    if noise_shape is None and bdims is None:
        shape, full = tuple(x_shape), True
    else:
        spec, full = _resolve_eager(x_shape, noise_shape, bdims, op)  # raises on a noise shape that does not fit
        shape = tuple(spec.shape)
    t, scale = _threshold_and_scale(p)
    plan = Plan()
    plan.code, plan.full, plan.shape, plan.noise, plan.bdims, plan.t = code, full, shape, noise, bdims, t
    plan.scale = scale if scale_by_keep else 1.0
    plan.n = n = x_shape.numel()
    plan.k = k = n if full else math.prod(shape)
    strides = torch.empty(x_shape, device="meta").stride()  # a contiguous input's
    plan.layout = _ops._mask_layout(tuple(x_shape), strides, strides, shape)
    plan.limit = k if not full and n <= _eager.NATIVE_MAX_BROADCAST else n
    plan.direct = bool(t and n and hasattr(core, "shaped_dropout"))
    plan.native = _eager._NATIVE_DTYPES.get(dtype) if plan.direct and hasattr(core, "scaled_mask") else None
    plan.template, plan.spare = None, []
    if plan.native is not None and plan.limit <= _eager.NATIVE_MAX:
        with torch.inference_mode(False):
            plan.template = torch.empty(shape, dtype=dtype)
    return plan


def _plain(v) -> bool:
    """Whether ``v`` (a noise shape or broadcast dims) is made of plain ints, ``None`` and ``...`` (no bools)."""
    return type(v) is int or (type(v) is tuple and _ENTRY_TYPES.issuperset(map(type, v)))


def drop(
    x, p, noise, bdims, seed, stream, inplace: bool, scale_by_keep: bool, op: str, key=None
) -> Tensor | None:  # fmt: skip
    """Bernoulli dropout of a plain eager call by its plan; None where the call is not one (nothing drawn then).

    ``noise``: None, a noise shape or a :class:`Rule`; ``bdims``: Flax's ``broadcast_dims`` (or None).
    The caller has checked that there is no generator, coords or batch offset. ``key``: a seeded
    layer's ``() -> (seed, stream)`` (``seed`` and ``stream`` are then ignored), called once the call
    is known to be plain and its noise shape fits. Values are those of :func:`._eager.bernoulli`, bit for bit.
    """
    if type(p) is not float or not _plain_call(x, seed, stream):
        return None
    try:
        plan = _PLANS[(x.shape, x.dtype, p, noise, bdims, scale_by_keep)]
    except KeyError:
        plan = _make(x.shape, x.dtype, p, noise, bdims, scale_by_keep, op)
        if len(_PLANS) > 4096:
            _PLANS.clear()
        _PLANS[(x.shape, x.dtype, p, noise, bdims, scale_by_keep)] = plan
    except TypeError:  # an unhashable noise shape or broadcast dims
        return None
    if (
        plan is None
        or (plan.noise is not noise and not _plain(noise))  # equal keys: (None, True) == (None, 1)
        or (plan.bdims is not bdims and not _plain(bdims))
    ):
        return None
    if key is not None:
        seed, stream = key()
    elif seed is None:
        seed = _cpu_seed()
    core = _ops._core_module
    if not core or _ops.FORCE_TORCH or not plan.direct:
        return _eager.bernoulli(x, seed, stream, plan.shape, plan.full, plan.t, plan.scale, inplace)
    if x.requires_grad and _grad_enabled():
        if inplace or plan.template is None or plan.limit > _eager.NATIVE_MAX or _ops.SAVE_BITS:
            return _eager.bernoulli(x, seed, stream, plan.shape, plan.full, plan.t, plan.scale, inplace)
        # torch's own multiply by the scaled mask carries autograd (see _eager._native_mul)
        full = plan.full
        if full and not x.is_contiguous():
            return _eager._native_mul(core, x, seed, stream, plan.shape, 0, plan.t, plan.scale, True)
        spare = plan.spare
        try:  # the last call's mask tensor, where nothing refers to it any more (its backward has run)
            m = spare.pop()  # one step: two threads never take the same one
            if not (_refs(m) == _FREE_REFS and m._use_count() == 1 and _storage_uses(m.untyped_storage()._cdata) == 2):
                m = _empty_like(plan.template)
        except IndexError:
            m = _empty_like(plan.template)
        code = plan.native
        x_ptr = x.data_ptr() if full else 0  # the core reads a full-shape x to sign its zeros
        to_rewrite = core.scaled_mask(code, m.data_ptr(), plan.k, seed, stream, 0, plan.t, plan.scale, x_ptr)
        y = _mul(x, m)
        if to_rewrite:
            if full:
                loop, ys, ms = (plan.k,), _UNIT, _UNIT
            elif x.is_contiguous() and y.is_contiguous():
                loop, _, ys, ms = plan.layout
            else:
                _, loop, _, ys, ms = _eager._shaped_layout(x, y, plan.shape)
            core.zero_dropped(code, y.data_ptr(), m.data_ptr(), loop, ys, ms)
        if not spare:
            spare.append(m)
        return y
    if _forward_ad._current_level >= 0:
        return _eager.bernoulli(x, seed, stream, plan.shape, plan.full, plan.t, plan.scale, inplace)
    y = x if inplace else _empty_like(x)
    n = plan.n
    threads = _ops._threads(n)
    if x.is_contiguous():  # then so is y: empty_like keeps a dense input's strides
        if plan.full:
            core.dropout(plan.code, x.data_ptr(), y.data_ptr(), n, seed, stream, 0, plan.t, plan.scale, 0, threads)
            return y
        loop, xs, ys, ms = plan.layout
        code, k, t, scale = plan.code, plan.k, plan.t, plan.scale
        core.shaped_dropout(code, x.data_ptr(), y.data_ptr(), k, seed, stream, 0, t, loop, xs, ys, ms, scale, threads)
        return y
    _eager._draw_apply(core, x, y, seed, stream, plan.shape, 0, plan.t, plan.scale, plan.full)  # the kernel is there
    return y
