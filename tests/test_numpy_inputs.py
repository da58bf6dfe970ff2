"""What the NumPy frontend accepts as input and how it refuses the rest.

Byte order, memory alignment, the range of global mask indices, and what counts as a shape: a value
is either handled exactly as the reference (``noiseshape._rng``) says, or refused with a clear
:class:`noiseshape.NoiseShapeError`.
"""

import re

import numpy as np
import pytest

import noiseshape as ns
from noiseshape import _rng
from noiseshape.numpy import dropout, keep_mask


def reference(x, rate, noise_shape=None, *, seed, stream=0, batch_offset=0):
    x = np.asarray(x, dtype=x.dtype.newbyteorder("="))
    spec = ns._spec.resolve(x.shape, noise_shape)
    t = _rng.threshold(rate)
    keep = _rng.keep_flags(spec.shape, seed, stream, t, batch_offset=batch_offset, batch_shared=spec.batch_shared)
    compute = np.float64 if x.dtype == np.float64 else np.float32
    scaled = (x.astype(compute) * compute(_rng.keep_scale(t))).astype(x.dtype)
    return np.where(np.broadcast_to(keep, x.shape), scaled, np.zeros((), x.dtype))


# ---------------------------------------------------------------------------
# byte order


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2", "<f4", "=f8"])
@pytest.mark.parametrize("noise_shape", [None, (None, 1)])
def test_non_native_byte_order_is_read_by_value(isa, dtype, noise_shape):
    x = np.arange(1, 9 * 6 + 1, dtype=dtype).reshape(9, 6) / 7
    x = x.astype(dtype)
    y = dropout(x, 0.5, noise_shape, seed=3, stream=1)
    want = reference(x, 0.5, noise_shape, seed=3, stream=1)
    assert y.dtype.isnative
    np.testing.assert_array_equal(y.view(np.uint8), want.view(np.uint8))  # bit for bit


def test_non_native_byte_order_example():
    x = np.arange(1, 9, dtype=">f4")
    native = np.arange(1, 9, dtype=np.float32)
    np.testing.assert_array_equal(dropout(x, 0.5, seed=0), dropout(native, 0.5, seed=0))


# ---------------------------------------------------------------------------
# alignment: views that start at any byte


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("offset", [1, 2, 3, 5])
@pytest.mark.parametrize("noise_shape", [None, (None, 1)])
def test_views_at_odd_byte_offsets(isa, dtype, offset, noise_shape):
    n = 1000
    item = np.dtype(dtype).itemsize
    buf = bytearray(n * item + 16)
    x = np.ndarray((n // 10, 10), dtype, buf, offset=offset)
    x[...] = np.linspace(-3, 3, n, dtype=np.float64).reshape(x.shape)
    assert x.ctypes.data % item != 0 or item == 1 or offset % item == 0
    y = dropout(x, 0.3, noise_shape, seed=11)
    np.testing.assert_array_equal(y, reference(np.array(x), 0.3, noise_shape, seed=11))


# ---------------------------------------------------------------------------
# global indices stay below 2**63 on every frontend

_PAST = re.escape("puts the mask's global indices past 2**63 - 1: they would run from")


@pytest.mark.parametrize(
    ("shape", "batch_offset"),
    [((1, 4), 2**62), ((2, 3), 2**63 // 3), ((5,), 2**63 - 4), ((1, 1), 2**63)],
)
def test_batch_offset_past_the_index_range_is_refused(shape, batch_offset):
    with pytest.raises(ns.NoiseShapeError, match=_PAST) as info:
        keep_mask(shape, 0.5, seed=0, batch_offset=batch_offset)
    assert f"batch_offset {batch_offset} " in str(info.value)
    with pytest.raises(ns.NoiseShapeError, match=_PAST):
        dropout(np.ones(shape, np.float32), 0.5, seed=0, batch_offset=batch_offset)


def test_largest_batch_offset_that_fits_matches_the_reference():
    shape, offset = (2, 4), (2**63 - 12) // 4  # the last index is 2**63 - 5
    got = keep_mask(shape, 0.5, seed=9, batch_offset=offset)
    want = _rng.keep_flags(shape, 9, 0, _rng.threshold(0.5), batch_offset=offset)
    np.testing.assert_array_equal(got, want)
    assert not (keep_mask(shape, 0.5, seed=9) == got).all()


def test_batch_offset_of_a_shared_batch_axis_never_overflows():
    # axis 0 shares one draw by request: the offset changes nothing, so it cannot overflow anything
    m = keep_mask((3, 4), 0.5, (1, None), seed=1, batch_offset=2**64 - 1)
    np.testing.assert_array_equal(m, keep_mask((3, 4), 0.5, (1, None), seed=1))


# ---------------------------------------------------------------------------
# shapes: non-negative integers only


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ("23", "shape is '23'"),
        (b"23", "shape is b'23'"),
        ((2.7, 3), "shape[0] is 2.7 (float)"),
        ((2.0, 3), "shape[0] is 2.0 (float)"),
        ((2, None), "shape[1] is None"),
        ((True, 3), "shape[0] is True (bool)"),
        ((2, -1), "shape[1] is -1; sizes cannot be negative"),
        (5, "shape is 5 (int)"),
        ((np.array([2, 3]),), "shape[0] is array([2, 3])"),
    ],
)
def test_keep_mask_refuses_junk_shapes(shape, fragment):
    with pytest.raises(ns.NoiseShapeError) as info:
        keep_mask(shape, 0.5, seed=0)
    assert fragment in str(info.value)
    assert "non-negative integer" in str(info.value)


def test_keep_mask_accepts_numpy_integer_sizes():
    m = keep_mask((np.int64(2), np.uint8(3), 4), 0.5, seed=0)
    assert m.shape == (2, 3, 4)
    np.testing.assert_array_equal(m, keep_mask((2, 3, 4), 0.5, seed=0))
    assert keep_mask(np.array([2, 3]), 0.5, seed=0).shape == (2, 3)


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ((-3, 2), "input shape[0] is -3; sizes cannot be negative"),
        ("ab", "input shape is 'ab'"),
        ((2.5, 3), "input shape[0] is 2.5 (float)"),
        ((2, "3"), "input shape[1] is '3' (str)"),
        ((False, 3), "input shape[0] is False (bool)"),
        (None, "input shape is None"),
    ],
)
def test_resolve_noise_shape_refuses_junk_input_shapes(shape, fragment):
    with pytest.raises(ns.NoiseShapeError) as info:
        ns.resolve_noise_shape(shape, (None, 1))
    assert fragment in str(info.value)


def test_resolve_noise_shape_accepts_numpy_integer_sizes():
    assert ns.resolve_noise_shape((np.int32(4), np.int64(3)), (None, 1)) == (4, 1)
    assert ns.resolve_noise_shape((0, 3), (None, 1)) == (0, 1)


# ---------------------------------------------------------------------------
# noise shapes holding arrays


@pytest.mark.parametrize("entry", [np.array([1, 2]), np.array(1), np.ones((2, 2))])
def test_array_entry_next_to_ellipsis_is_a_clear_error(entry):
    with pytest.raises(ns.NoiseShapeError) as info:
        dropout(np.ones((2, 3), np.float32), 0.5, (entry, ...), seed=0)
    msg = str(info.value)
    assert "noise_shape[0] is" in msg and "(ndarray)" in msg
    assert "each entry must be None, 1 or the axis size" in msg


@pytest.mark.parametrize("training", ["no", None, 2, 0.5])
def test_training_flag_is_true_or_false(training):
    with pytest.raises(ns.NoiseShapeError, match=r"training is .*; give True or False"):
        dropout(np.ones(3, np.float32), 0.5, seed=0, training=training)


def test_training_flag_accepts_numpy_bools():
    x = np.ones(3, np.float32)
    assert dropout(x, 0.5, seed=0, training=np.False_) is x


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"broadcast_dims": np.array(1)}, "broadcast_dims is array(1); give a tuple"),
        ({"noise_shape": np.array(5)}, "noise_shape is array(5); give a tuple"),
        ({"noise_shape": {None: 1, 3: 3}}, "noise_shape is {None: 1, 3: 3}; give a tuple"),
        ({"broadcast_dims": {1}}, "broadcast_dims is {1}; give a tuple"),
    ],
)
def test_spec_that_is_no_ordered_collection_is_refused(kwargs, fragment):
    with pytest.raises(ns.NoiseShapeError) as info:
        dropout(np.ones((2, 3), np.float32), 0.5, seed=0, **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("shape", [np.array(5), {2: 3}, {2, 3}])
def test_shape_that_is_no_ordered_collection_is_refused(shape):
    with pytest.raises(ns.NoiseShapeError, match="give a tuple of non-negative integers"):
        keep_mask(shape, 0.5, seed=0)
    with pytest.raises(ns.NoiseShapeError, match="give a tuple of non-negative integers"):
        ns.resolve_noise_shape(shape)
