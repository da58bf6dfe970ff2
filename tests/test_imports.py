"""Importing noiseshape (and its NumPy frontend) never imports a framework."""

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_core_and_numpy_frontend_import_no_framework():
    loaded = _modules_after("import noiseshape, noiseshape.numpy")
    assert "noiseshape.numpy" in loaded
    assert not {"torch", "triton", "jax", "matplotlib"} & loaded


def test_frontends_load_on_first_use():
    loaded = _modules_after("import noiseshape as ns\nns.numpy.dropout")
    assert "noiseshape.numpy" in loaded and "torch" not in loaded
    loaded = _modules_after("import noiseshape as ns\nns.torch.Dropout")
    assert "torch" in loaded and "triton" not in loaded  # Triton is imported only for CUDA tensors
