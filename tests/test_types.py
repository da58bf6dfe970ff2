"""Types: the public API is annotated, and a type checker sees the lazily imported frontends."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import noiseshape
from noiseshape import _cli, _rng


def _unannotated(fn, name: str) -> list[str]:
    sig = inspect.signature(fn)
    missing = [
        f"{name}({p})"
        for p, v in sig.parameters.items()
        if v.annotation is inspect.Parameter.empty and p not in ("self", "cls")
    ]
    if sig.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append(f"{name} -> ?")
    return missing


def _public_callables():
    nst = pytest.importorskip("noiseshape.torch")
    out = [(getattr(noiseshape, n), f"noiseshape.{n}") for n in ("philox4x32", "set_num_threads", "get_num_threads")]
    out += [(_cli.main, "noiseshape._cli.main")]
    out += [(getattr(_rng, n), f"_rng.{n}") for n in ("threshold", "keep_scale", "lanes", "keep_flags", "normals")]
    for n in nst.__all__:
        obj = getattr(nst, n)
        if inspect.isclass(obj):
            out += [(getattr(obj, m), f"noiseshape.torch.{n}.{m}") for m in ("__init__", "forward")]
        else:
            out.append((obj, f"noiseshape.torch.{n}"))
    return out


def test_public_api_is_annotated():
    missing = [m for fn, name in _public_callables() for m in _unannotated(fn, name)]
    assert missing == []


def test_type_checker_sees_the_lazy_frontends(tmp_path):
    pytest.importorskip("mypy")
    snippet = tmp_path / "use.py"
    snippet.write_text(
        textwrap.dedent(
            """
            import noiseshape as ns

            reveal_type(ns.numpy.dropout)
            reveal_type(ns.torch.Dropout)
            reveal_type(ns.philox4x32)
            """
        )
    )
    config = tmp_path / "mypy.ini"  # torch and numpy are taken as given: this checks noiseshape's own names
    config.write_text("[mypy]\nfollow_imports = silent\n[mypy-torch.*]\nfollow_imports = skip\n")
    env = dict(os.environ)
    package_dir = Path(noiseshape.__file__).resolve().parents[1]
    env.pop("MYPYPATH", None)
    if "site-packages" not in package_dir.parts:  # a source tree on PYTHONPATH: show it to mypy
        env["MYPYPATH"] = str(package_dir)
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run([*cmd, str(snippet)], capture_output=True, text=True, env=env, timeout=600)
    revealed = [line.split("Revealed type is ", 1)[1] for line in proc.stdout.splitlines() if "Revealed type" in line]
    assert len(revealed) == 3, proc.stdout + proc.stderr
    assert all(r != '"Any"' for r in revealed), revealed
    assert revealed[0].startswith('"def (x:')  # the function itself, whatever its annotations
    assert "noiseshape.torch.modules.Dropout" in revealed[1]
