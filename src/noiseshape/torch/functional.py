"""Functional forms of the shaped-noise family on torch tensors.

Every function draws its noise at a reduced *noise shape* and broadcasts it over the shared axes.
Randomness: by default each call draws a 64-bit seed from torch's default CPU generator (or from
``generator=``), so ``torch.manual_seed`` reproduces a run, and the same seed gives the same mask on
every device. ``seed=`` and ``stream=`` make a call a pure function of its arguments;
``batch_offset=`` is the global index of ``x[0]`` in a larger batch, so micro-batches reproduce the
masks of the whole batch; ``coords=`` (:class:`noiseshape.Coords`) places ``x`` inside a larger tensor
along every axis or by per-row sample ids, and a DTensor is placed by its placements
(:mod:`noiseshape.torch.distributed`). With ``training=False`` (or a zero rate) the input is returned
unchanged.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
from torch import Tensor

from .. import _coords, _rng
from .._coords import Coords
from .._errors import axes_text, fail
from .._spec import NoiseSpec, _spec_text, check_rate, resolve
from .._types import BroadcastDims, NoiseShape
from . import _eager, _gauss, _ops, _plans, _rows
from . import distributed as _dist
from ._eager import eager_ok
from ._engines import (
    _DROPOUT_ADD,
    _check_seed,
    _check_tensor,
    _key_tensor,
    alpha_apply,
    bernoulli_apply,
    call_key,
    gaussian_add_apply,
    gaussian_mul_apply,
    resolve_cached,
)
from ._regions import drop_block2d, embedding_dropout, keep_mask

__all__ = [
    "alpha_dropout",
    "drop_block2d",
    "drop_path",
    "dropout",
    "dropout_add",
    "embedding_dropout",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "keep_mask",
    "locked_dropout",
    "spatial_dropout1d",
    "spatial_dropout2d",
    "spatial_dropout3d",
]


# ---------------------------------------------------------------------------------------------
# dropout and its fixed-shape forms


class _Draw(NamedTuple):
    """What a training call draws its noise with: the checked rate, the noise spec, the key, the first global index.

    ``key`` is ``(seed, stream)`` as Python ints on the eager path, else the int64 key tensor;
    ``full`` says whether the mask has the input's shape.
    """

    rate: float
    spec: NoiseSpec
    key: object
    j0: int
    full: bool


def _check_p(p, op: str, shape=None, spec=None) -> float:
    return check_rate(p, op=op, name="p", shape=shape, spec=spec)


def _entry_probe(noise_shape, broadcast_dims):
    """An input shape that every well-formed entry of ``noise_shape`` fits (to check the entries without ``x``)."""
    if broadcast_dims is not None:
        return (1,) * 64
    try:
        entries = list(noise_shape)
    except TypeError:
        return ()
    return tuple(
        max(int(e), 0) if isinstance(e, numbers.Integral) and not isinstance(e, bool) else 1
        for e in entries
        if e is not Ellipsis
    )


def check_static(
    op, rate, noise_shape, broadcast_dims, seed, stream, batch_offset, generator, *, check=_check_p
) -> None:
    """Check the arguments of a call that do not depend on ``x`` (what a ``training=False`` call still checks)."""
    if (
        type(rate) is float
        and 0.0 <= rate < _RATE_BELOW.get(check, 0.0)
        and noise_shape is None
        and broadcast_dims is None
        and seed is None
        and generator is None
        and stream == 0
        and batch_offset == 0
        and type(stream) is int
        and type(batch_offset) is int
    ):
        return
    spec_text = _spec_text(noise_shape, broadcast_dims)
    check(rate, op, None, spec_text)
    if noise_shape is not None or broadcast_dims is not None:
        resolve(_entry_probe(noise_shape, broadcast_dims), noise_shape, broadcast_dims, op=op)
    _check_seed(op, seed, stream, batch_offset, generator, None, spec_text)


def _plain_u64(v) -> bool:
    return type(v) is int and 0 <= v <= _U64


_U64 = (1 << 64) - 1
_ZERO = 0


def _prepare(
    op,
    x,
    rate,
    noise_shape,
    broadcast_dims,
    training,
    seed,
    stream,
    batch_offset,
    generator,
    *,
    check=_check_p,
    batch_axis=0,
    coords: Coords | None = None,
) -> _Draw | None:
    """Check a call on ``x`` (``x``, ``rate`` with ``check``, the noise shape, the seed arguments) and draw its key.

    None when the call leaves ``x`` unchanged (``training=False`` or a zero rate); no seed is drawn then.
    With ``training=False`` only the arguments that do not depend on ``x`` are checked.
    """
    if not training:
        check_static(op, rate, noise_shape, broadcast_dims, seed, stream, batch_offset, generator, check=check)
        return None
    if (
        type(rate) is float
        and 0.0 <= rate < _RATE_BELOW.get(check, 0.0)
        and _plain_call(x, seed, stream, batch_offset, generator, coords)
    ):  # the common eager call: plain arguments, checks and noise shape resolution cached
        if rate == 0.0:
            resolve_cached(x.shape, noise_shape, broadcast_dims, op)
            return None
        spec, full = resolve_cached(x.shape, noise_shape, broadcast_dims, op)
        if batch_offset:
            where = dict(batch_offset=batch_offset, axis=batch_axis, spec=spec)
            spec, j0 = _coords.locate(op, tuple(x.shape), noise_shape, broadcast_dims, **where)
        else:
            j0 = _coords.in_context(op, spec, batch_axis)
        return _Draw(rate, spec, (_eager.draw_seed(None) if seed is None else seed, stream), j0, full)
    spec_text = _spec_text(noise_shape, broadcast_dims)
    _check_tensor(op, x, spec_text)
    shape = tuple(x.shape)
    rate = check(rate, op, shape, spec_text)
    resolved = resolve(shape, noise_shape, broadcast_dims, op=op) if coords is None else None
    seed, stream, batch_offset = _check_seed(op, seed, stream, batch_offset, generator, shape, spec_text)
    if rate == 0.0:
        return None
    where = dict(batch_offset=batch_offset, coords=coords, axis=batch_axis, spec=resolved, spec_text=spec_text)
    spec, j0 = _coords.locate(op, shape, noise_shape, broadcast_dims, **where)
    return _Draw(rate, spec, call_key(x, seed, stream, generator), j0, spec.full)


_THRESHOLDS: dict = {}


def _threshold_and_scale(rate: float) -> tuple[int, float]:
    """``(threshold, keep scale)`` of a rate, cached (not while traced: a lookup would guard on the cache)."""
    if torch.compiler.is_compiling():
        t = _rng.threshold(rate)
        return t, _rng.keep_scale(t)
    hit = _THRESHOLDS.get(rate)
    if hit is None:
        t = _rng.threshold(rate)
        if len(_THRESHOLDS) > 1024:
            _THRESHOLDS.clear()
        hit = _THRESHOLDS[rate] = (t, _rng.keep_scale(t))
    return hit


def _plain_call(x, seed, stream, batch_offset, generator, coords) -> bool:
    """Whether the seed arguments are plain ints (no generator, no coords) and ``x`` is a plain eager tensor
    (:func:`._eager.eager_ok`) of a dtype the kernels take."""
    return (
        generator is None
        and coords is None
        and (seed is None or _plain_u64(seed))
        and type(stream) is int
        and type(batch_offset) is int
        and (stream == 0 or _plain_u64(stream))
        and (batch_offset == 0 or _plain_u64(batch_offset))
        and eager_ok(x)  # x is a tensor
        and x.dtype in _ops.DTYPE_CODES
    )


def _drop(x: Tensor, d: _Draw, inplace: bool = False, scale_by_keep: bool = True) -> Tensor:
    """Bernoulli dropout of ``x`` with the rate and key of ``d``."""
    t, scale = _threshold_and_scale(d.rate)
    return bernoulli_apply(x, d.spec, d.key, d.j0, t, scale if scale_by_keep else 1.0, inplace, d.full)


def dropout(
    x: Tensor,
    p: float = 0.5,
    noise_shape: NoiseShape | None = None,
    *,
    broadcast_dims: BroadcastDims | None = None,
    training: bool = True,
    inplace: bool = False,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Dropout (Srivastava et al., 2014) with a Keras ``noise_shape`` or Flax ``broadcast_dims``.

    The keep mask is drawn at the noise shape (``None``: an independent draw along the axis, ``1``:
    one draw shared along it) and broadcast; kept values are scaled by the inverse of the realised
    keep probability, dropped values become exactly 0 (also ``nan`` and ``inf``).

    >>> import torch
    >>> x = torch.ones(2, 3, 4)
    >>> y = dropout(x, 0.5, noise_shape=(None, 1, None), seed=0)
    >>> sorted(set(y.flatten().tolist()))        # kept values are scaled by 1 / 0.5
    [0.0, 2.0]
    >>> bool((y == y[:, :1, :]).all())            # the same features are dropped at every step
    True
    >>> part = dropout(x[1:], 0.5, noise_shape=(None, 1, None), seed=0, batch_offset=1)
    >>> torch.equal(part, y[1:])                  # a micro-batch reproduces the whole batch's masks
    True
    >>> dropout(x, 0.5, training=False) is x
    True
    """
    op = "noiseshape.torch.dropout"
    if training is True and generator is None and coords is None and batch_offset is _ZERO:
        y = _plans.drop(x, p, noise_shape, broadcast_dims, seed, stream, inplace, True, op)
        if y is not None:  # a plain call, by its plan
            return y
    d = _prepare(op, x, p, noise_shape, broadcast_dims, training, seed, stream, batch_offset, generator, coords=coords)
    return x if d is None else _drop(x, d, inplace)


def dropout_add(
    x: Tensor,
    residual: Tensor,
    p: float = 0.5,
    noise_shape: NoiseShape | None = None,
    *,
    bias: Tensor | None = None,
    broadcast_dims: BroadcastDims | None = None,
    training: bool = True,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``residual + dropout(x + bias)``: the residual connection of a transformer block.

    On CUDA with Triton the full-shape form runs as one kernel (one read of ``x``, ``residual`` and
    ``bias``, one write) and backward recomputes the mask from the seed; elsewhere, and with a noise
    shape, it is the composition, bit for bit the same. ``bias`` has ``x.shape[-1]`` elements.

    >>> import torch
    >>> x, r = torch.ones(2, 3, 4), torch.full((2, 3, 4), 10.0)
    >>> y = dropout_add(x, r, 0.5, seed=0)
    >>> sorted(set(y.flatten().tolist()))             # dropped: 10; kept: 10 + 1 / 0.5
    [10.0, 12.0]
    >>> torch.equal(y, r + dropout(x, 0.5, seed=0))
    True
    """
    op = "noiseshape.torch.dropout_add"
    spec_text = _spec_text(noise_shape, broadcast_dims)
    _check_tensor(op, x, spec_text)
    _check_tensor(op, residual, spec_text, name="residual")
    shape = tuple(x.shape)
    if residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
        raise fail(
            op,
            f"residual has shape {tuple(residual.shape)} ({residual.dtype}, {residual.device}) but x has "
            f"{shape} ({x.dtype}, {x.device}); give a residual of the same shape, dtype and device",
            shape=shape,
            spec=spec_text,
        )
    if bias is not None:
        _check_tensor(op, bias, spec_text, name="bias")
        if x.dim() == 0 or tuple(bias.shape) != shape[-1:] or bias.dtype != x.dtype:
            raise fail(
                op,
                f"bias has shape {tuple(bias.shape)} ({bias.dtype}); give {shape[-1:]} elements of {x.dtype}, "
                "one per entry of the last axis",
                shape=shape,
                spec=spec_text,
            )
    _dist.check_same_placements(op, x, residual, "residual")
    d = _prepare(op, x, p, noise_shape, broadcast_dims, training, seed, stream, batch_offset, generator, coords=coords)
    h = x if bias is None else x + bias
    if d is None:
        return residual + h
    t = _rng.threshold(d.rate)
    fused = t and d.spec.full and x.is_contiguous() and not _rows.is_rows(d.j0) and not _dist.is_dtensor(x)
    fused = fused and _ops.triton_for(x.device) is not None
    if fused and not (torch._C._are_functorch_transforms_active() or torch.autograd.forward_ad._current_level >= 0):
        return _DROPOUT_ADD(x, residual, bias, _key_tensor(d.key, x.device), d.j0, t, _rng.keep_scale(t))
    return residual + _drop(h, d)


def check_data_format(op: str, data_format, x=None) -> None:
    if data_format not in ("channels_first", "channels_last"):
        raise fail(
            op,
            f"data_format is {data_format!r}; give 'channels_first' (N, C, ...) or 'channels_last' (N, ..., C)",
            shape=tuple(x.shape) if isinstance(x, Tensor) else None,
        )


def spatial_noise_shape(op: str, x: Tensor, dims: int, data_format: str) -> tuple:
    """The noise shape of spatial dropout: one draw per (sample, channel)."""
    check_data_format(op, data_format, x)
    _check_tensor(op, x)
    if x.dim() != dims + 2:
        axes = {1: "L", 2: "H, W", 3: "D, H, W"}[dims]
        layout = f"(N, C, {axes})" if data_format == "channels_first" else f"(N, {axes}, C)"
        raise fail(
            op,
            f"x has {axes_text(x.dim())} but {dims}-d spatial dropout needs {dims + 2}, {layout}; "
            "add the batch axis with x.unsqueeze(0), or use the spatial dropout of your input's rank",
            shape=tuple(x.shape),
        )
    return _plans.spatial_rule(dims, data_format).of(x.shape)


def _spatial(dims):
    name = f"spatial_dropout{dims}d"
    layout = {1: "L", 2: "H, W", 3: "D, H, W"}[dims]
    op = f"noiseshape.torch.{name}"

    def fn(
        x: Tensor,
        p: float = 0.5,
        data_format: str = "channels_first",
        *,
        training: bool = True,
        inplace: bool = False,
        seed: int | None = None,
        stream: int = 0,
        batch_offset: int = 0,
        coords: Coords | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        if training is True and generator is None and coords is None and batch_offset is _ZERO:
            y = _plans.drop(x, p, _plans.spatial_rule(dims, data_format), None, seed, stream, inplace, True, op)
            if y is not None:  # a plain call, by its plan
                return y
        if not training:
            check_data_format(op, data_format)
        noise_shape = spatial_noise_shape(op, x, dims, data_format) if training else None
        d = _prepare(op, x, p, noise_shape, None, training, seed, stream, batch_offset, generator, coords=coords)
        return x if d is None else _drop(x, d, inplace)

    fn.__name__ = fn.__qualname__ = name
    example_shape = {1: "(2, 3, 5)", 2: "(2, 3, 5, 5)", 3: "(2, 3, 4, 4, 4)"}[dims]
    reduce_axes = tuple(range(2, dims + 2))
    fn.__doc__ = f"""Spatial dropout (Tompson et al., 2015) of ({layout}) feature maps: one draw per (sample, channel).

    ``x`` must have exactly {dims + 2} axes, (N, C, {layout}) with ``data_format="channels_first"`` or
    (N, {layout}, C) with ``"channels_last"``; no layout is guessed from the rank.

    >>> import torch
    >>> y = {name}(torch.ones{example_shape}, 0.5, seed=1)
    >>> bool((y.amax(dim={reduce_axes}) == y.amin(dim={reduce_axes})).all())   # whole channels kept or dropped
    True
    """
    return fn


spatial_dropout1d = _spatial(1)
spatial_dropout2d = _spatial(2)
spatial_dropout3d = _spatial(3)


def locked_noise_shape(op: str, x: Tensor, batch_first: bool) -> tuple:
    """The noise shape of locked dropout: one draw per (sequence, feature), shared over time."""
    _check_tensor(op, x)
    if x.dim() < 2:
        raise fail(
            op,
            f"x has {x.dim()} ax{'i' if x.dim() == 1 else 'e'}s; locked dropout needs a batch and a time axis, "
            + ("(N, T, ...) with batch_first=True" if batch_first else "(T, N, ...) with batch_first=False"),
            shape=tuple(x.shape),
        )
    return _plans.locked_rule(bool(batch_first)).of(x.shape)


def locked_dropout(
    x: Tensor,
    p: float = 0.5,
    batch_first: bool = True,
    *,
    training: bool = True,
    inplace: bool = False,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Locked (variational) dropout of sequences (Gal & Ghahramani, 2016): one mask per sequence, reused at every step.

    ``x`` is (N, T, ...) with ``batch_first=True`` and (T, N, ...) otherwise. The mask of a sequence
    does not depend on the layout: the same seed drops the same features of sequence ``n`` either way.

    >>> import torch
    >>> y = locked_dropout(torch.ones(2, 7, 5), 0.5, seed=0)
    >>> bool((y == y[:, :1]).all())                    # the same mask at every time step
    True
    >>> z = locked_dropout(torch.ones(7, 2, 5), 0.5, batch_first=False, seed=0)
    >>> torch.equal(z.transpose(0, 1), y)              # time-major gives the same masks
    True
    """
    op = "noiseshape.torch.locked_dropout"
    if training is True and generator is None and coords is None and batch_offset is _ZERO:
        y = _plans.drop(x, p, _plans.locked_rule(batch_first), None, seed, stream, inplace, True, op)
        if y is not None:  # a plain call, by its plan
            return y
    noise_shape = locked_noise_shape(op, x, batch_first) if training else None
    axis = 0 if batch_first else 1
    d = _prepare(
        op, x, p, noise_shape, None, training, seed, stream, batch_offset, generator, coords=coords, batch_axis=axis
    )
    return x if d is None else _drop(x, d, inplace)


def drop_path_noise_shape(op: str, x: Tensor) -> tuple:
    """The noise shape of stochastic depth: one draw per sample."""
    _check_tensor(op, x)
    if x.dim() < 1:
        raise fail(op, "x is a scalar; drop path needs a batch axis (N, ...)", shape=tuple(x.shape))
    return _plans.drop_path_rule().of(x.shape)


def drop_path(
    x: Tensor,
    p: float = 0.0,
    training: bool = True,
    scale_by_keep: bool = True,
    *,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Stochastic depth (Huang et al., 2016): drop the whole residual branch of a sample with probability ``p``.

    Kept samples are scaled by ``1 / (1 - p)`` (the realised keep probability) unless ``scale_by_keep=False``.

    >>> import torch
    >>> y = drop_path(torch.ones(8, 3, 4), 0.5, seed=3)
    >>> [sorted(set(s.flatten().tolist())) in ([0.0], [2.0]) for s in y] == [True] * 8   # whole samples
    True
    """
    op = "noiseshape.torch.drop_path"
    plain = training is True and generator is None and coords is None and batch_offset is _ZERO
    if plain and type(scale_by_keep) is bool:
        y = _plans.drop(x, p, _plans.drop_path_rule(), None, seed, stream, False, scale_by_keep, op)
        if y is not None:  # a plain call, by its plan
            return y
    noise_shape = drop_path_noise_shape(op, x) if training else None
    d = _prepare(op, x, p, noise_shape, None, training, seed, stream, batch_offset, generator, coords=coords)
    return x if d is None else _drop(x, d, scale_by_keep=bool(scale_by_keep))


# ---------------------------------------------------------------------------------------------
# SELU-preserving and Gaussian noise


def alpha_dropout(
    x: Tensor,
    p: float = 0.5,
    noise_shape: NoiseShape | None = None,
    *,
    broadcast_dims: BroadcastDims | None = None,
    training: bool = True,
    inplace: bool = False,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Alpha dropout (Klambauer et al., 2017): keeps zero mean and unit variance for SELU networks.

    Dropped values are set to SELU's saturation value ``alpha' = -scale * alpha`` and the result is
    mapped by ``a * y + b`` with ``a = (q (1 + (1 - q) alpha'^2))^(-1/2)`` and ``b = -a alpha' (1 - q)``,
    ``q`` the realised keep probability (the Keras and PyTorch formula). ``p = 1`` gives zeros.

    >>> import torch
    >>> n = 200_000
    >>> x = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> y = alpha_dropout(x, 0.2, seed=0)
    >>> # within 5 sigma: the sample mean has sigma 1 / sqrt(n), the sample variance below sqrt(3 / n)
    >>> abs(y.mean().item()) < 5 / n**0.5, abs(y.var().item() - 1) < 5 * (3 / n) ** 0.5
    (True, True)
    """
    op = "noiseshape.torch.alpha_dropout"
    d = _prepare(op, x, p, noise_shape, broadcast_dims, training, seed, stream, batch_offset, generator, coords=coords)
    return x if d is None else alpha_apply(x, d.spec, d.key, d.j0, _rng.threshold(d.rate), inplace)


def feature_noise_shape(op: str, x: Tensor) -> tuple:
    """One draw per (sample, channel) of an (N, C, ...) tensor."""
    _check_tensor(op, x)
    if x.dim() < 2:
        raise fail(op, f"x has {axes_text(x.dim())}; feature dropout needs (N, C, ...)", shape=tuple(x.shape))
    return (None, None) + (1,) * (x.dim() - 2)


def feature_alpha_dropout(
    x: Tensor,
    p: float = 0.5,
    *,
    training: bool = True,
    inplace: bool = False,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Alpha dropout (Klambauer et al., 2017) of whole channels of an (N, C, ...) tensor.

    >>> import torch
    >>> y = feature_alpha_dropout(torch.ones(4, 6, 5), 0.5, seed=0)
    >>> bool((y == y[..., :1]).all())
    True
    """
    op = "noiseshape.torch.feature_alpha_dropout"
    noise_shape = feature_noise_shape(op, x) if training else None
    d = _prepare(op, x, p, noise_shape, None, training, seed, stream, batch_offset, generator, coords=coords)
    return x if d is None else alpha_apply(x, d.spec, d.key, d.j0, _rng.threshold(d.rate), inplace)


def check_gaussian_rate(p, op: str, shape=None, spec=None) -> float:
    p = check_rate(p, op=op, name="p", shape=shape, spec=spec)
    if p == 1.0:
        raise fail(
            op,
            "p is 1.0: Gaussian dropout multiplies by N(1, p / (1 - p)), whose variance is infinite at p = 1; "
            "use p < 1 (or dropout(x, 1.0) for zeros)",
            shape=shape,
            spec=spec,
        )
    return p


def gaussian_dropout(
    x: Tensor,
    p: float = 0.5,
    noise_shape: NoiseShape | None = None,
    *,
    broadcast_dims: BroadcastDims | None = None,
    training: bool = True,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Gaussian dropout (Srivastava et al., 2014): multiply by ``N(1, p / (1 - p))`` noise drawn at the noise shape.

    The variance matches Bernoulli dropout of rate ``p``; ``p = 1`` is an error (infinite variance).
    Backward redraws the noise from the seed instead of keeping it.

    >>> import torch
    >>> n = 100_000
    >>> y = gaussian_dropout(torch.ones(n, dtype=torch.float64), 0.5, seed=0)
    >>> # mean 1 and variance p / (1 - p) = 1, within 5 sigma (1 / sqrt(n) and sqrt(2 / n))
    >>> abs(y.mean().item() - 1) < 5 / n**0.5, abs(y.var().item() - 1) < 5 * (2 / n) ** 0.5
    (True, True)
    """
    op = "noiseshape.torch.gaussian_dropout"
    check = check_gaussian_rate  # p = 1 is an error
    d = _prepare(
        op,
        x,
        p,
        noise_shape,
        broadcast_dims,
        training,
        seed,
        stream,
        batch_offset,
        generator,
        check=check,
        coords=coords,
    )
    if d is None:
        return x
    return gaussian_mul_apply(x, d.spec, d.key, d.j0, math.sqrt(d.rate / (1.0 - d.rate)))


def check_stddev(stddev, op: str, shape=None, spec=None) -> float:
    if (
        isinstance(stddev, bool)
        or not isinstance(stddev, numbers.Real)
        or not math.isfinite(float(stddev))
        or (float(stddev) < 0)
    ):
        raise fail(
            op,
            f"stddev is {stddev!r}; give a finite non-negative real number, the standard deviation of the noise",
            shape=shape,
            spec=spec,
        )
    return float(stddev)


#: the rates each rate check accepts without a word: ``0 <= rate < bound`` (floats only)
_RATE_BELOW = {_check_p: math.nextafter(1.0, 2.0), check_gaussian_rate: 1.0, check_stddev: math.inf}


def gaussian_noise(
    x: Tensor,
    stddev: float,
    noise_shape: NoiseShape | None = None,
    *,
    broadcast_dims: BroadcastDims | None = None,
    training: bool = True,
    seed: int | None = None,
    stream: int = 0,
    batch_offset: int = 0,
    coords: Coords | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Additive Gaussian noise ``x + stddev * z``, ``z`` standard normal drawn at the noise shape.

    >>> import torch
    >>> y = gaussian_noise(torch.zeros(4, 1000), 0.5, noise_shape=(1, None), seed=0)
    >>> bool((y == y[:1]).all())                    # one draw per column, shared by the 4 rows
    True
    >>> abs(y[0].std().item() - 0.5) < 5 * 0.5 / (2 * 1000) ** 0.5   # 5 sigma of a 1000-sample std
    True
    """
    if (
        training is True
        and type(stddev) is float
        and 0.0 < stddev < math.inf
        and noise_shape is None is broadcast_dims
        and batch_offset is _ZERO  # any other value takes the checked path
        and generator is None
        and coords is None
    ):  # nothing to resolve or place: a plain call has no check left to make
        y = _gauss.plain_add(x, seed, stream, stddev)
        if y is not None:
            return y
    op = "noiseshape.torch.gaussian_noise"
    d = _prepare(
        op,
        x,
        stddev,
        noise_shape,
        broadcast_dims,
        training,
        seed,
        stream,
        batch_offset,
        generator,
        check=check_stddev,
        coords=coords,
    )
    return x if d is None else gaussian_add_apply(x, d.spec, d.key, d.j0, d.rate)
