"""JAX benchmark: noiseshape.jax against ``flax.linen.Dropout`` and the floor ``x * 2``, all under ``jit``.

Run it with ``noiseshape bench --jax`` or ``python benchmarks/jax.py``. Medians of one run, each case
timed to ``block_until_ready``; the ratios are to the floor of the group.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import _bench

__all__ = ["main"]


def _cases(shape, rate):
    """Yield (group, name, setup) like :func:`noiseshape._bench._cases`; the first of a group is its floor."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    import noiseshape.jax as nsj

    x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    g = jax.random.normal(jax.random.key(1), shape, jnp.float32)
    key = jax.random.key(2)
    dims = (1,) if len(shape) > 1 else ()

    def flax_drop(v, k, broadcast_dims=()):
        return nn.Dropout(rate, broadcast_dims=broadcast_dims).apply({}, v, deterministic=False, rngs={"dropout": k})

    forward = [
        ("floor: x * 2.0", lambda v, k: v * 2.0),
        ("noiseshape.jax.dropout", lambda v, k: nsj.dropout(v, rate, key=k)),
        (
            f"noiseshape.jax.dropout broadcast_dims={dims}",
            lambda v, k: nsj.dropout(v, rate, broadcast_dims=dims, key=k),
        ),
        ("flax.linen.Dropout", flax_drop),
        (f"flax.linen.Dropout broadcast_dims={dims}", lambda v, k: flax_drop(v, k, dims)),
    ]

    def timed(fn):
        def setup():
            compiled = jax.jit(fn)
            return lambda: jax.block_until_ready(compiled(x, key))

        return setup

    for name, fn in forward:
        yield "JAX forward (jit)", name, timed(fn)

    def with_grad(fn):
        return lambda v, k: jax.value_and_grad(lambda u: (fn(u, k) * g).sum())(v)

    for name, fn in forward:
        label = "floor: grad of (x * 2 * g).sum()" if name.startswith("floor") else name
        yield "JAX forward+backward (jit grad)", label, timed(with_grad(fn))

    from . import numpy as nsn

    xn = np.asarray(x)
    yield "C core, for scale (an FFI call's ceiling)", "floor: NumPy x * 2.0", lambda: lambda: xn * 2.0
    yield (
        "C core, for scale (an FFI call's ceiling)",
        "noiseshape.numpy.dropout",
        lambda: lambda: nsn.dropout(xn, rate, seed=1),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="noiseshape bench --jax", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,128,512", help="input shape, comma separated (default 64,128,512)")
    parser.add_argument("--rate", type=float, default=0.1, help="drop rate (default 0.1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per case (default 30)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    try:
        shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError:
        parser.error(f"--shape is {args.shape!r}; give sizes separated by commas, e.g. 64,128,512")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        import flax
        import jax
    except ImportError as err:
        sys.stderr.write(f"noiseshape bench --jax needs JAX and Flax (pip install 'noiseshape[jax]'): {err}\n")
        return 1

    def progress(name: str) -> None:
        if not args.quiet:
            print(f"  measuring {name} ...", file=sys.stderr, flush=True)

    rows = _bench.run(shape, args.rate, args.repeats, progress, make_cases=_cases)
    machine = f"{_bench.machine()}, JAX {jax.__version__} on {jax.devices()[0].platform}, Flax {flax.__version__}"
    print(f"float32 {shape}, rate {args.rate}, medians of {args.repeats} runs")
    print(f"machine: {machine}")
    print(_bench.table(rows))
    for group in ("JAX forward (jit)", "JAX forward+backward (jit grad)"):
        times = {r["name"]: r["median_ms"] for r in rows if r["group"] == group}
        ours, peer = times["noiseshape.jax.dropout"], times["flax.linen.Dropout"]
        print(f"{group}: flax.linen.Dropout takes {peer / ours:.1f}x the time of noiseshape.jax.dropout")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": shape, "rate": args.rate, "machine": machine, "rows": rows}, f, indent=2)
    return 0
