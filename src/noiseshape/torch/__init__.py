"""PyTorch frontend: the shaped-noise family as functions and modules.

>>> import torch, noiseshape.torch as nst
>>> drop = nst.Dropout(0.1, noise_shape=(None, 64, 1, 1))       # the Keras layer; any batch size
>>> tuple(drop(torch.randn(32, 64, 50, 1)).shape)
(32, 64, 50, 1)
>>> y = nst.dropout(torch.randn(4, 6, 8), 0.2, noise_shape=(None, 1, None))
>>> model = nst.convert(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.1)))
>>> model[1]
Dropout(p=0.1)

Masks are drawn by Philox4x32-10 at the reduced noise shape: on CPU by the C core, on CUDA by
Triton kernels (when Triton is installed), elsewhere by a pure-torch implementation of the same
contract, bit for bit. In eager mode a call goes straight to the C core with its seed as Python
ints, and autograd runs through one ``autograd.Function`` (reverse mode, forward mode, ``torch.func``
and ``vmap``); backward redraws the mask from the seed, so nothing mask-sized is kept. When traced
(``torch.compile(fullgraph=True)``, ``torch.export``, fake or meta tensors) every op is a
``torch.library`` custom op with a fake kernel and a registered autograd formula.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401  (the framework itself; everything below needs it)
except ImportError as err:
    raise ImportError(
        "noiseshape.torch needs PyTorch, which is not installed: "
        "pip install torch --index-url https://download.pytorch.org/whl/cpu (the CPU build; "
        "other builds: https://pytorch.org/get-started/locally/), or pip install 'noiseshape[torch]'",
        name="torch",
    ) from err

from . import _ops as _ops  # registers the noiseshape:: custom ops
from .convert import convert, mc_dropout, mc_sample
from .functional import (
    alpha_dropout,
    drop_block2d,
    drop_path,
    dropout,
    dropout_add,
    embedding_dropout,
    feature_alpha_dropout,
    gaussian_dropout,
    gaussian_noise,
    keep_mask,
    locked_dropout,
    spatial_dropout1d,
    spatial_dropout2d,
    spatial_dropout3d,
)
from .modules import (
    AlphaDropout,
    DropBlock2d,
    Dropout,
    DropPath,
    EmbeddingDropout,
    FeatureAlphaDropout,
    GaussianDropout,
    GaussianNoise,
    LockedDropout,
    SpatialDropout1d,
    SpatialDropout2d,
    SpatialDropout3d,
    WeightDropout,
)

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
    "alpha_dropout",
    "convert",
    "drop_block2d",
    "drop_path",
    "dropout",
    "dropout_add",
    "embedding_dropout",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "keep_mask",
    "locked_dropout",
    "mc_dropout",
    "mc_sample",
    "spatial_dropout1d",
    "spatial_dropout2d",
    "spatial_dropout3d",
]
