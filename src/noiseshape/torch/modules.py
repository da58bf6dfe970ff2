"""Module forms of the shaped-noise family: thin wrappers over :mod:`noiseshape.torch.functional`.

Every layer follows ``self.training`` (in eval mode it returns its input unchanged, at no cost).
With ``seed=None`` each training call draws a fresh seed from torch's default CPU generator; with
``seed=<int>`` the layer owns a stream counter (the buffer ``rng_key = [seed, stream]``) that
advances once per training call and is saved in ``state_dict``, so a resumed run continues with the
masks it would have drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import _coords, _rng
from .._errors import axes_text, fail
from .._spec import _fmt, check_flag, check_noise_args, check_rate, check_u64, resolve
from .._types import BroadcastDims, NoiseShape
from . import _eager, _ops, _plans, _replay
from . import _engines as ne
from . import _regions as nr
from . import distributed as _dist
from . import functional as nf

_U64 = (1 << 64) - 1
_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor

__all__ = [
    "AlphaDropout",
    "DropBlock2d",
    "DropPath",
    "Dropout",
    "EmbeddingDropout",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "GaussianNoise",
    "LockedDropout",
    "SpatialDropout1d",
    "SpatialDropout2d",
    "SpatialDropout3d",
    "WeightDropout",
]


def _word(counter, i: int) -> int:
    """Word ``i`` of a layer's key (a NumPy view or a tensor) as an unsigned 64-bit int."""
    return (counter.item(i) if type(counter) is np.ndarray else int(counter[i])) & _U64


class _NoiseLayer(nn.Module):
    """Shared machinery: seed and stream counter, the noise shape of a call, ``extra_repr``."""

    #: the axis of the batch in the input (where ``share_batch`` puts a single draw)
    batch_axis = 0
    #: ``[seed, stream counter]`` of a seeded layer (a buffer, so it is saved in ``state_dict``)
    rng_key: Tensor

    def __init__(
        self,
        *,
        seed: int | None = None,
        noise_shape: NoiseShape | None = None,
        broadcast_dims: BroadcastDims | None = None,
    ) -> None:
        super().__init__()
        op = self._op()
        self.noise_shape, self.broadcast_dims = check_noise_args(noise_shape, broadcast_dims, op=op)
        self.seed = None if seed is None else check_u64(seed, name="seed", op=op)
        if self.seed is not None:
            self.register_buffer("rng_key", _ops.make_key(self.seed))
        #: one draw shared across the batch axis (set by :func:`noiseshape.torch.mc_dropout`)
        self.share_batch = False

    _op_name = "noiseshape.torch._NoiseLayer"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._op_name = f"noiseshape.torch.{cls.__name__}"

    @classmethod
    def _op(cls) -> str:
        return cls._op_name

    def next_key(self, x: Tensor):
        """The key of a call on ``x`` (see :func:`~noiseshape.torch.functional.call_key`); advances a seeded layer.

        On the eager path a seeded layer's call inside a checkpointed segment is matched to its
        forward, so a recomputation draws the forward's masks (see :mod:`._replay`); under
        ``torch.compile`` the key is read through :func:`._replay.stream_key`, which checkpoint saves.
        """
        if _eager.eager_ok(x):
            if self.seed is None:
                return (_eager.draw_seed(None), 0)
            return self._eager_key()
        if self.seed is None:
            return ne.draw_key(None, 0, None, x.device)
        if _dist.is_dtensor(x) and not torch.compiler.is_compiling():  # DTensor activations replay like eager ones
            return _ops.make_key(*self._eager_key(), x.device)
        key = _replay.stream_key(self.rng_key) if torch.compiler.is_compiling() else self.rng_key.clone()
        self.rng_key[1] += 1
        return key.to(x.device)

    def _counter(self):
        """``rng_key`` as something indexable by Python: a NumPy view of a plain CPU buffer, else the buffer.

        The view is kept and reused while it is a view of the buffer's memory: its base is a tensor
        at the buffer's address (a copied or unpickled layer's kept view owns its memory, no base).
        """
        key = self._buffers.get("rng_key")
        if key is None:
            return self.rng_key
        plain = type(key) is Tensor and key.is_cpu and not _is_wrapped(key)
        kept = self.__dict__.get("_rng_view")
        if plain and kept is not None and kept.base is not None and kept.base.data_ptr() == key.data_ptr():
            return kept
        if plain:
            with _eager._plain():  # also a layer made outside a torch.func transform and called inside it
                view = self.__dict__["_rng_view"] = key.numpy()
            return view
        return key

    def _eager_key(self) -> tuple[int, int]:
        """``(seed, stream)`` of a seeded layer's eager call (:func:`._replay.take_stream`), the counter read once."""
        counter = self._counter()
        return _word(counter, 0), _replay.take_stream(self, self._advance, counter)

    def _advance(self, counter) -> int:
        """The value of the stream counter ``counter`` (:meth:`_counter`); it moves on by one (modulo 2**64)."""
        stream = _word(counter, 1)
        if isinstance(counter, Tensor):
            counter[1] += 1
        else:
            counter[1] = stream + 1 - (1 << 64) if stream + 1 >> 63 else stream + 1
        return stream

    def where(self, spec) -> object:
        """Where this call's mask sits: 0, or its rows inside an enclosing ``noiseshape.global_samples`` block."""
        return _coords.in_context(self._op(), spec, self._batch_axis())

    def _noise_args(self, x: Tensor):
        return self.noise_shape, self.broadcast_dims

    def _batch_axis(self) -> int:
        return self.batch_axis

    def spec(self, x: Tensor):
        """The resolved noise spec of a call on ``x``."""
        return self._spec_full(x)[0]

    def _spec_full(self, x: Tensor):
        """The noise spec of a call on ``x`` and whether its mask is full-shape."""
        noise_shape, broadcast_dims = self._noise_args(x)
        spec_full = ne.resolve_cached(x.shape, noise_shape, broadcast_dims, self._op())
        if self.share_batch:
            spec = ne.share_axis(spec_full[0], self._batch_axis())
            return spec, spec.full
        return spec_full

    def _repr_args(self) -> list[str]:
        return []

    def extra_repr(self) -> str:
        args = self._repr_args()
        if self.noise_shape is not None:
            args.append(f"noise_shape={_fmt(self.noise_shape)}")
        if self.broadcast_dims is not None:
            args.append(f"broadcast_dims={_fmt(self.broadcast_dims)}")
        if getattr(self, "inplace", False):
            args.append("inplace=True")
        if self.seed is not None:
            args.append(f"seed={self.seed}")
        return ", ".join(args)


def _refuse_positional_inplace(layer: str, p, value, second: str | None) -> None:
    """A torch user's ``Dropout(0.2, True)``: ``inplace`` is keyword-only here, so say so and show the call."""
    if isinstance(value, bool):
        where = f"the second positional argument of {layer} is {second}" if second else f"{layer} takes p alone"
        raise fail(
            f"noiseshape.torch.{layer}",
            f"inplace is keyword-only ({where}): write {layer}({p!r}, inplace={value})",
        )


def _check_float_weight(op: str, weight: Tensor, name: str) -> None:
    """A parameter to drop must be a dense floating-point tensor, as the functional forms require."""
    ne._check_tensor(op, weight, name=name)


class _Rate(_NoiseLayer):
    """A layer with a drop probability ``p``."""

    #: kept values are scaled by the inverse keep probability (``DropPath(scale_by_keep=False)`` turns it off)
    scale_by_keep = True

    def __init__(self, p: float, *, inplace: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.p = check_rate(p, op=self._op(), name="p")
        self.inplace = check_flag(inplace, name="inplace", op=self._op())

    def _repr_args(self):
        return [f"p={self.p!r}"]

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.share_batch and type(self)._noise is _Rate._noise:
            y = _plans.drop(
                x, self.p, self._plan_noise(), self.broadcast_dims, None, 0, self.inplace, self.scale_by_keep,
                self._op_name, None if self.seed is None else self._eager_key,
            )  # fmt: skip
            if y is not None:  # the common call: a plain tensor, outside tracing, by its plan
                return y
        if not (isinstance(x, Tensor) and x.dtype in _ops.DTYPE_CODES and x.layout == torch.strided):
            ne._check_tensor(self._op(), x)  # raises
        spec, full = self._spec_full(x)
        t, scale = nf._threshold_and_scale(self.p)
        return self._noise(x, spec, self.next_key(x), t, scale, full)

    def _plan_noise(self):
        """The noise of this layer's plans (:func:`._plans.drop`): its noise shape, or the rule of its kind."""
        return self.noise_shape

    def _noise(self, x, spec, key, t, scale, full):  # not _apply: nn.Module.to() and .cuda() call that one
        scale = scale if self.scale_by_keep else 1.0
        return ne.bernoulli_apply(x, spec, key, self.where(spec), t, scale, self.inplace, full)


class Dropout(_Rate):
    """Dropout (Srivastava et al., 2014) with a Keras ``noise_shape`` or Flax ``broadcast_dims``, any batch size.

    >>> import torch
    >>> drop = Dropout(0.5, noise_shape=(None, 64, 1, 1))
    >>> drop
    Dropout(p=0.5, noise_shape=(None, 64, 1, 1))
    >>> y = drop(torch.ones(3, 64, 5, 1))
    >>> bool((y == y[:, :, :1]).all())             # whole channels are kept or dropped
    True
    >>> drop.eval()(torch.ones(1)).tolist()        # eval mode: the input, unchanged
    [1.0]
    """

    def __init__(
        self,
        p: float = 0.5,
        noise_shape: NoiseShape | None = None,
        *,
        broadcast_dims: BroadcastDims | None = None,
        inplace: bool = False,
        seed: int | None = None,
    ) -> None:
        _refuse_positional_inplace(type(self).__name__, p, noise_shape, "noise_shape")
        super().__init__(p, inplace=inplace, seed=seed, noise_shape=noise_shape, broadcast_dims=broadcast_dims)


class _Spatial(_Rate):
    dims = 0

    def __init__(
        self, p: float = 0.5, data_format: str = "channels_first", *, inplace: bool = False, seed: int | None = None
    ) -> None:
        _refuse_positional_inplace(type(self).__name__, p, data_format, "data_format")
        super().__init__(p, inplace=inplace, seed=seed)
        if data_format not in ("channels_first", "channels_last"):
            raise fail(
                self._op(),
                f"data_format is {data_format!r}; give 'channels_first' (N, C, ...) or 'channels_last' (N, ..., C)",
            )
        self.data_format = data_format

    def _noise_args(self, x):
        return nf.spatial_noise_shape(self._op(), x, self.dims, self.data_format), None

    def _plan_noise(self):
        return _plans.spatial_rule(self.dims, self.data_format)

    def _repr_args(self):
        args = super()._repr_args()
        if self.data_format != "channels_first":
            args.append(f"data_format={self.data_format!r}")
        return args


class SpatialDropout1d(_Spatial):
    """Spatial dropout (Tompson et al., 2015) of (N, C, L) inputs (or (N, L, C), ``channels_last``): whole channels.

    >>> import torch
    >>> y = SpatialDropout1d(0.5)(torch.ones(4, 8, 10))
    >>> bool((y == y[..., :1]).all())
    True
    """

    dims = 1


class SpatialDropout2d(_Spatial):
    """Spatial dropout (Tompson et al., 2015) of (N, C, H, W) inputs (or (N, H, W, C)): whole feature maps.

    >>> import torch
    >>> SpatialDropout2d(0.2, data_format="channels_last")
    SpatialDropout2d(p=0.2, data_format='channels_last')
    >>> y = SpatialDropout2d(0.5, data_format="channels_last")(torch.ones(2, 5, 5, 8))
    >>> bool((y == y[:, :1, :1, :]).all())
    True
    """

    dims = 2


class SpatialDropout3d(_Spatial):
    """Spatial dropout (Tompson et al., 2015) of (N, C, D, H, W) inputs (or (N, D, H, W, C)): whole volumes.

    >>> import torch
    >>> y = SpatialDropout3d(0.5)(torch.ones(2, 4, 3, 3, 3))
    >>> bool((y == y[:, :, :1, :1, :1]).all())
    True
    """

    dims = 3


class LockedDropout(_Rate):
    """Locked (variational) dropout (Gal & Ghahramani, 2016): one mask per sequence, reused at every step.

    Inputs are (N, T, ...) with ``batch_first=True`` and (T, N, ...) otherwise.

    >>> import torch
    >>> y = LockedDropout(0.5)(torch.ones(2, 9, 4))
    >>> bool((y == y[:, :1]).all())
    True
    """

    def __init__(
        self, p: float = 0.5, batch_first: bool = True, *, inplace: bool = False, seed: int | None = None
    ) -> None:
        super().__init__(p, inplace=inplace, seed=seed)
        self.batch_first = check_flag(batch_first, name="batch_first", op=self._op())

    def _noise_args(self, x):
        return nf.locked_noise_shape(self._op(), x, self.batch_first), None

    def _plan_noise(self):
        return _plans.locked_rule(self.batch_first)

    def _batch_axis(self):
        return 0 if self.batch_first else 1

    def _repr_args(self):
        return super()._repr_args() + ([] if self.batch_first else ["batch_first=False"])


class DropPath(_Rate):
    """Stochastic depth (Huang et al., 2016): drops a sample's whole residual branch with probability ``p``.

    >>> import torch
    >>> block = DropPath(0.5)
    >>> y = block(torch.ones(16, 4))
    >>> all(row.unique().numel() == 1 for row in y)   # each sample is kept (x 2) or dropped whole
    True
    """

    def __init__(self, p: float = 0.0, scale_by_keep: bool = True, *, seed: int | None = None) -> None:
        super().__init__(p, seed=seed)
        self.scale_by_keep = check_flag(scale_by_keep, name="scale_by_keep", op=self._op())

    def _noise_args(self, x):
        return nf.drop_path_noise_shape(self._op(), x), None

    def _plan_noise(self):
        return _plans.drop_path_rule()

    def _repr_args(self):
        return super()._repr_args() + ([] if self.scale_by_keep else ["scale_by_keep=False"])


class AlphaDropout(_Rate):
    """Alpha dropout (Klambauer et al., 2017) for self-normalising (SELU) networks, with a noise shape.

    >>> import torch
    >>> AlphaDropout(0.1, noise_shape=(None, 1))
    AlphaDropout(p=0.1, noise_shape=(None, 1))
    """

    def __init__(
        self,
        p: float = 0.5,
        noise_shape: NoiseShape | None = None,
        *,
        broadcast_dims: BroadcastDims | None = None,
        inplace: bool = False,
        seed: int | None = None,
    ) -> None:
        _refuse_positional_inplace(type(self).__name__, p, noise_shape, "noise_shape")
        super().__init__(p, inplace=inplace, seed=seed, noise_shape=noise_shape, broadcast_dims=broadcast_dims)

    def _noise(self, x, spec, key, t, scale, full):
        return ne.alpha_apply(x, spec, key, self.where(spec), t, self.inplace)


class FeatureAlphaDropout(AlphaDropout):
    """Alpha dropout (Klambauer et al., 2017) of whole channels of (N, C, ...) inputs.

    >>> import torch
    >>> y = FeatureAlphaDropout(0.5)(torch.ones(2, 6, 7))
    >>> bool((y == y[..., :1]).all())
    True
    """

    def __init__(self, p: float = 0.5, *args: object, inplace: bool = False, seed: int | None = None) -> None:
        if args:  # torch's FeatureAlphaDropout(p, inplace)
            _refuse_positional_inplace(type(self).__name__, p, args[0], None)
            raise fail(
                self._op(),
                f"got {len(args) + 1} positional arguments; FeatureAlphaDropout takes p alone, the others by keyword: "
                f"write FeatureAlphaDropout({p!r}, inplace=False, seed=None)",
            )
        super().__init__(p, inplace=inplace, seed=seed)

    def _noise_args(self, x):
        return nf.feature_noise_shape(self._op(), x), None


class GaussianDropout(_Rate):
    """Gaussian dropout (Srivastava et al., 2014): multiplicative ``N(1, p / (1 - p))`` noise; ``p = 1`` is an error.

    >>> GaussianDropout(0.2, noise_shape=(None, 1, None))
    GaussianDropout(p=0.2, noise_shape=(None, 1, None))
    """

    def __init__(
        self,
        p: float = 0.5,
        noise_shape: NoiseShape | None = None,
        *,
        broadcast_dims: BroadcastDims | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(p, seed=seed, noise_shape=noise_shape, broadcast_dims=broadcast_dims)
        nf.check_gaussian_rate(self.p, self._op())

    def _noise(self, x, spec, key, t, scale, full):
        return ne.gaussian_mul_apply(x, spec, key, self.where(spec), math.sqrt(self.p / (1.0 - self.p)))


class GaussianNoise(_NoiseLayer):
    """Additive Gaussian noise ``x + stddev * z`` drawn at the noise shape (a regulariser, on in training only).

    >>> import torch
    >>> GaussianNoise(0.1)
    GaussianNoise(stddev=0.1)
    >>> GaussianNoise(0.1).eval()(torch.zeros(3)).tolist()
    [0.0, 0.0, 0.0]
    """

    def __init__(
        self,
        stddev: float,
        noise_shape: NoiseShape | None = None,
        *,
        broadcast_dims: BroadcastDims | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed, noise_shape=noise_shape, broadcast_dims=broadcast_dims)
        self.stddev = nf.check_stddev(stddev, self._op())

    def _repr_args(self):
        return [f"stddev={self.stddev!r}"]

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.stddev == 0.0:
            return x
        ne._check_tensor(self._op(), x)
        spec = self.spec(x)
        return ne.gaussian_add_apply(x, spec, self.next_key(x), self.where(spec), self.stddev)


class DropBlock2d(_Rate):
    """DropBlock (Ghiasi et al., 2018): drops contiguous ``block_size`` x ``block_size`` regions of (N, C, H, W) maps.

    >>> import torch
    >>> DropBlock2d(0.1, 5)
    DropBlock2d(p=0.1, block_size=5)
    >>> y = DropBlock2d(0.2, 3, seed=0)(torch.ones(2, 4, 16, 16))
    >>> tuple(y.shape)
    (2, 4, 16, 16)
    """

    def __init__(self, p: float = 0.1, block_size: int = 7, *, seed: int | None = None) -> None:
        super().__init__(p, seed=seed)
        nr.block_centres_rate(self._op(), self.p, block_size, block_size, block_size, None)
        self.block_size = int(block_size)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        op = self._op()
        ne._check_tensor(op, x)
        if x.dim() != 4:
            raise fail(op, f"x has {axes_text(x.dim())}; DropBlock2d needs (N, C, H, W)", shape=tuple(x.shape))
        gamma = nr.block_centres_rate(op, self.p, self.block_size, x.shape[2], x.shape[3], tuple(x.shape))
        if x.numel() == 0:
            return x
        return nr.block_apply(x, self.next_key(x), 0, self.p, self.block_size, gamma, self.share_batch)

    def _repr_args(self):
        return [*super()._repr_args(), f"block_size={self.block_size}"]


class EmbeddingDropout(_Rate):
    """Word-level embedding dropout (Merity et al., 2017; Gal & Ghahramani, 2016): drops whole rows of the weight.

    Wraps an ``nn.Embedding``; the other rows are scaled by the inverse keep probability.

    >>> import torch
    >>> emb = EmbeddingDropout(torch.nn.Embedding(10, 3), 0.5, seed=0)
    >>> e = emb(torch.tensor([[4, 4, 7]]))
    >>> torch.equal(e[0, 0], e[0, 1])
    True
    """

    def __init__(self, embedding: nn.Embedding, p: float = 0.1, *, seed: int | None = None) -> None:
        super().__init__(p, seed=seed)
        op = self._op()
        if not isinstance(embedding, nn.Embedding):
            raise fail(op, f"embedding is a {type(embedding).__name__}; give a torch.nn.Embedding")
        if embedding.sparse or embedding.max_norm is not None:
            raise fail(
                op,
                "embedding has sparse=True or max_norm set; the dropped weight is a new dense tensor, so give an "
                "nn.Embedding with sparse=False and max_norm=None",
            )
        _check_float_weight(op, embedding.weight, "embedding.weight")
        self.embedding = embedding

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return self.embedding(input)
        weight = self.embedding.weight
        _check_float_weight(self._op(), weight, "embedding.weight")
        t = _rng.threshold(self.p)
        spec = resolve(tuple(weight.shape), (None, 1), op=self._op())
        dropped = ne.bernoulli_apply(weight, spec, self.next_key(weight), 0, t, _rng.keep_scale(t), False, False)
        e = self.embedding
        return torch.nn.functional.embedding(input, dropped, e.padding_idx, None, e.norm_type, e.scale_grad_by_freq)

    def extra_repr(self):
        return super().extra_repr()


class WeightDropout(_Rate):
    """DropConnect (Wan et al., 2013) on named parameters of any module, as in AWD-LSTM (Merity et al., 2017).

    In training each call runs the module with dropped copies of the parameters ``names`` (the
    parameters themselves are untouched); ``noise_shape`` is over the weight's axes, e.g. ``(1, None)``
    drops whole input columns of a Linear weight. Off in eval mode.

    >>> import torch
    >>> lin = WeightDropout(torch.nn.Linear(4, 3, bias=False), "weight", 0.5, noise_shape=(1, None), seed=0)
    >>> with torch.no_grad():
    ...     _ = lin.module.weight.fill_(1.0)
    >>> y = lin(torch.eye(4))                   # row i: column i of the dropped weight
    >>> bool((y == y[:, :1]).all())             # whole input columns kept (x 2) or dropped
    True
    """

    def __init__(
        self,
        module: nn.Module,
        names: str | Iterable[str],
        p: float = 0.5,
        noise_shape: NoiseShape | None = None,
        *,
        broadcast_dims: BroadcastDims | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(p, seed=seed, noise_shape=noise_shape, broadcast_dims=broadcast_dims)
        op = self._op()
        if not isinstance(module, nn.Module):
            raise fail(op, f"module is a {type(module).__name__}; give a torch.nn.Module")
        own = dict(module.named_parameters())
        known = ", ".join(sorted(own)) or "none"
        fix = f"give the parameter names to drop, e.g. 'weight' or ['weight_hh_l0'] (this module has: {known})"
        if isinstance(names, str):
            names = [names]
        elif isinstance(names, Iterable) and not isinstance(names, bytes):
            names = list(names)
        else:
            raise fail(op, f"names is {names!r} ({type(names).__name__}); {fix}")
        if not names:
            raise fail(op, f"names is empty; {fix}")
        for name in names:
            if not isinstance(name, str):
                raise fail(op, f"names holds {name!r} ({type(name).__name__}); {fix}")
            if name not in own:
                raise fail(op, f"module has no parameter {name!r}; its parameters are: {known}")
            _check_float_weight(op, own[name], f"module.{name}")
        self.module = module
        self.names = names

    def _repr_args(self):
        return [f"names={self.names!r}", *super()._repr_args()]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training or self.p == 0.0:
            return self.module(*args, **kwargs)
        op = self._op()
        t = _rng.threshold(self.p)
        scale = _rng.keep_scale(t)
        params = {}
        key = None
        j0 = 0
        for name in self.names:
            w = self.module.get_parameter(name)
            _check_float_weight(op, w, f"module.{name}")
            if key is None:
                key = self.next_key(w)
            elif type(key) is tuple and not _eager.eager_ok(w):
                key = _ops.make_key(key[0], key[1], w.device)
            spec = resolve(tuple(w.shape), self.noise_shape, self.broadcast_dims, op=op)
            params[name] = ne.bernoulli_apply(w, spec, key, j0, t, scale)
            j0 += math.prod(spec.shape)
        return torch.func.functional_call(self.module, params, args, kwargs)
