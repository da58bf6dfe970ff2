"""The custom ops routed through the Triton kernels (as on CUDA) agree with the C core bit for bit.

On this CPU-only machine the kernels run in Triton's interpreter (``conftest.py``); ``FORCE_TRITON``
sends CPU tensors down the path CUDA tensors take.
"""

import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    if os.environ.get("CI"):
        raise ImportError("triton is required under CI: these tests must not skip there")
    pytest.skip("triton is not installed (pip install triton)", allow_module_level=True)

import noiseshape.torch as nst
from noiseshape.torch import _eager, _ops


def _both(fn):
    """``fn()`` on the C-core path and on the Triton path, with gradients if it takes a leaf."""
    out = []
    for force in (False, True):
        _ops.FORCE_TRITON = force
        assert (_ops.triton_for(torch.device("cpu")) is not None) == force  # the path under test is taken
        try:
            out.append(fn())
        finally:
            _ops.FORCE_TRITON = False
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("noise_shape", [None, (None, 1, None), (1, None, 1)])
def test_dropout_forward_and_backward_match_the_c_core(dtype, noise_shape):
    base = torch.randn(3, 5, 67).to(dtype)

    def run():
        x = base.clone().requires_grad_()
        y = nst.dropout(x, 0.3, noise_shape, seed=11, stream=2, batch_offset=4)
        y.backward(torch.ones_like(y))
        return y.detach(), x.grad

    (y_c, g_c), (y_t, g_t) = _both(run)
    assert (
        torch.equal(y_c.view(torch.uint8), y_t.view(torch.uint8)) if dtype != torch.float64 else torch.equal(y_c, y_t)
    )
    assert torch.equal(g_c, g_t)
    assert (y_c == 0).any() and (y_c != 0).any()  # the mask is not trivial


def test_noise_layers_match_the_c_core():
    x = torch.randn(4, 6, 10)
    for make in (
        lambda: nst.GaussianDropout(0.3, noise_shape=(None, 1, None), seed=5),
        lambda: nst.GaussianNoise(0.5, seed=5),
        lambda: nst.AlphaDropout(0.2, seed=5),
        lambda: nst.LockedDropout(0.4, seed=5),
    ):
        c, t = _both(lambda make=make: make()(x))
        # normal variates may differ in the last bits of float64 log/cos: within 2 float32 ulp
        torch.testing.assert_close(c, t, rtol=2 * 2**-23, atol=0)


def test_keep_mask_matches_the_c_core():
    c, t = _both(lambda: nst.keep_mask((7, 3, 9), 0.5, (None, 1, None), seed=3, batch_offset=2))
    assert torch.equal(c, t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_dropout_add_matches_the_composition(monkeypatch, dtype, with_bias):
    gen = torch.Generator().manual_seed(0)
    x, r, g = (torch.randn(4, 5, 33, generator=gen).to(dtype) for _ in range(3))
    b = torch.randn(33, generator=gen).to(dtype)
    from noiseshape.torch import _triton

    monkeypatch.setattr(_eager, "NATIVE_MAX", 0)  # bit for bit, signed zeros of the gradient included
    fused_calls = []
    real = _triton.dropout_add
    monkeypatch.setattr(_triton, "dropout_add", lambda *a, **k: fused_calls.append(1) or real(*a, **k))

    def run():
        xs, rs = x.clone().requires_grad_(), r.clone().requires_grad_()
        bs = b.clone().requires_grad_() if with_bias else None
        y = nst.dropout_add(xs, rs, 0.3, bias=bs, seed=9, stream=1)
        y.backward(g)
        return y.detach(), xs.grad, rs.grad, bs.grad if with_bias else None

    composed, fused = _both(run)
    assert fused_calls == [1]  # the Triton path ran the one fused kernel
    for a, c in zip(composed, fused):
        if a is None:
            assert c is None
        else:
            assert torch.equal(a.view(torch.uint8), c.view(torch.uint8))
    y, gx, gr, _ = composed
    assert torch.equal(gr, g)  # the residual's gradient passes through
    dropped = gx == 0
    assert dropped.any() and not dropped.all()
    assert torch.equal(y[dropped], r[dropped])  # where x is dropped only the residual remains


def test_fused_dropout_add_compiles_fullgraph(monkeypatch):
    monkeypatch.setattr(_ops, "FORCE_TRITON", True)
    torch._dynamo.reset()
    x, r, b = torch.randn(6, 40), torch.randn(6, 40), torch.randn(40)

    def block(x, r, b):
        return nst.dropout_add(x, r, 0.25, bias=b, seed=4)

    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    xs = x.clone().requires_grad_()
    y = compiled(xs, r, b)
    assert torch.equal(y, block(x, r, b))
    y.sum().backward()
    assert torch.equal(xs.grad == 0, y.detach() == r)  # no gradient exactly where x was dropped


def test_fused_dropout_add_gradcheck(monkeypatch):
    monkeypatch.setattr(_ops, "FORCE_TRITON", True)
    x, r, b = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((3, 8), (3, 8), (8,)))
    assert torch.autograd.gradcheck(lambda x, r, b: nst.dropout_add(x, r, 0.4, bias=b, seed=5), (x, r, b))
