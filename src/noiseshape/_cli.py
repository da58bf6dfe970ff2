"""The ``noiseshape`` command line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]

_DEMO = """\
noise_shape in one picture: x has shape (batch=2, timesteps=3, features=4) and
noise_shape=(None, 1, 4) draws one feature mask per sample, shared by every timestep.

>>> import numpy as np, noiseshape as ns
>>> x = np.arange(1, 25, dtype=np.float32).reshape(2, 3, 4)
>>> ns.resolve_noise_shape(x.shape, (None, 1, 4))
{reduced}
>>> ns.numpy.keep_mask(x.shape, 0.5, (None, 1, 4), seed=0).astype(int)
{mask}
>>> ns.numpy.dropout(x, 0.5, noise_shape=(None, 1, 4), seed=0)
{output}
"""


def _demo() -> str:
    import numpy as np

    from . import numpy as nsn
    from ._spec import resolve_noise_shape

    x = np.arange(1, 25, dtype=np.float32).reshape(2, 3, 4)
    return _DEMO.format(
        reduced=resolve_noise_shape(x.shape, (None, 1, 4)),
        mask=nsn.keep_mask(x.shape, 0.5, (None, 1, 4), seed=0).astype(int),
        output=nsn.dropout(x, 0.5, noise_shape=(None, 1, 4), seed=0),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="noiseshape", description="Shaped dropout masks: what a noise_shape means, drawn."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="print the classic (batch, timesteps, features) example (the default)")
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        sys.stdout.write(_demo())
    return 0
