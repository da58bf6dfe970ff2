"""Checks, keys and noise engines shared by the functional forms and the layers.

The engines apply one call's noise to a tensor given its resolved noise spec and key: a
``(seed, stream)`` pair of Python ints on the eager path (see :func:`call_key`), else the int64 key
tensor of the custom ops; each takes DTensors through :func:`noiseshape.torch.distributed.sharded`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._errors import fail
from .._spec import NoiseSpec, check_u64, resolve
from . import _eager, _gauss, _ops, _rows
from . import distributed as _dist
from ._eager import eager_ok

_KEEP_MASK = torch.ops.noiseshape.keep_mask.default
_DROPOUT_FULL = torch.ops.noiseshape.dropout_full.default
_APPLY_MASK = torch.ops.noiseshape.apply_mask.default
_GAUSSIAN_MUL = torch.ops.noiseshape.gaussian_mul.default
_DROPOUT_ADD = torch.ops.noiseshape.dropout_add.default

#: SELU's negative saturation value, ``-scale * alpha`` (Klambauer et al., 2017).
SELU_ALPHA_P = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717

_I64_MAX = (1 << 63) - 1


# ---------------------------------------------------------------------------------------------
# validation and keys


def _check_tensor(op: str, x, spec_text: str | None = None, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise fail(op, f"{name} is a {type(x).__name__}; give a torch.Tensor (torch.as_tensor(...))", spec=spec_text)
    if x.layout != torch.strided:
        raise fail(
            op,
            f"{name} is a sparse tensor (layout {x.layout}); noise is drawn for dense tensors: convert with "
            f"{name}.to_dense()",
            spec=spec_text,
        )
    if x.dtype not in _ops.DTYPE_CODES:
        raise fail(
            op,
            f"{name} has dtype {x.dtype}; noise needs floating-point values (float16, bfloat16, float32 or "
            f"float64): convert with {name}.float()",
            shape=tuple(x.shape),
            spec=spec_text,
        )


def _check_seed(op, seed, stream, batch_offset, generator, shape, spec_text):
    if seed is not None:
        if generator is not None:
            raise fail(
                op,
                "seed and generator both given; give seed=<int> for a fixed draw or generator=<torch.Generator> "
                "to draw a seed from it, not both",
                shape=shape,
                spec=spec_text,
            )
        seed = check_u64(seed, name="seed", op=op, shape=shape, spec=spec_text)
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise fail(op, f"generator is {generator!r}; give a torch.Generator (or None)", shape=shape, spec=spec_text)
    stream = check_u64(stream, name="stream", op=op, shape=shape, spec=spec_text)
    batch_offset = check_u64(batch_offset, name="batch_offset", op=op, shape=shape, spec=spec_text)
    return seed, stream, batch_offset


def draw_key(seed: int | None, stream: int, generator: torch.Generator | None, device) -> Tensor:
    """The int64 ``[seed, stream]`` key on ``device``; a ``None`` seed is drawn from ``generator``.

    Without a generator the seed comes from torch's default CPU generator, so ``torch.manual_seed``
    fixes it (and the mask is the same on every device).
    """
    if seed is None:
        gen_device = generator.device if generator is not None else "cpu"
        key = torch.randint(-(1 << 63), _I64_MAX, (2,), dtype=torch.int64, device=gen_device, generator=generator)
        key[1] = _ops.make_key(0, stream)[1]
        return key.to(device)
    return _ops.make_key(seed, stream, device)


def call_key(x, seed: int | None, stream: int, generator: torch.Generator | None):
    """The key of a call on ``x``: ``(seed, stream)`` as Python ints on the eager path, else the key tensor.

    A ``None`` seed is drawn from ``generator`` either way, by the same draw.
    """
    if eager_ok(x):
        return (_eager.draw_seed(generator) if seed is None else seed, stream)
    return draw_key(seed, stream, generator, x.device)


def _key_tensor(key, device) -> Tensor:
    return _ops.make_key(key[0], key[1], device) if type(key) is tuple else key


_SPECS: dict = {}
_ENTRY_TYPES = frozenset((type(None), int, type(...)))


def resolve_cached(shape, noise_shape, broadcast_dims, op: str) -> tuple[NoiseSpec, bool]:
    """``resolve`` (and whether the mask is full-shape), cached per (shape, spec) for plain int entries."""
    if torch.compiler.is_compiling():  # a traced lookup would guard on the cache's contents
        spec = resolve(tuple(shape), noise_shape, broadcast_dims, op=op)
        return spec, spec.full
    return _resolve_eager(shape, noise_shape, broadcast_dims, op)


def _resolve_eager(shape, noise_shape, broadcast_dims, op: str) -> tuple[NoiseSpec, bool]:
    """:func:`resolve_cached` outside tracing."""
    if noise_shape is None:
        cacheable = (
            broadcast_dims is None
            or type(broadcast_dims) is int
            or (type(broadcast_dims) is tuple and _ENTRY_TYPES.issuperset(map(type, broadcast_dims)))
        )
    else:
        cacheable = (
            broadcast_dims is None and type(noise_shape) is tuple and _ENTRY_TYPES.issuperset(map(type, noise_shape))
        )
    if not cacheable:
        spec = resolve(tuple(shape), noise_shape, broadcast_dims, op=op)
        return spec, spec.full
    k = (shape, noise_shape, broadcast_dims)
    hit = _SPECS.get(k)
    if hit is None:
        spec = resolve(tuple(shape), noise_shape, broadcast_dims, op=op)
        if len(_SPECS) > 4096:
            _SPECS.clear()
        hit = _SPECS[k] = (spec, spec.full)
    return hit


def share_axis(spec: NoiseSpec, axis: int) -> NoiseSpec:
    """``spec`` with one draw shared along ``axis`` (used to give a whole batch one mask)."""
    if axis >= len(spec.shape):
        return spec
    shape = list(spec.shape)
    shared = list(spec.shared)
    shape[axis], shared[axis] = 1, True
    return NoiseSpec(spec.input_shape, tuple(shape), tuple(shared))


# ---------------------------------------------------------------------------------------------
# engines shared with the modules


def zeros_with_grad(x: Tensor) -> Tensor:
    """Zeros shaped like ``x`` with a zero gradient (also where ``x`` holds ``nan`` or ``inf``)."""
    return torch.where(torch.zeros((), dtype=torch.bool, device=x.device), x, 0.0)


@_dist.sharded("multiplicative")
def bernoulli_apply(
    x: Tensor, spec: NoiseSpec, key, j0, t: int, scale: float, inplace: bool = False, full: bool | None = None
):
    """Apply the keep mask of ``spec`` drawn from ``key`` to ``x``: kept values times ``scale``, dropped 0.

    ``key`` is ``(seed, stream)`` on the eager path (see :func:`call_key`), else the key tensor; ``j0``
    is the first global index, or the rows of a piece of a larger tensor (then the custom ops draw them).
    """
    key = _rows.key_for(key, j0, x.device)
    if type(key) is tuple:
        full = spec.full if full is None else full
        noise = _eager.Noise(key[0], key[1], spec.shape, j0, t=t, scale=scale, full=full)
        return _eager.noise_mul(x, noise, inplace)
    if t == 0:
        y = zeros_with_grad(x)
    elif spec.full and x.is_contiguous() and not _rows.is_rows(j0):
        y = _DROPOUT_FULL(x, key, j0, t, scale, _ops.SAVE_BITS)[0]
    else:
        y = _APPLY_MASK(x, _rows.keep(key, spec.shape, j0, t), scale)
    return x.copy_(y) if inplace else y


def mask_of(key, shape, j0, t: int, device) -> Tensor:
    """The uint8 keep flags at ``shape`` drawn from ``key`` (a ``(seed, stream)`` pair or the key tensor)."""
    key = _rows.key_for(key, j0, device)
    if type(key) is tuple:
        return _eager.keep_mask(key[0], key[1], tuple(shape), j0, t, device)
    return _rows.keep(key, shape, j0, t)


def normal_of(key, shape, j0, double: bool, device) -> Tensor:
    """Standard normal variates at ``shape`` drawn from ``key`` (float64 when ``double``, else float32)."""
    key = _rows.key_for(key, j0, device)
    if type(key) is tuple:
        return _eager.normal(key[0], key[1], tuple(shape), j0, double, device)
    return _rows.normal(key, shape, j0, double)


@_dist.sharded("affine")
def alpha_apply(x: Tensor, spec: NoiseSpec, key, j0, t: int, inplace: bool = False):
    """Alpha dropout with the keep mask of ``spec``: ``a * x + b`` where kept, ``a * alpha' + b`` where dropped."""
    if t == 0:
        y = zeros_with_grad(x)
    else:
        q = t / 65536.0  # the realised keep probability
        a = (q * (1.0 + (1.0 - q) * SELU_ALPHA_P**2)) ** -0.5
        b = -a * SELU_ALPHA_P * (1.0 - q)
        keep = mask_of(key, spec.shape, j0, t, x.device).bool()
        y = torch.where(keep, x * a + b, a * SELU_ALPHA_P + b)
    return x.copy_(y) if inplace else y


@_dist.sharded("multiplicative")
def gaussian_mul_apply(x: Tensor, spec: NoiseSpec, key, j0, sigma: float) -> Tensor:
    """``x * (1 + sigma * z)`` with ``z`` standard normal at the noise shape."""
    key = _rows.key_for(key, j0, x.device)
    if type(key) is tuple:
        return _eager.noise_mul(x, _eager.Noise(key[0], key[1], spec.shape, j0, scale=sigma, gaussian=True))
    if _rows.is_rows(j0):
        return _rows.gaussian_mul(x, key, spec.shape, j0, sigma)
    return _GAUSSIAN_MUL(x, key, list(spec.shape), j0, sigma)


@_dist.sharded("additive")
def gaussian_add_apply(x: Tensor, spec: NoiseSpec, key, j0, stddev: float) -> Tensor:
    """``x + stddev * z`` with ``z`` standard normal at the noise shape."""
    key = _rows.key_for(key, j0, x.device)
    if type(key) is tuple:
        return _gauss.add(x, key[0], key[1], spec.shape, j0, stddev, spec.full)
    return _gauss.combine(x, normal_of(key, spec.shape, j0, x.dtype == torch.float64, x.device) * stddev)
