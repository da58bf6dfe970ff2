"""``noiseshape explain``: what a noise shape means for one input shape, in pictures and in words.

The facts (:mod:`.facts`) come from the reference implementation of the RNG contract, bit-identical
to what the compiled frontends draw; :mod:`.text`, :mod:`.json_facts` and :mod:`.plot` present them,
:mod:`.command` reads the command line. Axis 0 is taken as the batch axis, as in Keras and Flax.
"""

from __future__ import annotations

from .command import add_arguments, run
from .equivalents import equivalents
from .facts import Axis, Explanation, explain
from .json_facts import to_json
from .parse import parse_dims, parse_noise_shape, parse_shape
from .text import render_text

__all__ = [
    "Axis",
    "Explanation",
    "add_arguments",
    "equivalents",
    "explain",
    "parse_dims",
    "parse_noise_shape",
    "parse_shape",
    "render_text",
    "run",
    "to_json",
]
