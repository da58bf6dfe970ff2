"""Functional forms of the shaped-noise family on JAX arrays.

Every function draws its noise at a reduced *noise shape* (Keras ``noise_shape`` or Flax
``broadcast_dims``) and broadcasts it over the shared axes. Randomness is explicit, the JAX way:
``key=`` (a JAX PRNG key) or ``seed=`` (an integer), plus ``stream=``; the mask is a pure function of
(seed, stream, global coordinate), the same in NumPy and PyTorch (see :mod:`noiseshape.jax._keys` for
how a key maps to a seed). ``batch_offset=`` is the global index of ``x[0]`` in a larger batch: a
Python integer, or a traced integer scalar in [0, 2**32) (e.g. ``i * micro_batch`` in a ``scan``; a
traced value cannot be range-checked, a negative one wraps). ``deterministic=True`` (or a zero rate)
returns ``x``.

Rates, noise shapes and ``deterministic`` are static (Python values); arrays and keys may be traced,
so every function works under ``jit``, ``grad`` (forward and reverse mode), ``vmap`` and with sharded
arrays (the masks are those of the global array, whatever the mesh).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _rng
from .._errors import fail
from .._spec import NoiseSpec, _spec_text, check_rate, check_u64, resolve
from . import _philox
from ._keys import key_of

__all__ = [
    "alpha_dropout",
    "drop_path",
    "dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "keep_mask",
    "spatial_dropout1d",
    "spatial_dropout2d",
    "spatial_dropout3d",
]

#: SELU's negative saturation value, ``-scale * alpha`` (Klambauer et al., 2017).
SELU_NEG_SATURATION = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717

_FLOATS = ("float16", "bfloat16", "float32", "float64")


class _Draw(NamedTuple):
    """A training call's noise: the checked rate, the resolved spec, the key words, the first global index.

    ``j0_words`` is None for the first index 0 (static, the common case), else the uint32 words
    ``[hi, lo]`` of the index, an argument of the compiled kernel (a new offset never recompiles).
    """

    rate: float
    spec: NoiseSpec
    words: jax.Array
    j0_words: jax.Array | None


def _as_array(op: str, x, spec_text):
    if not isinstance(x, (jax.Array, np.ndarray)):
        raise fail(op, f"x is a {type(x).__name__}; give a JAX array (jnp.asarray(...))", spec=spec_text)
    if np.dtype(x.dtype).name not in _FLOATS:
        raise fail(
            op,
            f"x has dtype {x.dtype}; noise needs floating-point values (float16, bfloat16, float32 or float64): "
            "convert with x.astype(jnp.float32)",
            shape=tuple(x.shape),
            spec=spec_text,
        )
    return jnp.asarray(x)


def _check_offset(op: str, batch_offset, shape, spec_text):
    if isinstance(batch_offset, (jax.Array, np.ndarray)):
        if batch_offset.ndim or not jnp.issubdtype(batch_offset.dtype, jnp.integer):
            raise fail(
                op,
                f"batch_offset has shape {tuple(batch_offset.shape)} and dtype {batch_offset.dtype}; "
                "give a non-negative integer scalar (below 2**32 when traced)",
                shape=shape,
                spec=spec_text,
            )
        return batch_offset
    if isinstance(batch_offset, bool) or not isinstance(batch_offset, numbers.Integral) or batch_offset < 0:
        raise fail(op, f"batch_offset is {batch_offset!r}; give a non-negative integer", shape=shape, spec=spec_text)
    return int(batch_offset)


def _first_index(op, spec: NoiseSpec, batch_offset, shape, spec_text) -> tuple:
    """The words ``[hi, lo]`` of the first global index ``batch_offset * prod(R[1:])``, or None when it is 0."""
    per_sample = math.prod(spec.shape[1:])
    if spec.batch_shared or (isinstance(batch_offset, int) and batch_offset == 0):
        return None
    if isinstance(batch_offset, int) and batch_offset * per_sample + math.prod(spec.shape) > 1 << 64:
        raise fail(
            op,
            f"batch_offset {batch_offset} puts the mask's global indices past 2**64; use a smaller offset",
            shape=shape,
            spec=spec_text,
        )
    hi, lo = _philox.first_index(batch_offset, per_sample)
    return np.array([hi, lo], np.uint32) if isinstance(batch_offset, int) else jnp.stack([hi, lo])


def _rate(rate, op, shape, spec_text) -> float:
    return check_rate(rate, op=op, shape=shape, spec=spec_text)


def _prepare(
    op, x, rate, noise_shape, broadcast_dims, deterministic, key, seed, stream, batch_offset, check=_rate
) -> tuple:
    """Check a call (array, rate, noise shape, randomness); ``(x, draw)``, ``draw`` None when ``x`` is returned."""
    spec_text = _spec_text(noise_shape, broadcast_dims)
    x = _as_array(op, x, spec_text)
    shape = tuple(x.shape)
    rate = check(rate, op, shape, spec_text)
    spec = resolve(shape, noise_shape, broadcast_dims, op=op)
    batch_offset = _check_offset(op, batch_offset, shape, spec_text)
    if not isinstance(deterministic, (bool, np.bool_)):
        raise fail(
            op,
            f"deterministic is {type(deterministic).__name__}; give a Python bool (it decides the traced program, "
            "so it must be static: mark it static in jit, or branch outside)",
            shape=shape,
            spec=spec_text,
        )
    if deterministic or rate == 0.0:  # nothing is drawn (a Flax module passes no key then); still check
        check_u64(stream, name="stream", op=op, shape=shape, spec=spec_text)
        if key is not None or seed is not None:
            key_of(op, key, seed, stream, shape, spec_text)
        return x, None
    words = key_of(op, key, seed, stream, shape, spec_text)
    return x, _Draw(rate, spec, words, _first_index(op, spec, batch_offset, shape, spec_text))


def _compute_type(dtype):
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _in_dtype(x, f):
    """``f`` evaluated on ``x`` in float32 (float64 for float64) and rounded to ``x.dtype``."""
    return f(x.astype(_compute_type(x.dtype))).astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("kind", "shape", "param"))
def _noise(x, words, j0_words, *, kind: str, shape: tuple, param):
    """The one compiled kernel of every op: draw at the reduced ``shape`` and apply to ``x`` (``kind`` says how).

    Eager calls compile once per (kind, shapes, rate); inside a caller's ``jit`` it is inlined.
    """
    key = _philox.Key(*(words[i] for i in range(4)))
    j0 = (0, 0) if j0_words is None else (j0_words[0], j0_words[1])
    if kind in ("keep", "scale", "select", "alpha"):
        t = param[0]
        keep = _philox.keep_flags(key, shape, j0, t)
        if kind == "keep":
            return keep
        if kind == "select":
            return jnp.where(keep, x, jnp.zeros((), x.dtype))
        if kind == "scale":
            kept = _in_dtype(x, lambda v: v * v.dtype.type(param[1]))
            return jnp.where(keep, kept, jnp.zeros((), x.dtype))
        a, b, dropped = param[1:]
        kept = _in_dtype(x, lambda v: v * v.dtype.type(a) + v.dtype.type(b))
        return jnp.where(keep, kept, jnp.asarray(dropped, x.dtype))
    ct = _compute_type(x.dtype)
    z = _philox.normals(key, j0, math.prod(shape), ct).reshape(shape)
    if kind == "gaussian_mul":
        factor = z * ct(param) + ct(1.0)
        return _in_dtype(x, lambda v: v * factor)
    noise = z * ct(param)
    return _in_dtype(x, lambda v: v + noise)


def _apply(x, d: _Draw, kind: str, param):
    return _noise(x, d.words, d.j0_words, kind=kind, shape=tuple(d.spec.shape), param=param)


def _bernoulli(x, d: _Draw, scale_by_keep: bool = True):
    t = _rng.threshold(d.rate)
    if t == 0:
        return jnp.zeros_like(x)
    if not scale_by_keep:
        return _apply(x, d, "select", (t,))
    return _apply(x, d, "scale", (t, _rng.keep_scale(t)))


def keep_mask(
    shape,
    rate: float,
    noise_shape=None,
    *,
    broadcast_dims=None,
    key=None,
    seed: int | None = None,
    stream: int = 0,
    batch_offset=0,
):
    """The reduced keep mask (``bool``, at the noise shape) that :func:`dropout` applies to an input of ``shape``.

    >>> m = keep_mask((2, 3, 4), 0.5, (None, 1, 4), seed=0)
    >>> m.shape, m.dtype
    ((2, 1, 4), dtype('bool'))
    >>> import numpy as np, noiseshape.numpy as nsn
    >>> bool(np.array_equal(m, nsn.keep_mask((2, 3, 4), 0.5, (None, 1, 4), seed=0)))   # NumPy draws the same mask
    True
    """
    op = "noiseshape.jax.keep_mask"
    spec_text = _spec_text(noise_shape, broadcast_dims)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise fail(op, f"shape is {shape!r}; give a tuple of non-negative integers", spec=spec_text) from None
    if any(s < 0 for s in shape):
        raise fail(op, f"shape is {shape!r}; sizes cannot be negative", spec=spec_text)
    rate = _rate(rate, op, shape, spec_text)
    spec = resolve(shape, noise_shape, broadcast_dims, op=op)
    batch_offset = _check_offset(op, batch_offset, shape, spec_text)
    words = key_of(op, key, seed, stream, shape, spec_text)
    d = _Draw(rate, spec, words, _first_index(op, spec, batch_offset, shape, spec_text))
    return _apply(None, d, "keep", (_rng.threshold(rate),))


def dropout(
    x,
    rate: float,
    noise_shape=None,
    *,
    broadcast_dims=None,
    key=None,
    seed: int | None = None,
    stream: int = 0,
    batch_offset=0,
    deterministic: bool = False,
):
    """Dropout (Srivastava et al., 2014) with a Keras ``noise_shape`` or Flax ``broadcast_dims``.

    The keep mask is drawn at the noise shape (``None``: an independent draw along the axis, ``1``:
    one draw shared along it) and broadcast; kept values are scaled by the inverse of the realised
    keep probability, dropped values become exactly 0 (also ``nan`` and ``inf``).

    >>> import jax, jax.numpy as jnp
    >>> x = jnp.ones((2, 3, 4))
    >>> y = dropout(x, 0.5, broadcast_dims=(1,), key=jax.random.key(0))
    >>> sorted(set(y.ravel().tolist()))             # kept values are scaled by 1 / 0.5
    [0.0, 2.0]
    >>> bool((y == y[:, :1, :]).all())               # the same features are dropped at every step
    True
    >>> part = dropout(x[1:], 0.5, broadcast_dims=(1,), key=jax.random.key(0), batch_offset=1)
    >>> bool((part == y[1:]).all())                  # a micro-batch reproduces the whole batch's masks
    True
    >>> import noiseshape.torch as nst, torch       # the same mask in PyTorch: key(0) is seed 0, stream 0
    >>> bool((nst.dropout(torch.ones(2, 3, 4), 0.5, broadcast_dims=(1,), seed=0).numpy() == y).all())
    True
    """
    op = "noiseshape.jax.dropout"
    x, d = _prepare(op, x, rate, noise_shape, broadcast_dims, deterministic, key, seed, stream, batch_offset)
    return x if d is None else _bernoulli(x, d)


def _spatial_noise_shape(op: str, x, dims: int, data_format: str) -> tuple:
    if data_format not in ("channels_first", "channels_last"):
        raise fail(
            op,
            f"data_format is {data_format!r}; give 'channels_last' (N, ..., C, the JAX default) or "
            "'channels_first' (N, C, ...)",
            shape=tuple(getattr(x, "shape", ())) or None,
        )
    x = _as_array(op, x, None)
    if x.ndim != dims + 2:
        axes = {1: "L", 2: "H, W", 3: "D, H, W"}[dims]
        layout = f"(N, {axes}, C)" if data_format == "channels_last" else f"(N, C, {axes})"
        raise fail(
            op,
            f"x has {x.ndim} axes but {dims}-d spatial dropout needs {dims + 2}, {layout}; add the batch axis "
            "with x[None], or use the spatial dropout of your input's rank",
            shape=tuple(x.shape),
        )
    if data_format == "channels_last":
        return (None,) + (1,) * dims + (None,)
    return (None, None) + (1,) * dims


def _spatial(dims: int):
    name = f"spatial_dropout{dims}d"
    layout = {1: "L", 2: "H, W", 3: "D, H, W"}[dims]

    def fn(
        x,
        rate: float,
        data_format: str = "channels_last",
        *,
        key=None,
        seed: int | None = None,
        stream: int = 0,
        batch_offset=0,
        deterministic: bool = False,
    ):
        op = f"noiseshape.jax.{name}"
        noise_shape = _spatial_noise_shape(op, x, dims, data_format)
        x, d = _prepare(op, x, rate, noise_shape, None, deterministic, key, seed, stream, batch_offset)
        return x if d is None else _bernoulli(x, d)

    fn.__name__ = fn.__qualname__ = name
    example = {1: "(2, 5, 3)", 2: "(2, 5, 5, 3)", 3: "(2, 4, 4, 4, 3)"}[dims]
    axes = tuple(range(1, dims + 1))
    fn.__doc__ = f"""Spatial dropout (Tompson et al., 2015) of feature maps: one draw per (sample, channel).

    ``x`` must have exactly {dims + 2} axes: (N, {layout}, C) with ``data_format="channels_last"`` (the
    JAX and Keras layout, the default here; ``noiseshape.torch`` defaults to channels first) or
    (N, C, {layout}) with ``"channels_first"``. No layout is guessed from the rank.

    >>> import jax.numpy as jnp
    >>> y = {name}(jnp.ones({example}), 0.5, seed=1)
    >>> bool((y.max(axis={axes}) == y.min(axis={axes})).all())   # whole channels kept or dropped
    True
    """
    return fn


spatial_dropout1d = _spatial(1)
spatial_dropout2d = _spatial(2)
spatial_dropout3d = _spatial(3)


def drop_path(
    x,
    rate: float,
    *,
    scale_by_keep: bool = True,
    key=None,
    seed: int | None = None,
    stream: int = 0,
    batch_offset=0,
    deterministic: bool = False,
):
    """Stochastic depth (Huang et al., 2016): drop the whole residual branch of a sample with probability ``rate``.

    Kept samples are scaled by the inverse of the realised keep probability unless ``scale_by_keep=False``.

    >>> import jax.numpy as jnp
    >>> y = drop_path(jnp.ones((8, 3, 4)), 0.5, seed=3)
    >>> all(set(s.ravel().tolist()) in ({0.0}, {2.0}) for s in y)   # whole samples
    True
    """
    op = "noiseshape.jax.drop_path"
    spec_text = None
    arr = _as_array(op, x, spec_text)
    if arr.ndim < 1:
        raise fail(op, "x is a scalar; drop path needs a batch axis (N, ...)", shape=())
    noise_shape = (None,) + (1,) * (arr.ndim - 1)
    arr, d = _prepare(op, arr, rate, noise_shape, None, deterministic, key, seed, stream, batch_offset)
    return arr if d is None else _bernoulli(arr, d, scale_by_keep=bool(scale_by_keep))


def alpha_dropout(
    x,
    rate: float,
    noise_shape=None,
    *,
    broadcast_dims=None,
    key=None,
    seed: int | None = None,
    stream: int = 0,
    batch_offset=0,
    deterministic: bool = False,
):
    """Alpha dropout (Klambauer et al., 2017): keeps zero mean and unit variance for SELU networks.

    Dropped values are set to SELU's saturation value ``alpha' = -scale * alpha`` and the result is
    mapped by ``a * y + b`` with ``a = (q (1 + (1 - q) alpha'^2))^(-1/2)`` and ``b = -a alpha' (1 - q)``,
    ``q`` the realised keep probability (the Keras and PyTorch formula). ``rate = 1`` gives zeros.

    >>> import jax, jax.numpy as jnp
    >>> n = 200_000
    >>> x = jax.random.normal(jax.random.key(0), (n,))
    >>> y = alpha_dropout(x, 0.2, seed=0)
    >>> # within 5 sigma: the sample mean has sigma 1 / sqrt(n), the sample variance below sqrt(3 / n)
    >>> bool(abs(y.mean()) < 5 / n**0.5), bool(abs(y.var() - 1) < 5 * (3 / n) ** 0.5)
    (True, True)
    """
    op = "noiseshape.jax.alpha_dropout"
    x, d = _prepare(op, x, rate, noise_shape, broadcast_dims, deterministic, key, seed, stream, batch_offset)
    if d is None:
        return x
    t = _rng.threshold(d.rate)
    if t == 0:
        return jnp.zeros_like(x)
    q = t / 65536.0
    a = (q * (1.0 + (1.0 - q) * SELU_NEG_SATURATION**2)) ** -0.5
    b = -a * SELU_NEG_SATURATION * (1.0 - q)
    return _apply(x, d, "alpha", (t, a, b, a * SELU_NEG_SATURATION + b))


def _gaussian_rate(rate, op, shape, spec_text) -> float:
    rate = _rate(rate, op, shape, spec_text)
    if rate >= 1.0:
        raise fail(
            op,
            "rate is 1.0, but Gaussian dropout multiplies by N(1, rate / (1 - rate)), which has no finite "
            "variance there; give rate < 1 (dropout(x, 1.0) gives zeros)",
            shape=shape,
            spec=spec_text,
        )
    return rate


def gaussian_dropout(
    x,
    rate: float,
    noise_shape=None,
    *,
    broadcast_dims=None,
    key=None,
    seed: int | None = None,
    stream: int = 0,
    batch_offset=0,
    deterministic: bool = False,
):
    """Gaussian dropout (Srivastava et al., 2014): multiply by ``N(1, rate / (1 - rate))`` noise at the noise shape.

    The variance matches Bernoulli dropout of the same rate; ``rate = 1`` is an error (infinite variance).

    >>> import jax.numpy as jnp
    >>> n = 100_000
    >>> y = gaussian_dropout(jnp.ones(n), 0.5, seed=0)
    >>> # mean 1 and variance rate / (1 - rate) = 1, within 5 sigma (1 / sqrt(n) and sqrt(2 / n))
    >>> bool(abs(y.mean() - 1) < 5 / n**0.5), bool(abs(y.var() - 1) < 5 * (2 / n) ** 0.5)
    (True, True)
    """
    op = "noiseshape.jax.gaussian_dropout"
    x, d = _prepare(
        op, x, rate, noise_shape, broadcast_dims, deterministic, key, seed, stream, batch_offset, _gaussian_rate
    )
    if d is None:
        return x
    return _apply(x, d, "gaussian_mul", math.sqrt(d.rate / (1.0 - d.rate)))


def _stddev(stddev, op, shape, spec_text) -> float:
    ok = isinstance(stddev, numbers.Real) and not isinstance(stddev, bool)
    if not ok or not math.isfinite(float(stddev)) or float(stddev) < 0:
        raise fail(
            op,
            f"stddev is {stddev!r}; the standard deviation of the noise must be a finite real number >= 0",
            shape=shape,
            spec=spec_text,
        )
    return float(stddev)


def gaussian_noise(
    x,
    stddev: float,
    noise_shape=None,
    *,
    broadcast_dims=None,
    key=None,
    seed: int | None = None,
    stream: int = 0,
    batch_offset=0,
    deterministic: bool = False,
):
    """Additive Gaussian noise ``x + stddev * z``, ``z`` standard normal drawn at the noise shape.

    >>> import jax.numpy as jnp
    >>> y = gaussian_noise(jnp.zeros((4, 1000)), 0.5, noise_shape=(1, None), seed=0)
    >>> bool((y == y[:1]).all())                     # one draw per column, shared by the 4 rows
    True
    >>> bool(abs(y[0].std() - 0.5) < 5 * 0.5 / (2 * 1000) ** 0.5)   # 5 sigma of a 1000-sample std
    True
    """
    op = "noiseshape.jax.gaussian_noise"
    x, d = _prepare(op, x, stddev, noise_shape, broadcast_dims, deterministic, key, seed, stream, batch_offset, _stddev)
    if d is None:
        return x
    return _apply(x, d, "gaussian_add", d.rate)
