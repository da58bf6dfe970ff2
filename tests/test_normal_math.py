"""The C core's own float64 log and cos (csrc/vmath.h) against the contract's Box-Muller formula.

Every ISA path evaluates the same polynomials in the same order, so the paths agree bit for bit;
against the formula in NumPy (libm ``log`` and ``cos``) they agree to a few float64 ulp, far inside
the contract's 2 float32 ulp.
"""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from noiseshape import _core

ISAS = _core.available_isas()
ROOT = Path(__file__).resolve().parents[1]
U32 = (1 << 32) - 1


def contract(a, c):
    """docs/rng.md, "Normal variates": u1 = (a + 0.5) / 2^32, u2 = c / 2^32, in float64."""
    u1 = (np.asarray(a, np.float64) + 0.5) * 2.0**-32
    u2 = np.asarray(c, np.float64) * 2.0**-32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def variates(a, c, isa, dtype):
    """The core's variates of the word pairs (a, c) on the ISA path ``isa``."""
    words = np.empty((len(a), 2), np.uint32)
    words[:, 0], words[:, 1] = a, c
    out = np.empty(len(a), dtype)
    before = _core.isa()
    _core.set_isa(isa)
    try:
        _core.box_muller(out.ctypes.data, 1 if dtype == np.float64 else 0, words.ctypes.data, len(a))
    finally:
        _core.set_isa(before)
    return out


def windows(centres, half):
    """All integers within ``half`` of each centre, clipped to the 32-bit words."""
    v = np.concatenate([np.arange(int(x) - half, int(x) + half + 1) for x in centres])
    return np.unique(np.clip(v, 0, U32)).astype(np.uint32)


# a: the ends, every power of two (u1 crosses a binade), u1 = sqrt(1/2) (the log's reduction switches)
A_EDGES = windows([0, U32, *(1 << k for k in range(33)), np.sqrt(0.5) * 2**32], 300)
# c: the ends and every quarter turn (cos crosses 0 or +-1; the reduction's quadrant changes)
C_EDGES = windows([0, U32, *(k << 30 for k in range(1, 4)), 1 << 29, 3 << 29, 5 << 29, 7 << 29], 3000)


def sample(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << 32, n, dtype=np.uint32), rng.integers(0, 1 << 32, n, dtype=np.uint32)


def cases():
    a, c = sample(1 << 20, 0)
    half = np.full(C_EDGES.size, 1 << 31, np.uint32)  # u1 ~ 1/2: sqrt(-2 ln u1) ~ 1.18
    return {
        "log edges (cos = 1)": (A_EDGES, np.zeros(A_EDGES.size, np.uint32)),
        "log edges (cos near 0)": (A_EDGES, np.full(A_EDGES.size, 1 << 30, np.uint32)),
        "cos edges": (half, C_EDGES),
        "cos edges, u1 near 1": (np.full(C_EDGES.size, U32, np.uint32), C_EDGES),
        "random": (a, c),
    }


@pytest.mark.parametrize("isa", ISAS)
def test_float64_variates_within_a_few_ulp_of_the_formula(isa):
    for name, (a, c) in cases().items():
        ref = contract(a, c)
        z = variates(a, c, isa, np.float64)
        # the formula's own libm error is below 1 ulp; the core's log and cos stay within ~3 ulp each
        rel = np.abs(z - ref) / np.abs(ref)
        assert rel.max() < 8 * 2.0**-52, (name, float(rel.max()), a[rel.argmax()], c[rel.argmax()])


@pytest.mark.parametrize("isa", ISAS)
def test_float32_variates_within_the_contract(isa):
    for name, (a, c) in cases().items():
        ref = contract(a, c)
        z = variates(a, c, isa, np.float32)
        ulp = np.spacing(np.abs(ref.astype(np.float32))).astype(np.float64)
        assert (np.abs(z.astype(np.float64) - ref) <= 2 * ulp).all(), name
        # a few float64 ulp change the float32 rounding only for variates within them of a rounding
        # boundary: about 1e-8 of them, so none of these ~1.1M (5 allowed)
        assert np.count_nonzero(z != ref.astype(np.float32)) <= 5, name


def test_isa_paths_are_bit_identical():
    a, c = sample(100_003, 1)  # an odd count: the vector paths finish with the scalar tail
    a = np.concatenate([a, A_EDGES, np.full(C_EDGES.size, 7, np.uint32)])
    c = np.concatenate([c, np.full(A_EDGES.size, 123456789, np.uint32), C_EDGES])
    for dtype in (np.float64, np.float32):
        scalar = variates(a, c, "scalar", dtype)
        for isa in ISAS:
            assert variates(a, c, isa, dtype).tobytes() == scalar.tobytes(), (isa, dtype)


def test_extreme_words():
    a = np.array([0, U32, 0, U32, 1 << 31], np.uint32)
    c = np.array([0, 0, 1 << 31, 1 << 31, 0], np.uint32)
    z = variates(a, c, ISAS[-1], np.float64)
    # a = 0: u1 = 2^-33, the largest radius sqrt(66 ln 2); a = 2^32 - 1: u1 = 1 - e, e = 2^-33, the
    # smallest, sqrt(2 (e + e^2 / 2)) to 1e-30; a = 2^31: u1 = (1 + 2^-32) / 2, -ln u1 = ln 2 - 2^-32 to 1e-19
    e = 2.0**-33
    big, small, mid = np.sqrt(66 * np.log(2)), np.sqrt(2 * (e + e * e / 2)), np.sqrt(2 * (np.log(2) - 2.0**-32))
    np.testing.assert_allclose(z, [big, small, -big, -small, mid], rtol=4e-16)


def test_box_muller_rejects_a_bad_dtype():
    out = np.empty(2, np.float64)
    words = np.zeros(4, np.uint32)
    with pytest.raises(ValueError, match="box_muller: out_dtype is 2"):
        _core.box_muller(out.ctypes.data, 2, words.ctypes.data, 2)


def test_the_polynomials_are_the_fits_of_their_script():
    # csrc/vmath.h's coefficients are what tools/fit_box_muller.py computes (and rounds to float64)
    spec = importlib.util.spec_from_file_location("fit_box_muller", ROOT / "tools" / "fit_box_muller.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    header = (ROOT / "csrc" / "vmath.h").read_text()
    for name, (coefs, err) in fit.fitted().items():
        body = re.search(rf"{name}\[[^]]*\] = {{ /\* error ([0-9.e-]+) \*/([^}}]*)}}", header)
        assert body, name
        in_header = [float.fromhex(c) for c in body.group(2).split(",")]
        assert in_header == coefs, name
        assert float(body.group(1)) == pytest.approx(err, rel=0.05), name
        assert err < 1e-15  # each fit's error, weighed by what it contributes, is far below a float64 ulp
