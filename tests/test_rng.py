"""The Philox4x32 reference against the Random123 known-answer vectors, and the contract's layout."""

import numpy as np
import pytest

import noiseshape as ns
from noiseshape import _rng

# Random123 kat_vectors: (rounds, counter, key, expected output).
KAT = [
    (10, "00000000 00000000 00000000 00000000", "00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    (10, "ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    (10, "243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1"),
    (7, "00000000 00000000 00000000 00000000", "00000000 00000000", "5f6fb709 0d893f64 4f121f81 4f730a48"),
    (7, "ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "5207ddc2 45165e59 4d8ee751 8c52f662"),
    (7, "243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "4dfccaba 190a87f0 c47362ba b6b5242a"),
]


def _words(text):
    return np.array([int(w, 16) for w in text.split()], dtype=np.uint32)


@pytest.mark.parametrize(("rounds", "counter", "key", "expected"), KAT)
def test_known_answer_vectors(rounds, counter, key, expected):
    out = ns.philox4x32(_words(counter), _words(key), rounds=rounds)
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, _words(expected))


def test_philox_broadcasts_over_leading_axes():
    counters = np.stack([_words(c) for _, c, _, _ in KAT[:3]])
    keys = np.stack([_words(k) for _, _, k, _ in KAT[:3]])
    expected = np.stack([_words(e) for _, _, _, e in KAT[:3]])
    np.testing.assert_array_equal(ns.philox4x32(counters, keys), expected)
    # one key for many counters
    one_key = ns.philox4x32(counters, keys[2])
    np.testing.assert_array_equal(one_key[2], expected[2])
    assert one_key.shape == (3, 4)


@pytest.mark.parametrize(
    ("counter", "key", "rounds", "match"),
    [
        (np.zeros(3, np.uint32), np.zeros(2, np.uint32), 10, "last axis must have 4 words"),
        (np.zeros(4, np.uint32), np.zeros(3, np.uint32), 10, "last axis must have 2 words"),
        (np.zeros(4), np.zeros(2, np.uint32), 10, "unsigned 32-bit words"),
        (np.full(4, 1 << 33), np.zeros(2, np.uint32), 10, "unsigned 32-bit words"),
        (np.zeros(4, np.uint32), np.zeros(2, np.uint32), -1, "rounds"),
    ],
)
def test_philox_rejects_bad_arguments(counter, key, rounds, match):
    with pytest.raises(ns.NoiseShapeError, match=match):
        ns.philox4x32(counter, key, rounds=rounds)


def test_lane_layout_follows_the_contract():
    # Element j is lane j % 8 of block j // 8; lane k = (w[k // 2] >> 16 * (k % 2)) & 0xffff, where w are the
    # words of Philox4x32-10 with key (seed lo, seed hi) and counter (b lo, b hi, stream lo, stream hi).
    seed, stream = 0x0123456789ABCDEF, 0xFEDCBA9876543210
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], np.uint32)
    for j in [0, 1, 7, 8, 13, (1 << 35) + 5, (1 << 35) - 1]:
        b = j // 8
        counter = np.array([b & 0xFFFFFFFF, b >> 32, stream & 0xFFFFFFFF, stream >> 32], np.uint32)
        w = [int(v) for v in ns.philox4x32(counter, key)]
        k = j % 8
        expected = (w[k // 2] >> (16 * (k % 2))) & 0xFFFF
        assert int(_rng.lanes(seed, stream, j, 1)[0]) == expected
    # a window is the concatenation of single elements
    window = _rng.lanes(seed, stream, 5, 40)
    singles = [int(_rng.lanes(seed, stream, j, 1)[0]) for j in range(5, 45)]
    assert window.tolist() == singles


def test_threshold_and_scale():
    assert _rng.threshold(0.0) == 65536 and _rng.threshold(1.0) == 0
    assert _rng.threshold(0.25) == 49152 and _rng.keep_scale(49152) == 65536 / 49152
    # the realised keep probability t / 65536 is the nearest multiple of 2**-16 to 1 - rate
    for rate in np.linspace(0, 1, 101):
        t = _rng.threshold(rate)
        assert abs(t / 65536 - (1 - rate)) <= 2**-17
    assert _rng.keep_scale(0) == 0.0


def test_keep_flags_batch_offset_and_shared_batch():
    whole = _rng.keep_flags((6, 5), seed=3, stream=1, t=30000)
    part = _rng.keep_flags((2, 5), seed=3, stream=1, t=30000, batch_offset=4)
    np.testing.assert_array_equal(part, whole[4:])
    shared = _rng.keep_flags((1, 5), seed=3, stream=1, t=30000, batch_offset=4, batch_shared=True)
    np.testing.assert_array_equal(shared, whole[:1])


def test_normals_layout_and_distribution():
    seed, stream = 11, 7
    z = _rng.normals(seed, stream, 0, 4)
    words = _rng.block_words(seed, stream, 0, 2)
    for j in range(4):
        a, b = (words[j // 2][0], words[j // 2][1]) if j % 2 == 0 else (words[j // 2][2], words[j // 2][3])
        u1 = (float(a) + 0.5) / 2**32
        u2 = float(b) / 2**32
        assert z[j] == np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
    np.testing.assert_array_equal(_rng.normals(seed, stream, 3, 5), _rng.normals(seed, stream, 0, 8)[3:])
    # mean within 5 sigma (sigma = 1/sqrt(n)); variance within 5 sigma (sigma = sqrt(2/n)) of 1
    n = 200_000
    big = _rng.normals(5, 0, 0, n)
    assert abs(big.mean()) < 5 / np.sqrt(n)
    assert abs(big.var() - 1) < 5 * np.sqrt(2 / n)


def test_lanes_are_uniform():
    # each of the 16 nibble-buckets of a 16-bit lane has probability 1/16: chi-square with 15 dof,
    # 60 is far beyond its 99.999th percentile (~44.3)
    n = 1 << 18
    lanes = _rng.lanes(99, 0, 0, n)
    counts = np.bincount(lanes >> 12, minlength=16)
    expected = n / 16
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 60
