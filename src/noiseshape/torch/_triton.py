"""Triton kernels for the mask contract (``docs/rng.md``): dropout, alpha and Gaussian dropout, fused residual adds.

Every kernel is a pure function of ``key = [seed, stream]`` (an int64 device tensor holding the 64-bit values as
bit patterns, read inside the kernel: no host synchronisation, and CUDA graphs may update it in place), the global
index ``j0`` of the first mask element and the op's parameters. The results are bit-identical to
:mod:`noiseshape._rng` for every Bernoulli draw.

Layout. A program owns a run of whole Philox blocks in *j-space*: block ``b`` serves elements ``8 b .. 8 b + 7``
(Bernoulli lanes) or variates ``2 b, 2 b + 1`` (normal word pairs), so one Philox call feeds 8 (or 2) elements and no
lane is computed and thrown away. When ``j0`` is not a multiple of 8 the first and last blocks are partly masked.

Arithmetic. Values are computed in float32 (float64 for float64 tensors) and stored in the tensor's dtype with
round-to-nearest-even. The bfloat16 rounding is done in integer arithmetic (a NaN becomes ``0x7FC0``), which makes it
identical on the GPU and in Triton's interpreter. Products are explicitly rounded (``mul.rn``), so they are never
contracted into a fused multiply-add: ``x * a + b`` rounds twice, as the pure-torch path does. Normal variates use
Box-Muller in float64, so they are bit-identical to the reference wherever ``log`` and ``cos`` are (the interpreter)
and within 1 float32 ulp otherwise (libdevice's double-precision ``log``/``cos`` are accurate to 2 double ulp).

Fused residual adds compute, per element, exactly the unfused composition ``residual + dropout(x + bias)`` with each
intermediate rounded to the storage dtype.

Saved-for-backward state. Full-shape kernels recompute the mask from ``(key, j0, t)`` in backward: nothing but the
key is kept. Shaped (``noise_shape``) dropout draws the reduced mask with :func:`keep_mask` (small, L2-resident) and
applies it in one broadcasting pass; backward reuses the reduced mask (or redraws it from the key).

Triton is optional: without it this module still imports and :func:`available` is False. Set ``TRITON_INTERPRET=1``
before importing it to run the kernels on CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

import math
import os
import struct

import torch
from torch import Tensor

from ._ops import make_key

try:  # optional: without Triton the module still imports and available() is False
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except Exception:  # ImportError, or an install that fails while initialising
    triton = tl = libdevice = None

__all__ = [
    "ALPHA_PRIME",
    "alpha_bcast_fwd",
    "alpha_coefficients",
    "alpha_dropout_bwd",
    "alpha_dropout_fwd",
    "available",
    "bias_dropout_add",
    "dropout_add",
    "dropout_bcast_fwd",
    "dropout_bwd",
    "dropout_fwd",
    "gaussian_bcast_fwd",
    "gaussian_dropout_fwd",
    "keep_mask",
    "make_key",
    "normal",
    "shaped_dropout",
]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946
#: The value alpha dropout sets dropped SELU activations to, before the affine correction.
ALPHA_PRIME = -SELU_LAMBDA * SELU_ALPHA

_MODE_DROPOUT, _MODE_ALPHA, _MODE_GAUSSIAN = 0, 1, 2
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def available() -> bool:
    """Whether Triton is importable (the kernels then run on CUDA tensors, or anywhere with ``TRITON_INTERPRET=1``)."""
    return tl is not None


def _require() -> None:
    if tl is None:
        raise RuntimeError("Triton is not installed: pip install 'noiseshape[triton]'")


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _as_key(key, device) -> Tensor:
    if isinstance(key, Tensor):
        if key.dtype != torch.int64 or key.numel() != 2:
            raise ValueError(f"key must be an int64 tensor [seed, stream]; got {key.dtype} of shape {tuple(key.shape)}")
        return key.reshape(2).to(device)
    seed, stream = key
    return make_key(seed, stream, device)


def _bits(value: float) -> int:
    """The float64 bit pattern of ``value`` as a signed 64-bit integer (kernels bitcast it back, losslessly)."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def _check_float(x: Tensor, name: str = "x") -> None:
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}; the kernels take float32, float64, float16 or bfloat16")


def _check_t(t: int) -> int:
    t = int(t)
    if not 0 <= t <= 65536:
        raise ValueError(f"threshold t is {t}; it must lie in [0, 65536]")
    return t


def alpha_coefficients(t: int) -> tuple[float, float, float]:
    """``(a, b, dropped)`` of alpha dropout at the realised drop rate ``q = 1 - t / 65536``.

    ``a = ((1 - q) (1 + q alpha'^2))^-1/2``, ``b = -a alpha' q`` (Klambauer et al. 2017, as in PyTorch) with
    ``alpha' = -lambda alpha`` of SELU; kept values become ``x a + b`` and dropped ones ``dropped = a alpha' + b``.
    Returns ``(1, 0, 0)`` for ``t = 65536`` and ``(0, 0, 0)`` for ``t = 0`` (everything dropped: zeros, as PyTorch).
    """
    t = _check_t(t)
    if t == 0:
        return 0.0, 0.0, 0.0
    q = 1.0 - t / 65536.0
    a = ((1.0 - q) * (1.0 + q * ALPHA_PRIME**2)) ** -0.5
    b = -a * ALPHA_PRIME * q
    return a, b, a * ALPHA_PRIME + b


def _alpha_params(t: int, dtype: torch.dtype) -> tuple[float, float, float]:
    """``(a, b, dropped)`` with ``dropped`` rounded straight from float64 to ``dtype`` (as ``torch.where`` does)."""
    a, b, dropped = alpha_coefficients(t)
    return a, b, torch.tensor(dropped, dtype=torch.float64).to(dtype).item()


# ---------------------------------------------------------------------------------------------------------------------
# Kernels (defined only when Triton imports)


if tl is not None:

    @triton.jit
    def _philox_words(key_ptr, b):
        """Words ``w0..w3`` (uint32) of blocks ``b`` (int64 tensor) under ``key = [seed, stream]``."""
        seed = tl.load(key_ptr)
        stream = tl.load(key_ptr + 1)
        c0 = b.to(tl.uint32)
        c1 = (b >> 32).to(tl.uint32)
        c2 = tl.zeros_like(c0) + stream.to(tl.uint32)
        c3 = tl.zeros_like(c0) + (stream >> 32).to(tl.uint32)
        return tl.random.philox(seed, c0, c1, c2, c3)

    @triton.jit
    def _keep(key_ptr, b, t, k):
        """Keep flags ``[BB, 8]``: lane ``k`` of block ``b`` is below ``t``."""
        w0, w1, w2, w3 = _philox_words(key_ptr, b)
        kk = k[None, :]
        w = tl.where(kk < 2, w0[:, None], tl.where(kk < 4, w1[:, None], tl.where(kk < 6, w2[:, None], w3[:, None])))
        lane = (w >> ((kk & 1) * 16).to(tl.uint32)) & 0xFFFF
        return lane.to(tl.int32) < t

    @triton.jit
    def _normals(key_ptr, b, k):
        """Standard normals ``[BB, 2]`` (float64): variates ``2 b + k`` by Box-Muller."""
        w0, w1, w2, w3 = _philox_words(key_ptr, b)
        first = k[None, :] == 0
        a = tl.where(first, w0[:, None], w2[:, None])
        c = tl.where(first, w1[:, None], w3[:, None])
        u1 = (a.to(tl.float64) + 0.5) * 2.3283064365386963e-10  # 2**-32
        u2 = c.to(tl.float64) * 2.3283064365386963e-10
        return tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)

    @triton.jit
    def _f64(bits):
        """The float64 whose bit pattern is the integer ``bits``."""
        return tl.cast(tl.cast(bits, tl.int64), tl.float64, bitcast=True)

    @triton.jit
    def _load(ptr, off, mask):
        """Load and widen to the compute type (float32, or float64 for float64 tensors)."""
        v = tl.load(ptr + off, mask=mask, other=0)
        if ptr.dtype.element_ty == tl.bfloat16:
            return (v.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
        elif ptr.dtype.element_ty == tl.float64:
            return v
        else:
            return v.to(tl.float32)

    @triton.jit
    def _narrow(v, dt: tl.constexpr):
        """Round a compute-type value to ``dt`` (nearest even; bfloat16 in integer arithmetic, NaN -> 0x7FC0)."""
        if dt == tl.bfloat16:
            u = v.to(tl.uint32, bitcast=True)
            r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
            r = tl.where(v != v, 0x7FC0, r)
            return r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            return v.to(dt)

    @triton.jit
    def _round_trip(v, dt: tl.constexpr):
        """``v`` rounded to ``dt`` and widened back (a no-op for float32 and float64)."""
        if dt == tl.bfloat16:
            r = _narrow(v, dt)
            return (r.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
        elif dt == tl.float16:
            return v.to(tl.float16).to(tl.float32)
        else:
            return v

    @triton.jit
    def _mul(a, b, INTERP: tl.constexpr):
        """``a * b`` rounded once and never contracted into a fused multiply-add (bit-reproducible)."""
        if INTERP:
            return a * b
        else:
            return libdevice.mul_rn(a, b)

    @triton.jit
    def _combine(xc, keep, z, p0, p1, p2, dt: tl.constexpr, MODE: tl.constexpr, INTERP: tl.constexpr):
        """The op on compute-type values (see the launchers): dropout, alpha dropout or Gaussian dropout."""
        ct = xc.dtype
        if MODE == 0:
            return tl.where(keep, _mul(xc, _f64(p0).to(ct), INTERP), 0.0)
        elif MODE == 1:
            kept = _round_trip(_mul(xc, _f64(p0).to(ct), INTERP), dt) + _f64(p1).to(ct)
            return tl.where(keep, kept, _f64(p2).to(ct))
        else:
            return _mul(xc, _mul(z.to(ct), _f64(p0).to(ct), INTERP) + 1.0, INTERP)

    @triton.jit(do_not_specialize=["j0", "n", "t"])
    def keep_mask_kernel(out_ptr, key_ptr, j0: tl.int64, n: tl.int64, t: tl.int32, BB: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        j0 = tl.cast(j0, tl.int64)
        bstart = j0 // 8
        row = pid * BB + tl.arange(0, BB).to(tl.int64)
        k = tl.arange(0, 8)
        i = row[:, None] * 8 + k[None, :] - (j0 - bstart * 8)
        mask = (i >= 0) & (i < n)
        keep = _keep(key_ptr, bstart + row, t, k)
        tl.store(out_ptr + i, keep.to(tl.uint8), mask=mask)

    @triton.jit(do_not_specialize=["j0", "n"])
    def normal_kernel(out_ptr, key_ptr, j0: tl.int64, n: tl.int64, BB: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        j0 = tl.cast(j0, tl.int64)
        bstart = j0 // 2
        row = pid * BB + tl.arange(0, BB).to(tl.int64)
        k = tl.arange(0, 2)
        i = row[:, None] * 2 + k[None, :] - (j0 - bstart * 2)
        mask = (i >= 0) & (i < n)
        z = _normals(key_ptr, bstart + row, k)
        tl.store(out_ptr + i, z.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=["j0", "t", "p0", "p1", "p2", "d_bias"])  # n stays specialized (divisibility)
    def fused_kernel(
        x_ptr,
        y_ptr,
        bias_ptr,
        res_ptr,
        key_ptr,
        j0: tl.int64,
        n: tl.int64,
        t: tl.int32,
        p0: tl.int64,
        p1: tl.int64,
        p2: tl.int64,
        d_bias: tl.int64,
        MODE: tl.constexpr,
        PER: tl.constexpr,
        ALIGNED: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        HAS_RES: tl.constexpr,
        INTERP: tl.constexpr,
        BB: tl.constexpr,
    ):
        """Full-shape op over contiguous ``x``: element ``i`` uses mask index ``j0 + i``."""
        pid = tl.program_id(0).to(tl.int64)
        j0 = tl.cast(j0, tl.int64)
        bstart = j0 // PER
        row = pid * BB + tl.arange(0, BB).to(tl.int64)
        k = tl.arange(0, PER)
        i = row[:, None] * PER + k[None, :]
        if ALIGNED:  # j0 % PER == 0: offsets provably contiguous and aligned, masks uniform per row (vector loads)
            mask = i < n
        else:
            i = i - (j0 - bstart * PER)
            mask = (i >= 0) & (i < n)
        dt: tl.constexpr = y_ptr.dtype.element_ty
        xc = _load(x_ptr, i, mask)
        if HAS_BIAS:
            # bias index i % d: one 64-bit remainder per Philox block, 32-bit ones per element
            d = tl.cast(d_bias, tl.int64)
            first = (row * PER) % d if ALIGNED else (row * PER - (j0 - bstart * PER)) % d
            bi = ((first[:, None] + k[None, :]).to(tl.int32) % d.to(tl.int32)).to(tl.int64)
            xc = _round_trip(xc + _load(bias_ptr, bi, mask), dt)
        if MODE == 2:
            out = _combine(xc, None, _normals(key_ptr, bstart + row, k), p0, p1, p2, dt, MODE, INTERP)
        else:
            out = _combine(xc, _keep(key_ptr, bstart + row, t, k), None, p0, p1, p2, dt, MODE, INTERP)
        if HAS_RES:
            out = _round_trip(out, dt) + _load(res_ptr, i, mask)
        tl.store(y_ptr + i, _narrow(out, dt), mask=mask)

    @triton.jit(
        do_not_specialize=["n_rows", "n_cols", "s1", "s2", "ms0", "ms1", "ms2", "mc", "p0", "p1", "p2", "d_bias"]
    )
    def bcast_kernel(
        x_ptr,
        y_ptr,
        m_ptr,
        bias_ptr,
        res_ptr,
        n_rows: tl.int64,
        n_cols: tl.int64,
        s1: tl.int64,
        s2: tl.int64,
        ms0: tl.int64,
        ms1: tl.int64,
        ms2: tl.int64,
        mc: tl.int64,
        p0: tl.int64,
        p1: tl.int64,
        p2: tl.int64,
        d_bias: tl.int64,
        MODE: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        HAS_RES: tl.constexpr,
        INTERP: tl.constexpr,
        ROWS: tl.constexpr,
        COLS: tl.constexpr,
    ):
        """Contiguous ``x`` viewed as ``(n_rows, n_cols)``; the reduced ``m`` is broadcast through its strides.

        Row ``r`` splits as ``(r0, r1, r2)`` over outer sizes ``(*, s1, s2)``; the mask offset of ``(r, c)`` is
        ``r0 ms0 + r1 ms1 + r2 ms2 + c mc``. Divisions happen once per row, never per element.
        """
        pid = tl.program_id(0).to(tl.int64)
        n_cols = tl.cast(n_cols, tl.int64)
        n_col_tiles = (n_cols + COLS - 1) // COLS
        r = (pid // n_col_tiles) * ROWS + tl.arange(0, ROWS).to(tl.int64)
        c = (pid % n_col_tiles) * COLS + tl.arange(0, COLS).to(tl.int64)
        mask = (r[:, None] < n_rows) & (c[None, :] < n_cols)
        r2 = r % s2
        q = r // s2
        moff = (q // s1) * ms0 + (q % s1) * ms1 + r2 * ms2
        moff = moff[:, None] + c[None, :] * mc
        off = r[:, None] * n_cols + c[None, :]
        dt: tl.constexpr = y_ptr.dtype.element_ty
        xc = _load(x_ptr, off, mask)
        if HAS_BIAS:
            bi = c % tl.cast(d_bias, tl.int64)
            xc = _round_trip(xc + _load(bias_ptr, bi[None, :], mask), dt)
        m = tl.load(m_ptr + moff, mask=mask, other=0)
        if MODE == 2:
            out = _combine(xc, None, m, p0, p1, p2, dt, MODE, INTERP)
        else:
            out = _combine(xc, m != 0, None, p0, p1, p2, dt, MODE, INTERP)
        if HAS_RES:
            out = _round_trip(out, dt) + _load(res_ptr, off, mask)
        tl.store(y_ptr + off, _narrow(out, dt), mask=mask)


# ---------------------------------------------------------------------------------------------------------------------
# Launch helpers


def _launch(name: str, grid, *args, **meta):
    """Launch ``<name>_kernel`` (the custom ops of ``_ops.py`` call the launchers, so tracing never sees this)."""
    _require()
    globals()[f"{name}_kernel"][grid](*args, **meta)


def _blocks(per: int) -> int:
    """Philox blocks per program: about 1024 elements on a GPU, larger runs in the (per-program) interpreter."""
    return (8192 if _interpreted() else 1024) // per


def _span(j0: int, n: int, per: int) -> int:
    """Number of Philox blocks that elements ``j0 .. j0 + n - 1`` touch."""
    return (j0 + n - 1) // per - j0 // per + 1


def _fused(
    x: Tensor,
    key,
    j0: int,
    t: int,
    mode: int,
    params: tuple[float, float, float],
    *,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
) -> Tensor:
    _check_float(x)
    x = x.contiguous()
    y = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return y
    key = _as_key(key, x.device)
    j0 = int(j0)
    if j0 < 0:
        raise ValueError(f"j0 is {j0}; it must be non-negative")
    per = 2 if mode == _MODE_GAUSSIAN else 8
    bb = _blocks(per)
    if bias is not None:
        bias = _check_bias(bias, x)
    if residual is not None:
        residual = _check_residual(residual, x)
    grid = (triton_cdiv(_span(j0, n, per), bb),)
    p0, p1, p2 = (_bits(p) for p in params)
    _launch(
        "fused",
        grid,
        x,
        y,
        bias if bias is not None else x,
        residual if residual is not None else x,
        key,
        j0,
        n,
        _check_t(t),
        p0,
        p1,
        p2,
        bias.numel() if bias is not None else 1,
        MODE=mode,
        PER=per,
        ALIGNED=j0 % per == 0,
        HAS_BIAS=bias is not None,
        HAS_RES=residual is not None,
        INTERP=_interpreted(),
        BB=bb,
    )
    return y


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _check_bias(bias: Tensor, x: Tensor) -> Tensor:
    d = x.shape[-1] if x.dim() else 1
    if bias.dtype != x.dtype or bias.numel() != d or bias.device != x.device:
        raise ValueError(
            f"bias must have x's dtype and device and {d} elements (x's last axis); got {bias.dtype}, "
            f"shape {tuple(bias.shape)}"
        )
    return bias.contiguous()


def _check_residual(residual: Tensor, x: Tensor) -> Tensor:
    if residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
        raise ValueError(
            f"residual must match x (shape {tuple(x.shape)}, {x.dtype}); got {tuple(residual.shape)}, {residual.dtype}"
        )
    return residual.contiguous()


# ---------------------------------------------------------------------------------------------------------------------
# Public launchers


def keep_mask(n: int, key, j0: int, t: int, *, device=None) -> Tensor:
    """The keep flags (uint8 0/1, shape ``(n,)``) of mask elements ``j0 .. j0 + n - 1``: ``lane(j) < t``.

    ``key`` is the int64 tensor ``[seed, stream]`` (its device is used) or a ``(seed, stream)`` pair with ``device``.
    Reshape the result to the reduced shape ``R``; for a batch offset ``s`` pass ``j0 = s * prod(R[1:])``.
    """
    dev = key.device if isinstance(key, Tensor) else torch.device(device or "cpu")
    key = _as_key(key, dev)
    n, j0 = int(n), int(j0)
    out = torch.empty(n, dtype=torch.uint8, device=dev)
    if n == 0:
        return out
    bb = _blocks(8)
    _launch("keep_mask", (triton_cdiv(_span(j0, n, 8), bb),), out, key, j0, n, _check_t(t), BB=bb)
    return out


def normal(n: int, key, j0: int, dtype: torch.dtype = torch.float32, *, device=None) -> Tensor:
    """Standard normal variates ``j0 .. j0 + n - 1`` (Box-Muller in float64, rounded to float32 or float64)."""
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"normal: dtype is {dtype}; give torch.float32 or torch.float64")
    dev = key.device if isinstance(key, Tensor) else torch.device(device or "cpu")
    key = _as_key(key, dev)
    n, j0 = int(n), int(j0)
    out = torch.empty(n, dtype=dtype, device=dev)
    if n == 0:
        return out
    bb = _blocks(2)
    _launch("normal", (triton_cdiv(_span(j0, n, 2), bb),), out, key, j0, n, BB=bb)
    return out


def dropout_fwd(x: Tensor, key, j0: int, t: int, scale: float) -> Tensor:
    """Full-shape dropout of ``x`` (made contiguous): element ``i`` is kept iff ``lane(j0 + i) < t``.

    Kept values are ``x * scale`` in the compute type rounded to ``x``'s dtype; dropped values are ``+0``.
    """
    return _fused(x, key, j0, t, _MODE_DROPOUT, (scale, 0.0, 0.0))


def dropout_bwd(grad: Tensor, key, j0: int, t: int, scale: float) -> Tensor:
    """Gradient of :func:`dropout_fwd`: the same mask, recomputed from ``(key, j0, t)``, applied to ``grad``."""
    return _fused(grad, key, j0, t, _MODE_DROPOUT, (scale, 0.0, 0.0))


def dropout_add(x: Tensor, residual: Tensor, key, j0: int, t: int, scale: float, bias: Tensor | None = None) -> Tensor:
    """``residual + dropout(x + bias)`` in one pass (``bias``: ``x.shape[-1]`` elements, optional).

    Equal, bit for bit, to the unfused composition with every intermediate rounded to ``x``'s dtype. Backward:
    ``grad_residual = grad``, ``grad_x = dropout_bwd(grad, ...)``, ``grad_bias = grad_x`` summed over leading axes.
    """
    return _fused(x, key, j0, t, _MODE_DROPOUT, (scale, 0.0, 0.0), bias=bias, residual=residual)


def bias_dropout_add(x: Tensor, bias: Tensor, residual: Tensor, key, j0: int, t: int, scale: float) -> Tensor:
    """``residual + dropout(x + bias)``: :func:`dropout_add` with a bias."""
    return dropout_add(x, residual, key, j0, t, scale, bias=bias)


def alpha_dropout_fwd(x: Tensor, key, j0: int, t: int) -> Tensor:
    """Full-shape alpha dropout: ``x a + b`` where kept, ``a alpha' + b`` where dropped.

    ``a``, ``b``: :func:`alpha_coefficients`; ``x a`` is rounded to ``x``'s dtype before ``b`` is added.
    The mask is the Bernoulli mask of :func:`dropout_fwd` for the same ``(key, j0, t)``.
    """
    return _fused(x, key, j0, t, _MODE_ALPHA, _alpha_params(t, x.dtype))


def alpha_dropout_bwd(grad: Tensor, key, j0: int, t: int) -> Tensor:
    """Gradient of :func:`alpha_dropout_fwd`: ``grad * a`` where kept, 0 where dropped (mask recomputed)."""
    return dropout_bwd(grad, key, j0, t, alpha_coefficients(t)[0])


def gaussian_dropout_fwd(x: Tensor, key, j0: int, sigma: float) -> Tensor:
    """Full-shape Gaussian dropout ``x * (1 + sigma z)``, ``z`` = normal variate ``j0 + i`` (``sigma = sqrt(p/(1-p))``).

    ``z`` is rounded to the compute type, then ``z * sigma + 1`` and the product are each rounded once (as the
    pure-torch path does). Backward is the same op applied to the gradient (the noise is redrawn).
    """
    return _fused(x, key, j0, 65536, _MODE_GAUSSIAN, (sigma, 0.0, 0.0))


def _bcast_layout(x_shape, m_shape):
    """Collapse ``x_shape`` (contiguous) and the broadcast reduced mask into ``(rows: 3 sizes + 3 strides, cols)``.

    Returns ``(s0, s1, s2, ms0, ms1, ms2, n_cols, mc)`` or None when more than three outer groups remain.
    """
    from .._spec import collapse

    nd = len(x_shape)
    m_shape = (1,) * (nd - len(m_shape)) + tuple(m_shape)
    m_strides, acc = [0] * nd, 1
    for d in range(nd - 1, -1, -1):
        if m_shape[d] != 1:
            m_strides[d] = acc
            acc *= m_shape[d]
    x_strides, acc = [0] * nd, 1
    for d in range(nd - 1, -1, -1):
        x_strides[d] = acc
        acc *= x_shape[d]
    shape, _, ms = collapse(tuple(x_shape), tuple(x_strides), tuple(m_strides))
    if not shape:
        shape, ms = (1,), (0,)
    *outer, n_cols = shape
    *outer_ms, mc = ms
    if len(outer) > 3:
        return None
    outer = [1] * (3 - len(outer)) + list(outer)
    outer_ms = [0] * (3 - len(outer_ms)) + list(outer_ms)
    return (*outer, *outer_ms, n_cols, mc)


def _bcast(
    x: Tensor,
    m: Tensor,
    mode: int,
    params: tuple[float, float, float],
    *,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
) -> Tensor:
    _check_float(x)
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    if m.dim() > x.dim() or any(a not in (1, b) for a, b in zip(reversed(m.shape), reversed(x.shape))):
        raise ValueError(f"the reduced tensor of shape {tuple(m.shape)} does not broadcast to x's {tuple(x.shape)}")
    m = m.to(x.device).contiguous()
    layout = _bcast_layout(tuple(x.shape), tuple(m.shape))
    if layout is None:  # rare interleavings of shared and drawn axes: expand the small reduced tensor
        m = m.expand(x.shape).contiguous()
        layout = _bcast_layout(tuple(x.shape), tuple(m.shape))
    s0, s1, s2, ms0, ms1, ms2, n_cols, mc = layout
    if bias is not None:
        bias = _check_bias(bias, x)
    if residual is not None:
        residual = _check_residual(residual, x)
    n_rows = s0 * s1 * s2
    cols = min(1024, triton_next_pow2(n_cols))
    rows = max(1, (16384 if _interpreted() else 4096) // cols)
    grid = (triton_cdiv(n_rows, rows) * triton_cdiv(n_cols, cols),)
    p0, p1, p2 = (_bits(p) for p in params)
    _launch(
        "bcast",
        grid,
        x,
        y,
        m,
        bias if bias is not None else x,
        residual if residual is not None else x,
        n_rows,
        n_cols,
        s1,
        s2,
        ms0,
        ms1,
        ms2,
        mc,
        p0,
        p1,
        p2,
        bias.numel() if bias is not None else 1,
        MODE=mode,
        HAS_BIAS=bias is not None,
        HAS_RES=residual is not None,
        INTERP=_interpreted(),
        ROWS=rows,
        COLS=cols,
    )
    return y


def triton_next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def dropout_bcast_fwd(
    x: Tensor, mask: Tensor, scale: float, *, residual: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """Dropout with a reduced keep ``mask`` (uint8 or bool, shape broadcastable to ``x``): one pass over ``x``.

    With ``residual`` (and ``bias``) it is the fused ``residual + dropout(x + bias)`` of :func:`dropout_add`.
    Its backward is the same call on the gradient with the same mask.
    """
    return _bcast(x, mask.to(torch.uint8), _MODE_DROPOUT, (scale, 0.0, 0.0), bias=bias, residual=residual)


def alpha_bcast_fwd(x: Tensor, mask: Tensor, t: int) -> Tensor:
    """Alpha dropout with a reduced keep ``mask`` (backward: :func:`dropout_bcast_fwd` with ``scale = a``)."""
    return _bcast(x, mask.to(torch.uint8), _MODE_ALPHA, _alpha_params(t, x.dtype))


def gaussian_bcast_fwd(x: Tensor, z: Tensor, sigma: float) -> Tensor:
    """Gaussian dropout ``x * (1 + sigma z)`` with reduced normals ``z`` (float32/float64) broadcast to ``x``."""
    return _bcast(x, z, _MODE_GAUSSIAN, (sigma, 0.0, 0.0))


def shaped_dropout(
    x: Tensor,
    reduced_shape,
    key,
    j0: int,
    t: int,
    scale: float,
    *,
    residual: Tensor | None = None,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Dropout with a noise shape: draw the reduced mask (:func:`keep_mask`), then apply it in one pass.

    Returns ``(y, mask)``; ``mask`` (uint8, ``reduced_shape``) is what backward needs (or redraw it from the key).
    ``j0`` is the reduced mask's first global index (``batch_offset * prod(R[1:])``, 0 when axis 0 is shared).
    """
    shape = tuple(int(s) for s in reduced_shape)
    key = _as_key(key, x.device)
    mask = keep_mask(math.prod(shape), key, j0, t).view(shape)
    return dropout_bcast_fwd(x, mask, scale, residual=residual, bias=bias), mask
