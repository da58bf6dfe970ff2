"""The eager path of additive Gaussian noise ``x + stddev * z``: one C call, autograd left to torch.

Additive noise has the identity as its gradient, so no ``autograd.Function`` is needed. For a
contiguous CPU ``x`` with noise of its own shape the C core draws the variates and adds them in one
pass: into a new tensor when ``x`` needs no gradient (and no forward-mode or ``torch.func``
transform is active); where it does, into ``x.clone()``, in place, whose clone node carries autograd
(the identity in every mode, keeping nothing), or, from ``ONE_PASS_GRAD_MIN`` elements on in
reverse mode, into a new tensor handed out by a native identity node of ``x``. Other layouts,
reduced noise shapes and ``torch.func`` draw the scaled noise ``stddev * z`` in one pass and a
native ``x + noise`` carries autograd. All give the values of the composite ``x + normal * stddev`` bit for bit
(``noiseshape._core.gaussian_add`` rounds as that expression does).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from . import _eager, _ops

__all__ = ["add", "combine", "plain_add"]

_HALF = (torch.float16, torch.bfloat16)
_f32, _f64 = torch.float32, torch.float64
_functorch_active = torch._C._are_functorch_transforms_active
_grad_enabled = torch.is_grad_enabled


def plain_add(x, seed, stream, stddev: float) -> Tensor | None:
    """:func:`add` with noise of ``x``'s own shape, for a plain eager call on a contiguous CPU tensor, in one function;
    None where the call is not one (nothing drawn then, and the caller takes its checked path).

    The caller has checked that there is no generator, coords, batch offset or noise shape, and that
    ``stddev`` is a positive finite float. As with dropout's plans (:mod:`._plans`), the checks are
    made once each, in one frame: such a call often runs right after a backward pass, with cold caches.
    """
    if not _eager.plain_call(x, seed, stream):
        return None
    core = _ops._core_module
    if x.dtype not in _ops.DTYPE_CODES or not core or _ops.FORCE_TORCH or not x.is_contiguous():
        return None
    if seed is None:
        seed = _eager._cpu_seed()
    return _one_pass(core, x, seed, stream, 0, stddev)


def combine(x: Tensor, noise: Tensor) -> Tensor:
    """``x + noise`` with float16 and bfloat16 inputs added in float32 and rounded back."""
    if x.dtype in _HALF:
        return (x.float() + noise).to(x.dtype)
    return x + noise


def add(x: Tensor, seed, stream: int, shape, j0: int, stddev: float, full: bool) -> Tensor:
    """``x + stddev * z``, ``z`` the standard normals of ``(seed, stream)`` at ``shape`` from global index ``j0``.

    ``x`` takes the eager path (:func:`._eager.eager_ok`); ``full`` says whether ``shape`` is ``x``'s shape.
    ``seed`` None draws one (:func:`._eager.draw_seed`). A contiguous CPU ``x`` with noise of its own
    shape takes one C call (into a clone of ``x`` where autograd is needed); otherwise :func:`_noise_add`
    adds separately drawn noise.
    """
    core = _ops._core_module
    if _functorch_active() or not (core and x.is_cpu and not _ops.FORCE_TORCH):
        seed = _eager.draw_seed(None) if seed is None else seed
        core = _eager._core_of(x)
        if core is None:  # other devices, or the pure-torch contract when forced
            noise = _eager.normal(seed, stream, tuple(shape), j0, x.dtype == _f64, x.device)
            return combine(x, noise * stddev)
        return _noise_add(core, x, seed, stream, shape, j0, stddev)  # torch.func's wrappers have no pointer
    seed = _eager._cpu_seed() if seed is None else seed
    if not (full and x.is_contiguous()):
        return _noise_add(core, x, seed, stream, shape, j0, stddev)
    return _one_pass(core, x, seed, stream, j0, stddev)


#: From this many elements on, a call with reverse-mode autograd (and no forward-mode level) adds the
#: noise into a new tensor in one pass and hands it out as the output of an identity node of ``x``
#: (:func:`_passed_through`); below it, ``x.clone()`` and the add in place cost less than that node's
#: dispatch. Set by measurement (forward+backward, one thread: 2^14 elements 0.88x of
#: ``x + randn_like(x) * stddev`` against 0.90x with the clone, 2^18 0.72x against 0.83x).
ONE_PASS_GRAD_MIN = 1 << 14


def _one_pass(core, x: Tensor, seed: int, stream: int, j0: int, stddev: float) -> Tensor:
    """``x + stddev * z`` for a contiguous CPU ``x`` with noise of its own shape, in one C call.

    Without autograd the noise is added into a new tensor. Where autograd is needed the output must
    come from a node whose gradient is the identity: a forward-mode level or a small input takes
    ``x.clone()`` and adds in place (torch's clone node carries the gradient in every mode, keeping
    nothing; no node sees the in-place add); a larger one adds into a new tensor in one pass, given
    an identity node by :func:`_passed_through`.
    """
    n = x.numel()
    src = x
    grad = x.requires_grad and _grad_enabled()
    if _forward_ad._current_level >= 0 or (grad and n < ONE_PASS_GRAD_MIN):
        y = src = x.clone()
    else:
        y = torch.empty_like(x)  # contiguous, like x: the noise is added in the same pass
    if n:
        code = _ops.DTYPE_CODES[x.dtype]
        core.gaussian_add(code, src.data_ptr(), y.data_ptr(), n, seed, stream, j0, stddev, _ops._threads(n))
    if grad and src is x:
        return _passed_through(x, y)
    return y


_unsafe_view = torch.ops.aten._unsafe_view.default
_set_grad_enabled = torch._C._set_grad_enabled


def _passed_through(x: Tensor, y: Tensor) -> Tensor:
    """``y``'s values as the output of a native node of ``x`` whose gradient is the identity (reverse mode).

    ``_unsafe_view`` gives a tensor that shares ``x``'s memory but, unlike a view, is not tied to
    ``x`` (its node passes the gradient through, reshaped to ``x``'s shape, and keeps nothing); with
    autograd off, ``set_`` then points it at ``y``'s memory, so ``x`` is neither written nor
    versioned. Forward mode has no rule for ``set_``: its calls take the clone (:func:`_one_pass`).
    """
    out = _unsafe_view(x, x.shape)
    _set_grad_enabled(False)
    try:
        out.set_(y)
    finally:
        _set_grad_enabled(True)
    return out


def _noise_add(core, x: Tensor, seed: int, stream: int, shape, j0: int, stddev: float) -> Tensor:
    """``x + noise``, the scaled noise at ``shape`` drawn by ``core`` into its own tensor: torch's ``add``
    carries autograd in every mode."""
    double = x.dtype == _f64
    with _eager._plain():
        noise = torch.empty(shape, dtype=_f64 if double else _f32)
    m = noise.numel()
    if m:
        core.gaussian_add(int(double), 0, noise.data_ptr(), m, seed, stream, j0, stddev, _ops._threads(m))
    return combine(x, noise)
