"""Large outputs advised onto transparent huge pages (csrc/pages.c): which memory gets the advice.

The advice shows in ``/proc/self/smaps`` as the ``hg`` flag of the mapping that holds the memory.
Outputs of 32 MiB or more get it; glibc maps them anew on every allocation, so their mapping
carries no flag unless the core set it. Values never depend on it (the contract tests run with it on).
"""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")


THP = os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled")  # the kernel can take the advice
BIG = 1 << 24  # float32 elements: 64 MiB


def advised(address: int) -> bool:
    """Whether the mapping that holds ``address`` carries MADV_HUGEPAGE (VmFlags ``hg``)."""
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                return "hg" in line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def interior(t: torch.Tensor) -> int:
    """An address in the middle of ``t``'s memory (inside its 2 MiB-aligned part)."""
    return t.data_ptr() + t.numel() * t.element_size() // 2


# Run in a new process: in a long one, a 64 MiB tensor may come from freed heap memory that an
# earlier output's advice already covers, whatever this call does.
_CHECK = """
import json, sys
import numpy as np
import torch
import noiseshape.torch as nst
from noiseshape import _core
sys.path.insert(0, {tests!r})
from test_pages import BIG, advised, interior

out = {{}}
small = nst.dropout(torch.randn(BIG // 4), 0.5, seed=1)  # 16 MiB: under the size that gets advice
out["small"] = advised(interior(small))
del small
for on in (True, False):
    _core.madvise_hugepage(on)
    x = torch.randn(BIG)
    out[f"input {{on}}"] = advised(interior(x))
    calls = {{
        "dropout": lambda: nst.dropout(x, 0.5, seed=1),
        "spatial_dropout2d, channels last": lambda: nst.spatial_dropout2d(
            x.view(64, 64, 64, 64).to(memory_format=torch.channels_last), 0.5, seed=1
        ),
        "gaussian_noise": lambda: nst.gaussian_noise(x, 0.5, seed=1),
    }}
    for name, call in calls.items():
        y = call()
        out[f"{{name}} {{on}}"] = advised(interior(y))
        del y
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(nst.dropout(leaf, 0.5, seed=1), leaf, torch.ones(BIG))
    out[f"backward {{on}}"] = advised(interior(g))
    inplace = torch.randn(BIG)
    nst.dropout(inplace, 0.5, seed=1, inplace=True)
    out[f"inplace {{on}}"] = advised(interior(inplace))
    del x, inplace, leaf, g
_core.madvise_hugepage(True)
n = BIG // 2
x = np.ones(n, np.float32)
mask = np.ones(1, np.uint8)
base = torch.empty(2 * n)  # y every other element: its span holds twice its elements
y = base[::2]
_core.apply_mask(0, x.ctypes.data, y.data_ptr(), mask.ctypes.data, (n,), (1,), (2,), (0,), 2.0, 1)
out["strided values"] = bool(torch.equal(y, torch.full((n,), 2.0)))
out["strided with gaps"] = advised(interior(base))
dense = torch.empty(n)
_core.apply_mask(0, x.ctypes.data, dense.data_ptr(), mask.ctypes.data, (n,), (1,), (1,), (0,), 2.0, 1)
out["strided dense"] = advised(interior(dense))
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and madvise are Linux's")
def test_new_large_outputs_get_the_advice_and_nothing_else_does():
    code = _CHECK.format(tests=os.path.dirname(__file__))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for on in (True, False):
        for name in ("dropout", "spatial_dropout2d, channels last", "gaussian_noise", "backward"):
            assert got[f"{name} {on}"] == (on and THP), (name, on)
        assert not got[f"input {on}"] and not got[f"inplace {on}"], on  # inputs are never advised
    assert not got["small"]
    assert got["strided values"]
    assert not got["strided with gaps"]
    assert got["strided dense"] == THP


def _import_core_with(value: str) -> subprocess.CompletedProcess:
    code = "from noiseshape import _core; print(_core.madvise_hugepage())"
    env = dict(os.environ, NOISESHAPE_MADVISE_HUGEPAGE=value)
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize(("value", "on"), [("0", False), ("1", True), ("", True)])
def test_the_environment_variable_sets_it(value, on):
    res = _import_core_with(value)
    assert res.returncode == 0 and "Warning" not in res.stderr, res.stderr
    assert res.stdout.split() == [str(on)]


@pytest.mark.parametrize("value", ["off", "true", " 0"])
def test_a_bad_environment_value_warns_with_the_valid_ones(value):
    res = _import_core_with(value)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True"]
    assert f"NOISESHAPE_MADVISE_HUGEPAGE is '{value}'; set it to 0" in res.stderr
    assert "RuntimeWarning" in res.stderr
