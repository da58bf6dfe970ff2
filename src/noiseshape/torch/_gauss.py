"""The eager path of additive Gaussian noise ``x + stddev * z``: one C call, autograd left to torch.

Additive noise has the identity as its gradient, so no ``autograd.Function`` is needed: when ``x``
needs no gradient (and no forward-mode or ``torch.func`` transform is active) the C core draws the
variates and adds them to a contiguous full-shape ``x`` in one pass; otherwise it draws the scaled
noise ``stddev * z`` in one pass and a native ``x + noise`` carries autograd in every mode. Both give
the values of the composite ``x + normal * stddev`` bit for bit (``noiseshape._core.gaussian_add``
rounds as that expression does).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from . import _eager, _ops

__all__ = ["add", "combine"]

_HALF = (torch.float16, torch.bfloat16)
_f32, _f64 = torch.float32, torch.float64
_OWN = (_f32, _f64)  # the dtypes whose noise is drawn in their own dtype
_functorch_active = torch._C._are_functorch_transforms_active
_grad_enabled = torch.is_grad_enabled


def combine(x: Tensor, noise: Tensor) -> Tensor:
    """``x + noise`` with float16 and bfloat16 inputs added in float32 and rounded back."""
    if x.dtype in _HALF:
        return (x.float() + noise).to(x.dtype)
    return x + noise


def add(x: Tensor, seed, stream: int, shape, j0: int, stddev: float, full: bool) -> Tensor:
    """``x + stddev * z``, ``z`` the standard normals of ``(seed, stream)`` at ``shape`` from global index ``j0``.

    ``x`` takes the eager path (:func:`._eager.eager_ok`); ``full`` says whether ``shape`` is ``x``'s shape.
    ``seed`` None draws one (:func:`._eager.draw_seed`). A contiguous CPU ``x`` with noise of its own
    shape that needs no autograd takes one C call; otherwise :func:`_noise_add` adds separately drawn noise.
    """
    core = _ops._core_module
    if _functorch_active() or not (core and x.is_cpu and not _ops.FORCE_TORCH):
        seed = _eager.draw_seed(None) if seed is None else seed
        core = _eager._core_of(x)
        if core is None:  # other devices, or the pure-torch contract when forced
            noise = _eager.normal(seed, stream, tuple(shape), j0, x.dtype == _f64, x.device)
            return combine(x, noise * stddev)
        return _noise_add(core, x, seed, stream, shape, j0, stddev, False)  # torch.func's wrappers have no pointer
    seed = _eager._cpu_seed() if seed is None else seed
    own = full and x.is_contiguous()
    if not own or (x.requires_grad and _grad_enabled()) or _forward_ad._current_level >= 0:
        return _noise_add(core, x, seed, stream, shape, j0, stddev, own)
    y = torch.empty_like(x)  # contiguous, like x: the noise is added in the same pass
    n = y.numel()
    if n:
        code = _ops.DTYPE_CODES[x.dtype]
        core.gaussian_add(code, x.data_ptr(), y.data_ptr(), n, seed, stream, j0, stddev, _ops._threads(n))
    return y


def _noise_add(core, x: Tensor, seed: int, stream: int, shape, j0: int, stddev: float, like_x: bool) -> Tensor:
    """``x + noise``, the scaled noise drawn by ``core`` into its own tensor (allocated like ``x`` when ``like_x``):
    torch's ``add`` carries autograd in every mode."""
    dtype = x.dtype
    if like_x:
        noise = torch.empty_like(x) if dtype in _OWN else torch.empty_like(x, dtype=_f32)
    else:
        with _eager._plain():
            noise = torch.empty(shape, dtype=_f64 if dtype == _f64 else _f32)
    m = noise.numel()
    if m:
        double = 1 if noise.dtype == _f64 else 0
        core.gaussian_add(double, 0, noise.data_ptr(), m, seed, stream, j0, stddev, _ops._threads(m))
    return combine(x, noise)
