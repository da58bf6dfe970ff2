"""``flax.nnx`` modules of the shaped-noise family; :class:`Dropout` takes what ``flax.nnx.Dropout`` takes.

Randomness the NNX way: ``rngs=nnx.Rngs(dropout=0)`` at construction (the module keeps a fork of the
``rng_collection`` stream) or ``rngs=`` at call time (an ``Rngs``, an ``RngStream`` or a key). Each
call draws a fresh key from the stream; the key maps to (seed, stream) as :mod:`noiseshape.jax`
documents, with ``stream`` an argument (0). ``deterministic`` comes from the call, the constructor or
``nnx.view(model, deterministic=...)``.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> from noiseshape.jax import nnx as nsx
>>> drop = nsx.Dropout(0.5, broadcast_dims=(1,), rngs=nnx.Rngs(dropout=0))
>>> y = drop(jnp.ones((2, 3, 4)))
>>> bool((y == y[:, :1]).all()), bool((drop(jnp.ones((2, 3, 4))) != y).any())   # a new mask per call
(True, True)
>>> bool((drop(jnp.ones((2, 3, 4)), deterministic=True) == 1).all())    # deterministic: the input, unchanged
True
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

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


class _Noise(nnx.Module):
    """What every module shares: ``deterministic``, the ``rngs`` stream, ``stream`` and ``nnx.view`` support."""

    def __init__(self, *, deterministic, rng_collection, rngs, stream):
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.stream = stream
        if isinstance(rngs, nnx.Rngs):
            self.rngs = rngs[rng_collection].fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise fail(
                f"noiseshape.jax.nnx.{type(self).__name__}",
                f"rngs is a {type(rngs).__name__}; give nnx.Rngs(dropout=0), an nnx.RngStream, or None",
            )

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view(model, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = deterministic

    def _run(self, fn, inputs, deterministic, rngs, batch_offset, *args, **kwargs):
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic is None:
            raise fail(
                f"noiseshape.jax.nnx.{type(self).__name__}",
                "deterministic is not set; pass deterministic=True/False to the constructor or the call, "
                "or use nnx.view(model, deterministic=...)",
                shape=getattr(inputs, "shape", None),
            )
        if deterministic:
            return fn(inputs, *args, deterministic=True, **kwargs)
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, nnx.Rngs):
            key = rngs[self.rng_collection]()
        elif isinstance(rngs, nnx.RngStream):
            key = rngs()
        elif isinstance(rngs, jax.Array):
            key = rngs
        else:
            raise fail(
                f"noiseshape.jax.nnx.{type(self).__name__}",
                f"deterministic is False but rngs is {type(rngs).__name__}; pass rngs=nnx.Rngs(dropout=0) to "
                "the constructor, or rngs= (an Rngs, an RngStream or a key) to the call",
                shape=getattr(inputs, "shape", None),
            )
        return fn(inputs, *args, key=key, stream=self.stream, batch_offset=batch_offset, **kwargs)


class _Shaped(_Noise):
    _fn = None

    def __init__(
        self,
        rate: float,
        *,
        noise_shape=None,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
        stream: int = 0,
    ):
        self.rate = rate
        self.noise_shape = noise_shape
        self.broadcast_dims = tuple(broadcast_dims)
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, stream=stream)

    def _dims(self) -> dict:
        if self.noise_shape is not None and not self.broadcast_dims:
            return {"noise_shape": self.noise_shape}
        return {"noise_shape": self.noise_shape, "broadcast_dims": self.broadcast_dims}

    def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None, batch_offset=0):
        return self._run(type(self)._fn, inputs, deterministic, rngs, batch_offset, self.rate, **self._dims())


class Dropout(_Shaped):
    """Dropout (Srivastava et al., 2014) at a noise shape: ``nnx.Dropout``'s arguments plus ``noise_shape``, ``stream``.

    ``__call__(inputs, *, deterministic=None, rngs=None, batch_offset=0)``.
    """

    _fn = staticmethod(F.dropout)


class AlphaDropout(_Shaped):
    """Alpha dropout (Klambauer et al., 2017) for SELU networks: see :func:`noiseshape.jax.alpha_dropout`."""

    _fn = staticmethod(F.alpha_dropout)


class GaussianDropout(_Shaped):
    """Gaussian dropout (Srivastava et al., 2014): multiplicative ``N(1, rate / (1 - rate))`` noise."""

    _fn = staticmethod(F.gaussian_dropout)


class GaussianNoise(_Shaped):
    """Additive Gaussian noise ``x + stddev * z`` at a noise shape (Keras ``GaussianNoise``); ``rate`` is the stddev."""

    _fn = staticmethod(F.gaussian_noise)


class DropPath(_Noise):
    """Stochastic depth (Huang et al., 2016): one draw per sample, for residual branches."""

    def __init__(
        self,
        rate: float,
        *,
        scale_by_keep: bool = True,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
        stream: int = 0,
    ):
        self.rate = rate
        self.scale_by_keep = scale_by_keep
        super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, stream=stream)

    def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None, batch_offset=0):
        kw = {"scale_by_keep": self.scale_by_keep}
        return self._run(F.drop_path, inputs, deterministic, rngs, batch_offset, self.rate, **kw)


def _spatial(dims: int):
    fn = getattr(F, f"spatial_dropout{dims}d")

    class SpatialDropout(_Noise):
        def __init__(
            self,
            rate: float,
            data_format: str = "channels_last",
            *,
            deterministic: bool | None = False,
            rng_collection: str = "dropout",
            rngs: nnx.Rngs | nnx.RngStream | None = None,
            stream: int = 0,
        ):
            self.rate = rate
            self.data_format = data_format
            super().__init__(deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, stream=stream)

        def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None, batch_offset=0):
            return self._run(fn, inputs, deterministic, rngs, batch_offset, self.rate, self.data_format)

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
