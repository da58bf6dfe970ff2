"""Noise-shape resolution and argument validation: results and the exact error messages."""

import math

import numpy as np
import pytest

import noiseshape as ns
from noiseshape._spec import check_rate, collapse, resolve


@pytest.mark.parametrize(
    ("shape", "noise_shape", "broadcast_dims", "expected"),
    [
        ((2, 3, 4), (None, 1, 4), None, (2, 1, 4)),
        ((2, 3, 4), (2, 1, None), None, (2, 1, 4)),
        ((2, 3, 4), None, (1,), (2, 1, 4)),
        ((2, 3, 4), None, (-2,), (2, 1, 4)),
        ((2, 3, 4), None, 1, (2, 1, 4)),
        ((2, 3, 4), None, (), (2, 3, 4)),
        ((2, 3, 4), None, None, (2, 3, 4)),
        ((8, 64, 50, 1), (None, 64, 1, 1), None, (8, 64, 1, 1)),
        ((8, 64, 50, 1), (None, 1, ...), None, (8, 1, 50, 1)),
        ((8, 64, 50, 1), (..., 1), None, (8, 64, 50, 1)),
        ((8, 64, 50, 1), (1, ..., 1, 1), None, (1, 64, 1, 1)),
        ((8, 64), (None, 1, ...), None, (8, 1)),
        ((), (), None, ()),
        ((), (...,), None, ()),
        ((0, 3), (None, 1), None, (0, 1)),
        ((5, 3), [np.int64(5), np.int32(1)], None, (5, 1)),
        ((5, 3), np.array([5, 1]), None, (5, 1)),
    ],
)
def test_resolution(shape, noise_shape, broadcast_dims, expected):
    assert ns.resolve_noise_shape(shape, noise_shape, broadcast_dims=broadcast_dims) == expected


def test_shared_axes_are_those_asked_for():
    spec = resolve((1, 3, 1), (1, 1, None))
    assert spec.shared == (True, True, False)
    assert spec.batch_shared
    # a batch of one sample with noise_shape[0] None is still per-sample: it takes its offset
    spec = resolve((1, 3), (None, 1))
    assert not spec.batch_shared
    assert spec.first_index(batch_offset=5) == 5
    assert resolve((1, 3), (1, None)).first_index(batch_offset=5) == 0
    assert resolve((4, 3, 2), None, (2,)).first_index(batch_offset=5) == 5 * 3
    assert resolve((4, 3), None, (0,)).batch_shared
    # full: the mask has the input's shape
    assert resolve((4, 1, 3), (None, 1, None)).full
    assert not resolve((4, 2, 3), (None, 1, None)).full


class Opaque:
    """A size that refuses to become a concrete int, as a symbolic size must not be forced."""

    def __int__(self):
        raise AssertionError("forced to int")

    __index__ = __int__

    def __eq__(self, other):
        raise AssertionError("compared")

    def __bool__(self):
        raise AssertionError("forced to bool")

    __hash__ = object.__hash__


def test_symbolic_sizes_pass_through_unforced():
    batch = Opaque()
    r = ns.resolve_noise_shape((batch, 64, 7), (None, 64, 1))
    assert r[0] is batch and r[1:] == (64, 1)
    r = ns.resolve_noise_shape((batch, 64, 7), (None, 1, ...))
    assert r[0] is batch and r[2] == 7
    r = ns.resolve_noise_shape((batch, 64, 7), broadcast_dims=(1,))
    assert r[0] is batch
    assert resolve((batch, 3), (None, 1)).first_index(0) == 0


def _message(shape, noise_shape=None, broadcast_dims=None):
    with pytest.raises(ns.NoiseShapeError) as info:
        resolve(shape, noise_shape, broadcast_dims, op="dropout")
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_wrong_size_message_names_op_spec_shape_axis_and_fix():
    msg = _message((8, 64, 50, 1), (None, 32, 1, 1))
    assert msg == (
        "dropout(noise_shape=(None, 32, 1, 1)) on input of shape (8, 64, 50, 1):\n"
        "  noise_shape[1] is 32 but input axis 1 has size 64 (input shape (8, 64, 50, 1)); "
        "use 64, None (same as the input) or 1 (share one draw along this axis)"
    )


@pytest.mark.parametrize(
    ("shape", "noise_shape", "broadcast_dims", "fragments"),
    [
        ((2, 3, 4), (2, 1), None, ["noise_shape has 2 entries but the input has 3 axes", "one entry per axis"]),
        ((2, 3, 4), (2, 1, 4, 1), None, ["noise_shape has 4 entries but the input has 3 axes"]),
        ((2, 3), (2, 1, 4, ...), None, ["noise_shape has 3 entries but the input has 2 axes"]),
        ((2, 3, 4), (..., 1, ...), None, ["2 ellipses", "only once"]),
        ((2, 3, 4), (-1, 1, 4), None, ["noise_shape[0] is -1", "use None"]),
        ((2, 3, 4), (2, 1.0, 4), None, ["noise_shape[1] is 1.0 (float)", "use the integer 1"]),
        ((2, 3, 4), (2, 0.5, 4), None, ["noise_shape[1] is 0.5 (float)", "None"]),
        ((2, 3, 4), (True, 1, 4), None, ["noise_shape[0] is True (bool)"]),
        ((2, 3, 4), (2, "1", 4), None, ["noise_shape[1] is '1' (str)"]),
        ((2, 3, 4), "2,1,4", None, ["noise_shape is '2,1,4'", "give a tuple"]),
        ((2, 3, 4), 5, None, ["noise_shape is 5", "give a tuple"]),
        ((2, 3, 4), (2, 1, 4), (1,), ["both given", "only one"]),
        ((2, 3, 4), None, (3,), ["broadcast_dims[0] is 3 but the input has 3 axes", "valid axes are -3..2"]),
        ((2, 3, 4), None, (-4,), ["broadcast_dims[0] is -4"]),
        ((2, 3, 4), None, (1, -2), ["names axis 1 twice"]),
        ((2, 3, 4), None, (1.0,), ["broadcast_dims[0] is 1.0 (float)"]),
        ((2, 3, 4), None, (True,), ["broadcast_dims[0] is True (bool)"]),
        ((2, 3, 4), None, "1", ["broadcast_dims is '1'"]),
    ],
)
def test_error_messages(shape, noise_shape, broadcast_dims, fragments):
    msg = _message(shape, noise_shape, broadcast_dims)
    assert msg.startswith("dropout(")
    assert "on input of shape (2, 3" in msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_error_header_quotes_the_spec_as_given():
    msg = _message((2, 3, 4), (None, 2, ...))
    assert msg.startswith("dropout(noise_shape=(None, 2, ...)) on input of shape (2, 3, 4):")
    msg = _message((2, 3, 4), None, (5,))
    assert msg.startswith("dropout(broadcast_dims=(5,)) on input of shape (2, 3, 4):")


@pytest.mark.parametrize("rate", [0, 0.0, 0.5, 1, 1.0, np.float32(0.25), np.float64(0.75), np.int64(1)])
def test_valid_rates(rate):
    assert check_rate(rate, op="dropout") == float(rate)


@pytest.mark.parametrize(
    ("rate", "fragment"),
    [
        (-0.1, "must lie in [0, 1]"),
        (1.5, "if you meant 1.5%, use 0.015"),
        (math.nan, "rate is nan"),
        (math.inf, "rate is inf"),
        (True, "rate is True (bool)"),
        (np.bool_(False), "(bool"),
        ("0.1", "rate is '0.1' (str)"),
        (None, "rate is None"),
        (0.1 + 0j, "(complex)"),
    ],
)
def test_invalid_rates(rate, fragment):
    with pytest.raises(ns.NoiseShapeError) as info:
        check_rate(rate, op="dropout", shape=(2, 3))
    msg = str(info.value)
    assert msg.startswith("dropout on input of shape (2, 3):")
    assert fragment in msg, msg


def test_collapse_merges_only_contiguous_runs():
    # (4, 5, 6) C-contiguous with a mask shared over axis 1: nothing merges with the shared axis
    assert collapse((4, 5, 6), (30, 6, 1), (6, 0, 1)) == ((4, 5, 6), (30, 6, 1), (6, 0, 1))
    # mask shared over axes 0 and 1: those two merge
    assert collapse((4, 5, 6), (30, 6, 1), (0, 0, 1)) == ((20, 6), (6, 1), (0, 1))
    # size-1 axes vanish; everything contiguous becomes one axis
    assert collapse((4, 1, 6), (6, 6, 1), (6, 6, 1)) == ((24,), (1,), (1,))
    assert collapse((1, 1), (1, 1)) == ((), ())
    # a transposed view does not merge
    assert collapse((3, 4), (1, 3)) == ((3, 4), (1, 3))
