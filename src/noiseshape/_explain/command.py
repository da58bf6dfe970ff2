"""``noiseshape explain``: its arguments, and the run that prints the report, the JSON or a plot."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from .._errors import NoiseShapeError, fail
from .facts import DEFAULT_DYNAMIC_SIZE, OP, explain
from .json_facts import to_json
from .parse import int_arg, parse_dims, parse_noise_shape, parse_rate, parse_shape, split
from .plot import PLOT_HINT, plot
from .text import render_text

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``noiseshape explain``."""
    p.add_argument("shape", help="input shape, e.g. 2,3,4 or None,64,50,1 (None, _ or ? for a dynamic size)")
    # Not a mutually exclusive group: resolve() explains why only one of the two may be given.
    p.add_argument("--noise-shape", metavar="SHAPE", help="Keras noise_shape, e.g. None,1,4 (None/_/? or ...)")
    p.add_argument("--broadcast-dims", metavar="AXES", help="Flax broadcast_dims: the axes that share a draw, e.g. 1")
    p.add_argument("--rate", default="0.5", help="drop probability (default 0.5)")
    p.add_argument("--seed", default="0", help="seed (default 0)")
    p.add_argument("--stream", default="0", help="stream (default 0)")
    p.add_argument("--batch-offset", default="0", help="global index of the first sample (default 0)")
    p.add_argument(
        "--axes", metavar="NAMES", help="axis labels, e.g. batch,timesteps,features (plural nouns read best)"
    )
    p.add_argument(
        "--dynamic-size",
        default=str(DEFAULT_DYNAMIC_SIZE),
        help=f"display size of a dynamic input size (default {DEFAULT_DYNAMIC_SIZE})",
    )
    p.add_argument("--plot", metavar="FILE", help="draw the reduced and the broadcast mask to FILE.png or FILE.svg")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Run ``noiseshape explain`` for parsed arguments; returns the exit status."""
    try:
        if args.plot is not None and not args.plot.lower().endswith((".png", ".svg")):
            raise fail(OP, f"--plot {args.plot!r}: give a file name ending in .png or .svg")
        shape = parse_shape(args.shape)
        noise_shape = parse_noise_shape(args.noise_shape) if args.noise_shape is not None else None
        dims = parse_dims(args.broadcast_dims) if args.broadcast_dims is not None else None
        axes = split(args.axes) if args.axes is not None else None
        ex = explain(
            shape,
            noise_shape,
            dims,
            rate=parse_rate(args.rate),
            seed=int_arg(args.seed),
            stream=int_arg(args.stream),
            batch_offset=int_arg(args.batch_offset),
            axes=axes,
            dynamic_size=int_arg(args.dynamic_size),
        )
    except NoiseShapeError as err:
        stderr.write(f"{err}\n")
        return 2
    status = 0
    plotted = None
    if args.plot is not None:
        try:
            plot(ex, args.plot)
            plotted = args.plot
        except ImportError:
            stderr.write(PLOT_HINT + "\n")
            status = 1
        except OSError as err:
            stderr.write(f"{OP}: cannot write {args.plot}: {err.strerror or err}\n")
            status = 1
    if args.json:
        data = to_json(ex)
        data["plot"] = plotted
        stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        stdout.write(render_text(ex))
        if plotted:
            stdout.write(f"\nPlot written to {plotted}\n")
    return status
