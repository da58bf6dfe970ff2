"""JAX PRNG keys as (seed, stream): the exact mapping, so a JAX mask can be reproduced anywhere.

A key's raw data (``jax.random.key_data(key)``) is a row of unsigned 32-bit words ``w``. Its 64-bit
``seed`` is the XOR of the word pairs read big-end first::

    seed = (w[0] << 32 | w[1]) ^ (w[2] << 32 | w[3]) ^ ...

For the default ``threefry2x32`` keys (two words) that is ``seed = w[0] << 32 | w[1]``, so
``jax.random.key(s)`` has seed ``s`` for every ``0 <= s < 2**63``. The ``stream`` is never taken from
the key: it is the ``stream=`` argument (0 by default). With that seed and stream, ``noiseshape.numpy``
and ``noiseshape.torch`` draw the same mask (:func:`seed_of` gives the seed as a Python integer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import fail
from .._spec import check_u64

__all__ = ["key_of", "seed_of"]


def _words(op: str, key, shape=None, spec=None):
    """The uint32 words of a single key (typed or raw), checked."""
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(key)
    elif isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32:
        data = key
    else:
        raise fail(
            op,
            f"key is {type(key).__name__} {getattr(key, 'dtype', '')}".rstrip()
            + "; give a JAX PRNG key (jax.random.key(0), or a raw jax.random.PRNGKey(0)), or seed=<int>",
            shape=shape,
            spec=spec,
        )
    if data.ndim != 1 or data.shape[0] % 2:
        raise fail(
            op,
            f"key has raw data of shape {tuple(data.shape)}, not one key; "
            "give one key: split it and map over the parts with jax.vmap, or index one (keys[0])",
            shape=shape,
            spec=spec,
        )
    return data


def key_of(op: str, key, seed, stream, shape=None, spec=None):
    """The words ``[seed_hi, seed_lo, stream_hi, stream_lo]`` (uint32) of a call, from ``key`` or ``seed``."""
    stream = check_u64(stream, name="stream", op=op, shape=shape, spec=spec)
    if key is not None and seed is not None:
        raise fail(
            op,
            "key and seed both given; give key=<jax PRNG key> (the JAX way) or seed=<int> (a fixed draw), not both",
            shape=shape,
            spec=spec,
        )
    if key is None:
        if seed is None:
            raise fail(
                op,
                "no randomness given: pass key=jax.random.key(0) (split or fold it per call), or seed=<int>",
                shape=shape,
                spec=spec,
            )
        seed = check_u64(seed, name="seed", op=op, shape=shape, spec=spec)
        return np.array([seed >> 32, seed & 0xFFFFFFFF, stream >> 32, stream & 0xFFFFFFFF], np.uint32)
    data = _words(op, key, shape, spec)
    hi, lo = data[0], data[1]
    for i in range(2, data.shape[0], 2):
        hi, lo = hi ^ data[i], lo ^ data[i + 1]
    return jnp.stack([hi, lo, jnp.uint32(stream >> 32), jnp.uint32(stream & 0xFFFFFFFF)])


def seed_of(key) -> int:
    """The 64-bit seed noiseshape reads from a JAX PRNG key, as a Python integer (the key must be concrete).

    >>> import jax
    >>> seed_of(jax.random.key(42))
    42
    >>> seed_of(jax.random.wrap_key_data(jax.numpy.array([1, 2], jax.numpy.uint32)))   # (1 << 32) | 2
    4294967298
    """
    words = np.asarray(_words("noiseshape.jax.seed_of", key), dtype=np.uint64)
    seed = 0
    for i in range(0, words.shape[0], 2):
        seed ^= (int(words[i]) << 32) | int(words[i + 1])
    return seed
