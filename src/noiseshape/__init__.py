"""noiseshape: shaped random noise for neural networks.

Dropout whose mask is drawn at a reduced ``noise_shape`` (Keras) or with ``broadcast_dims`` (Flax)
and broadcast over the shared axes, on one counter-based RNG (Philox4x32-10): every mask is a pure
function of (seed, stream, global mask coordinate), on every backend.

Frontends: :mod:`noiseshape.numpy`, :mod:`noiseshape.torch` and :mod:`noiseshape.jax` (imported on first
use; importing ``noiseshape`` alone imports no framework).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from ._coords import Coords, global_samples
from ._errors import NoiseShapeError
from ._rng import philox4x32
from ._spec import resolve_noise_shape
from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "Coords",
    "NoiseShapeError",
    "__version__",
    "get_num_threads",
    "global_samples",
    "philox4x32",
    "resolve_noise_shape",
    "set_num_threads",
]

if TYPE_CHECKING:  # what the lazy __getattr__ below returns, spelled out for type checkers
    from . import numpy as numpy
    from . import torch as torch

_FRONTENDS = ("jax", "numpy", "torch")


def __getattr__(name: str) -> ModuleType:
    if name in _FRONTENDS:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FRONTENDS])
