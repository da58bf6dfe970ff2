"""noiseshape.jax draws the contract's masks: bit for bit the NumPy reference and the torch frontend."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import noiseshape.jax as nsj
import noiseshape.torch as nst
from noiseshape import NoiseShapeError, _rng
from noiseshape._spec import resolve

U64 = (1 << 64) - 1
DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _torch_bits(t: torch.Tensor) -> np.ndarray:
    width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(width).numpy().view({2: np.uint16, 4: np.uint32, 8: np.uint64}[t.element_size()])


def _reference(x: np.ndarray, rate, noise_shape, seed, stream, offset) -> np.ndarray:
    """The contract written out with the NumPy reference: kept values times 65536 / t (in float32), dropped +0."""
    spec = resolve(x.shape, noise_shape)
    t = _rng.threshold(rate)
    keep = _rng.keep_flags(spec.shape, seed, stream, t, batch_offset=offset, batch_shared=spec.batch_shared)
    wide = np.float64 if x.dtype == np.float64 else np.float32
    with np.errstate(invalid="ignore", over="ignore"):  # inf * scale, nan: kept as the contract says
        kept = (x.astype(wide) * wide(_rng.keep_scale(t))).astype(x.dtype)
    return np.where(keep, kept, np.zeros((), x.dtype))


@st.composite
def cases(draw, dtypes=tuple(DTYPES)):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(0 if ndim > 1 else 1, 5)) for _ in range(ndim))
    noise_shape = tuple(draw(st.sampled_from([None, 1])) for _ in range(ndim))
    rate = draw(st.sampled_from([0.1, 0.5, 0.9, 2.0**-17, 1 - 2.0**-17]) | st.floats(0.0, 1.0))
    seed, stream = draw(st.integers(0, U64)), draw(st.integers(0, U64))
    offset = draw(st.sampled_from([0, 1, 7]) | st.integers(0, 1 << 40))
    dtype = draw(st.sampled_from(dtypes))
    values = np.random.default_rng(draw(st.integers(0, 1 << 32))).standard_normal(shape) * 4
    if values.size:
        values.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 65504.0, 1e-30]))
    return values.astype(DTYPES.get(dtype, np.float64)), noise_shape, rate, seed, stream, offset


def _check_against_reference_and_torch(x, noise_shape, rate, seed, stream, offset):
    y = nsj.dropout(jnp.asarray(x), rate, noise_shape, seed=seed, stream=stream, batch_offset=offset)
    assert y.dtype == x.dtype and y.shape == x.shape
    ref = _reference(x, rate, noise_shape, seed, stream, offset)
    assert np.array_equal(_bits(y), _bits(ref))
    t = (
        torch.from_numpy(x.view(np.uint16)).view(torch.bfloat16)
        if x.dtype == ml_dtypes.bfloat16
        else torch.from_numpy(x)
    )
    yt = nst.dropout(t, rate, noise_shape, seed=seed, stream=stream, batch_offset=offset)
    assert np.array_equal(_bits(y), _torch_bits(yt))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_dropout_is_the_reference_and_torch_bit_for_bit(case):
    _check_against_reference_and_torch(*case)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(dtypes=("float64",)))
def test_float64_with_x64_is_the_reference_and_torch_bit_for_bit(case):
    with jax.enable_x64(True):
        _check_against_reference_and_torch(*case)


@functools.cache
def _traced_keep_mask(shape, stream):
    return jax.jit(lambda off, key: nsj.keep_mask(shape, 0.5, key=key, stream=stream, batch_offset=off))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from([(1,), (3, 5), (2, 3, 7)]),  # few shapes: a new offset or key never recompiles
    seed=st.integers(0, U64),
    stream=st.sampled_from([0, U64]),
    offset=st.integers(0, (1 << 32) - 1),
)
def test_a_traced_batch_offset_draws_what_a_static_one_does(shape, seed, stream, offset):
    key = jax.random.wrap_key_data(jnp.array([seed >> 32, seed & 0xFFFFFFFF], jnp.uint32))
    traced = _traced_keep_mask(shape, stream)(jnp.uint32(offset), key)
    ref = _rng.keep_flags(shape, seed, stream, 32768, batch_offset=offset)
    assert np.array_equal(np.asarray(traced), ref)
    assert np.array_equal(np.asarray(nsj.keep_mask(shape, 0.5, seed=seed, stream=stream, batch_offset=offset)), ref)


def test_a_jax_key_is_the_seed_its_words_spell():
    key = jax.random.key(1234567)
    assert nsj.seed_of(key) == 1234567
    big = jax.random.wrap_key_data(jnp.array([0xDEADBEEF, 0x01234567], jnp.uint32))
    seed = (0xDEADBEEF << 32) | 0x01234567
    assert nsj.seed_of(big) == seed
    x = np.ones((3, 5, 7), np.float32)
    for k, s in ((key, 1234567), (big, seed), (jax.random.PRNGKey(9), 9)):
        y = nsj.dropout(x, 0.3, broadcast_dims=(1,), key=k, stream=5)
        ref = nst.dropout(torch.from_numpy(x), 0.3, broadcast_dims=(1,), seed=s, stream=5)
        assert np.array_equal(np.asarray(y), ref.numpy())
    # longer keys (e.g. rbg, four words) XOR their word pairs
    rbg = jnp.array([1, 2, 3, 4], jnp.uint32)
    assert np.array_equal(
        np.asarray(nsj.keep_mask((40,), 0.5, key=rbg)), _rng.keep_flags((40,), ((1 ^ 3) << 32) | (2 ^ 4), 0, 32768)
    )


def test_keep_mask_and_the_fixed_shape_forms_use_the_same_masks():
    x = np.random.default_rng(0).standard_normal((4, 6, 6, 3)).astype(np.float32)
    y = nsj.spatial_dropout2d(x, 0.5, seed=11, stream=2)
    ref = _reference(x, 0.5, (None, 1, 1, None), 11, 2, 0)
    assert np.array_equal(np.asarray(y), ref)
    yt = nst.spatial_dropout2d(torch.from_numpy(x), 0.5, data_format="channels_last", seed=11, stream=2)
    assert np.array_equal(np.asarray(y), yt.numpy())
    y1 = nsj.spatial_dropout1d(x[:, 0], 0.5, "channels_first", seed=3)
    assert np.array_equal(np.asarray(y1), _reference(x[:, 0], 0.5, (None, None, 1), 3, 0, 0))
    y3 = nsj.spatial_dropout3d(x[..., None], 0.5, seed=3, batch_offset=2)
    assert np.array_equal(np.asarray(y3), _reference(x[..., None], 0.5, (None, 1, 1, 1, None), 3, 0, 2))
    dp = nsj.drop_path(x, 0.25, seed=4, batch_offset=9)
    assert np.array_equal(np.asarray(dp), _reference(x, 0.25, (None, 1, 1, 1), 4, 0, 9))
    unscaled = nsj.drop_path(x, 0.25, scale_by_keep=False, seed=4, batch_offset=9)
    assert np.array_equal(np.asarray(unscaled), np.where(np.asarray(dp) == 0, 0, x))
    m = nsj.keep_mask(x.shape, 0.25, (None, 1, 1, 1), seed=4, batch_offset=9)
    assert np.array_equal(np.asarray(m), _rng.keep_flags((4, 1, 1, 1), 4, 0, _rng.threshold(0.25), batch_offset=9))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_alpha_dropout_matches_torch(dtype):
    x = np.random.default_rng(1).standard_normal((5, 7, 9)).astype(DTYPES[dtype])
    y = np.asarray(nsj.alpha_dropout(x, 0.3, (None, 1, None), seed=8, stream=1)).astype(np.float64)
    t = torch.from_numpy(x.astype(np.float32)).to(TORCH[dtype])
    ref = nst.alpha_dropout(t, 0.3, (None, 1, None), seed=8, stream=1).double().numpy()
    keep = np.broadcast_to(_rng.keep_flags((5, 1, 9), 8, 1, _rng.threshold(0.3)), x.shape)
    assert 0 < keep.sum() < keep.size
    for out in (y, ref):  # the same mask: one value (alpha' mapped by a, b) wherever the reference drops
        assert np.unique(out[~keep]).size == 1
    assert y[~keep][0] == ref[~keep][0]
    # kept values: a * x + b, rounded once here and twice by torch's half-precision ops: within 2 ulp of the type
    ulp = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype]
    assert np.allclose(y, ref, rtol=2 * ulp, atol=2 * ulp)


def _ulps32(a, b):
    ia = np.asarray(a, np.float32).view(np.int32).astype(np.int64)
    ib = np.asarray(b, np.float32).view(np.int32).astype(np.int64)
    return np.abs(np.where(ia < 0, -(1 << 31) - ia, ia) - np.where(ib < 0, -(1 << 31) - ib, ib))


def test_gaussian_noise_is_the_reference_normals():
    n = 20_000
    seed, stream, offset = U64 - 3, 77, 5
    y = nsj.gaussian_noise(jnp.zeros((n, 3)), 1.0, (None, 1), seed=seed, stream=stream, batch_offset=offset)
    ref = _rng.normals(seed, stream, offset, n)
    # float32 Box-Muller (x64 off): within 6 float32 ulp of the float64 reference (measured at most 4.4)
    assert np.all(_ulps32(np.asarray(y)[:, 0], ref) <= 6)
    assert np.all(np.asarray(y) == np.asarray(y)[:, :1])
    with jax.enable_x64(True):
        y64 = nsj.gaussian_noise(
            jnp.zeros((n, 3), jnp.float64), 1.0, (None, 1), seed=seed, stream=stream, batch_offset=offset
        )
        assert y64.dtype == jnp.float64
        assert np.allclose(np.asarray(y64)[:, 0], ref, rtol=1e-13, atol=1e-300)  # the contract's float64 formula
        g = nsj.gaussian_dropout(jnp.ones(n, jnp.float64), 0.2, seed=seed)
        assert np.allclose(np.asarray(g), 1 + 0.5 * _rng.normals(seed, 0, 0, n), rtol=1e-13)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_gaussian_ops_match_torch(dtype):
    x = np.random.default_rng(2).standard_normal((6, 5, 4)).astype(DTYPES[dtype])
    t = torch.from_numpy(x.astype(np.float32)).to(TORCH[dtype])
    tol = {"float32": 8 * 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype]
    pairs = [
        (nsj.gaussian_dropout(x, 0.4, (None, 1, None), seed=5), nst.gaussian_dropout(t, 0.4, (None, 1, None), seed=5)),
        (
            nsj.gaussian_noise(x, 0.7, broadcast_dims=(2,), seed=5),
            nst.gaussian_noise(t, 0.7, broadcast_dims=(2,), seed=5),
        ),
    ]
    for ours, theirs in pairs:
        assert ours.dtype == x.dtype
        assert np.allclose(np.asarray(ours, np.float64), theirs.double().numpy(), rtol=tol, atol=tol)


def test_mask_statistics_within_five_sigma():
    # the keep rate of a 2**20-element mask: Binomial(n, q), sigma = sqrt(q (1 - q) / n)
    n, rate = 1 << 20, 0.3
    q = _rng.threshold(rate) / 65536
    kept = float(nsj.keep_mask((n,), rate, key=jax.random.key(5)).mean())
    assert abs(kept - q) < 5 * math.sqrt(q * (1 - q) / n)


def test_edge_rates_and_deterministic_return_the_input_or_zeros():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((3, 4)), jnp.float32).at[0, 0].set(jnp.nan)
    assert nsj.dropout(x, 0.0, seed=1) is x
    assert nsj.dropout(x, 0.5, deterministic=True) is x  # no key needed when nothing is drawn
    zeros = nsj.dropout(x, 1.0, seed=1)
    assert np.array_equal(_bits(zeros), np.zeros((3, 4), np.uint32))  # +0 everywhere, also for the nan
    assert nsj.dropout(jnp.zeros((0, 4)), 0.5, seed=1).shape == (0, 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5), "no randomness given"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5, key=jax.random.key(0), seed=1), "key and seed both given"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 1.5, seed=0), "rate is 1.5"),
        (lambda: nsj.dropout(jnp.ones((2, 3), jnp.int32), 0.5, seed=0), "dtype int32"),
        (lambda: nsj.dropout([1.0, 2.0], 0.5, seed=0), "give a JAX array"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5, (None, 2), seed=0), "noise_shape[1] is 2"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5, broadcast_dims=(2,), seed=0), "broadcast_dims[0] is 2"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5, seed=-1), "seed is -1"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5, seed=0, stream=1 << 64), "stream is"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5, seed=0, batch_offset=-2), "batch_offset is -2"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5, key=jax.random.split(jax.random.key(0)), seed=None), "not one key"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5, key=jnp.ones(2, jnp.int32)), "give a JAX PRNG key"),
        (lambda: nsj.dropout(jnp.ones((2, 3)), 0.5, seed=0, deterministic=jnp.bool_(True)), "Python bool"),
        (lambda: nsj.gaussian_dropout(jnp.ones((2, 3)), 1.0, seed=0), "rate is 1.0"),
        (lambda: nsj.gaussian_noise(jnp.ones((2, 3)), -1.0, seed=0), "stddev is -1.0"),
        (lambda: nsj.spatial_dropout2d(jnp.ones((2, 3, 4)), 0.5, seed=0), "needs 4, (N, H, W, C)"),
        (lambda: nsj.spatial_dropout1d(jnp.ones((2, 3, 4)), 0.5, "nchw", seed=0), "data_format is 'nchw'"),
        (lambda: nsj.drop_path(jnp.ones(()), 0.5, seed=0), "needs a batch axis"),
        (lambda: nsj.keep_mask((2, -1), 0.5, seed=0), "sizes cannot be negative"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(NoiseShapeError) as err:
        call()
    assert message in str(err.value)
    assert str(err.value).startswith("noiseshape.jax.")


def test_the_jax_frontend_loads_on_first_use_and_flax_only_for_the_modules():
    import subprocess
    import sys

    code = (
        "import sys, noiseshape as ns\n"
        "before = 'jax' in sys.modules\n"
        "ns.jax.dropout\n"
        "print(before, 'jax' in sys.modules, 'flax' in sys.modules)\n"
        "ns.jax.linen.Dropout\n"
        "print('flax' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "False", "True"]
