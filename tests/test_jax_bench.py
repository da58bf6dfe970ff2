"""The JAX benchmark runs end to end on a small shape, through the CLI, and reports its cases (timings unchecked)."""

import json

import jax
import jax.numpy as jnp
import numpy as np

import noiseshape.jax as nsj
from noiseshape import _cli


def test_bench_jax_reports_ours_flax_and_the_floor_in_each_group(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--jax", "--shape", "4,8,16", "--repeats", "1", "--quiet", "--forward-only", "--json", str(out)]
    assert _cli.main(args) == 0
    result = json.loads(out.read_text())
    groups = {}
    for row in result["rows"]:
        groups.setdefault(row["group"], []).append(row)
        assert row["median_ms"] > 0
    # --forward-only leaves out the forward+backward group (it compiles every case again, with grad)
    assert set(groups) == {"JAX forward (jit)", "C core, for scale (an FFI call's ceiling)"}
    for rows in groups.values():
        assert rows[0]["name"].startswith("floor") and rows[0]["ratio"] == 1.0
    names = {r["name"] for r in groups["JAX forward (jit)"]}
    assert {"noiseshape.jax.dropout", "flax.linen.Dropout", "noiseshape.jax.dropout broadcast_dims=(1,)"} <= names
    assert "flax.linen.Dropout broadcast_dims=(1,)" in names
    printed = capsys.readouterr().out
    assert "| group | case | median ms | x floor |" in printed and "JAX 0." in printed
    assert "flax.linen.Dropout takes" in printed


def test_bench_jax_forward_backward_group_lists_every_case_and_runs():
    from noiseshape import _bench_jax

    cases = [(g, n, setup) for g, n, setup in _bench_jax._cases((2, 3, 4), 0.5) if g.startswith("JAX forward+backward")]
    names = [n for _, n, _ in cases]
    assert names[0].startswith("floor") and len(names) == 5
    assert {"noiseshape.jax.dropout", "flax.linen.Dropout"} <= set(names)
    ours = dict((n, setup) for _, n, setup in cases)["noiseshape.jax.dropout"]
    _, grad = ours()()  # compiles and runs value_and_grad of (dropout(x) * g).sum(), key(2) as in the bench
    dropped = np.asarray(nsj.dropout(jnp.ones((2, 3, 4)), 0.5, key=jax.random.key(2))) == 0
    assert np.array_equal(np.asarray(grad) == 0, dropped) and 0 < dropped.sum() < dropped.size
