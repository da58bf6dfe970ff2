"""The JAX benchmark runs end to end on a small shape, through the CLI, and reports every case (timings unchecked)."""

import json

from noiseshape import _cli


def test_bench_jax_reports_ours_flax_and_the_floor_in_each_group(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert _cli.main(["bench", "--jax", "--shape", "4,8,16", "--repeats", "1", "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    groups = {}
    for row in result["rows"]:
        groups.setdefault(row["group"], []).append(row)
        assert row["median_ms"] > 0
    assert set(groups) == {
        "JAX forward (jit)",
        "JAX forward+backward (jit grad)",
        "C core, for scale (an FFI call's ceiling)",
    }
    for rows in groups.values():
        assert rows[0]["name"].startswith("floor") and rows[0]["ratio"] == 1.0
    names = {r["name"] for r in groups["JAX forward (jit)"]}
    assert {"noiseshape.jax.dropout", "flax.linen.Dropout", "noiseshape.jax.dropout broadcast_dims=(1,)"} <= names
    assert "flax.linen.Dropout broadcast_dims=(1,)" in names
    printed = capsys.readouterr().out
    assert "| group | case | median ms | x floor |" in printed and "JAX 0." in printed
    assert "flax.linen.Dropout takes" in printed
