"""The ``noiseshape::*`` custom ops: C-core kernels on CPU, Triton kernels on CUDA, the pure-torch contract elsewhere.

Every op is a :func:`torch.library.custom_op` with a fake (meta) kernel and, where it is
differentiable, a registered autograd formula, so ``torch.compile(fullgraph=True)`` traces through
it. Seeds travel as an int64 tensor ``key = [seed, stream]`` (64-bit values as bit patterns), so no
host synchronisation happens in traced code. (``noiseshape::stream_key``, a seeded layer's key read
in traced code, lives with the checkpoint handling in :mod:`._replay`.)

These ops serve traced code (``torch.compile``, ``torch.export``, fake and meta tensors); eager calls
take :mod:`._eager`, which calls the same kernels without the dispatcher. What backward keeps here:

* ``dropout_full`` (contiguous full-shape dropout) keeps only the key: backward recomputes the mask,
  which measured as fast as reading a saved one (set ``SAVE_BITS`` to keep the packed keep mask,
  1 bit per element, on CPU instead);
* ``apply_mask`` keeps the mask at its reduced (noise) shape, 1 byte per mask element;
* ``gaussian_mul`` keeps only the key: backward redraws the noise;
* ``dropout_add`` (``residual + dropout(x + bias)``) keeps only the key.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from .. import _threads as _thread_settings
from .._threads import get_num_threads
from . import _philox

__all__ = [
    "DTYPE_CODES",
    "apply_bits",
    "apply_mask",
    "dropout_add",
    "dropout_full",
    "gaussian_mul",
    "keep_mask",
    "make_key",
    "normal",
]

DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_U64 = (1 << 64) - 1

#: Force the pure-torch path on CPU tensors too (tests compare both paths bit for bit).
FORCE_TORCH = False
#: Route CPU tensors through the Triton kernels too (tests run them in Triton's interpreter).
FORCE_TRITON = False
#: Full-shape dropout on CPU keeps a 1-bit packed mask for backward (True) or recomputes it from the key.
SAVE_BITS = False

_core_module = None
_triton_module = None


def core_for(device: torch.device):
    """The C core when it serves ``device`` (CPU, built, not forced off), else None."""
    global _core_module
    if device.type != "cpu" or FORCE_TORCH:
        return None
    if _core_module is None:
        try:
            from .. import _core
        except ImportError:
            _core = False  # type: ignore[assignment]  # remembered: the core is not built
        _core_module = _core
    return _core_module or None


def triton_for(device: torch.device):
    """The Triton kernels when they serve ``device`` (CUDA with Triton installed, or forced), else None."""
    global _triton_module
    if FORCE_TORCH or not (device.type == "cuda" or (FORCE_TRITON and device.type == "cpu")):
        return None
    if _triton_module is None:
        from . import _triton

        _triton_module = _triton
    return _triton_module if _triton_module.available() else None


#: Below this many elements one thread does the work (results never depend on it). The C core's loops
#: split work only from 65536 elements (``NS_PAR_MIN``); measured on 2 cores, 2**11 to 2**15 elements
#: took the same time with 1 and 2 threads, so smaller calls skip the thread-count lookup.
_SMALL = 1 << 16


def _threads(n: int = _SMALL) -> int:
    if n < _SMALL and _thread_settings._env_read:  # the environment was read and found good (or unset)
        return 1
    threads = get_num_threads()  # also for small calls, so a bad setting is reported whatever the size
    return 1 if n < _SMALL else threads


def make_key(seed: int, stream: int = 0, device=None) -> Tensor:
    """The int64 key tensor ``[seed, stream]`` (64-bit unsigned values as two's-complement bit patterns)."""
    vals = []
    for name, v in (("seed", seed), ("stream", stream)):
        v = int(v)
        if not 0 <= v <= _U64:
            raise ValueError(f"{name} is {v}; give an integer in [0, 2**64)")
        vals.append(v - (1 << 64) if v >> 63 else v)
    return torch.tensor(vals, dtype=torch.int64, device=device)


def _key_ints(key: Tensor) -> tuple[int, int]:
    seed, stream = key.tolist()
    return seed & _U64, stream & _U64


def _no_tangent(op: str, *tensors) -> None:
    """Refuse forward-mode AD inputs: the custom ops' registered autograd is reverse-mode only.

    The functional forms and modules carry tangents on the eager path; a dual tensor reaching a
    custom op directly would otherwise lose its tangent without a word.
    """
    if _forward_ad._current_level < 0:
        return
    for t in tensors:
        if t is not None and _forward_ad.unpack_dual(t).tangent is not None:
            from .._errors import fail

            raise fail(
                f"torch.ops.noiseshape.{op}",
                "an input carries a forward-mode tangent, which this custom op does not propagate; call the "
                "noiseshape.torch function or module instead (they support forward-mode AD)",
                shape=tuple(t.shape),
            )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scaled(x: Tensor, scale: float) -> Tensor:
    """``x * scale`` in float32 (float64 for float64 inputs), rounded to ``x``'s dtype."""
    if x.dtype in (torch.float16, torch.bfloat16):
        y = (x.float() * scale).to(x.dtype)
        return y.masked_fill_(y.isnan(), float("nan"))  # canonical NaN (bfloat16 0x7FC0, float16 0x7E00)
    return x * scale


def _select(x: Tensor, keep: Tensor, scale: float) -> Tensor:
    return torch.where(keep, _scaled(x, scale), torch.zeros((), dtype=x.dtype, device=x.device))


# ---------------------------------------------------------------------------------------------
# keep_mask: the reduced mask (uint8 0/1), not differentiable


@torch.library.custom_op("noiseshape::keep_mask", mutates_args=())
def keep_mask(key: Tensor, shape: list[int], j0: int, t: int) -> Tensor:
    mask = torch.empty(shape, dtype=torch.uint8, device=key.device)
    n = mask.numel()
    if n == 0:
        return mask
    core = core_for(key.device)
    tr = triton_for(key.device)
    if core is not None:
        seed, stream = _key_ints(key)
        core.keep_mask(mask.data_ptr(), n, seed, stream, j0, t, _threads(n))
    elif tr is not None:
        return tr.keep_mask(n, key, j0, t).view(mask.shape)
    else:
        mask.copy_(_philox.keep_flags(key, j0, n, t).view(mask.shape))
    return mask


@keep_mask.register_fake
def _(key, shape, j0, t):
    return key.new_empty(shape, dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------
# normal: standard normal variates at a shape (float32 or float64), not differentiable


@torch.library.custom_op("noiseshape::normal", mutates_args=())
def normal(key: Tensor, shape: list[int], j0: int, double: bool) -> Tensor:
    dtype = torch.float64 if double else torch.float32
    out = torch.empty(shape, dtype=dtype, device=key.device)
    n = out.numel()
    if n == 0:
        return out
    core = core_for(key.device)
    tr = triton_for(key.device)
    if core is not None:
        seed, stream = _key_ints(key)
        core.normal(out.data_ptr(), 1 if double else 0, n, seed, stream, j0, _threads(n))
    elif tr is not None:
        return tr.normal(n, key, j0, dtype).view(out.shape)
    else:
        out.copy_(_philox.normals(key, j0, n, dtype).view(out.shape))
    return out


@normal.register_fake
def _(key, shape, j0, double):
    return key.new_empty(shape, dtype=torch.float64 if double else torch.float32)


# ---------------------------------------------------------------------------------------------
# apply_bits: y = bit ? x * scale : 0 on contiguous x (backward of dropout_full)


@torch.library.custom_op("noiseshape::apply_bits", mutates_args=())
def apply_bits(x: Tensor, bits: Tensor, scale: float) -> Tensor:
    _no_tangent("apply_bits", x)
    x = x.contiguous()
    y = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return y
    core = core_for(x.device)
    if core is not None:
        core.apply_bits(DTYPE_CODES[x.dtype], x.data_ptr(), y.data_ptr(), bits.data_ptr(), n, scale, _threads(n))
    else:
        y.copy_(_select(x.reshape(-1), _philox.unpack_bits(bits, n), scale).view(x.shape))
    return y


@apply_bits.register_fake
def _(x, bits, scale):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _save_mask_and_scale(ctx, inputs, output):
    """Autograd setup of ``apply_bits`` and ``apply_mask``: both have inputs ``(x, mask, scale)``."""
    _, mask, scale = inputs
    ctx.save_for_backward(mask)
    ctx.scale = scale


def _apply_bits_backward(ctx, grad):
    (bits,) = ctx.saved_tensors
    return apply_bits(grad, bits, ctx.scale), None, None


apply_bits.register_autograd(_apply_bits_backward, setup_context=_save_mask_and_scale)


# ---------------------------------------------------------------------------------------------
# dropout_full: fused full-shape dropout of a contiguous tensor, with the packed mask for backward


@torch.library.custom_op("noiseshape::dropout_full", mutates_args=())
def dropout_full(x: Tensor, key: Tensor, j0: int, t: int, scale: float, save_bits: bool) -> tuple[Tensor, Tensor]:
    _no_tangent("dropout_full", x)
    x = x.contiguous()
    n = x.numel()
    y = torch.empty_like(x)
    bits = torch.empty((n + 7) // 8 if save_bits else 0, dtype=torch.uint8, device=x.device)
    if n == 0:
        return y, bits
    core = core_for(x.device)
    tr = triton_for(x.device)
    if core is not None:
        seed, stream = _key_ints(key)
        bits_ptr = bits.data_ptr() if save_bits else 0
        core.dropout(
            DTYPE_CODES[x.dtype], x.data_ptr(), y.data_ptr(), n, seed, stream, j0, t, scale, bits_ptr, _threads(n)
        )
    elif tr is not None and not save_bits:
        y = tr.dropout_fwd(x, key, j0, t, scale)
    else:
        keep = _philox.keep_flags(key, j0, n, t)
        y.copy_(_select(x.reshape(-1), keep, scale).view(x.shape))
        if save_bits:
            bits.copy_(_philox.pack_bits(keep))
    return y, bits


@dropout_full.register_fake
def _(x, key, j0, t, scale, save_bits):
    n = x.numel()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    return y, x.new_empty((n + 7) // 8 if save_bits else 0, dtype=torch.uint8)


def _dropout_full_setup(ctx, inputs, output):
    _, key, j0, t, scale, save_bits = inputs
    ctx.scale, ctx.j0, ctx.t, ctx.save_bits = scale, j0, t, save_bits
    ctx.save_for_backward(output[1] if save_bits else key)


def _dropout_full_backward(ctx, grad, _grad_bits):
    (saved,) = ctx.saved_tensors
    if ctx.save_bits:
        gx = apply_bits(grad, saved, ctx.scale)
    else:
        gx = dropout_full(grad, saved, ctx.j0, ctx.t, ctx.scale, False)[0]
    return gx, None, None, None, None, None


dropout_full.register_autograd(_dropout_full_backward, setup_context=_dropout_full_setup)


# ---------------------------------------------------------------------------------------------
# apply_mask: y = mask ? x * scale : 0 with a mask broadcast from its reduced shape


@functools.lru_cache(maxsize=4096)
def _mask_layout(shape: tuple, x_strides: tuple, y_strides: tuple, mask_shape: tuple):
    """The collapsed loop of ``apply_mask``: shape and element strides of x, y and the broadcast mask (cached).

    The axes are taken in the output's memory order (largest stride of ``y``, then of ``x``, outermost),
    so a transposed or channels-last ``y`` is written front to back; each element's value does not
    depend on the order.
    """
    from .._spec import collapse

    contiguous, step = [], 1
    for n in reversed(mask_shape):
        contiguous.append(step)
        step *= n
    m_strides = tuple(0 if r == 1 else s for r, s in zip(mask_shape, reversed(contiguous)))
    order = sorted(range(len(shape)), key=lambda d: (-abs(y_strides[d]), -abs(x_strides[d])))
    return collapse(*(tuple(v[d] for d in order) for v in (shape, x_strides, y_strides, m_strides)))


def apply_mask_into(core, x: Tensor, y: Tensor, mask: Tensor, scale: float) -> Tensor:
    """``y = mask ? x * scale : 0`` by the C core, ``mask`` (uint8) broadcast to ``x``'s shape; ``y`` may be ``x``."""
    m = mask.contiguous()
    shape, xs, ys, ms = _mask_layout(tuple(x.shape), x.stride(), y.stride(), tuple(m.shape))
    core.apply_mask(
        DTYPE_CODES[x.dtype], x.data_ptr(), y.data_ptr(), m.data_ptr(), shape, xs, ys, ms, scale, _threads(x.numel())
    )
    return y


@torch.library.custom_op("noiseshape::apply_mask", mutates_args=())
def apply_mask(x: Tensor, mask: Tensor, scale: float) -> Tensor:
    _no_tangent("apply_mask", x)
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    core = core_for(x.device)
    tr = triton_for(x.device)
    if tr is not None:
        out = tr.dropout_bcast_fwd(x, mask, scale)
        return out if x.is_contiguous() else y.copy_(out)
    if core is not None:
        apply_mask_into(core, x, y, mask, scale)
    else:
        y.copy_(_select(x, mask.bool(), scale))
    return y


@apply_mask.register_fake
def _(x, mask, scale):
    return torch.empty_like(x)


def _apply_mask_backward(ctx, grad):
    (mask,) = ctx.saved_tensors
    return apply_mask(grad, mask, ctx.scale), None, None


apply_mask.register_autograd(_apply_mask_backward, setup_context=_save_mask_and_scale)


# ---------------------------------------------------------------------------------------------
# gaussian_mul: y = x * (1 + sigma * z), z drawn at the reduced shape and broadcast; backward redraws z


def _gaussian_factor(key: Tensor, shape, j0, sigma: float, dtype: torch.dtype) -> Tensor:
    z = normal(key, list(shape), j0, dtype == torch.float64)
    return z.mul_(sigma).add_(1.0)


@torch.library.custom_op("noiseshape::gaussian_mul", mutates_args=())
def gaussian_mul(x: Tensor, key: Tensor, shape: list[int], j0: int, sigma: float) -> Tensor:
    _no_tangent("gaussian_mul", x)
    factor = _gaussian_factor(key, shape, j0, sigma, x.dtype)
    y = torch.empty_like(x)
    if x.dtype in (torch.float16, torch.bfloat16):
        return y.copy_(x.float() * factor)
    return torch.mul(x, factor, out=y)


@gaussian_mul.register_fake
def _(x, key, shape, j0, sigma):
    return torch.empty_like(x)


def _gaussian_mul_setup(ctx, inputs, output):
    _, key, shape, j0, sigma = inputs
    ctx.save_for_backward(key)
    ctx.shape, ctx.j0, ctx.sigma = shape, j0, sigma


def _gaussian_mul_backward(ctx, grad):
    (key,) = ctx.saved_tensors
    return gaussian_mul(grad, key, ctx.shape, ctx.j0, ctx.sigma), None, None, None, None


gaussian_mul.register_autograd(_gaussian_mul_backward, setup_context=_gaussian_mul_setup)


# ---------------------------------------------------------------------------------------------
# dropout_add: residual + dropout(x + bias) over the full shape, one pass on CUDA; backward recomputes the mask


@torch.library.custom_op("noiseshape::dropout_add", mutates_args=())
def dropout_add(x: Tensor, residual: Tensor, bias: Tensor | None, key: Tensor, j0: int, t: int, scale: float) -> Tensor:
    _no_tangent("dropout_add", x, residual, bias)
    tr = triton_for(x.device)
    if tr is not None:
        return tr.dropout_add(x, residual, key, j0, t, scale, bias=bias)
    h = x if bias is None else x + bias
    return residual.contiguous() + dropout_full(h, key, j0, t, scale, False)[0]


@dropout_add.register_fake
def _(x, residual, bias, key, j0, t, scale):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _dropout_add_setup(ctx, inputs, output):
    _, _, bias, key, j0, t, scale = inputs
    ctx.save_for_backward(key)
    ctx.j0, ctx.t, ctx.scale, ctx.has_bias = j0, t, scale, bias is not None


def _dropout_add_backward(ctx, grad):
    (key,) = ctx.saved_tensors
    gx = dropout_full(grad, key, ctx.j0, ctx.t, ctx.scale, False)[0]
    gb = gx.reshape(-1, gx.shape[-1]).sum(0) if ctx.has_bias else None
    return gx, grad, gb, None, None, None, None


dropout_add.register_autograd(_dropout_add_backward, setup_context=_dropout_add_setup)
