"""The Triton kernels against the NumPy reference, bit for bit, in Triton's CPU interpreter.

``TRITON_INTERPRET=1`` must be set before Triton defines a kernel: ``conftest.py`` sets it. Without Triton these
tests skip, except under CI (``CI`` set), where a missing Triton is an error.
"""

import importlib.util
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if importlib.util.find_spec("triton") is None:
    if os.environ.get("CI"):
        raise ImportError("triton is required under CI: these tests must not skip there")
    pytest.skip("triton is not installed (pip install triton)", allow_module_level=True)

from triton.runtime.interpreter import InterpretedFunction

from noiseshape import _rng
from noiseshape.torch import _triton as T

U64 = (1 << 64) - 1
SEEDS = [(0, 0), (U64, U64), (0x0123456789ABCDEF, 1 << 63), (42, 7)]
NS = [0, 1, 7, 8, 9, 1000]
J0S = [0, 5, 8 * 37, (1 << 35) - 13]  # aligned, unaligned, and one run crossing the block counter's hi word
TS = [0, 1, 32768, 65535, 65536]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
_INT_VIEW = {
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def test_interpreter_is_active():
    assert isinstance(T.fused_kernel, InterpretedFunction), (
        "Triton was imported before TRITON_INTERPRET=1 was set: set it in conftest.py"
    )
    assert T.available()


def _cases(*lists):
    """The full product of the first lists, with the last one (seeds) cycled through it."""
    *grid, seeds = lists
    return [(*combo, *seed) for combo, seed in zip(itertools.product(*grid), itertools.cycle(seeds))]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(_INT_VIEW[t.dtype])


def _assert_same(a: torch.Tensor, b: torch.Tensor):
    """Bit-identical, except that NaN payloads are free (bfloat16 NaNs: see ``test_bfloat16_nan_is_canonical``)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = a.isnan()
    assert torch.equal(nan, b.isnan()), "NaNs in different places"
    diff = ((_bits(a) != _bits(b)) & ~nan).nonzero()
    assert diff.numel() == 0, f"{diff.shape[0]} elements differ, first at {diff[0].tolist()}"


def _x(n, dtype, seed=0):
    """Values with specials: NaN, +-inf, -0 and a subnormal mixed into normals of varied magnitude."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64) * torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
    specials = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 1e-40], dtype=torch.float64)
    k = min(n, len(specials))
    x[:k] = specials[:k]
    return x.to(dtype)


def _ct(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _ref_keep(seed, stream, j0, n, t):
    return torch.from_numpy(_rng.lanes(seed, stream, j0, n).astype(np.int64) < t)


def _ref_dropout(x, keep, scale):
    ct = _ct(x.dtype)
    kept = (x.to(ct) * torch.tensor(scale, dtype=ct)).to(x.dtype)
    return torch.where(keep, kept, torch.zeros((), dtype=x.dtype))


# ---------------------------------------------------------------------------------------------------------------------
# keys


def test_make_key_bit_patterns():
    key = T.make_key(U64, 1 << 63)
    assert key.dtype == torch.int64 and key.tolist() == [-1, -(1 << 63)]
    with pytest.raises(ValueError):
        T.make_key(1 << 64, 0)
    with pytest.raises(ValueError):
        T.make_key(0, -1)


# ---------------------------------------------------------------------------------------------------------------------
# keep_mask and normal


@pytest.mark.parametrize(("n", "j0", "t", "seed", "stream"), _cases(NS, J0S, TS, SEEDS))
def test_keep_mask_matches_reference(n, j0, t, seed, stream):
    out = T.keep_mask(n, T.make_key(seed, stream), j0, t)
    assert out.dtype == torch.uint8 and out.shape == (n,)
    assert torch.equal(out.bool(), _ref_keep(seed, stream, j0, n, t))


def test_keep_mask_threshold_is_strict():
    # thresholds equal to lanes that occur: an element whose lane equals t is dropped
    lanes = _rng.lanes(5, 6, 3, 64).astype(np.int64)
    for t in lanes[:12].tolist():
        out = T.keep_mask(64, (5, 6), 3, t)
        assert torch.equal(out.bool(), torch.from_numpy(lanes < t))


@pytest.mark.parametrize(("offset", "shared"), [(0, False), (7, False), (7, True), ((1 << 33) + 3, False)])
def test_keep_mask_batch_offset(offset, shared):
    shape = (3, 4, 5)
    j0 = 0 if shared else offset * 20
    out = T.keep_mask(60, (U64 - 5, 99), j0, 40000).view(shape)
    ref = _rng.keep_flags(shape, U64 - 5, 99, 40000, batch_offset=offset, batch_shared=shared)
    assert np.array_equal(out.bool().numpy(), ref)


def _ulps32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ia = a.astype(np.float32).view(np.int32).astype(np.int64)
    ib = b.astype(np.float32).view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(1 << 31) - ia, ia)  # monotone integer image of the float order
    ib = np.where(ib < 0, -(1 << 31) - ib, ib)
    return np.abs(ia - ib)


@pytest.mark.parametrize(("n", "j0", "seed", "stream"), _cases([0, 1, 7, 1000], [0, 3, (1 << 33) - 11], SEEDS))
def test_normal_matches_reference(n, j0, seed, stream):
    key = T.make_key(seed, stream)
    ref = _rng.normals(seed, stream, j0, n)
    z64 = T.normal(n, key, j0, torch.float64).numpy()
    z32 = T.normal(n, key, j0, torch.float32).numpy()
    assert z64.shape == z32.shape == (n,)
    # Box-Muller in float64 in the kernel: the contract's bound is 2 float32 ulp; the interpreter meets it exactly.
    assert np.all(_ulps32(z32, ref) <= 2)
    assert np.allclose(z64, ref, rtol=1e-14, atol=1e-300)
    assert np.array_equal(z32, ref.astype(np.float32))


def test_normal_rejects_half_dtypes():
    with pytest.raises(TypeError):
        T.normal(4, (0, 0), 0, torch.float16)


# ---------------------------------------------------------------------------------------------------------------------
# full-shape dropout, backward, fused adds


@pytest.mark.parametrize(("dtype", "n", "j0", "t", "seed", "stream"), _cases(DTYPES, NS, J0S[:3], TS[1:4], SEEDS))
def test_dropout_fwd_matches_reference(dtype, n, j0, t, seed, stream):
    x = _x(n, dtype, seed=n + j0)
    scale = _rng.keep_scale(t)
    y = T.dropout_fwd(x, T.make_key(seed, stream), j0, t, scale)
    _assert_same(y, _ref_dropout(x, _ref_keep(seed, stream, j0, n, t), scale))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0 in dropped lanes
@pytest.mark.parametrize("t", [0, 65536])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_extreme_thresholds(dtype, t):
    x = _x(100, dtype)
    y = T.dropout_fwd(x, (3, 4), (1 << 35) - 3, t, _rng.keep_scale(t))
    _assert_same(y, _ref_dropout(x, torch.full((100,), t > 0), _rng.keep_scale(t)))
    if t == 0:
        assert torch.all(_bits(y) == 0)  # dropped NaN/inf/-0 are exactly +0


def test_bfloat16_nan_is_canonical():
    x = torch.tensor([math.nan, -math.nan, 1.0], dtype=torch.float32)
    x[1] = torch.tensor(0xFFC01234, dtype=torch.int64).to(torch.int32).view(torch.float32)  # a payload
    y = T.dropout_fwd(x.to(torch.bfloat16), (0, 0), 0, 65536, 1.0)
    assert _bits(y).tolist() == [0x7FC0, 0x7FC0, 0x3F80]


def test_dropout_fwd_shape_and_noncontiguous_input():
    x = _x(6 * 10, torch.float32).view(6, 10).t()  # non-contiguous: dropped in x's logical (row-major) order
    y = T.dropout_fwd(x, (5, 6), 3, 30000, 1.5)
    assert y.shape == (10, 6)
    _assert_same(y.reshape(-1), _ref_dropout(x.reshape(-1), _ref_keep(5, 6, 3, 60, 30000), 1.5))


@pytest.mark.parametrize(("dtype", "j0"), [(torch.float32, 0), (torch.bfloat16, 13), (torch.float16, (1 << 35) - 1)])
def test_backward_recomputes_the_forward_mask(dtype, j0):
    n, t, key = 1000, 50000, T.make_key(11, 12)
    scale = _rng.keep_scale(t)
    x = _x(n, dtype, seed=1).nan_to_num(0.0, 1.0, 1.0).abs() + 1.0  # no zeros: the forward mask is visible in y
    g = _x(n, dtype, seed=2)
    y = T.dropout_fwd(x, key, j0, t, scale)
    gx = T.dropout_bwd(g, key, j0, t, scale)
    keep = _bits(y) != 0
    assert torch.equal(keep, _ref_keep(11, 12, j0, n, t))
    _assert_same(gx, _ref_dropout(g, keep, scale))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("j0", [0, 3])
def test_dropout_add_equals_the_composition(dtype, with_bias, j0):
    shape, t = (3, 5, 12), 45000
    n = math.prod(shape)
    x, res = _x(n, dtype, 3).view(shape), _x(n, dtype, 4).view(shape)
    bias = _x(12, dtype, 5) if with_bias else None
    key = T.make_key(U64, 17)
    y = T.dropout_add(x, res, key, j0, t, _rng.keep_scale(t), bias=bias)
    h = x + bias if with_bias else x
    d = _ref_dropout(h.reshape(-1), _ref_keep(U64, 17, j0, n, t), _rng.keep_scale(t)).view(shape)
    _assert_same(y, res + d)
    if with_bias:
        _assert_same(T.bias_dropout_add(x, bias, res, key, j0, t, _rng.keep_scale(t)), y)


def test_dropout_add_checks_operands():
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError):
        T.dropout_add(x, torch.zeros(2, 3), (0, 0), 0, 100, 1.0)
    with pytest.raises(ValueError):
        T.dropout_add(x, x, (0, 0), 0, 100, 1.0, bias=torch.zeros(3))


# ---------------------------------------------------------------------------------------------------------------------
# alpha and Gaussian dropout


def _ref_alpha(x, keep, t):
    """``x * a + b`` as torch computes it on CUDA: ``a`` and ``b`` in the compute type, the product rounded first."""
    a, b, dropped = T.alpha_coefficients(t)
    ct = _ct(x.dtype)
    kept = ((x.to(ct) * torch.tensor(a, dtype=ct)).to(x.dtype).to(ct) + torch.tensor(b, dtype=ct)).to(x.dtype)
    return torch.where(keep, kept, torch.tensor(dropped, dtype=torch.float64).to(x.dtype))


def test_alpha_coefficients_match_pytorch_formula():
    p = 1 - 52429 / 65536
    a, b, dropped = T.alpha_coefficients(52429)
    assert math.isclose(a, ((1 - p) * (1 + p * T.ALPHA_PRIME**2)) ** -0.5, rel_tol=1e-15)
    assert math.isclose(b, -a * T.ALPHA_PRIME * p, rel_tol=1e-15)
    assert math.isclose(dropped, a * T.ALPHA_PRIME + b, rel_tol=1e-15)
    assert T.alpha_coefficients(65536) == (1.0, 0.0, T.ALPHA_PRIME)
    assert T.alpha_coefficients(0) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "j0", "t"), [(1000, 0, 52429), (9, 5, 32768), (7, (1 << 35) - 2, 1), (100, 0, 65536)])
def test_alpha_dropout_matches_reference(dtype, n, j0, t):
    x = _x(n, dtype, 6)
    key = T.make_key(8, U64 - 8)
    keep = _ref_keep(8, U64 - 8, j0, n, t)
    _assert_same(T.alpha_dropout_fwd(x, key, j0, t), _ref_alpha(x, keep, t))
    g = _x(n, dtype, 7)
    _assert_same(T.alpha_dropout_bwd(g, key, j0, t), _ref_dropout(g, keep, T.alpha_coefficients(t)[0]))


def _ref_gaussian(x, z64, sigma):
    ct = _ct(x.dtype)
    factor = z64.to(ct) * torch.tensor(sigma, dtype=ct) + 1.0
    return (x.to(ct) * factor).to(x.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "j0"), [(1000, 0), (7, 3), (9, (1 << 33) - 1)])
def test_gaussian_dropout_matches_reference(dtype, n, j0):
    x = _x(n, dtype, 8)
    sigma = math.sqrt(0.1 / 0.9)
    y = T.gaussian_dropout_fwd(x, T.make_key(21, 22), j0, sigma)
    z = torch.from_numpy(_rng.normals(21, 22, j0, n))
    _assert_same(y, _ref_gaussian(x, z, sigma))


# ---------------------------------------------------------------------------------------------------------------------
# noise shapes: reduced mask + one broadcasting pass

BCAST = [
    ((4, 6, 10), (4, 1, 10)),
    ((4, 6, 10), (1, 6, 1)),
    ((4, 6, 10), (4, 6, 1)),
    ((4, 6, 10), (1, 1, 1)),
    ((4, 6, 10), (10,)),
    ((4, 6, 10), (4, 6, 10)),
    ((2, 3, 2, 3, 4), (2, 1, 2, 1, 4)),  # five alternating groups: the expand fallback
    ((3, 1, 5), (3, 1, 1)),
    ((0, 4), (1, 4)),
]


@pytest.mark.parametrize(("x_shape", "m_shape"), BCAST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_bcast_matches_reference(x_shape, m_shape, dtype):
    x = _x(math.prod(x_shape), dtype, 9).view(x_shape)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(m_shape, generator=g) < 0.6
    y = T.dropout_bcast_fwd(x, mask, 1.25)
    _assert_same(y, torch.where(mask, (x.to(_ct(dtype)) * 1.25).to(dtype), torch.zeros((), dtype=dtype)))
    a_ref = _ref_alpha(x, mask, 40000)
    _assert_same(T.alpha_bcast_fwd(x, mask, 40000), a_ref)
    z = torch.randn(m_shape, generator=g, dtype=torch.float64)
    _assert_same(T.gaussian_bcast_fwd(x, z, 0.7), _ref_gaussian(x, z, 0.7))


@pytest.mark.parametrize(("offset", "shared"), [(0, False), (5, False), (5, True)])
@pytest.mark.parametrize("with_res", [False, True])
def test_shaped_dropout_matches_keep_flags(offset, shared, with_res):
    x_shape, r_shape, t = (3, 7, 16), (3, 1, 16), 32768
    x = _x(math.prod(x_shape), torch.float16, 10).view(x_shape)
    res = _x(math.prod(x_shape), torch.float16, 11).view(x_shape) if with_res else None
    bias = _x(16, torch.float16, 12) if with_res else None
    j0 = 0 if shared else offset * 16
    y, mask = T.shaped_dropout(x, r_shape, (U64, 3), j0, t, 2.0, residual=res, bias=bias)
    keep = torch.from_numpy(_rng.keep_flags(r_shape, U64, 3, t, batch_offset=offset, batch_shared=shared))
    assert torch.equal(mask.bool(), keep)
    h = x + bias if with_res else x
    d = torch.where(keep, (h.float() * 2.0).to(x.dtype), torch.zeros((), dtype=x.dtype))
    _assert_same(y, res + d if with_res else d)


def test_bcast_rejects_a_mask_that_does_not_broadcast():
    with pytest.raises(ValueError):
        T.dropout_bcast_fwd(torch.zeros(4, 6), torch.ones(3, 1, dtype=torch.bool), 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# the optional import


def test_module_imports_without_triton(tmp_path: Path):
    code = """
import sys
sys.modules["triton"] = None  # import triton -> ImportError
import noiseshape.torch._triton as mod
assert not mod.available()
try:
    mod.keep_mask(8, (0, 0), 0, 100)
except RuntimeError as e:
    assert "Triton" in str(e)
else:
    raise SystemExit("launcher ran without Triton")
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(Path(T.__file__).parents[2])  # the folder holding this noiseshape package
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
