"""Where the C core's parallel loops run (csrc/threads.c): on the threads of the GNU OpenMP runtime
torch loads, or on the core's own helpers; the values never depend on it.

Collecting the torch tests imports torch, which loads that runtime, so in a test session both
pools are chosen explicitly (``_core.thread_pool(share_openmp)``), and the choice itself is checked
in new processes, with and without torch, and in a forked child.
"""

import subprocess
import sys

import numpy as np
import pytest

from noiseshape import _core

N = 300_007  # past the core's parallel threshold (65,536 elements)


@pytest.fixture(params=["own", "openmp"])
def pool(request):
    if request.param == "openmp":
        torch = pytest.importorskip("torch")
        torch.ones(1 << 17).mul_(2)  # torch's OpenMP team exists
    try:
        assert _core.thread_pool(request.param == "openmp") == request.param
        yield request.param
    finally:
        _core.thread_pool(True)


def _runs(nthreads: int) -> list[bytes]:
    """The outputs of the parallel kernels at this thread count."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(N).astype(np.float32)
    out = []
    mask = np.empty(N, np.uint8)
    _core.keep_mask(mask.ctypes.data, N, 5, 6, 7, 40000, nthreads)
    out.append(mask.tobytes())
    y = np.empty_like(x)
    bits = np.empty((N + 7) // 8, np.uint8)
    _core.dropout(0, x.ctypes.data, y.ctypes.data, N, 5, 6, 7, 40000, 1.5, bits.ctypes.data, nthreads)
    out += [y.tobytes(), bits.tobytes()]
    rows = x[: 1000 * 256].reshape(1000, 256)
    z = np.empty_like(rows)
    _core.shaped_dropout(0, rows.ctypes.data, z.ctypes.data, 1000, 5, 6, 0, 40000, (1000, 256), (256, 1), (256, 1),
                         (1, 0), 2.0, nthreads)  # fmt: skip
    out.append(z.tobytes())
    g = np.empty_like(x)
    _core.gaussian_add(0, x.ctypes.data, g.ctypes.data, N, 5, 6, 7, 0.5, nthreads)
    out.append(g.tobytes())
    return out


def test_parallel_kernels_give_the_single_thread_values_on_either_pool(pool):
    one = _runs(1)
    for nthreads in (2, 3, 5):
        assert _runs(nthreads) == one, nthreads


_CHECK = r"""
import os, sys
import numpy as np
from noiseshape import _core

def tasks():
    return len(os.listdir("/proc/self/task"))

def run(nthreads):
    x = np.arange(1 << 20, dtype=np.float32)
    y = np.empty_like(x)
    _core.dropout(0, x.ctypes.data, y.ctypes.data, x.size, 1, 2, 0, 40000, 1.5, 0, nthreads)
    return y.tobytes()

import torch as _torch_first
_torch_first.ones(1 << 20).mul_(2)  # torch's OpenMP team exists; the core has run nothing parallel yet
pid = os.fork()
if pid == 0:
    os._exit(0 if _core.thread_pool() == "own" else 3)
_, status = os.waitpid(pid, 0)
print("early forked child", os.waitstatus_to_exitcode(status))
_core.thread_pool(False)  # the core's own helpers
want = run(1)
print("sharing off", _core.thread_pool())
before = tasks()
assert run(2) == want
print("own helpers started", tasks() - before)
_core.thread_pool(True)
print("sharing on", _core.thread_pool())
before = tasks()
assert run(2) == want
print("threads started on openmp", tasks() - before)
pid = os.fork()
if pid == 0:
    ok = _core.thread_pool() == "own" and run(2) == want
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("forked child", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OpenMP runtime is shared on Linux")
def test_the_pool_is_openmp_once_torch_has_loaded_it():
    pytest.importorskip("torch")
    res = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = dict(line.rsplit(" ", 1) for line in res.stdout.strip().splitlines())
    assert lines["early forked child"] == "0"  # a fork before any parallel call is seen too
    assert lines["sharing off"] == "own"
    assert lines["own helpers started"] == "1"  # a helper of the core's own pool
    assert lines["sharing on"] == "openmp"
    assert lines["threads started on openmp"] == "0"  # torch's team did the work
    assert lines["forked child"] == "0"  # a forked child keeps to the core's own pool, and works


def test_without_torch_the_pool_is_the_cores_own():
    code = "from noiseshape import _core; import numpy; print(_core.thread_pool())"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["own"]  # no OpenMP runtime loaded


def test_thread_pool_argument_is_checked():
    class Bad:
        def __bool__(self):
            raise ValueError("no truth value")

    before = _core.thread_pool()
    with pytest.raises(ValueError, match="no truth value"):
        _core.thread_pool(Bad())
    assert _core.thread_pool() == before  # a refused argument changes nothing
