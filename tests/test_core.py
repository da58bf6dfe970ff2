"""The C core (``noiseshape._core``) against the NumPy reference (``noiseshape._rng``), bit for bit.

Every kernel is run on every instruction-set path this machine offers and with several thread
counts; results must not depend on either.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noiseshape import _core, _rng

ISAS = _core.available_isas()
U64 = (1 << 64) - 1
DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
DTYPES = list(DTYPE_CODES)
SPECIAL_N = [0, 1, 7, 8, 9, 63, 64, 65, 100_003]
THREADS = [1, 2, 3, 5]
HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=ISAS)
def isa(request):
    """Force one instruction-set path for the duration of a test."""
    before = _core.isa()
    _core.set_isa(request.param)
    assert _core.isa() == request.param
    yield request.param
    _core.set_isa(before)


# ---------------------------------------------------------------------------
# Reference helpers
# ---------------------------------------------------------------------------


def bf16_round(f32: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even, every NaN -> 0x7FC0."""
    u = np.array(f32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(f32), np.uint16(0x7FC0), r)


def bf16_widen(h: np.ndarray) -> np.ndarray:
    return np.array(h.astype(np.uint32) << 16).view(np.float32)


def ref_apply(dtype: str, x: np.ndarray, keep: np.ndarray, scale: float) -> np.ndarray:
    """keep ? x * scale : +0 in the dtype's compute precision (x holds uint16 bits for bfloat16)."""
    with np.errstate(all="ignore"):
        if dtype == "float64":
            return np.where(keep, x * np.float64(scale), 0.0)
        if dtype == "float32":
            return np.where(keep, x * np.float32(scale), np.float32(0))
        if dtype == "float16":
            prod = x.astype(np.float32) * np.float32(scale)
            return np.where(keep, prod.astype(np.float16), np.float16(0))
        prod = bf16_widen(x) * np.float32(scale)
        return np.where(keep, bf16_round(prod), np.uint16(0))


def random_values(dtype: str, n: int, rng: np.random.Generator, specials: bool = True) -> np.ndarray:
    """Random inputs (bfloat16 as uint16 bits), with NaN / inf / -0 / tiny values sprinkled in."""
    f = (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, n)).astype(np.float64)
    if specials and n:
        idx = rng.integers(0, n, max(1, n // 16))
        f[idx] = rng.choice([np.nan, np.inf, -np.inf, -0.0, 1e-7, 6e-5, 70000.0, 1e-300], idx.size)
    if dtype == "float64":
        return f
    if dtype == "float32":
        return f.astype(np.float32)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return f.astype(np.float16)
    return bf16_round(f.astype(np.float32))


def storage(dtype: str):
    return np.uint16 if dtype == "bfloat16" else np.dtype(dtype)


def assert_same(dtype: str, got: np.ndarray, want: np.ndarray):
    """Bitwise equality, except that NaNs are compared by position (payloads may differ from NumPy)."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape
    if dtype == "bfloat16":
        np.testing.assert_array_equal(got, want)
        return
    gn, wn = np.isnan(got), np.isnan(want)
    np.testing.assert_array_equal(gn, wn)
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[got.dtype.itemsize]
    np.testing.assert_array_equal(got[~gn].view(bits), want[~wn].view(bits))


# ---------------------------------------------------------------------------
# ISA selection and threads
# ---------------------------------------------------------------------------


def test_isa_api():
    assert "scalar" in ISAS
    assert set(ISAS) <= {"scalar", "avx2", "avx512"}
    before = _core.isa()
    try:
        _core.set_isa("auto")
        assert _core.isa() == ISAS[-1]
        with pytest.raises(ValueError, match="scalar"):
            _core.set_isa("sse9")
        for name in ("scalar", "avx2", "avx512"):
            if name in ISAS:
                _core.set_isa(name)
                assert _core.isa() == name
            else:
                with pytest.raises(ValueError):
                    _core.set_isa(name)
    finally:
        _core.set_isa(before)


def test_default_threads():
    n = _core.default_threads()
    assert isinstance(n, int)
    want = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert n == want


def test_env_selects_scalar():
    code = (
        "import numpy as np, sys; from noiseshape import _core; "
        "out = np.empty(1000, np.uint16); _core.lanes(out.ctypes.data, 1000, 12345, 6, 77, 2); "
        "sys.stdout.write(_core.isa() + ' ' + out.tobytes().hex())"
    )
    env = dict(os.environ, NOISESHAPE_ISA="scalar")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    name, hexbytes = res.stdout.split()
    assert name == "scalar"
    assert bytes.fromhex(hexbytes) == _rng.lanes(12345, 6, 77, 1000).tobytes()
    env["NOISESHAPE_ISA"] = "no-such-isa"  # falls back to the best path instead of failing
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert res.stdout.split()[0] == ISAS[-1]


# ---------------------------------------------------------------------------
# Lanes and masks
# ---------------------------------------------------------------------------


def core_lanes(n, seed, stream, j0, nthreads):
    out = np.full(n + 8, 0xABCD, np.uint16)
    _core.lanes(out.ctypes.data, n, seed, stream, j0, nthreads)
    assert (out[n:] == 0xABCD).all(), "wrote past the end"
    return out[:n]


@pytest.mark.parametrize("n", SPECIAL_N)
def test_lanes_special_sizes(isa, n):
    for j0 in (0, 5, (1 << 35) - 3 * n // 2 - 3, U64 - n - 7):
        for nthreads in (1, 3):
            got = core_lanes(n, 0x0123456789ABCDEF, U64, j0, nthreads)
            np.testing.assert_array_equal(got, _rng.lanes(0x0123456789ABCDEF, U64, j0, n))


@HYP
@given(
    n=st.integers(0, 3000),
    seed=st.integers(0, U64),
    stream=st.integers(0, U64),
    j0=st.one_of(st.integers(0, 1 << 40), st.integers((1 << 35) - 4000, (1 << 35) + 100)),
    nthreads=st.sampled_from(THREADS),
)
def test_lanes_random(isa, n, seed, stream, j0, nthreads):
    np.testing.assert_array_equal(core_lanes(n, seed, stream, j0, nthreads), _rng.lanes(seed, stream, j0, n))


def test_lanes_counter_carry(isa):
    # blocks 2**32 - 40 .. 2**32 + 40: the second counter word increments mid-vector
    j0 = 8 * ((1 << 32) - 40) + 3
    np.testing.assert_array_equal(core_lanes(700, 99, 7, j0, 1), _rng.lanes(99, 7, j0, 700))


THRESHOLDS = [0, 1, 32768, 65535, 65536]


def core_keep(n, seed, stream, j0, t, nthreads):
    out = np.full(n + 8, 7, np.uint8)
    _core.keep_mask(out.ctypes.data, n, seed, stream, j0, t, nthreads)
    assert (out[n:] == 7).all()
    return out[:n]


def core_pack(n, seed, stream, j0, t, nthreads):
    nb = (n + 7) // 8
    out = np.full(nb + 8, 0xA5, np.uint8)
    _core.pack_mask(out.ctypes.data, n, seed, stream, j0, t, nthreads)
    assert (out[nb:] == 0xA5).all()
    return out[:nb]


@pytest.mark.parametrize("n", SPECIAL_N)
@pytest.mark.parametrize("t", [*THRESHOLDS, 12345])
def test_masks_special(isa, n, t):
    seed, stream, j0 = 0xFEDCBA9876543210, 3, (1 << 35) - 13
    ref = _rng.lanes(seed, stream, j0, n).astype(np.int64) < t
    for nthreads in (1, 2, 5):
        np.testing.assert_array_equal(core_keep(n, seed, stream, j0, t, nthreads), ref.astype(np.uint8))
        np.testing.assert_array_equal(core_pack(n, seed, stream, j0, t, nthreads), np.packbits(ref, bitorder="little"))


@HYP
@given(
    n=st.integers(0, 2000),
    seed=st.integers(0, U64),
    stream=st.integers(0, U64),
    j0=st.integers(0, 1 << 36),
    t=st.one_of(st.sampled_from(THRESHOLDS), st.integers(0, 65536)),
    nthreads=st.sampled_from(THREADS),
)
def test_masks_random(isa, n, seed, stream, j0, t, nthreads):
    ref = _rng.lanes(seed, stream, j0, n).astype(np.int64) < t
    np.testing.assert_array_equal(core_keep(n, seed, stream, j0, t, nthreads), ref.astype(np.uint8))
    np.testing.assert_array_equal(core_pack(n, seed, stream, j0, t, nthreads), np.packbits(ref, bitorder="little"))


@pytest.mark.parametrize("n", [0, 1, 7, 4095, 4096, 4097, 10_001])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scaled_mask(isa, n, dtype):
    # the factor of the native multiply: scale in the dtype where kept, +0 where dropped, and the dropped count
    seed, stream, j0, t, scale = 0xFEDCBA9876543210, 3, (1 << 35) - 13, 45875, 65536 / 45875
    keep = _rng.lanes(seed, stream, j0, n).astype(np.int64) < t
    np_dtype = np.dtype(dtype)
    size = n * np_dtype.itemsize
    buf = np.full(size + 9, 0xA5, np.uint8)  # the factors written from an odd byte address
    dropped = _core.scaled_mask(DTYPE_CODES[dtype], buf.ctypes.data + 1, n, seed, stream, j0, t, scale)
    assert dropped == int(n - keep.sum())
    expected = np.where(keep, np_dtype.type(scale), np_dtype.type(0))
    assert buf[1 : size + 1].tobytes() == expected.astype(np_dtype).tobytes()
    assert buf[0] == 0xA5 and (buf[size + 1 :] == 0xA5).all()  # nothing written outside
    # given x, a dropped factor is the zero of x's sign (x times it is +0 for finite x), and the count
    # is of the dropped elements whose product is nan: x inf or nan
    x = np.random.default_rng(n).standard_normal(n).astype(np_dtype)
    x[::7] = np.inf
    x[3::11] = -0.0
    x[5::13] = np.nan
    x[6::17] = 0.0
    out = np.empty(n, np_dtype)
    count = _core.scaled_mask(DTYPE_CODES[dtype], out.ctypes.data, n, seed, stream, j0, t, scale, x.ctypes.data)
    assert count == int((~keep & ~np.isfinite(x)).sum())
    signed = np.where(keep, np_dtype.type(scale), np.copysign(np_dtype.type(0), x))
    assert out.tobytes() == signed.astype(np_dtype).tobytes()
    with np.errstate(invalid="ignore"):  # inf * 0 where an inf is dropped: the nan the count reports
        product = x * signed
    finite = np.isfinite(x)
    assert not np.signbit(product[~keep & finite]).any()  # +0, never -0, where dropped
    with pytest.raises(ValueError, match="float32"):
        _core.scaled_mask(2, buf.ctypes.data, n, seed, stream, j0, t, scale)  # float16 factors: not offered


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("shape", "mshape", "transpose"),
    [
        ((7, 9), (7, 9), False),
        ((7, 9), (7, 1), False),
        ((50, 16), (50, 1), False),  # short rows of one factor each: one loop, no branch
        ((3, 300), (3, 1), False),  # long rows: a branch per row
        ((4, 3, 5), (1, 3, 1), False),
        ((6, 8), (6, 8), True),
        ((5,), (5,), False),
        ((4, 3, 21), (4, 1, 21), False),  # a factor per element: whole vectors and a tail in each row
        ((2, 5, 67), (2, 5, 67), False),
    ],
)
def test_zero_dropped(isa, dtype, shape, mshape, transpose):
    # y = +0 where the broadcast factor is 0 or -0 (turning -0 and NaN into +0), every other element untouched
    rng = np.random.default_rng(3)
    np_dtype = np.dtype(dtype)
    y = rng.standard_normal(shape).astype(np_dtype)
    y.flat[::4] = -0.0
    y.flat[1::5] = np.nan
    m = np.where(rng.random(mshape) < 0.4, 0, 1.25).astype(np_dtype)
    m.flat[::3] *= -1  # a full-shape mask's dropped factors carry x's sign
    if transpose:  # a y laid out transposed, factors contiguous
        y = np.asfortranarray(y)
    before = y.copy()
    size = np_dtype.itemsize
    mstrides = tuple(0 if n == 1 else s // size for n, s in zip(mshape, m.strides))
    _core.zero_dropped(
        DTYPE_CODES[dtype], y.ctypes.data, m.ctypes.data, shape, tuple(s // size for s in y.strides), mstrides
    )
    dropped = np.broadcast_to(m == 0, shape)
    expected = np.where(dropped, np_dtype.type(0), before)
    bits = f"u{size}"
    np.testing.assert_array_equal(y.view(bits), expected.astype(np_dtype).view(bits))
    with pytest.raises(ValueError, match="float32"):
        _core.zero_dropped(2, y.ctypes.data, m.ctypes.data, shape, (1,) * len(shape), (1,) * len(shape))
    with pytest.raises(ValueError, match="negative"):
        _core.zero_dropped(0, y.ctypes.data, m.ctypes.data, shape, (-1,) * len(shape), (1,) * len(shape))
    with pytest.raises(ValueError, match="axes"):
        _core.zero_dropped(0, y.ctypes.data, m.ctypes.data, shape, (1,) * (len(shape) + 1), (1,) * len(shape))


def test_mask_probability():
    n, t = 1 << 20, 58982
    p = t / 65536
    out = core_keep(n, 5, 0, 0, t, 2)
    # the kept count is Binomial(n, p): within 5 sigma
    assert abs(int(out.sum()) - n * p) < 5 * np.sqrt(n * p * (1 - p))


def test_more_than_2_pow_31_elements():
    # 64-bit sizes all the way: a mask of 2**31 + 100 elements (2 GiB) matches the reference at both ends
    # and across the 2**31 boundary, where a 32-bit index would wrap
    n = (1 << 31) + 100
    seed, stream, t = 3, 4, 30000
    out = np.empty(n, np.uint8)
    _core.keep_mask(out.ctypes.data, n, seed, stream, 0, t, 2)
    for start in (0, (1 << 31) - 50, n - 100):
        ref = _rng.lanes(seed, stream, start, 100).astype(np.int64) < t
        np.testing.assert_array_equal(out[start : start + 100], ref.astype(np.uint8))
    del out
    bits = np.empty((n + 7) // 8, np.uint8)
    _core.pack_mask(bits.ctypes.data, n, seed, stream, 0, t, 2)
    tail = _rng.lanes(seed, stream, n - 100, 100).astype(np.int64) < t
    np.testing.assert_array_equal(np.unpackbits(bits[-13:], bitorder="little")[-100 - 4 : -4], tail)


# ---------------------------------------------------------------------------
# Dropout and apply_bits
# ---------------------------------------------------------------------------


def core_dropout(dtype, x, seed, stream, j0, t, scale, nthreads, with_bits=True, inplace=False):
    n = x.size
    y = x.copy() if inplace else np.full(n + 4, 0x7F, storage(dtype))
    nb = (n + 7) // 8
    bits = np.full(nb + 8, 0xA5, np.uint8)
    src = y if inplace else x
    _core.dropout(
        DTYPE_CODES[dtype],
        src.ctypes.data,
        y.ctypes.data,
        n,
        seed,
        stream,
        j0,
        t,
        scale,
        bits.ctypes.data if with_bits else 0,
        nthreads,
    )
    if not inplace:
        assert (y[n:].view(np.uint8) == np.full(4, 0x7F, storage(dtype)).view(np.uint8)).all()
    assert (bits[nb:] == 0xA5).all()
    return y[:n], (bits[:nb] if with_bits else None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SPECIAL_N)
def test_dropout_special(isa, dtype, n):
    rng = np.random.default_rng(n)
    x = random_values(dtype, n, rng)
    for t, j0, nthreads in ((32768, 0, 1), (1, (1 << 35) - n // 3 - 5, 2), (65535, 13, 3), (65536, 7, 5), (0, 1, 2)):
        scale = _rng.keep_scale(t) if t else 3.0
        keep = _rng.lanes(77, 88, j0, n).astype(np.int64) < t
        y, bits = core_dropout(dtype, x, 77, 88, j0, t, scale, nthreads)
        assert_same(dtype, y, ref_apply(dtype, x, keep, scale))
        np.testing.assert_array_equal(bits, np.packbits(keep, bitorder="little"))


@HYP
@given(
    dtype=st.sampled_from(DTYPES),
    n=st.integers(0, 3000),
    seed=st.integers(0, U64),
    stream=st.integers(0, U64),
    j0=st.one_of(st.integers(0, 1 << 40), st.integers((1 << 35) - 4000, (1 << 35) + 100)),
    t=st.one_of(st.sampled_from(THRESHOLDS), st.integers(0, 65536)),
    scale=st.one_of(st.just(2.0), st.floats(0.5, 1e5), st.floats(1e-3, 1.0)),
    nthreads=st.sampled_from(THREADS),
    with_bits=st.booleans(),
    inplace=st.booleans(),
)
def test_dropout_random(isa, dtype, n, seed, stream, j0, t, scale, nthreads, with_bits, inplace):
    x = random_values(dtype, n, np.random.default_rng(seed & 0xFFFF))
    keep = _rng.lanes(seed, stream, j0, n).astype(np.int64) < t
    y, bits = core_dropout(dtype, x, seed, stream, j0, t, scale, nthreads, with_bits, inplace)
    assert_same(dtype, y, ref_apply(dtype, x, keep, scale))
    if with_bits:
        np.testing.assert_array_equal(bits, np.packbits(keep, bitorder="little"))


def test_dropout_nan_inf(isa):
    n = 4096
    x = np.full(n, np.nan, np.float32)
    x[::3] = np.inf
    x[1::3] = -np.inf
    keep = _rng.lanes(1, 2, 0, n) < 32768
    y, _ = core_dropout("float32", x, 1, 2, 0, 32768, 2.0, 1)
    assert (y[~keep].view(np.uint32) == 0).all()  # +0 exactly, not nan and not -0
    np.testing.assert_array_equal(np.isnan(y[keep]), np.isnan(x[keep]))
    np.testing.assert_array_equal(y[keep][~np.isnan(x[keep])], x[keep][~np.isnan(x[keep])])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_unaligned_views(isa, dtype):
    """Every alignment of input and output within a cache line, and both in place and out of place."""
    rng = np.random.default_rng(3)
    n = 1000
    xbuf = random_values(dtype, n + 40, rng)
    for xoff, yoff in [(0, 0), (1, 3), (5, 0), (0, 7), (13, 11), (15, 15), (16, 9)]:
        x = xbuf[xoff : xoff + n]
        ybuf = np.zeros(n + 40, storage(dtype))
        y = ybuf[yoff : yoff + n]
        _core.dropout(DTYPE_CODES[dtype], x.ctypes.data, y.ctypes.data, n, 5, 6, 7, 30000, 1.5, 0, 1)
        keep = _rng.lanes(5, 6, 7, n).astype(np.int64) < 30000
        assert_same(dtype, y, ref_apply(dtype, x, keep, 1.5))
        assert not ybuf[:yoff].any() and not ybuf[yoff + n :].any()


def at_byte(values: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``values`` that starts ``offset`` bytes into a fresh buffer (so misaligned for odd offsets)."""
    buf = bytearray(values.nbytes + 16)
    view = np.ndarray(values.shape, values.dtype, buf, offset=offset)
    view[...] = values
    return view


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("xoff", "yoff"), [(1, 1), (1, 3), (3, 0), (0, 5), (2, 7)])
def test_kernels_read_and_write_at_any_byte_address(isa, dtype, xoff, yoff):
    """Views may start at any byte (``np.ndarray(..., offset=1)``, ``torch.frombuffer(..., offset=1)``).

    x86 forgives misaligned typed loads, so only the sanitizer build (.ci/sanitize) sees the
    undefined behaviour this guards against; here the values must still match the reference.
    """
    rng = np.random.default_rng(xoff * 8 + yoff)
    n = 1000 + xoff
    code = DTYPE_CODES[dtype]
    x = at_byte(random_values(dtype, n, rng), xoff)
    keep = _rng.lanes(5, 6, 7, n).astype(np.int64) < 30000
    want = ref_apply(dtype, x, keep, 1.5)

    y = at_byte(np.zeros(n, storage(dtype)), yoff)
    _core.dropout(code, x.ctypes.data, y.ctypes.data, n, 5, 6, 7, 30000, 1.5, 0, 1)
    assert_same(dtype, y, want)

    bits = np.packbits(keep, bitorder="little")
    y = at_byte(np.zeros(n, storage(dtype)), yoff)
    _core.apply_bits(code, x.ctypes.data, y.ctypes.data, bits.ctypes.data, n, 1.5, 1)
    assert_same(dtype, y, want)

    mask = keep.astype(np.uint8)
    for shape, strides in [((n,), (1,)), ((n // 4, 4), (4, 1))]:
        m = n // 4 * 4 if len(shape) == 2 else n
        y = at_byte(np.zeros(n, storage(dtype)), yoff)
        _core.apply_mask(code, x.ctypes.data, y.ctypes.data, mask.ctypes.data, shape, strides, strides, strides, 1.5, 1)
        assert_same(dtype, y[:m], want[:m])


@pytest.mark.parametrize("offset", [1, 3, 6])
def test_normal_variates_written_at_any_byte_address(isa, offset):
    ref = _rng.normals(4, 5, 6, 300)
    for code, dtype in ((0, np.float32), (1, np.float64)):
        aligned = np.zeros(300, dtype)
        _core.normal(aligned.ctypes.data, code, 300, 4, 5, 6, 1)
        out = at_byte(np.zeros(300, dtype), offset)
        _core.normal(out.ctypes.data, code, 300, 4, 5, 6, 1)
        np.testing.assert_array_equal(out, aligned)  # the same values wherever they are written
        np.testing.assert_allclose(out, ref, rtol=1e-6 if dtype == np.float32 else 1e-12)


def test_dropout_same_result_all_threads():
    x = np.random.default_rng(0).standard_normal(300_007).astype(np.float32)
    outs = [core_dropout("float32", x, 9, 9, 11, 40000, 1.6384, th)[0].tobytes() for th in (1, 2, 3, 4, 7, 0)]
    assert len(set(outs)) == 1


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_types_exhaustive(isa, dtype):
    """Every 16-bit pattern through keep-all dropout at a few scales (subnormals, overflow, NaN)."""
    x = np.arange(1 << 16, dtype=np.uint16)
    xv = x.view(np.float16) if dtype == "float16" else x
    keep = np.ones(x.size, bool)
    for scale in (1.0, 2.0, 0.5, 1.0 / 0.9, 65536 / 3, 3e-5):
        y, _ = core_dropout(dtype, xv, 0, 0, 0, 65536, scale, 1)
        want = ref_apply(dtype, xv, keep, scale)
        assert_same(dtype, y, want)
        if dtype == "float16":
            # NaN payloads: the quiet NaN keeps sign and top payload bits (x86 F16C behaviour)
            nan = np.isnan(xv)
            np.testing.assert_array_equal(y.view(np.uint16)[nan], x[nan] | 0x0200)


def test_half_paths_identical():
    """All paths agree bit for bit, NaN payloads included, on float32 -> float16 rounding of random products."""
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 1 << 16, 50_000, dtype=np.uint16)
    results = {}
    before = _core.isa()
    try:
        for name in ISAS:
            _core.set_isa(name)
            results[name] = [
                core_dropout(dt, raw.view(np.float16) if dt == "float16" else raw, 3, 4, 5, 50000, s, 2)[0].tobytes()
                for dt in ("float16", "bfloat16")
                for s in (1.25, 7.0e3, 1e-4)
            ]
    finally:
        _core.set_isa(before)
    assert all(r == results["scalar"] for r in results.values())


def core_apply_bits(dtype, x, bits, scale, nthreads):
    n = x.size
    y = np.full(n + 4, 0x7F, storage(dtype))
    _core.apply_bits(DTYPE_CODES[dtype], x.ctypes.data, y.ctypes.data, bits.ctypes.data, n, scale, nthreads)
    assert (y[n:].view(np.uint8) == np.full(4, 0x7F, storage(dtype)).view(np.uint8)).all()
    return y[:n]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SPECIAL_N)
def test_apply_bits(isa, dtype, n):
    rng = np.random.default_rng(n + 1)
    x = random_values(dtype, n, rng)
    keep = rng.random(n) < 0.6
    bits = np.packbits(keep, bitorder="little")
    if n % 8:  # padding bits must be ignored
        bits[-1] |= np.uint8(0xFF << (n % 8) & 0xFF)
    for nthreads in (1, 3):
        assert_same(dtype, core_apply_bits(dtype, x, bits, 1.75, nthreads), ref_apply(dtype, x, keep, 1.75))


# ---------------------------------------------------------------------------
# apply_mask
# ---------------------------------------------------------------------------


def core_apply_mask(dtype, x, mask, y, scale, nthreads):
    """Calls apply_mask with element strides of (possibly non-contiguous) views x, y and broadcast mask."""
    item = x.itemsize
    m = np.broadcast_to(mask, x.shape)
    _core.apply_mask(
        DTYPE_CODES[dtype],
        x.ctypes.data,
        y.ctypes.data,
        mask.ctypes.data,
        x.shape,
        tuple(s // item for s in x.strides),
        tuple(s // item for s in y.strides),
        m.strides,
        scale,
        nthreads,
    )


@st.composite
def mask_cases(draw):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    if ndim and draw(st.booleans()):  # a long innermost axis exercises the vector paths
        shape = (*shape[:-1], draw(st.integers(1, 300)))
    mshape = tuple(1 if draw(st.booleans()) else s for s in shape)
    flips = tuple(draw(st.booleans()) for _ in shape)
    steps = tuple(draw(st.sampled_from([1, 1, 2])) for _ in shape)
    return shape, mshape, flips, steps


@HYP
@given(
    case=mask_cases(),
    dtype=st.sampled_from(DTYPES),
    nthreads=st.sampled_from(THREADS),
    seed=st.integers(0, 2**32 - 1),
    ydense=st.booleans(),
)
def test_apply_mask_random(isa, case, dtype, nthreads, seed, ydense):
    shape, mshape, flips, steps = case
    rng = np.random.default_rng(seed)
    big = tuple(s * k for s, k in zip(shape, steps))
    base = random_values(dtype, int(np.prod(big)), rng).reshape(big)
    x = base[(*(slice(None, None, -k) if f else slice(None, None, k) for f, k in zip(flips, steps)), Ellipsis)]
    assert x.shape == shape
    mask = np.asarray(rng.random(mshape) < 0.5, dtype=np.uint8)
    if ydense:
        y = np.empty(shape, storage(dtype))
    else:  # a reversed, strided output view
        ybase = np.zeros(tuple(2 * s for s in shape), storage(dtype))
        y = ybase[(*(slice(None, None, -2) for _ in shape), Ellipsis)]
    core_apply_mask(dtype, x, mask, y, 1.5, nthreads)
    want = ref_apply(dtype, x, np.broadcast_to(mask, shape).astype(bool), 1.5)
    assert_same(dtype, y, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "mshape"),
    [
        ((64, 128, 512), (64, 1, 512)),  # elementwise inner rows
        ((64, 128, 512), (64, 128, 1)),  # whole rows kept or dropped
        ((300, 7, 3, 3), (300, 7, 1, 1)),  # short whole rows (spatial dropout's small maps): no branch per row
        ((40, 255), (40, 1)),  # the longest rows without a branch, and the shortest with one
        ((40, 256), (40, 1)),
        ((3, 100_003), (1, 100_003)),  # few long rows: threads split the inner axis
        ((200_000,), (200_000,)),
        ((), ()),
    ],
)
def test_apply_mask_layouts(isa, dtype, shape, mshape):
    rng = np.random.default_rng(7)
    x = random_values(dtype, int(np.prod(shape)), rng).reshape(shape)
    mask = np.asarray(rng.random(mshape) < 0.5, dtype=np.uint8)
    want = ref_apply(dtype, x, np.broadcast_to(mask, shape).astype(bool), 2.0)
    for nthreads in (1, 2, 3):
        y = np.empty(shape, storage(dtype))
        core_apply_mask(dtype, x, mask, y, 2.0, nthreads)
        assert_same(dtype, y, want)
    core_apply_mask(dtype, x, mask, x, 2.0, 2)  # in place
    assert_same(dtype, x, want)


# ---------------------------------------------------------------------------
# Normal variates
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 64, 65, 20_001])
def test_normal(isa, n):
    for seed, stream, j0 in ((0, 0, 0), (U64, 12, 1), (123456789, U64, (1 << 33) - 7)):
        ref = _rng.normals(seed, stream, j0, n)
        for nthreads in (1, 3):
            out64 = np.empty(n, np.float64)
            _core.normal(out64.ctypes.data, 1, n, seed, stream, j0, nthreads)
            np.testing.assert_allclose(out64, ref, rtol=1e-12, atol=0)
            out32 = np.empty(n + 2, np.float32)
            out32[n:] = 5.0
            _core.normal(out32.ctypes.data, 0, n, seed, stream, j0, nthreads)
            assert (out32[n:] == 5.0).all()
            ulp = np.spacing(np.abs(ref.astype(np.float32)))
            assert (np.abs(out32[:n].astype(np.float64) - ref) <= 2 * ulp).all()


def test_normal_moments():
    out = np.empty(1 << 18, np.float64)
    _core.normal(out.ctypes.data, 1, out.size, 42, 0, 0, 2)
    # 5 sigma: the mean of n standard normals has sigma 1 / sqrt(n), their standard deviation 1 / sqrt(2 n)
    n = out.size
    assert abs(out.mean()) < 5 / np.sqrt(n) and abs(out.std() - 1) < 5 / np.sqrt(2 * n)


def scalar_normals(seed, stream, j0, n, dtype=np.float64):
    """The variates of the scalar path, which test_normal checks against the reference."""
    before = _core.isa()
    _core.set_isa("scalar")
    try:
        z = np.empty(n, np.float64)
        _core.normal(z.ctypes.data, 1, n, seed, stream, j0, 1)
    finally:
        _core.set_isa(before)
    return z.astype(dtype)


def ref_gaussian_add(dtype: str, x: np.ndarray, z: np.ndarray, stddev: float) -> np.ndarray:
    """``x + stddev * z`` rounded as torch's ``x + z.float() * stddev`` (float64 in float64; the half types
    add in float32 and round the sum to nearest even)."""
    with np.errstate(all="ignore"):
        if dtype == "float64":
            return x + z * np.float64(stddev)
        noise = z.astype(np.float32) * np.float32(stddev)
        if dtype == "float32":
            return x + noise
        if dtype == "float16":
            return (x.astype(np.float32) + noise).astype(np.float16)
        return bf16_round(bf16_widen(x) + noise)


# around the vector width (4), the AVX2 block (128 variates), the chunk (1024) and the threading threshold
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 127, 128, 129, 1023, 1025, 2179, 40_001])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_add(isa, dtype, n):
    x = random_values(dtype, n, np.random.default_rng(n))
    draws = ((7, 0, 0, 0.1, 1), (U64, 5, 3, 2.5, 3), (11, U64, (1 << 40) + 1, 1e-3, 2))
    for seed, stream, j0, stddev, nthreads in draws:
        want = ref_gaussian_add(dtype, x, scalar_normals(seed, stream, j0, n), stddev)
        y = np.empty(n, storage(dtype))
        _core.gaussian_add(DTYPE_CODES[dtype], x.ctypes.data, y.ctypes.data, n, seed, stream, j0, stddev, nthreads)
        assert_same(dtype, y, want)
        inplace = x.copy()
        _core.gaussian_add(DTYPE_CODES[dtype], inplace.ctypes.data, inplace.ctypes.data, n, seed, stream, j0, stddev, 2)
        assert_same(dtype, inplace, want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gaussian_add_without_x_writes_the_scaled_noise(isa, dtype):
    n = 1500
    out = np.full(n + 3, 5.0, dtype)
    _core.gaussian_add(DTYPE_CODES[dtype], 0, out.ctypes.data, n, 3, 4, 9, 0.7, 2)
    z = scalar_normals(3, 4, 9, n, dtype)
    assert_same(dtype, out[:n], z * (np.float64(0.7) if dtype == "float64" else np.float32(0.7)))
    assert (out[n:] == 5.0).all()  # nothing past n is written


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_add_at_odd_byte_addresses(isa, dtype):
    n = 301
    x = random_values(dtype, n, np.random.default_rng(1))
    size = x.itemsize
    raw_x, raw_y = np.zeros(n * size + 1, np.uint8), np.zeros(n * size + 3, np.uint8)
    raw_x[1:] = x.view(np.uint8)
    _core.gaussian_add(DTYPE_CODES[dtype], raw_x.ctypes.data + 1, raw_y.ctypes.data + 3, n, 2, 0, 5, 0.3, 1)
    y = raw_y[3:].copy().view(storage(dtype))
    assert_same(dtype, y, ref_gaussian_add(dtype, x, scalar_normals(2, 0, 5, n), 0.3))


# ---------------------------------------------------------------------------
# Argument errors
# ---------------------------------------------------------------------------


def test_bad_arguments():
    buf = np.zeros(64, np.float64)
    p = buf.ctypes.data
    with pytest.raises(ValueError):
        _core.dropout(4, p, p, 8, 0, 0, 0, 100, 1.0, 0, 1)  # dtype code
    with pytest.raises(ValueError):
        _core.dropout(-1, p, p, 8, 0, 0, 0, 100, 1.0, 0, 1)
    with pytest.raises(ValueError):
        _core.dropout(0, p, p, 8, 0, 0, 0, 65537, 1.0, 0, 1)  # t
    with pytest.raises(ValueError):
        _core.dropout(0, p, p, -1, 0, 0, 0, 100, 1.0, 0, 1)  # n
    with pytest.raises(ValueError):
        _core.dropout(0, 0, p, 8, 0, 0, 0, 100, 1.0, 0, 1)  # null pointer
    with pytest.raises(ValueError):
        _core.keep_mask(p, 8, 0, 0, 0, -1, 1)
    with pytest.raises(ValueError):
        _core.pack_mask(p, 8, 0, 0, 0, 70000, 1)
    with pytest.raises(ValueError):
        _core.lanes(p, -5, 0, 0, 0, 1)
    with pytest.raises(ValueError):
        _core.lanes(p, 16, 0, 0, U64 - 3, 1)  # j0 + n beyond 2**64
    with pytest.raises(ValueError):
        _core.apply_bits(9, p, p, p, 8, 1.0, 1)
    with pytest.raises(ValueError):
        _core.apply_bits(0, p, p, p, -8, 1.0, 1)
    with pytest.raises(ValueError):
        _core.normal(p, 2, 8, 0, 0, 0, 1)  # out dtype
    with pytest.raises(ValueError):
        _core.normal(p, 0, -1, 0, 0, 0, 1)
    with pytest.raises(ValueError):
        _core.apply_mask(0, p, p, p, (2, 2), (2, 1), (2, 1), (1,), 1.0, 1)  # stride length mismatch
    with pytest.raises(ValueError):
        _core.apply_mask(0, p, p, p, (2, -2), (2, 1), (2, 1), (1, 1), 1.0, 1)  # negative size
    with pytest.raises(ValueError):
        _core.apply_mask(5, p, p, p, (2,), (1,), (1,), (1,), 1.0, 1)
    with pytest.raises(ValueError):
        _core.apply_mask(0, p, p, p, (1,) * 65, (1,) * 65, (1,) * 65, (1,) * 65, 1.0, 1)
    with pytest.raises(ValueError):
        _core.apply_mask(0, p, p, p, (2, "a"), (2, 1), (2, 1), (1, 1), 1.0, 1)
    with pytest.raises(ValueError, match="dtype code is 7"):
        _core.gaussian_add(7, p, p, 4, 0, 0, 0, 1.0, 1)
    with pytest.raises(ValueError, match="n is -1"):
        _core.gaussian_add(0, p, p, -1, 0, 0, 0, 1.0, 1)
    with pytest.raises(ValueError, match="y_ptr is a null pointer"):
        _core.gaussian_add(0, p, 0, 4, 0, 0, 0, 1.0, 1)
    with pytest.raises(ValueError, match="without x_ptr the dtype is 2"):
        _core.gaussian_add(2, 0, p, 2, 0, 0, 0, 1.0, 1)
    with pytest.raises(ValueError, match="exceeds 2"):
        _core.gaussian_add(0, p, p, 4, 0, 0, U64 - 2, 1.0, 1)
    with pytest.raises(TypeError):
        _core.set_isa(3)
    # zero-size calls are fine even with null pointers
    _core.gaussian_add(2, 0, 0, 0, 0, 0, 0, 1.0, 1)
    _core.dropout(0, 0, 0, 0, 0, 0, 0, 100, 1.0, 0, 1)
    _core.apply_mask(0, 0, 0, 0, (3, 0), (0, 1), (0, 1), (0, 1), 1.0, 1)


def test_concurrent_callers_share_the_thread_pool_safely():
    # the kernels release the GIL: callers in several Python threads run at once, one of them on the
    # pool and the others on threads of their own; every result must still be exact
    import threading

    n = 300_000
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    expected = {}
    for seed in range(6):
        y = np.empty_like(x)
        _core.dropout(0, x.ctypes.data, y.ctypes.data, n, seed, 0, 0, 40000, 1.5, 0, 1)
        expected[seed] = y
    errors = []

    def worker(seed):
        for _ in range(15):
            y = np.empty_like(x)
            _core.dropout(0, x.ctypes.data, y.ctypes.data, n, seed, 0, 0, 40000, 1.5, 0, 2)
            if not np.array_equal(y.view(np.uint32), expected[seed].view(np.uint32)):
                errors.append(seed)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_forked_child_runs_the_kernels():
    # a child forked after the pool started has no pool threads; it must still compute, and correctly
    n = 200_000
    x = np.arange(n, dtype=np.float32)
    parent = np.empty_like(x)
    _core.dropout(0, x.ctypes.data, parent.ctypes.data, n, 9, 1, 0, 30000, 2.0, 0, 2)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: compute with two threads and report whether it matches
        ok = b"0"
        try:
            child = np.empty_like(x)
            _core.dropout(0, x.ctypes.data, child.ctypes.data, n, 9, 1, 0, 30000, 2.0, 0, 2)
            ok = b"1" if np.array_equal(child, parent) else b"0"
        finally:
            os.write(write, ok)
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
