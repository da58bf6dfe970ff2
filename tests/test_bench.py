"""The benchmark runs end to end on a small shape and reports every case (timings are not checked)."""

import json

from noiseshape import _bench


def test_bench_reports_every_case_with_ratios_to_its_floor(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert _bench.main(["--shape", "4,8,16", "--repeats", "2", "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    groups = {}
    for row in result["rows"]:
        groups.setdefault(row["group"], []).append(row)
        assert row["median_ms"] > 0
    assert set(groups) == {"NumPy forward", "torch forward", "torch forward+backward"}
    for rows in groups.values():
        assert rows[0]["name"].startswith("floor") and rows[0]["ratio"] == 1.0
        for row in rows:
            assert abs(row["ratio"] - row["median_ms"] / rows[0]["median_ms"]) < 1e-9
    # what autograd keeps: no tensor for full-shape dropout (the key is Python ints), 4 bytes per element for torch
    assert result["saved_bytes"]["noiseshape.torch.dropout"] == 0
    assert result["saved_bytes"]["torch.nn.functional.dropout"] == 4 * 4 * 8 * 16
    printed = capsys.readouterr().out
    assert "| group | case | median ms | x floor |" in printed and "machine:" in printed
