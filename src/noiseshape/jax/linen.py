"""``flax.linen`` modules of the shaped-noise family; :class:`Dropout` is a drop-in for ``flax.linen.Dropout``.

Each module takes its randomness the Flax way: ``self.make_rng(rng_collection)`` (``"dropout"`` by
default, fed by ``model.apply(..., rngs={"dropout": key})``), or an explicit ``rng=`` key. The key a
call draws maps to (seed, stream) as :mod:`noiseshape.jax` documents, with ``stream`` a field (0).

>>> import jax, jax.numpy as jnp, flax.linen as nn
>>> from noiseshape.jax import linen as nsl
>>> drop = nsl.Dropout(0.5, broadcast_dims=(1,))
>>> y = drop.apply({}, jnp.ones((2, 3, 4)), deterministic=False, rngs={"dropout": jax.random.key(0)})
>>> bool((y == y[:, :1]).all())
True
>>> bool((drop.apply({}, jnp.ones((2, 3, 4)), deterministic=True) == 1).all())   # deterministic: unchanged
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn

from .._errors import fail
from . import functional as F

__all__ = [
    "AlphaDropout",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "SpatialDropout1d",
    "SpatialDropout2d",
    "SpatialDropout3d",
]


def _call(module, fn, inputs, deterministic, rng, batch_offset, *args, **kwargs):
    """Run ``fn`` the Flax way: ``deterministic`` merged with the field, the key from ``rng`` or ``make_rng``."""
    if (module.deterministic is None) == (deterministic is None):
        given = "both the field and the call" if deterministic is not None else "neither the field nor the call"
        raise fail(
            f"noiseshape.jax.linen.{type(module).__name__}",
            f"deterministic is given by {given}; set it in exactly one place (as flax.linen.Dropout requires)",
            shape=getattr(inputs, "shape", None),
        )
    deterministic = module.deterministic if deterministic is None else deterministic
    if deterministic:
        return fn(inputs, *args, deterministic=True, **kwargs)
    if rng is None:
        rng = module.make_rng(module.rng_collection)
    return fn(inputs, *args, key=rng, stream=module.stream, batch_offset=batch_offset, **kwargs)


def _dims(module) -> dict:
    """``noise_shape`` or ``broadcast_dims``: Flax's default ``broadcast_dims=()`` gives way to a noise shape."""
    if module.noise_shape is not None and not module.broadcast_dims:
        return {"noise_shape": module.noise_shape}
    return {"noise_shape": module.noise_shape, "broadcast_dims": tuple(module.broadcast_dims)}


class _Shaped(nn.Module):
    """Fields shared by the modules whose noise takes a ``noise_shape`` or ``broadcast_dims``."""

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    noise_shape: Any = None
    stream: int = 0

    _fn: ClassVar[Any] = None

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None, *, batch_offset=0):
        return _call(self, type(self)._fn, inputs, deterministic, rng, batch_offset, self.rate, **_dims(self))


class Dropout(_Shaped):
    """Dropout (Srivastava et al., 2014) at a noise shape: ``flax.linen.Dropout`` with the same fields, plus more.

    Fields as in Flax (``rate``, ``broadcast_dims``, ``deterministic``, ``rng_collection``) and
    ``noise_shape`` (Keras' spelling) and ``stream``. ``__call__(inputs, deterministic=None, rng=None,
    *, batch_offset=0)``: ``batch_offset`` is the global index of ``inputs[0]`` (micro-batches then
    reproduce the whole batch's masks).
    """

    _fn = staticmethod(F.dropout)


class AlphaDropout(_Shaped):
    """Alpha dropout (Klambauer et al., 2017) for SELU networks: see :func:`noiseshape.jax.alpha_dropout`."""

    _fn = staticmethod(F.alpha_dropout)


class GaussianDropout(_Shaped):
    """Gaussian dropout (Srivastava et al., 2014): multiplicative ``N(1, rate / (1 - rate))`` noise."""

    _fn = staticmethod(F.gaussian_dropout)


class GaussianNoise(nn.Module):
    """Additive Gaussian noise ``x + stddev * z`` at a noise shape (Keras ``GaussianNoise``)."""

    stddev: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    noise_shape: Any = None
    stream: int = 0

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None, *, batch_offset=0):
        return _call(self, F.gaussian_noise, inputs, deterministic, rng, batch_offset, self.stddev, **_dims(self))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): one draw per sample, for residual branches."""

    rate: float
    scale_by_keep: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    stream: int = 0

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None, *, batch_offset=0):
        fn = F.drop_path
        return _call(self, fn, inputs, deterministic, rng, batch_offset, self.rate, scale_by_keep=self.scale_by_keep)


def _spatial(dims: int):
    fn = getattr(F, f"spatial_dropout{dims}d")

    class SpatialDropout(nn.Module):
        rate: float
        data_format: str = "channels_last"
        deterministic: bool | None = None
        rng_collection: str = "dropout"
        stream: int = 0

        @nn.compact
        def __call__(self, inputs, deterministic: bool | None = None, rng=None, *, batch_offset=0):
            return _call(self, fn, inputs, deterministic, rng, batch_offset, self.rate, self.data_format)

    name = f"SpatialDropout{dims}d"
    SpatialDropout.__name__ = SpatialDropout.__qualname__ = name
    SpatialDropout.__module__ = __name__
    SpatialDropout.__doc__ = (
        f"Spatial dropout (Tompson et al., 2015) of {dims}-d feature maps: one draw per (sample, channel); "
        f"channels last by default. See :func:`noiseshape.jax.spatial_dropout{dims}d`."
    )
    return SpatialDropout


SpatialDropout1d = _spatial(1)
SpatialDropout2d = _spatial(2)
SpatialDropout3d = _spatial(3)
