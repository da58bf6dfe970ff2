"""The benchmark runs end to end on a small shape and reports every case (timings are not checked)."""

import json

import pytest

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
    # what autograd keeps: 4 bytes per element for torch; for full-shape dropout of this small input
    # (at most NATIVE_MAX elements) the scaled float32 mask, of larger ones no tensor (see test_torch_native)
    from noiseshape.torch import _eager

    assert _eager.NATIVE_MAX >= 4 * 8 * 16
    assert result["saved_bytes"]["noiseshape.torch.dropout"] == 4 * 4 * 8 * 16
    assert result["saved_bytes"]["torch.nn.functional.dropout"] == 4 * 4 * 8 * 16
    printed = capsys.readouterr().out
    assert "| group | case | median ms | x floor |" in printed and "machine:" in printed


def test_sweep_and_models_report_every_case(tmp_path, monkeypatch):
    from noiseshape import _bench_torch

    rows = _bench_torch.sweep(exponents=[4, 8], repeats=1)
    assert {r["case"] for r in rows} == {
        "dropout",
        "Dropout(seed=0) layer",
        "dropout (None, 1)",
        "dropout (None, 1, None)",
        "spatial_dropout2d",
        "spatial_dropout2d 4x4",
        "drop_path",
        "gaussian_noise",
    }
    assert all(r[k] > 0 for r in rows for k in ("ours", "peer", "ours_fb", "peer_fb"))
    assert "| 2^4 | dropout |" in _bench_torch.sweep_table(rows)
    only = _bench_torch.sweep(exponents=[4], repeats=1, case="gaussian_noise")
    assert [r["case"] for r in only] == ["gaussian_noise"]
    with pytest.raises(ValueError, match="case is 'nope'; choose one of"):
        _bench_torch.sweep(exponents=[4], repeats=1, case="nope")
    models = _bench_torch.models(repeats=1, seconds=0)
    assert len(models) == 5 and all(m["torch_ms"] > 0 and m["noiseshape_ms"] > 0 for m in models)
    assert [m["steps"] for m in models] == [1] * 5
    assert all(m["paired_ratio_quartiles"][0] <= m["paired_ratio"] <= m["paired_ratio_quartiles"][1] for m in models)
    assert "| MLP" in _bench_torch.models_table(models)


def test_interleaved_gives_each_rounds_burst_median():
    import time

    from noiseshape import _bench_torch

    calls = {"slow": 0, "fast": 0}

    def sleeper(name, seconds):
        def fn():
            calls[name] += 1
            time.sleep(seconds)

        return fn

    rounds: dict = {}
    t = _bench_torch._interleaved(
        {"slow": sleeper("slow", 0.004), "fast": sleeper("fast", 0.001)}, repeats=6, burst=2, rounds=rounds
    )
    assert len(rounds["slow"]) == len(rounds["fast"]) == 3  # 6 timed calls in bursts of 2
    assert calls["slow"] == calls["fast"] == 3 + 3 * 3  # 3 warm-ups, then a warm-up call and 2 timed per round
    assert all(s > f for s, f in zip(rounds["slow"], rounds["fast"]))
    assert all(r >= 0.004 for r in rounds["slow"]) and t["slow"] >= 0.004


def test_case_needs_sweep(capsys):
    with pytest.raises(SystemExit):
        _bench.main(["--case", "gaussian_noise"])
    assert "--case selects a case of --sweep" in capsys.readouterr().err
