"""noiseshape on torch.distributed: real multi-process runs (gloo, CPU), started once for the whole module.

``distributed_checks.py`` spawns 4 processes on a free loopback port and runs every check on every rank
(DTensor ops on 1-d and 2-d meshes, a tensor/sequence-parallel transformer block, DDP on 1, 2 and 4
ranks, micro-batches, seeds); each test below asserts one check held on all ranks.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = (
    "dtensor_ops",
    "dtensor_weights",
    "dtensor_triton_path",
    "dtensor_errors",
    "tensor_parallel_block",
    "noise_in_block_is_collective_free",
    "data_parallel",
    "micro_batches",
    "checkpoint_recompute",
    "seeds_across_ranks",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "results.json"
    script = Path(__file__).with_name("distributed_checks.py")
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(out.read_text())


def test_every_check_ran(results):
    assert set(results) == set(CHECKS)


@pytest.mark.parametrize("name", CHECKS)
def test_check_holds_on_every_rank(results, name):
    result = results[name]
    failed = [rank for rank in result["ranks"] if "error" in rank] or result["ranks"][:1]
    assert result["ok"], json.dumps(failed, indent=1)[:6000]


def test_dtensor_cases_cover_every_layout_and_op(results):
    cases = results["dtensor_ops"]["ranks"][0]["cases"]
    layouts = {c["layout"] for c in cases}
    assert {"Replicate", "Partial", "2-d nested (Shard(1), Shard(1))", "Shard(0) uneven, an empty shard"} <= layouts
    errors = [c for c in cases if "clear error" in c]
    # additive and affine noise on Partial inputs are refused; everything else is compared
    assert errors and all(c["layout"].endswith("Partial)") or c["layout"] == "Partial" for c in errors)
    assert len(cases) - len(errors) >= 100
