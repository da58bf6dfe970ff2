"""The ``noiseshape`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["main"]

DEMO_SEED = 13  # a draw where each sample keeps some features and drops others, differently per sample

_DEMO = """\
noise_shape in one picture: x has shape (batch=2, timesteps=3, features=4) and
noise_shape=(None, 1, 4) draws one feature mask per sample, shared by every timestep.

>>> import numpy as np, noiseshape as ns
>>> x = np.arange(1, 25, dtype=np.float32).reshape(2, 3, 4)
>>> ns.resolve_noise_shape(x.shape, (None, 1, 4))
{reduced}
>>> ns.numpy.keep_mask(x.shape, 0.5, (None, 1, 4), seed={seed}).astype(int)
{mask}
>>> ns.numpy.dropout(x, 0.5, noise_shape=(None, 1, 4), seed={seed})
{output}

{words}
Kept values are scaled by 1 / (1 - rate) = 2, so the expected output equals x.

For any other shape: noiseshape explain 2,3,4 --noise-shape None,1,4 --seed {seed}
"""


def _demo() -> str:
    import numpy as np

    from . import _rng
    from ._spec import resolve

    x = np.arange(1, 25, dtype=np.float32).reshape(2, 3, 4)
    spec = resolve(x.shape, (None, 1, 4))
    try:
        from . import numpy as nsn

        mask = nsn.keep_mask(x.shape, 0.5, (None, 1, 4), seed=DEMO_SEED)
        output = nsn.dropout(x, 0.5, noise_shape=(None, 1, 4), seed=DEMO_SEED)
    except ImportError:  # the compiled core is not built: the reference draws the same mask
        t = _rng.threshold(0.5)
        mask = _rng.keep_flags(spec.shape, DEMO_SEED, 0, t)
        output = np.where(mask, x * np.float32(_rng.keep_scale(t)), np.float32(0))
    words = "\n".join(
        f"sample {s} keeps features {' and '.join(map(str, np.flatnonzero(mask[s, 0])))} at every timestep "
        f"and drops the others"
        for s in range(2)
    )
    return _DEMO.format(reduced=spec.shape, mask=mask.astype(int), output=output, seed=DEMO_SEED, words=words)


def _bench(rest: list[str]) -> int:
    name = "_bench"
    if rest[:1] == ["--jax"]:  # the JAX group: noiseshape bench --jax [its arguments]
        name, rest = "_bench_jax", rest[1:]
    try:
        bench = importlib.import_module(f"{__package__}.{name}")
    except ImportError as err:
        sys.stderr.write(f"noiseshape bench is not available: {err}\n")
        return 1
    return bench.main(rest)


def _parser() -> argparse.ArgumentParser:
    from . import __version__, _explain

    parser = argparse.ArgumentParser(
        prog="noiseshape", description="Shaped dropout masks: what a noise_shape means, drawn."
    )
    parser.add_argument("--version", action="version", version=f"noiseshape {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="print the classic (batch, timesteps, features) example (the default)")
    explain = sub.add_parser(
        "explain",
        help="explain a noise_shape or broadcast_dims for one input shape, in pictures and words",
        description="Show the input, the reduced mask, the broadcast mask and the output for an input shape, "
        "say in words what the spec means, and print its equivalent spellings.",
        epilog="examples:\n  noiseshape explain 2,3,4 --noise-shape 2,1,4 --rate 0.5 --seed 0\n"
        "  noiseshape explain 32,64,50,1 --noise-shape None,64,1,1\n"
        "  noiseshape explain 8,20,16 --broadcast-dims 1 --axes batch,timesteps,features",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _explain.add_arguments(explain)
    sub.add_parser(
        "bench", help="benchmark the backends (arguments are passed on; --jax first for the JAX group)", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # the reader went away (e.g. `noiseshape explain ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: usage errors exit with status 2, --help with 0
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command in (None, "demo"):
        sys.stdout.write(_demo())
        return 0
    if args.command == "explain":
        from . import _explain

        return _explain.run(args, sys.stdout, sys.stderr)
    return 0
