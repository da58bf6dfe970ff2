"""GPU benchmark of the Triton kernels: ``python benchmarks/gpu.py [--json out.json] [--quick]``.

On one CUDA device (written for an H100/H200; one run takes well under 5 minutes) it

1. checks the kernels on the device against the NumPy reference (masks bit for bit, normals within 2 float32 ulp),
   the ``noiseshape::`` custom ops (which launch the kernels on CUDA) under ``torch.compile(fullgraph=True)`` and
   under CUDA-graph replay with the key updated in place;
2. times, with CUDA events (median of many runs), dropout at p = 0.1 forward and forward + backward for bfloat16 and
   float32 at shapes (8192, 8192) and (64, 512, 4096): noiseshape vs ``torch.nn.functional.dropout`` (``native_dropout``
   and its backward) vs the copy floor ``x * 2``, plus the fused ``residual + dropout(x + bias)``;
3. measures the peak memory of a training step of a transformer block (``nn.TransformerEncoderLayer``) with torch's
   dropout and with the kernels (which keep no mask for backward).

It prints Markdown tables and writes JSON to ``--json`` (default ``$OUT/gpu.json`` when ``OUT`` is set). Without a
CUDA device (or without Triton) it prints one line and exits with status 0.
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
import traceback
from pathlib import Path

import torch

try:
    import noiseshape  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

P = 0.1
SHAPES = [(8192, 8192), (64, 512, 4096)]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _median_ms(fn, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------------------------------
# checks on the device


def _as_int(t: torch.Tensor) -> torch.Tensor:
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _run_check(results: dict, name: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        detail = fn()
        results[name] = {"ok": True, "detail": detail}
    except Exception as exc:  # report and go on: the timings are still useful
        results[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    results[name]["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"check {name}: {'ok' if results[name]['ok'] else 'FAILED'} ({results[name]['detail']})", flush=True)


def checks(T, rng) -> dict:
    import numpy as np

    dev = torch.device("cuda")
    results: dict = {}
    seed, stream, u64 = 0xFEDCBA9876543210, (1 << 64) - 3, (1 << 64) - 1

    def keep_mask():
        for n, j0, t in [(100_003, 5, 58982), (4096, (1 << 35) - 13, 1), (77, 0, 65535)]:
            got = T.keep_mask(n, T.make_key(seed, stream, dev), j0, t).cpu().bool().numpy()
            ref = rng.lanes(seed, stream, j0, n).astype(np.int64) < t
            if not np.array_equal(got, ref):
                raise AssertionError(f"keep_mask differs at n={n} j0={j0} t={t}: {np.flatnonzero(got != ref)[:5]}")
        return "bit-exact"

    def dropout():
        t = rng.threshold(P)
        scale = rng.keep_scale(t)
        for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
            x = torch.randn(3, 1001, 37, device=dev).to(dtype)
            x.view(-1)[:3] = torch.tensor([math.nan, math.inf, -0.0])
            for j0 in (0, 3):
                keep = torch.from_numpy(rng.lanes(seed, stream, j0, x.numel()).astype(np.int64) < t).to(dev)
                ct = torch.float64 if dtype == torch.float64 else torch.float32
                ref = torch.where(
                    keep.view(x.shape), (x.to(ct) * scale).to(dtype), torch.zeros((), dtype=dtype, device=dev)
                )
                key = T.make_key(seed, stream, dev)
                for name, got in (
                    ("fwd", T.dropout_fwd(x, key, j0, t, scale)),
                    ("bwd", T.dropout_bwd(x, key, j0, t, scale)),
                ):
                    same = (_as_int(got) == _as_int(ref)) | (got.isnan() & ref.isnan())
                    if not bool(same.all()):
                        raise AssertionError(f"{name} differs for {dtype}, j0={j0}")
        return "bit-exact for bf16/fp16/fp32/fp64, aligned and unaligned j0"

    def normals():
        n, j0 = 200_001, (1 << 33) - 7
        ref = rng.normals(seed, stream, j0, n)
        z64 = T.normal(n, T.make_key(seed, stream, dev), j0, torch.float64).cpu().numpy()
        z32 = T.normal(n, T.make_key(seed, stream, dev), j0, torch.float32).cpu().numpy()
        ia = z32.view(np.int32).astype(np.int64)
        ib = ref.astype(np.float32).view(np.int32).astype(np.int64)
        ulps = np.abs(np.where(ia < 0, -(1 << 31) - ia, ia) - np.where(ib < 0, -(1 << 31) - ib, ib))
        rel64 = float(np.max(np.abs(z64 - ref) / np.maximum(np.abs(ref), 1e-300)))
        if ulps.max() > 2:
            raise AssertionError(f"float32 normals off by up to {ulps.max()} ulp")
        return (
            f"max {int(ulps.max())} float32 ulp, {int((ulps > 0).sum())} of {n} not exact; float64 max rel {rel64:.2e}"
        )

    def custom_ops():
        import noiseshape.torch  # noqa: F401  (registers the noiseshape:: ops)

        return {
            "dropout": lambda x, key, j0, t, scale: torch.ops.noiseshape.dropout_full(x, key, j0, t, scale, False)[0],
            "dropout_add": torch.ops.noiseshape.dropout_add,
        }

    def compile_fullgraph():
        ops = custom_ops()
        key = T.make_key(seed, stream, dev)
        x = torch.randn(4096, 1024, device=dev, dtype=torch.bfloat16, requires_grad=True)
        res = torch.randn_like(x)
        t = rng.threshold(P)

        def step(x, res, key):
            y = ops["dropout_add"](x, res, None, key, 0, t, rng.keep_scale(t))
            return ops["dropout"](y, key, 4096 * 1024, t, rng.keep_scale(t)).float().sum()

        eager = step(x, res, key)
        (g_eager,) = torch.autograd.grad(eager, x)
        compiled = torch.compile(step, fullgraph=True)
        out = compiled(x, res, key)
        (g_comp,) = torch.autograd.grad(out, x)
        if not torch.equal(g_eager, g_comp):
            raise AssertionError("compiled gradient differs from eager")
        return f"fullgraph compile ok, forward {float(out):.4g} vs eager {float(eager):.4g}, gradients identical"

    def cuda_graph():
        ops = custom_ops()
        key = T.make_key(1, 0, dev)
        x = torch.randn(1 << 20, device=dev)
        t = rng.threshold(P)
        ops["dropout"](x, key, 0, t, rng.keep_scale(t))  # compile before capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = ops["dropout"](x, key, 0, t, rng.keep_scale(t))
        for s in (7, u64):
            key.copy_(T.make_key(s, 5, dev))  # new seed, no re-capture
            graph.replay()
            if not torch.equal(y, T.dropout_fwd(x, T.make_key(s, 5, dev), 0, t, rng.keep_scale(t))):
                raise AssertionError(f"graph replay with seed {s} differs from eager")
        return "replays follow in-place key updates"

    for name, fn in [
        ("keep_mask", keep_mask),
        ("dropout", dropout),
        ("normal", normals),
        ("compile_fullgraph", compile_fullgraph),
        ("cuda_graph", cuda_graph),
    ]:
        _run_check(results, name, fn)
    return results


# ---------------------------------------------------------------------------------------------------------------------
# timings


def timings(T, rng, reps: int) -> list[dict]:
    dev = torch.device("cuda")
    t = rng.threshold(P)
    scale = rng.keep_scale(t)
    key = T.make_key(1234, 1, dev)
    rows = []
    for dname, dtype in DTYPES.items():
        for shape in SHAPES:
            x = torch.randn(shape, device=dev, dtype=dtype)
            g = torch.randn_like(x)
            res = torch.randn_like(x)
            bias = torch.randn(shape[-1], device=dev, dtype=dtype)
            nbytes = x.numel() * x.element_size()
            _, mask = torch.ops.aten.native_dropout(x, P, True)
            cases = {
                ("fwd", "noiseshape"): lambda x=x: T.dropout_fwd(x, key, 0, t, scale),
                ("fwd", "torch"): lambda x=x: torch.nn.functional.dropout(x, P, training=True),
                ("fwd", "copy x*2"): lambda x=x: x * 2,
                ("fwd+bwd", "noiseshape"): lambda x=x, g=g: (
                    T.dropout_fwd(x, key, 0, t, scale),
                    T.dropout_bwd(g, key, 0, t, scale),
                ),
                ("fwd+bwd", "torch"): lambda x=x, g=g: torch.ops.aten.native_dropout_backward(
                    g, torch.ops.aten.native_dropout(x, P, True)[1], 1.0 / (1.0 - P)
                ),
                ("fwd+bwd", "copy x*2"): lambda x=x, g=g: (x * 2, g * 2),
                ("bwd only", "noiseshape"): lambda g=g: T.dropout_bwd(g, key, 0, t, scale),
                ("bwd only", "torch"): lambda g=g, m=mask: torch.ops.aten.native_dropout_backward(
                    g, m, 1.0 / (1.0 - P)
                ),
                ("res+drop(x+b)", "noiseshape fused"): lambda x=x, r=res, b=bias: T.dropout_add(
                    x, r, key, 0, t, scale, bias=b
                ),
                ("res+drop(x+b)", "torch"): lambda x=x, r=res, b=bias: (
                    r + torch.nn.functional.dropout(x + b, P, training=True)
                ),
            }
            for (op, impl), fn in cases.items():
                ms = _median_ms(fn, reps)
                moved = {"fwd": 2, "fwd+bwd": 4, "bwd only": 2, "res+drop(x+b)": 3}[op] * nbytes  # essential bytes
                rows.append(
                    {
                        "dtype": dname,
                        "shape": list(shape),
                        "op": op,
                        "impl": impl,
                        "median_ms": round(ms, 4),
                        "GB/s": round(moved / ms / 1e6, 1),
                    }
                )
                print(f"{dname} {shape} {op:14s} {impl:18s} {ms:8.3f} ms", flush=True)
            del x, g, res, mask
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# memory of a transformer block training step


class _KernelDropout(torch.nn.Module):
    """Dropout through the kernels; backward recomputes the mask, so autograd keeps only the 16-byte key."""

    def __init__(self, T, rng, p: float, stream: int):
        super().__init__()
        self.T, self.t = T, rng.threshold(p)
        self.scale = rng.keep_scale(self.t)
        self.register_buffer("key", T.make_key(2024, stream), persistent=False)

    def forward(self, x):
        if not self.training:
            return x
        return _KernelDropoutFn.apply(x, self.key, self.T, self.t, self.scale)


class _KernelDropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, key, T, t, scale):
        ctx.save_for_backward(key)
        ctx.T, ctx.t, ctx.scale = T, t, scale
        return T.dropout_fwd(x, key, 0, t, scale)

    @staticmethod
    def backward(ctx, grad):
        (key,) = ctx.saved_tensors
        return ctx.T.dropout_bwd(grad, key, 0, ctx.t, ctx.scale), None, None, None, None


def memory(T, rng, batch: int, seq: int) -> list[dict]:
    dev = torch.device("cuda")
    rows = []
    d_model, nhead, d_ff = 1024, 16, 4096
    for variant in ("torch dropout", "noiseshape kernels"):
        torch.manual_seed(0)
        layer = torch.nn.TransformerEncoderLayer(d_model, nhead, d_ff, dropout=P, batch_first=True)
        layer.self_attn.dropout = 0.0  # attention-probability dropout is inside SDPA: off in both variants
        if variant != "torch dropout":
            layer.dropout = _KernelDropout(T, rng, P, 1)
            layer.dropout1 = _KernelDropout(T, rng, P, 2)
            layer.dropout2 = _KernelDropout(T, rng, P, 3)
        layer = layer.to(dev, torch.bfloat16).train()
        x = torch.randn(batch, seq, d_model, device=dev, dtype=torch.bfloat16, requires_grad=True)
        for _ in range(2):  # warm up (kernel compilation, allocator)
            layer(x).float().sum().backward()
        layer.zero_grad(set_to_none=False)
        x.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        y = layer(x)
        after_fwd = torch.cuda.memory_allocated()
        y.float().sum().backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        ms = _median_ms(lambda layer=layer, x=x: layer(x).float().sum().backward(), 10)
        rows.append(
            {
                "variant": variant,
                "shape": [batch, seq, d_model],
                "saved_for_backward_MiB": round((after_fwd - before) / 2**20, 1),
                "step_peak_above_start_MiB": round((peak - before) / 2**20, 1),
                "step_ms": round(ms, 3),
            }
        )
        print(f"memory {variant}: {rows[-1]}", flush=True)
        del layer, x, y
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------------------------------


def _markdown(report: dict) -> str:
    lines = [f"## noiseshape GPU benchmark ({report['device']})", ""]
    lines += ["| check | ok | detail |", "|---|---|---|"]
    lines += [f"| {k} | {'yes' if v['ok'] else '**no**'} | {v['detail']} |" for k, v in report["checks"].items()]
    lines += ["", f"p = {P}; CUDA-event medians.", ""]
    lines += ["| dtype | shape | op | impl | median ms | GB/s |", "|---|---|---|---|---:|---:|"]
    lines += [
        f"| {r['dtype']} | {tuple(r['shape'])} | {r['op']} | {r['impl']} | {r['median_ms']:.3f} | {r['GB/s']} |"
        for r in report["timings"]
    ]
    lines += ["", "| transformer block step (bf16) | saved for backward MiB | peak above start MiB | step ms |"]
    lines += ["|---|---:|---:|---:|"]
    lines += [
        f"| {r['variant']} {tuple(r['shape'])} | {r['saved_for_backward_MiB']} | {r['step_peak_above_start_MiB']} "
        f"| {r['step_ms']} |"
        for r in report["memory"]
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the report here (default: $OUT/gpu.json when OUT is set)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller block")
    parser.add_argument("--no-checks", action="store_true", help="skip the correctness checks")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device; nothing to do")
        return 0
    from noiseshape import _rng as rng
    from noiseshape.torch import _triton as T

    if not T.available():
        print("benchmarks/gpu.py: Triton is not installed (pip install triton); nothing to do")
        return 0

    t0 = time.perf_counter()
    import triton

    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "p": P,
    }
    report["checks"] = {} if args.no_checks else checks(T, rng)
    report["timings"] = timings(T, rng, reps=10 if args.quick else 50)
    report["memory"] = memory(T, rng, batch=8 if args.quick else 32, seq=512)
    report["seconds"] = round(time.perf_counter() - t0, 1)

    print()
    print(_markdown(report))
    path = args.json or (os.path.join(os.environ["OUT"], "gpu.json") if os.environ.get("OUT") else None)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {path}")
    return 0 if all(c["ok"] for c in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
