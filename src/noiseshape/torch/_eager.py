"""The eager path: noise applied by one ``autograd.Function``, the C core called with the seed as a Python int.

Outside tracing (no ``torch.compile``, no fake or meta tensors, no dispatch mode) a call skips the
custom-op dispatcher: the seed and stream travel as Python ints, a CPU tensor goes straight to the
C core, and autograd runs through :class:`NoiseMul`, whose backward, forward-mode ``jvp`` and
``vmap`` rule all apply the same noise to the gradient or tangent. Other devices (CUDA, or the
pure-torch contract when forced) run the same :class:`Noise` through the custom ops of
:mod:`._ops`, still under :class:`NoiseMul`, so forward-mode AD holds everywhere in eager.

Under tracing the functional forms call the custom ops directly (their registered autograd).
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad
from torch.autograd.function import _SingleLevelFunction

from .. import _coords
from .._errors import fail
from . import _ops

__all__ = [
    "Noise",
    "NoiseMul",
    "bernoulli",
    "draw_seed",
    "eager_ok",
    "keep_mask",
    "noise_mul",
    "normal",
    "plain_call",
]

_CPU = torch.device("cpu")
_U64 = (1 << 64) - 1
_LO, _HI = -(1 << 63), (1 << 63) - 1
_Parameter = torch.nn.Parameter
_strided = torch.strided
_dispatch_depth = torch._C._len_torch_dispatch_stack
_functorch_active = torch._C._are_functorch_transforms_active
_dynamo_compiling = torch.compiler.is_dynamo_compiling  # eager: False, one call
_grad_enabled = torch.is_grad_enabled


def eager_ok(x) -> bool:
    """Whether a call on ``x`` takes the eager path: a plain strided tensor, outside tracing and dispatch modes."""
    return (
        not _dynamo_compiling()  # first: under dynamo the rest is not traced; other tracing fails the checks below
        and (type(x) is Tensor or type(x) is _Parameter)
        and x.layout == _strided
        and not x.is_meta
        and not _dispatch_depth()
    )


_U64_MAX = (1 << 64) - 1
_ZERO = 0


def plain_call(x, seed, stream) -> bool:
    """Whether a call on ``x`` takes a plain path (:mod:`._plans`, :func:`._gauss.plain_add`): ``x`` a plain
    CPU tensor outside tracing, dispatch modes, ``torch.func`` and ``global_samples`` blocks, ``seed``
    None or a 64-bit int, ``stream`` a 64-bit int. The checks of such a call in one frame: it often
    runs right after a backward pass, with cold caches, where each Python call costs about a microsecond.
    """
    return not (
        _dynamo_compiling()
        or not (type(x) is Tensor or type(x) is _Parameter)
        or not (seed is None or (type(seed) is int and 0 <= seed <= _U64_MAX))
        or not (stream is _ZERO or (type(stream) is int and 0 <= stream <= _U64_MAX))
        or _dispatch_depth()
        or _functorch_active()
        or _coords._SAMPLES
        or not x.is_cpu
        or x.layout is not _strided
    )


# ---------------------------------------------------------------------------------------------
# seeds


_local = threading.local()


def _seed_buffer() -> tuple:
    with torch.inference_mode(False):
        buf = torch.empty(2, dtype=torch.int64)
    _local.seed = buf, buf.numpy()
    return _local.seed


def draw_seed(generator: torch.Generator | None) -> int:
    """A 64-bit seed from ``generator`` (torch's default CPU generator when None).

    It is the first of the two values ``torch.randint(-2**63, 2**63 - 1, (2,), dtype=torch.int64)``
    would draw (as an unsigned bit pattern), so the generator advances exactly as it always has:
    ``torch.manual_seed`` and checkpoint's restore of the RNG state reproduce the seed. On CPU the
    draw goes into a reused per-thread buffer (no allocation).
    """
    if _functorch_active() or (generator is not None and generator.device.type != "cpu"):
        return _drawn(generator)
    return _cpu_seed(generator)


def _cpu_seed(generator: torch.Generator | None = None) -> int:
    """:func:`draw_seed` from a CPU generator (the default one when None), outside ``torch.func`` transforms."""
    try:
        buf, view = _local.seed
    except AttributeError:
        buf, view = _seed_buffer()
    if generator is None:
        buf.random_(_LO, _HI)
    else:
        buf.random_(_LO, _HI, generator=generator)
    return view.item(0) & _U64


def _drawn(generator: torch.Generator | None) -> int:
    """The draw into a new tensor: on another device, or inside ``torch.func`` transforms (vmap's rules apply)."""
    device = _CPU if generator is None else generator.device
    drawn = torch.randint(_LO, _HI, (2,), dtype=torch.int64, device=device, generator=generator)
    if torch._C._functorch.is_batchedtensor(drawn):
        raise fail(
            "noiseshape.torch",
            "an unseeded call inside torch.func.vmap(randomness='different') would need one seed per sample, "
            "but a call draws one seed; use randomness='same' (one mask for every sample), or give seed= and "
            "vmap over inputs that each get their own stream",
        )
    return int(drawn[0]) & _U64


# ---------------------------------------------------------------------------------------------
# the noise of one call


def _core_of(v: Tensor):
    """:func:`._ops.core_for` of ``v``'s device, without building a device object."""
    if not v.is_cpu:
        return None
    core = _ops._core_module
    return core if core and not _ops.FORCE_TORCH else _ops.core_for(_CPU)


_CONTIGUOUS_LAYOUTS: dict = {}


def _shaped_layout(v: Tensor, y: Tensor, mask_shape) -> tuple:
    """``(mask elements, loop shape, x, y and mask strides)`` of a mask at ``mask_shape`` broadcast over ``v``.

    For contiguous ``v`` and ``y`` (every eager call's common case) the layout is looked up by shapes
    alone, skipping the strides and :func:`._ops._mask_layout`'s own cache key.
    """
    if v.is_contiguous() and (y is v or y.is_contiguous()):
        k = (v.shape, mask_shape)
        hit = _CONTIGUOUS_LAYOUTS.get(k)
        if hit is None:
            strides = v.stride()  # y's too (axes of length 1 aside, which the layout drops)
            hit = (math.prod(mask_shape), *_ops._mask_layout(tuple(v.shape), strides, strides, tuple(mask_shape)))
            if len(_CONTIGUOUS_LAYOUTS) > 4096:
                _CONTIGUOUS_LAYOUTS.clear()
            _CONTIGUOUS_LAYOUTS[k] = hit
        return hit
    return (math.prod(mask_shape), *_ops._mask_layout(tuple(v.shape), v.stride(), y.stride(), tuple(mask_shape)))


def _draw_apply(core, v: Tensor, y: Tensor, seed, stream, shape, j0, t, scale, full, bits_ptr: int = 0) -> bool:
    """Draw the mask at ``shape`` and apply it to ``v`` into ``y`` in one C call; False where the core has no kernel.

    A full-shape mask of contiguous ``v`` and ``y`` goes to ``dropout`` (which also packs the mask into
    ``bits_ptr`` when given), any other layout to ``shaped_dropout``, which draws the mask into scratch memory.
    """
    n = v.numel()
    code, threads = _ops.DTYPE_CODES[v.dtype], _ops._threads(n)
    if full and v.is_contiguous() and y.is_contiguous():
        core.dropout(code, v.data_ptr(), y.data_ptr(), n, seed, stream, j0, t, scale, bits_ptr, threads)
        return True
    shaped = getattr(core, "shaped_dropout", None)
    if shaped is None:
        return False
    k, loop, xs, ys, ms = _shaped_layout(v, y, shape)
    shaped(code, v.data_ptr(), y.data_ptr(), k, seed, stream, j0, t, loop, xs, ys, ms, scale, threads)
    return True


def _signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NOTHING = _Nothing()


def _plain():
    """A context in which new tensors are plain ones, also inside ``torch.func`` transforms (the core fills them)."""
    return torch._C._DisableFuncTorch() if _functorch_active() else _NOTHING


def keep_mask(seed: int, stream: int, shape, j0: int, t: int, device) -> Tensor:
    """The uint8 keep flags (1 = keep) at ``shape``, elements ``j0 ..``, on ``device``."""
    core = _ops.core_for(device)
    if core is None:
        return _ops.keep_mask(_ops.make_key(seed, stream, device), list(shape), j0, t)
    with _plain():
        mask = torch.empty(shape, dtype=torch.uint8)
    n = mask.numel()
    if n:
        core.keep_mask(mask.data_ptr(), n, seed, stream, j0, t, _ops._threads(n))
    return mask


def normal(seed: int, stream: int, shape, j0: int, double: bool, device) -> Tensor:
    """Standard normal variates at ``shape`` (float64 when ``double``, else float32), elements ``j0 ..``."""
    core = _ops.core_for(device)
    if core is None:
        return _ops.normal(_ops.make_key(seed, stream, device), list(shape), j0, double)
    with _plain():
        out = torch.empty(shape, dtype=torch.float64 if double else torch.float32)
    n = out.numel()
    if n:
        core.normal(out.data_ptr(), 1 if double else 0, n, seed, stream, j0, _ops._threads(n))
    return out


class Noise:
    """The multiplicative noise of one call, drawn from ``(seed, stream)`` at ``shape`` from global index ``j0``.

    ``gaussian`` False: Bernoulli keep flags with threshold ``t``, kept values times ``scale``. The
    C core draws the mask into scratch memory and applies it in the same call, and backward redraws
    it from the seed (or, with ``_ops.SAVE_BITS``, reads a full-shape mask kept as 1 bit per
    element); without that entry point a reduced mask is drawn once as a uint8 tensor and kept.
    ``gaussian`` True: the factor ``1 + scale * z``, ``z`` standard normal, redrawn when needed.
    """

    __slots__ = ("bits", "full", "gaussian", "j0", "mask", "scale", "seed", "shape", "stream", "t")

    def __init__(self, seed, stream, shape, j0, t=0, scale=1.0, full=False, gaussian=False):
        self.seed, self.stream, self.shape, self.j0 = seed, stream, shape, j0
        self.t, self.scale, self.full, self.gaussian = t, scale, full, gaussian
        self.mask = self.bits = None

    def saved(self) -> Tensor | None:
        """The tensor backward needs (the reduced mask or the packed bits), if any."""
        return self.mask if self.mask is not None else self.bits

    def _mask(self, device) -> Tensor:
        if self.mask is not None:
            return self.mask
        mask = keep_mask(self.seed, self.stream, self.shape, self.j0, self.t, device)
        if not self.full:
            self.mask = mask
        return mask

    def key(self, device) -> Tensor:
        return _ops.make_key(self.seed, self.stream, device)

    def apply(self, v: Tensor, inplace: bool = False) -> Tensor:
        """The noise applied to ``v`` (a plain tensor, any layout), into ``v`` itself when ``inplace``."""
        if self.gaussian:
            return self._gaussian(v, inplace)
        return self.into(v, v if inplace else torch.empty_like(v), inplace)

    def into(self, v: Tensor, y: Tensor, inplace: bool = False) -> Tensor:
        """The Bernoulli noise applied to ``v``, written into ``y`` (``v`` itself when ``inplace``, else its shape)."""
        n = v.numel()
        if n == 0:
            return y
        if self.t == 0:
            return y.zero_()
        core = _core_of(v)
        if core is None:
            return self._apply_ops(v, y, inplace)
        if self.mask is None:
            full = self.full and v.is_contiguous() and y.is_contiguous()
            if full and self.bits is not None:
                code = _ops.DTYPE_CODES[v.dtype]
                core.apply_bits(code, v.data_ptr(), y.data_ptr(), self.bits.data_ptr(), n, self.scale, _ops._threads(n))
                return y
            bits_ptr = 0
            if full and _ops.SAVE_BITS:
                self.bits = torch.empty((n + 7) // 8, dtype=torch.uint8)
                bits_ptr = self.bits.data_ptr()
            noise = (self.seed, self.stream, self.shape, self.j0, self.t, self.scale, self.full)
            if _draw_apply(core, v, y, *noise, bits_ptr):
                return y
        return _ops.apply_mask_into(core, v, y, self._mask(_CPU), self.scale)

    def _apply_ops(self, v: Tensor, y: Tensor, inplace: bool) -> Tensor:
        """The custom ops' kernels (Triton on CUDA, the pure-torch contract elsewhere)."""
        if self.full and v.is_contiguous():
            out = _ops.dropout_full(v, self.key(v.device), self.j0, self.t, self.scale, False)[0]
        else:
            out = _ops.apply_mask(v, self._mask(v.device), self.scale)
        return y.copy_(out) if inplace else out

    def _gaussian(self, v: Tensor, inplace: bool) -> Tensor:
        z = normal(self.seed, self.stream, self.shape, self.j0, v.dtype == torch.float64, v.device)
        factor = z.mul_(self.scale).add_(1.0)
        y = v if inplace else torch.empty_like(v)
        if v.dtype in (torch.float16, torch.bfloat16):
            return y.copy_(v.float() * factor)
        return torch.mul(v, factor, out=y)

    def broadcast(self, v: Tensor) -> Tensor:
        """The noise applied with torch ops to ``v``, whose trailing axes have the noise's input shape (vmap)."""
        if self.gaussian:
            factor = normal(self.seed, self.stream, self.shape, self.j0, v.dtype == torch.float64, v.device)
            factor = factor.mul_(self.scale).add_(1.0)
            if v.dtype in (torch.float16, torch.bfloat16):
                return (v.float() * factor).to(v.dtype)
            return v * factor
        keep = self._mask(v.device).bool() if self.t else torch.zeros(self.shape, dtype=torch.bool, device=v.device)
        return _ops._select(v, keep, self.scale)


# ---------------------------------------------------------------------------------------------
# autograd


class NoiseMul(torch.autograd.Function):
    """``y = noise * x``: linear in ``x``, so the gradient and the tangent get the same noise."""

    @staticmethod
    def forward(x, noise, inplace):
        return noise.apply(x, inplace)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, noise, inplace = inputs
        ctx.noise, ctx.inplace = noise, inplace
        if inplace:
            ctx.mark_dirty(x)
        saved = noise.saved()
        if saved is not None:
            ctx.save_for_backward(saved)

    @staticmethod
    def backward(ctx, grad):
        noise = ctx.noise
        saved = ctx.saved_tensors  # the mask or bits as saved-tensor hooks give them back (unpacked once)
        if saved:
            (saved,) = saved
            if noise.mask is not None:
                noise.mask = saved
            else:
                noise.bits = saved
        return noise_mul(grad, noise), None, None

    @staticmethod
    def jvp(ctx, tangent, _noise, _inplace):
        out = noise_mul(tangent, ctx.noise)
        return tangent.copy_(out) if ctx.inplace else out

    @staticmethod
    def vmap(info, in_dims, x, noise, inplace):
        if in_dims[0] is None:
            return noise.apply(x, inplace), None
        xb = x.movedim(in_dims[0], 0)
        y = noise.broadcast(xb)
        return (xb.copy_(y) if inplace else y), 0


_apply_function = super(_SingleLevelFunction, NoiseMul).apply  # skips the Python-side argument binding


# ---------------------------------------------------------------------------------------------
# small inputs: a native multiply

#: Inputs of at most this many elements get their autograd from one native multiply by the scaled
#: mask (``scale`` where kept, 0 where dropped, at the noise shape), which backward keeps: at most
#: ``NATIVE_MAX`` elements of the input's dtype. For such inputs a Python ``autograd.Function`` (its
#: node, its context, a Python backward) costs more than the whole draw; larger inputs keep nothing
#: and backward redraws the mask. Set by measurement (``noiseshape bench --sweep``).
NATIVE_MAX = 1 << 12
#: A reduced mask of at most ``NATIVE_MAX`` elements takes the native multiply up to this input size:
#: past it the second pass that turns dropped products into +0 and torch's multiplies cost more than
#: the ``autograd.Function``'s Python calls (measured from 2^17 to 2^19 elements, one thread, masks
#: shared along rows of 64 and 1,024 elements and masks varying along the last axis).
NATIVE_MAX_BROADCAST = 1 << 18
_UNIT = (1,)
_NATIVE_DTYPES = {torch.float32: 0, torch.float64: 1}  # where ``x * (scale in x's dtype)`` is the contract's rounding


def _native_mul(core, x: Tensor, seed: int, stream: int, shape, j0: int, t: int, scale: float, full: bool):
    """``x * m`` with ``m`` the scaled mask at ``shape``, torch's own multiply node carrying the gradient;
    None where ``x`` does not take this way (too large, not float32 or float64, no kernel in ``core``).

    The noise is Bernoulli with a nonzero threshold, not in place and not yet drawn; ``x`` needs
    autograd. ``m`` holds exactly ``scale`` in ``x``'s dtype where kept and a zero where dropped, so
    gradient and tangent are ``g * m``, the noise applied to ``g`` (a dropped ``inf`` or ``nan`` in
    ``g`` gives ``nan`` there, as torch's dropout does). A dropped element must be exactly +0, as
    everywhere: when the core reads ``x`` (full shape, contiguous) its zero has ``x``'s sign, so the
    product is +0 wherever ``x`` is finite, and the core rewrites the dropped elements only where some
    ``x`` there is ``inf`` or ``nan``; a broadcast mask's zero is +0, and the dropped elements are
    rewritten where any was dropped. One function, not a check and a draw: a call with autograd runs
    right after a backward pass, with cold caches, where every Python call on the way counts.
    """
    n = x.numel()
    k = n if full else math.prod(shape)
    if n > NATIVE_MAX and (full or n > NATIVE_MAX_BROADCAST or k > NATIVE_MAX):
        return None
    code = _NATIVE_DTYPES.get(x.dtype)
    draw = getattr(core, "scaled_mask", None)
    if code is None or draw is None or _ops.SAVE_BITS:
        return None
    plain = full and x.is_contiguous()  # then the core reads x too and signs the zeros
    m = torch.empty_like(x if plain else _template(shape, x.dtype))
    if not k:
        return torch.mul(x, m)
    to_rewrite = draw(code, m.data_ptr(), k, seed, stream, j0, t, scale, x.data_ptr() if plain else 0)
    y = torch.mul(x, m)
    if to_rewrite:  # the C core zeroes y's dropped elements in place (no autograd involved)
        if plain:
            loop, ys, ms = (k,), _UNIT, _UNIT
        else:
            _, loop, _, ys, ms = _shaped_layout(x, y, shape)
        core.zero_dropped(code, y.data_ptr(), m.data_ptr(), loop, ys, ms)
    return y


_TEMPLATES: dict = {}


def _template(shape, dtype) -> Tensor:
    """A tensor of ``shape`` and ``dtype`` to allocate like (``empty_like`` is torch's quickest allocation)."""
    k = (shape, dtype)
    t = _TEMPLATES.get(k)
    if t is None:
        if len(_TEMPLATES) > 1024:
            _TEMPLATES.clear()
        with torch.inference_mode(False):
            t = _TEMPLATES[k] = torch.empty(shape, dtype=dtype)
    return t


def bernoulli(x: Tensor, seed, stream: int, shape, full: bool, t: int, scale: float, inplace: bool) -> Tensor:
    """Bernoulli noise of a plain eager call (mask from global index 0), by the shortest way that serves ``x``.

    The same values as ``noise_mul(x, Noise(seed, stream, shape, 0, t, scale, full), inplace)``: on CPU
    without autograd the C core is called directly, with it small inputs take :func:`_native_mul`; the
    rest, other devices and unusual layouts go through :class:`Noise`. ``seed`` None draws one
    (:func:`draw_seed`). Every call of the functions and layers that needs no argument checked comes here.
    """
    core = _ops._core_module
    if _functorch_active() or not (t and core and x.is_cpu and not _ops.FORCE_TORCH):
        noise = Noise(draw_seed(None) if seed is None else seed, stream, shape, 0, t, scale, full)
        return noise_mul(x, noise, inplace)
    if seed is None:
        seed = _cpu_seed()
    if (x.requires_grad and _grad_enabled()) or _forward_ad._current_level >= 0:
        y = None if inplace else _native_mul(core, x, seed, stream, shape, 0, t, scale, full)
        if y is not None:
            return y
        return _apply_function(x, Noise(seed, stream, shape, 0, t, scale, full), inplace)
    if x.numel():
        y = x if inplace else torch.empty_like(x)
        if _draw_apply(core, x, y, seed, stream, shape, 0, t, scale, full):
            return y
    return Noise(seed, stream, shape, 0, t, scale, full).apply(x, inplace)


def noise_mul(x: Tensor, noise: Noise, inplace: bool = False) -> Tensor:
    """``noise`` applied to ``x`` with autograd in every mode (reverse, forward, ``torch.func``) when it is needed."""
    if _functorch_active():
        return NoiseMul.apply(x, noise, inplace)
    if (x.requires_grad and _grad_enabled()) or _forward_ad._current_level >= 0:
        if noise.t and noise.mask is None and not (inplace or noise.gaussian):
            n = noise
            y = _native_mul(_core_of(x), x, n.seed, n.stream, n.shape, n.j0, n.t, n.scale, n.full)
            if y is not None:
                return y
        return _apply_function(x, noise, inplace)
    return noise.apply(x, inplace)
