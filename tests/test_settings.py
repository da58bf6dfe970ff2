"""Thread count and instruction-set settings: bad values are refused at once, with the valid ones."""

import os
import subprocess
import sys

import numpy as np
import pytest

import noiseshape as ns
from noiseshape import _core, _threads
from noiseshape.numpy import dropout


@pytest.fixture(autouse=True)
def env_read_afresh():
    """NOISESHAPE_NUM_THREADS is read once per process: each test here sets it and reads it anew."""
    _threads._env_read = False
    yield
    _threads._env_read = False


@pytest.fixture
def threads_restored():
    yield
    ns.set_num_threads(None)


@pytest.mark.parametrize("n", [2**70, 2**31, 4097, 0, -1, 1.0, "2", True, np.float64(2.0)])
def test_set_num_threads_refuses_bad_values_at_once(threads_restored, n):
    with pytest.raises(ns.NoiseShapeError) as info:
        ns.set_num_threads(n)
    msg = str(info.value)
    assert msg.startswith("set_num_threads:") and f"n is {n!r}" in msg
    assert "1..4096" in msg


@pytest.mark.parametrize("n", [np.int64(2), np.uint8(3), np.int32(1), 4096])
def test_set_num_threads_accepts_numpy_integers(threads_restored, n):
    ns.set_num_threads(n)
    got = ns.get_num_threads()
    assert got == int(n) and type(got) is int
    x = np.ones((300, 300), np.float32)
    np.testing.assert_array_equal(dropout(x, 0.5, seed=1), dropout(x, 0.5, seed=1))


@pytest.mark.parametrize("raw", [str(10**30), "4097", "0", "-2", "two", "1.5"])
def test_env_thread_count_is_refused_at_once(monkeypatch, raw):
    monkeypatch.setenv("NOISESHAPE_NUM_THREADS", raw)
    with pytest.raises(ns.NoiseShapeError, match=f"NOISESHAPE_NUM_THREADS is '{raw}'; set it to an integer in 1..4096"):
        ns.get_num_threads()


def test_env_thread_count_accepts_valid_values(monkeypatch):
    monkeypatch.setenv("NOISESHAPE_NUM_THREADS", " 3 ")
    assert ns.get_num_threads() == 3


def test_bad_env_thread_count_is_reported_by_small_calls_too(monkeypatch):
    torch = pytest.importorskip("torch")
    import noiseshape.torch as nst

    monkeypatch.setenv("NOISESHAPE_NUM_THREADS", "lots")
    for call in (
        lambda: dropout(np.ones(3, np.float32), 0.5, seed=0),
        lambda: nst.dropout(torch.ones(3), 0.5, seed=0),
        lambda: nst.dropout(torch.ones(4, 3), 0.5, (None, 1), seed=0),
        lambda: nst.gaussian_noise(torch.ones(3), 0.5, seed=0),
        lambda: nst.keep_mask((3,), 0.5, seed=0),
    ):
        with pytest.raises(ns.NoiseShapeError, match="NOISESHAPE_NUM_THREADS is 'lots'"):
            call()


def _import_core_with(isa: str) -> subprocess.CompletedProcess:
    code = "from noiseshape import _core; print(_core.isa())"
    env = dict(os.environ, NOISESHAPE_ISA=isa)
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("isa", ["AVX2", "sse", "avx-512", "Scalar"])
def test_misspelled_isa_warns_with_the_valid_names(isa):
    res = _import_core_with(isa)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [_core.available_isas()[-1]]  # the best path is used
    assert "RuntimeWarning" in res.stderr
    assert f"NOISESHAPE_ISA is '{isa}'" in res.stderr
    assert "'auto', 'scalar', 'avx2' or 'avx512'" in res.stderr


@pytest.mark.parametrize("isa", ["scalar", "auto", ""])
def test_valid_isa_names_import_quietly(isa):
    res = _import_core_with(isa)
    assert res.returncode == 0 and "Warning" not in res.stderr, res.stderr
    assert res.stdout.split() == ["scalar" if isa == "scalar" else _core.available_isas()[-1]]


def test_unavailable_isa_warns_that_it_is_unavailable():
    missing = [name for name in ("avx2", "avx512") if name not in _core.available_isas()]
    for name in missing:
        res = _import_core_with(name)
        assert f"NOISESHAPE_ISA is '{name}', which this CPU or build cannot run" in res.stderr
        assert f"(available here: {_core.available_isas()})" in res.stderr
