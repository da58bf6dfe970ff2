"""The NumPy frontend against the reference contract, bit for bit, plus its statistics and errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import noiseshape as ns
from noiseshape import _core, _rng
from noiseshape.numpy import dropout, keep_mask


def reference(x, rate, noise_shape=None, broadcast_dims=None, *, seed, stream=0, batch_offset=0):
    """The contract written out with NumPy alone: reduced flags, broadcast, select, scale."""
    from noiseshape._spec import resolve

    spec = resolve(x.shape, noise_shape, broadcast_dims)
    t = _rng.threshold(rate)
    flags = _rng.keep_flags(spec.shape, seed, stream, t, batch_offset=batch_offset, batch_shared=spec.batch_shared)
    compute = np.float64 if x.dtype == np.float64 else np.float32
    scaled = (x.astype(compute) * compute(_rng.keep_scale(t))).astype(x.dtype)
    return np.where(np.broadcast_to(flags, x.shape), scaled, np.zeros((), x.dtype))


def assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


SPECS = [
    ((2, 3, 4), (None, 1, 4), None),
    ((2, 3, 4), None, (1,)),
    ((2, 3, 4), None, None),
    ((8, 64, 50, 1), (None, 64, 1, 1), None),
    ((5, 7, 9), (1, None, 1), None),
    ((5, 7, 9), (1, 1, 1), None),
    ((3, 1000), (None, 1), None),
    ((4, 3, 33), None, (0, 2)),
]


@pytest.mark.parametrize(("shape", "noise_shape", "broadcast_dims"), SPECS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_matches_reference(shape, noise_shape, broadcast_dims, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    for rate in (0.1, 0.5, 0.9):
        y = dropout(x, rate, noise_shape, broadcast_dims=broadcast_dims, seed=1234, stream=5)
        assert_same_bits(y, reference(x, rate, noise_shape, broadcast_dims, seed=1234, stream=5))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_matches_reference_property(data):
    ndim = data.draw(st.integers(0, 4))
    shape = tuple(data.draw(st.lists(st.integers(0, 12), min_size=ndim, max_size=ndim)))
    noise = tuple(data.draw(st.sampled_from([None, 1, n])) for n in shape)
    dtype = data.draw(st.sampled_from([np.float16, np.float32, np.float64]))
    rate = data.draw(st.sampled_from([0.05, 0.3, 0.5, 0.99]))
    seed = data.draw(st.integers(0, 2**64 - 1))
    stream = data.draw(st.integers(0, 2**64 - 1))
    offset = data.draw(st.integers(0, 2**40))
    x = np.random.default_rng(seed % 1000).standard_normal(shape).astype(dtype)
    layout = data.draw(st.sampled_from(["c", "f", "reversed"]))
    if layout == "f" and ndim:  # asfortranarray makes a 0-d array 1-d
        x = np.asfortranarray(x)
    elif layout == "reversed" and ndim:
        x = np.ascontiguousarray(x[::-1])[::-1]
    isa = data.draw(st.sampled_from(_core.available_isas()))
    threads = data.draw(st.sampled_from([1, 2, 3]))
    before = _core.isa()
    _core.set_isa(isa)
    ns.set_num_threads(threads)
    try:
        y = dropout(x, rate, noise, seed=seed, stream=stream, batch_offset=offset)
        m = keep_mask(shape, rate, noise, seed=seed, stream=stream, batch_offset=offset)
    finally:
        _core.set_isa(before)
        ns.set_num_threads(None)
    assert_same_bits(y, reference(x, rate, noise, seed=seed, stream=stream, batch_offset=offset))
    spec = ns._spec.resolve(shape, noise)
    expected = _rng.keep_flags(
        spec.shape, seed, stream, _rng.threshold(rate), batch_offset=offset, batch_shared=spec.batch_shared
    )
    np.testing.assert_array_equal(m, expected)


def test_strided_views_equal_their_copies():
    base = np.random.default_rng(1).standard_normal((6, 10, 8)).astype(np.float32)
    for view in (base[:, ::2], base.transpose(2, 0, 1), base[::-1, :, ::-3], base[..., 1]):
        for noise in (None, (None, 1, ...)):
            got = dropout(view, 0.4, noise, seed=9)
            assert got.flags.c_contiguous
            assert_same_bits(got, dropout(np.ascontiguousarray(view), 0.4, noise, seed=9))


def test_rate_zero_and_eval_return_the_input_itself():
    x = np.ones((3, 4), np.float32)
    assert dropout(x, 0.0, seed=0) is x
    assert dropout(x, 0.7, (None, 1), seed=0, training=False) is x


def test_rate_one_gives_exact_zeros_even_for_nan_and_inf():
    x = np.array([[np.nan, np.inf, -np.inf, 1.0]], np.float32)
    y = dropout(x, 1.0, seed=0)
    assert_same_bits(y, np.zeros_like(x))


def test_dropped_nan_and_inf_become_zero_kept_stay():
    x = np.full((64, 64), np.nan, np.float32)
    x[::2] = np.inf
    y = dropout(x, 0.5, seed=3)
    kept = np.broadcast_to(keep_mask(x.shape, 0.5, seed=3), x.shape)
    assert (y[~kept] == 0).all() and not np.signbit(y[~kept]).any()
    assert np.isnan(y[1::2][kept[1::2]]).all() and np.isinf(y[::2][kept[::2]]).all()


def test_same_features_at_every_timestep():
    x = np.ones((16, 30, 8), np.float32)
    y = dropout(x, 0.5, (None, 1, 8), seed=42)
    assert (y == y[:, :1, :]).all()
    # the samples differ (16 independent 8-bit masks all equal has probability 2**-120)
    assert len({row.tobytes() for row in y[:, 0, :]}) > 1


def test_micro_batches_reproduce_the_whole_batch():
    x = np.random.default_rng(2).standard_normal((12, 5, 7)).astype(np.float32)
    for noise in (None, (None, 1, None), (None, 5, 1)):
        whole = dropout(x, 0.3, noise, seed=77, stream=3)
        parts = [dropout(x[i : i + 5], 0.3, noise, seed=77, stream=3, batch_offset=i) for i in range(0, 12, 5)]
        assert_same_bits(np.concatenate(parts), whole)
    # a mask shared over the batch ignores the offset; a per-sample mask of one sample does not
    shared = dropout(x[:1], 0.5, (1, None, None), seed=1, batch_offset=9)
    assert_same_bits(shared, dropout(x[:1], 0.5, (1, None, None), seed=1))
    single = dropout(x[9:10], 0.5, (None, None, None), seed=1, batch_offset=9)
    assert_same_bits(single, dropout(x, 0.5, seed=1)[9:10])


def test_seed_and_stream_change_the_mask():
    x = np.ones(4096, np.float32)
    a = dropout(x, 0.5, seed=0)
    assert (dropout(x, 0.5, seed=0) == a).all()
    assert (dropout(x, 0.5, seed=1) != a).any()
    assert (dropout(x, 0.5, seed=0, stream=1) != a).any()


def test_thread_count_never_changes_the_result():
    x = np.random.default_rng(3).standard_normal((300, 1001)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2, 3, 7):
            ns.set_num_threads(threads)
            results.append((dropout(x, 0.2, seed=5), dropout(x, 0.2, (None, 1), seed=5)))
    finally:
        ns.set_num_threads(None)
    for full, shaped in results[1:]:
        assert_same_bits(full, results[0][0])
        assert_same_bits(shaped, results[0][1])


def test_zero_size_and_scalar_inputs():
    for shape in [(0,), (0, 3), (3, 0, 2)]:
        x = np.zeros(shape, np.float32)
        y = dropout(x, 0.5, seed=0)
        assert y.shape == shape and y.dtype == np.float32
        assert dropout(x, 0.5, (None,) + (1,) * (len(shape) - 1), seed=0).shape == shape
    s = dropout(np.float64(3.0), 0.5, seed=0)
    assert s.shape == () and float(s) in (0.0, 6.0)


def test_generator_as_seed_draws_a_fresh_seed():
    x = np.ones(1000, np.float32)
    a = dropout(x, 0.5, seed=np.random.default_rng(0))
    b = dropout(x, 0.5, seed=np.random.default_rng(0))
    c = dropout(x, 0.5, seed=np.random.default_rng(1))
    assert (a == b).all() and (a != c).any()


def test_keep_fraction_and_mean_are_unbiased():
    # kept count ~ Binomial(n, t / 65536): |count - n p| < 5 sigma with sigma = sqrt(n p (1 - p))
    n = 1 << 20
    x = np.ones(n, np.float32)
    for rate in (0.1, 0.5, 0.9):
        t = _rng.threshold(rate)
        p = t / 65536
        y = dropout(x, rate, seed=int(rate * 100))
        kept = np.count_nonzero(y)
        assert abs(kept - n * p) < 5 * np.sqrt(n * p * (1 - p))
        # E[y] == x exactly: each kept value is 65536 / t, so the mean is kept / n * 65536 / t
        assert abs(y.astype(np.float64).mean() - 1.0) < 5 * np.sqrt((1 - p) / (p * n))


def test_shaped_masks_are_independent_across_samples_and_features():
    # with noise (None, 1, F), the draw for (sample, feature) must not depend on other cells:
    # P(both kept) for two different features of one sample is p**2 (5 sigma of the binomial count)
    n, f = 20000, 2
    m = keep_mask((n, 3, f), 0.5, (None, 1, f), seed=8)[:, 0, :]
    both = np.count_nonzero(m[:, 0] & m[:, 1])
    p = 0.25
    assert abs(both - n * p) < 5 * np.sqrt(n * p * (1 - p))


def test_missing_seed_explains_why():
    with pytest.raises(ns.NoiseShapeError, match="seed is required: NumPy has no global generator"):
        dropout(np.ones(3), 0.5)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"seed": -1}, "seed is -1; give an integer in [0, 2**64)"),
        ({"seed": 2**64}, "seed is 18446744073709551616"),
        ({"seed": 1.5}, "seed is 1.5 (float)"),
        ({"seed": 0, "stream": -2}, "stream is -2"),
        ({"seed": 0, "batch_offset": -1}, "batch_offset is -1"),
    ],
)
def test_bad_seeds_streams_offsets(kwargs, fragment):
    with pytest.raises(ns.NoiseShapeError) as info:
        dropout(np.ones((2, 3)), 0.5, (None, 1), **kwargs)
    msg = str(info.value)
    assert msg.startswith("noiseshape.numpy.dropout(noise_shape=(None, 1)) on input of shape (2, 3):")
    assert fragment in msg


def test_non_float_input_is_refused_with_the_fix():
    with pytest.raises(ns.NoiseShapeError, match=r"x has dtype int64; .*x.astype\(np.float32\)"):
        dropout(np.ones((2, 3), np.int64), 0.5, seed=0)


def test_wrong_noise_shape_message_from_the_frontend():
    with pytest.raises(ns.NoiseShapeError) as info:
        dropout(np.ones((8, 64, 50, 1), np.float32), 0.1, (None, 32, 1, 1), seed=0)
    assert str(info.value).startswith("noiseshape.numpy.dropout(noise_shape=(None, 32, 1, 1)) on input of shape")
    assert "noise_shape[1] is 32 but input axis 1 has size 64" in str(info.value)


def test_keep_mask_shape_errors():
    with pytest.raises(ns.NoiseShapeError, match="sizes cannot be negative"):
        keep_mask((2, -1), 0.5, seed=0)
    with pytest.raises(ns.NoiseShapeError, match="give a tuple of non-negative integers"):
        keep_mask("ab", 0.5, seed=0)
