"""CPU benchmark: noiseshape against the floor ``x * scale`` and its peers, medians from one run.

Run it with ``noiseshape bench`` or ``python benchmarks/cpu.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

__all__ = ["Row", "main", "run", "saved_bytes"]


class Row(dict):
    """One benchmark result: ``name``, ``median_ms`` and ``ratio`` (to the floor of its group)."""


def steady_allocator() -> bool:
    """Keep freed memory in the process (glibc): every case then reuses warm pages, as a training loop does.

    Without it, whether a 16 MB result lands on fresh pages (thousands of page faults) depends on
    what the previous case freed, which swamps the differences being measured. Returns whether the
    allocator could be told (glibc only).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def _cases(shape, rate):
    """Yield (group, name, setup) where setup() returns the callable to time; the first of a group is its floor."""
    import numpy as np

    from . import numpy as nsn

    keep = 1.0 - rate
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    shaped = (None, 1, ...)
    group = "NumPy forward"
    yield group, "floor: x * 2.0", lambda: lambda: x * 2.0
    yield group, "noiseshape.numpy.dropout", lambda: lambda: nsn.dropout(x, rate, seed=1)
    yield (
        group,
        "noiseshape.numpy.dropout noise_shape=(None, 1, ...)",
        lambda: lambda: nsn.dropout(x, rate, shaped, seed=1),
    )
    yield (
        group,
        "x * (rng.random(shape) < keep) / keep",
        lambda: lambda: x * (rng.random(x.shape, dtype=np.float32) < keep) / np.float32(keep),
    )
    try:
        import torch
    except ImportError:
        return
    from . import torch as nst

    t = torch.from_numpy(x)
    group = "torch forward"
    yield group, "floor: x * 2.0", lambda: lambda: t * 2.0
    yield group, "noiseshape.torch.dropout", lambda: lambda: nst.dropout(t, rate)
    yield group, "noiseshape.torch.dropout noise_shape=(None, 1, ...)", lambda: lambda: nst.dropout(t, rate, shaped)
    yield group, "torch.nn.functional.dropout", lambda: lambda: torch.nn.functional.dropout(t, rate)

    leaf = t.clone().requires_grad_()
    grad = torch.randn_like(t)

    def step(fn):
        def run_step():
            leaf.grad = None
            fn(leaf).backward(grad)

        return run_step

    group = "torch forward+backward"
    yield group, "floor: y = x * 2; y.backward(g)", lambda: step(lambda v: v * 2.0)
    yield group, "noiseshape.torch.dropout", lambda: step(lambda v: nst.dropout(v, rate))
    yield (
        group,
        "noiseshape.torch.dropout noise_shape=(None, 1, ...)",
        lambda: step(lambda v: nst.dropout(v, rate, shaped)),
    )
    yield group, "torch.nn.functional.dropout", lambda: step(lambda v: torch.nn.functional.dropout(v, rate))


def saved_bytes(shape=(64, 128, 512), rate=0.1) -> list[tuple[str, int]]:
    """Bytes that autograd keeps for backward, per case (``saved_tensors_hooks``)."""
    import torch

    from . import torch as nst

    x = torch.randn(shape, requires_grad=True)
    cases = [
        ("noiseshape.torch.dropout", lambda v: nst.dropout(v, rate)),
        ("noiseshape.torch.dropout noise_shape=(None, 1, ...)", lambda v: nst.dropout(v, rate, (None, 1, ...))),
        ("torch.nn.functional.dropout", lambda v: torch.nn.functional.dropout(v, rate)),
    ]
    out = []
    for name, fn in cases:
        sizes: list[int] = []

        def pack(tensor, sizes=sizes):
            sizes.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            fn(x)
        out.append((name, sum(sizes)))
    return out


def run(
    shape=(64, 128, 512), rate=0.1, repeats=50, progress: Callable[[str], None] | None = None, make_cases=_cases
) -> list[Row]:
    """Measure every case (``make_cases(shape, rate)`` yields them); each row has its ratio to its group's floor.

    Each case runs in bursts of ``burst`` consecutive calls (the steady state of a training loop, where
    the allocator hands back the buffer it just freed), and the bursts of all cases take turns, so a
    slow spell of a busy machine lands on every case alike instead of on whichever case it met.
    """
    burst = 10
    cases: list[tuple] = []
    for group, name, setup in make_cases(shape, rate):
        if progress:
            progress(f"preparing {name}")
        fn = setup()
        for _ in range(3):  # warm-up: first-touch page faults, lazy initialisation
            fn()
        cases.append((group, name, fn, []))
    rounds = max(1, -(-repeats // burst))
    for r in range(rounds):
        if progress:
            progress(f"round {r + 1} of {rounds}")
        for _, _, fn, times in cases:
            fn()  # the first call of a burst may meet a cold allocator
            for _ in range(min(burst, repeats - r * burst)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
    rows: list[Row] = []
    floors: dict[str, float] = {}
    for group, name, _, times in cases:
        ms = statistics.median(times) * 1e3
        floors.setdefault(group, ms)
        rows.append(Row(group=group, name=name, median_ms=ms, ratio=ms / floors[group]))
    return rows


def machine() -> str:
    """A short description of this machine: processor, cores, Python and library versions."""
    import numpy as np

    from . import _core
    from ._threads import get_num_threads

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    parts = [cpu, f"{os.cpu_count()} cores", f"{get_num_threads()} threads", f"isa {_core.isa()}"]
    parts += [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        pass
    return ", ".join(parts)


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| group | case | median ms | x floor |", "|---|---|---:|---:|"]
    lines += [f"| {r['group']} | {r['name']} | {r['median_ms']:.3f} | {r['ratio']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="noiseshape bench", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,128,512", help="input shape, comma separated (default 64,128,512)")
    parser.add_argument("--rate", type=float, default=0.1, help="drop rate (default 0.1)")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per case (default 50)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--threads", type=int, help="threads for torch and noiseshape alike (default: all)")
    parser.add_argument("--sweep", action="store_true", help="per-call times against torch from 2**4 to 2**24 elements")
    parser.add_argument("--case", help="with --sweep: only the case of this name (e.g. gaussian_noise)")
    parser.add_argument("--models", action="store_true", help="training steps of real models, torch's dropout vs ours")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave the allocator as it is (results then include page faults of fresh buffers)",
    )
    args = parser.parse_args(argv)
    try:
        shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError:
        parser.error(f"--shape is {args.shape!r}; give sizes separated by commas, e.g. 64,128,512")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.case is not None and not args.sweep:
        parser.error("--case selects a case of --sweep; give --sweep too")

    def progress(name: str) -> None:
        if not args.quiet:
            print(f"  measuring {name} ...", file=sys.stderr, flush=True)

    steady = False if args.default_malloc else steady_allocator()
    if args.threads:
        from ._threads import set_num_threads

        set_num_threads(args.threads)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    if args.sweep or args.models:
        from . import _bench_torch as bt

        torch_result: dict = {"machine": machine()}
        print(f"machine: {machine()}; allocator: {'freed memory kept (steady state)' if steady else 'default'}")
        if args.sweep:
            torch_result["sweep"] = bt.sweep(repeats=args.repeats, progress=progress, case=args.case)
            print(bt.sweep_table(torch_result["sweep"]))
        if args.models:
            torch_result["models"] = bt.models(repeats=args.repeats, progress=progress)
            print(bt.models_table(torch_result["models"]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(torch_result, f, indent=2)
        return 0
    rows = run(shape, args.rate, args.repeats, progress)
    print(f"float32 {shape}, rate {args.rate}, medians of {args.repeats} runs")
    print(f"machine: {machine()}; allocator: {'freed memory kept (steady state)' if steady else 'default'}")
    print(table(rows))
    result = {"shape": shape, "rate": args.rate, "machine": machine(), "steady_allocator": steady, "rows": rows}
    for group, ours, peer in [
        ("torch forward", "noiseshape.torch.dropout", "torch.nn.functional.dropout"),
        ("NumPy forward", "noiseshape.numpy.dropout", "x * (rng.random(shape) < keep) / keep"),
    ]:
        times = {r["name"]: r["median_ms"] for r in rows if r["group"] == group}
        if ours in times and peer in times:
            print(f"{group}: {peer} takes {times[peer] / times[ours]:.1f}x the time of {ours}")
    try:
        saved = saved_bytes(shape, args.rate)
    except ImportError:
        saved = []
    if saved:
        print("\n| saved for backward | bytes | bytes per element |\n|---|---:|---:|")
        n = math.prod(shape)
        for name, size in saved:
            print(f"| {name} | {size:,} | {size / n:.4g} |")
        result["saved_bytes"] = dict(saved)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
