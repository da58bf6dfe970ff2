"""JAX frontend: the shaped-noise family on JAX arrays, and Flax modules (``noiseshape.jax.linen``, ``.nnx``).

>>> import jax, jax.numpy as jnp, noiseshape.jax as nsj
>>> x = jnp.ones((4, 6, 8))
>>> y = nsj.dropout(x, 0.2, broadcast_dims=(1,), key=jax.random.key(0))     # Flax's spelling
>>> bool((y == y[:, :1]).all())
True
>>> y = nsj.dropout(x, 0.2, noise_shape=(None, 1, None), seed=0)           # Keras' spelling, explicit seed
>>> nsj.seed_of(jax.random.key(7))      # the seed a key stands for: reproduce the mask in NumPy or PyTorch
7

Masks are drawn by Philox4x32-10 written in ``jax.numpy`` on uint32 words (the 64-bit products of a
round are ``x * M`` and ``lax.mulhi(x, M)``), which XLA compiles for CPU, GPU and TPU alike; they are
bit-identical to :mod:`noiseshape.numpy` and :mod:`noiseshape.torch` for the same seed and stream.
A JAX key stands for ``seed = key_data[0] << 32 | key_data[1]`` (XOR-folded over word pairs for
longer keys); ``stream`` is an argument (0 by default). Normal variates (Gaussian noise and dropout)
are computed in float64 when ``jax_enable_x64`` is on (the contract's 2 float32 ulp); in float32
otherwise, where they stay within 6 float32 ulp of the reference.

Importing ``noiseshape`` never imports JAX; importing ``noiseshape.jax`` imports JAX, and Flax only
when ``noiseshape.jax.linen`` or ``noiseshape.jax.nnx`` is used.
"""

from __future__ import annotations

import importlib

from ._keys import seed_of
from .functional import (
    alpha_dropout,
    drop_path,
    dropout,
    gaussian_dropout,
    gaussian_noise,
    keep_mask,
    spatial_dropout1d,
    spatial_dropout2d,
    spatial_dropout3d,
)

__all__ = [
    "alpha_dropout",
    "drop_path",
    "dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "keep_mask",
    "seed_of",
    "spatial_dropout1d",
    "spatial_dropout2d",
    "spatial_dropout3d",
]

_FLAX = ("linen", "nnx")


def __getattr__(name: str):
    if name in _FLAX:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_FLAX])
