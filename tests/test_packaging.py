"""What is shipped: the sdist holds everything needed to build and test, the metadata is complete, the
package under test is the installed one (in CI), and a missing framework says how to install it.

CI (``.ci/run``) passes the sdist it built as ``NOISESHAPE_SDIST`` and sets ``NOISESHAPE_INSTALLED=1``;
from a source checkout the sdist is built here (``python -m build --sdist --no-isolation``).
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import noiseshape

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tarfile.TarFile:
    given = os.environ.get("NOISESHAPE_SDIST")
    if given:
        path = Path(given)
    else:
        assert (ROOT / "pyproject.toml").exists(), "run from a source tree or set NOISESHAPE_SDIST"
        out = tmp_path_factory.mktemp("sdist")
        cmd = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (path,) = out.glob("*.tar.gz")
    with tarfile.open(path) as tar:
        yield tar


def _names(tar: tarfile.TarFile) -> set[str]:
    return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_sdist_holds_what_the_build_and_the_tests_need(sdist):
    names = _names(sdist)
    for needed in ("LICENSE", "README.md", "pyproject.toml", "setup.py", "tests/conftest.py", "docs/rng.md"):
        assert needed in names, needed
    # every C source and header of the core, however many files it is split into
    assert {"csrc/kernels.h", "csrc/module.c"} <= names
    if (ROOT / "csrc").is_dir() and not os.environ.get("NOISESHAPE_SDIST"):
        assert {f"csrc/{p.name}" for p in (ROOT / "csrc").iterdir() if p.is_file()} <= names
    # the tests, and the examples and benchmarks they run
    assert {"tests/test_cli.py", "tests/test_examples.py", "examples/mc_uncertainty.py"} <= names
    assert "tools/fit_box_muller.py" in names  # test_normal_math refits the core's polynomials
    assert any(n.startswith("benchmarks/") for n in names)
    # no build output or compiled core from a developer's tree
    assert not any(n.endswith((".so", ".pyd", ".o")) or "__pycache__" in n for n in names)


def test_sdist_license_is_mit(sdist):
    top = sdist.getnames()[0].split("/")[0]
    text = sdist.extractfile(f"{top}/LICENSE").read().decode()
    assert text.startswith("MIT License")
    assert "the noiseshape authors" in text
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def test_sdist_metadata_has_license_and_project_urls(sdist):
    top = sdist.getnames()[0].split("/")[0]
    meta = email.message_from_bytes(sdist.extractfile(f"{top}/PKG-INFO").read())
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in meta.get_all("License-File", [])
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL", []))
    assert {"Homepage", "Documentation", "Issues"} <= set(urls)
    assert all(u.startswith("https://github.com/noiseshape/noiseshape") for u in urls.values())
    assert meta["Version"] == noiseshape.__version__
    assert meta["Description-Content-Type"] == "text/markdown"


@pytest.mark.skipif(os.environ.get("NOISESHAPE_INSTALLED") != "1", reason="CI only: the installed wheel is tested")
def test_the_installed_wheel_is_what_is_tested():
    package = Path(noiseshape.__file__).resolve().parent
    assert "site-packages" in package.parts
    assert ROOT not in package.parents
    assert any(package.glob("_core*"))  # the compiled core came with the wheel


def test_torch_frontend_without_torch_says_how_to_install_it():
    code = "import sys\nsys.modules['torch'] = None\nimport noiseshape.torch\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: noiseshape.torch needs PyTorch")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in proc.stderr
    assert "pip install 'noiseshape[torch]'" in proc.stderr
