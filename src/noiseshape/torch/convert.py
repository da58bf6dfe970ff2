"""Drop-in conversion of ``torch.nn`` dropout layers, and Monte Carlo dropout (Gal & Ghahramani, 2016)."""

from __future__ import annotations

import contextlib
import copy
import numbers
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import nn

from .._errors import fail
from . import modules as nm

__all__ = ["convert", "mc_dropout", "mc_sample"]

#: torch.nn layers that :func:`convert` replaces, and what with
_REPLACEMENTS: dict[type[nn.Module], Callable[[Any], nm._NoiseLayer]] = {
    nn.Dropout: lambda m: nm.Dropout(m.p, inplace=m.inplace),
    nn.Dropout1d: lambda m: nm.SpatialDropout1d(m.p, inplace=m.inplace),
    nn.Dropout2d: lambda m: nm.SpatialDropout2d(m.p, inplace=m.inplace),
    nn.Dropout3d: lambda m: nm.SpatialDropout3d(m.p, inplace=m.inplace),
    nn.AlphaDropout: lambda m: nm.AlphaDropout(m.p, inplace=m.inplace),
    nn.FeatureAlphaDropout: lambda m: nm.FeatureAlphaDropout(m.p, inplace=m.inplace),
}


def _replacement(module: nn.Module) -> nm._NoiseLayer | None:
    make = _REPLACEMENTS.get(type(module))
    if make is None:
        return None
    new = make(module)
    new.train(module.training)
    return new


def convert(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replace the ``torch.nn`` dropout layers of ``model`` with the equivalent noiseshape layers.

    ``nn.Dropout`` becomes :class:`Dropout`, ``nn.Dropout1d/2d/3d`` become
    :class:`SpatialDropout1d/2d/3d` (one draw per sample and channel, as in torch),
    ``nn.AlphaDropout`` becomes :class:`AlphaDropout` and ``nn.FeatureAlphaDropout`` becomes
    :class:`FeatureAlphaDropout`, with the same ``p`` and ``inplace`` and training flag: the same
    mask structure, the same distribution, the same eval-mode identity. Only those exact classes are
    replaced (subclasses may change behaviour and are left alone). Dropout that is not a module stays
    as it is: the ``dropout=`` argument of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (applied inside torch's
    fused kernel between layers) and of ``nn.MultiheadAttention`` (attention weights), and
    ``F.dropout`` calls in ``forward`` code. For recurrent networks use one-layer ``nn.LSTM`` modules
    with :class:`LockedDropout` between them, and :class:`WeightDropout` for DropConnect on the
    hidden-to-hidden weights.

    Differences from torch.nn, on purpose:

    - The spatial layers take batched input of their own rank only: ``(N, C, L)``, ``(N, C, H, W)``,
      ``(N, C, D, H, W)``. torch also reads unbatched input (``(C, L)`` for ``Dropout1d``,
      ``(C, D, H, W)`` for ``Dropout3d``), and ``Dropout2d`` guesses on 3-D input (it warns and drops
      1-D channels of ``(N, C, L)``) and on 5-D input; here these raise a clear error that says to add
      the batch axis with ``x.unsqueeze(0)`` or to use the layer of the input's rank.
    - Masks come from noiseshape's Philox4x32 stream (seeded from torch's default generator), not from
      torch's generator: ``torch.manual_seed`` still makes a run reproducible, but a converted model
      draws other masks than the original, and the generator advances differently, so random draws
      later in the program change too.
    - The keep probability is quantised to ``t / 65536`` (the rate to a multiple of 2**-16) and kept
      values are scaled by ``65536 / t``, the exact inverse of the realised keep probability, rather
      than by ``1 / (1 - p)`` (for ``p = 0.1``: 1.1111187 against 1.1111112).
    - The replacements are new modules: hooks registered on the replaced layers and attributes set on
      them are not carried over.

    The model is deep-copied unless ``inplace=True``; the result is returned either way.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1), torch.nn.Dropout2d(0.2))
    >>> convert(net)
    Sequential(
      (0): Linear(in_features=4, out_features=4, bias=True)
      (1): Dropout(p=0.1)
      (2): SpatialDropout2d(p=0.2)
    )
    >>> type(net[1]).__module__                      # the original is untouched
    'torch.nn.modules.dropout'
    """
    if not isinstance(model, nn.Module):
        raise fail("noiseshape.torch.convert", f"model is a {type(model).__name__}; give a torch.nn.Module")
    if not inplace:
        model = copy.deepcopy(model)
    root = _replacement(model)
    if root is not None:
        return root
    _convert_children(model)
    return model


def _convert_children(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        new = _replacement(child)
        if new is None:
            _convert_children(child)
        else:
            setattr(module, name, new)


_TORCH_DROPOUT = tuple(_REPLACEMENTS)


@contextlib.contextmanager
def mc_dropout(model: nn.Module, *, share_batch: bool = False) -> Iterator[nn.Module]:
    """Monte Carlo dropout (Gal & Ghahramani, 2016): only the noise layers stay stochastic.

    Inside the context the model is in eval mode (BatchNorm uses its running statistics, nothing is
    updated) except its noise layers (noiseshape layers and ``torch.nn`` dropout layers), which keep
    drawing. ``share_batch=True`` gives every sample of a batch the same masks (noise axis 0 of
    size 1), so one forward pass is one coherent function draw; it needs noiseshape layers (use
    :func:`convert` first). Training flags are restored on exit.

    >>> import torch
    >>> from noiseshape.torch import Dropout
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), Dropout(0.5))
    >>> with mc_dropout(net):
    ...     net[1].training, net[2].training
    (False, True)
    >>> net[1].training, net[2].training                # restored
    (True, True)
    """
    op = "noiseshape.torch.mc_dropout"
    if not isinstance(model, nn.Module):
        raise fail(op, f"model is a {type(model).__name__}; give a torch.nn.Module")
    saved: list[tuple[nn.Module, bool, Any]] = [
        (m, m.training, getattr(m, "share_batch", None)) for m in model.modules()
    ]
    noise = [m for m in model.modules() if isinstance(m, (nm._NoiseLayer, *_TORCH_DROPOUT))]
    if share_batch:
        foreign = sorted({type(m).__name__ for m in noise if not isinstance(m, nm._NoiseLayer)})
        if foreign:
            raise fail(
                op,
                f"share_batch=True needs noiseshape layers but the model has torch.nn {', '.join(foreign)}; "
                "convert it first: model = noiseshape.torch.convert(model)",
            )
    try:
        model.eval()
        for m in noise:
            m.training = True
            if share_batch:
                cast(Any, m).share_batch = True
        yield model
    finally:
        for m, training, share in saved:
            m.training = training
            if share is not None:
                cast(Any, m).share_batch = share


def mc_sample(model: nn.Module, x: torch.Tensor, n: int, *, share_batch: bool = False) -> torch.Tensor:
    """``n`` stochastic forward passes of ``model`` on ``x`` under :func:`mc_dropout`, stacked on a new axis 0.

    Runs without autograd. With ``share_batch=True`` each pass uses one mask for the whole batch.

    >>> import torch
    >>> from noiseshape.torch import Dropout
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 8), Dropout(0.5)).eval()
    >>> s = mc_sample(net, torch.ones(5, 3), 4, share_batch=True)
    >>> tuple(s.shape)
    (4, 5, 8)
    >>> bool(((s == 0) == (s[:, :1] == 0)).all())       # the same units dropped for every sample of a pass
    True
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise fail("noiseshape.torch.mc_sample", f"n is {n!r}; give the number of passes, a positive integer")
    with torch.no_grad(), mc_dropout(model, share_batch=share_batch):
        return torch.stack([model(x) for _ in range(int(n))])
