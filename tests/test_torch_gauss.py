"""The eager path of ``gaussian_noise``: one ``_core.gaussian_add`` call (its kernel: ``test_core``).

The oracle is NumPy arithmetic on the variates of the contract: ``z`` from ``_core.normal`` (which
``test_normal_math`` checks against the libm formula on every path, and which is checked here
against ``_rng.normals``), then ``x + float32(z) * float32(stddev)`` rounded in the dtype as the
torch expression ``x + z.float() * stddev`` rounds (float64 in float64; float16 and bfloat16 add
in float32 and round the sum). Results must be bit for bit that, on every ISA path.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import noiseshape.torch as nst  # noqa: E402
from noiseshape import _core, _rng  # noqa: E402
from noiseshape.torch import _eager, _ops  # noqa: E402

CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
DTYPES = list(CODES)


def variates(seed, stream, j0, n, double):
    """The contract's variates as the core draws them (the same on every ISA path: test_normal_math)."""
    z = np.empty(n, np.float64)
    _core.normal(z.ctypes.data, 1, n, seed, stream, j0, 1)
    np.testing.assert_allclose(z, _rng.normals(seed, stream, j0, n), rtol=1e-12, atol=0)
    return z if double else z.astype(np.float32)


def expected(x: torch.Tensor, seed, stream, j0, stddev) -> torch.Tensor:
    """``x + z * stddev`` rounded as torch rounds it, computed in NumPy."""
    double = x.dtype == torch.float64
    z = variates(seed, stream, j0, x.numel(), double).reshape(tuple(x.shape))
    with np.errstate(all="ignore"):
        noise = z * (np.float64(stddev) if double else np.float32(stddev))
        if double:
            return torch.from_numpy(np.asarray(x.numpy() + noise))
        # float32 -> float16 / bfloat16: round to nearest even
        return torch.from_numpy(np.asarray(x.float().numpy() + noise)).to(x.dtype)


def same_bits(a: torch.Tensor, b: torch.Tensor):
    """Equal bit for bit, NaN payloads aside (torch's own float16 -> float32 conversion of a NaN differs
    between its scalar and vector code)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = a.isnan()
    assert torch.equal(nan, b.isnan())
    width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    a, b = a.masked_fill(nan, 0), b.masked_fill(nan, 0)
    assert torch.equal(a.contiguous().view(width), b.contiguous().view(width))


def specials(n, dtype):
    """Normals with NaN, +-inf, -0, a subnormal and values near the dtype's overflow mixed in."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g, dtype=torch.float64) * 3
    big = torch.finfo(dtype).max
    extra = [float("nan"), float("inf"), -float("inf"), -0.0, torch.finfo(dtype).tiny / 4, big, -big]
    for i, v in enumerate(extra[: n // 3]):
        x[3 * i] = v
    return x.to(dtype)


# ---------------------------------------------------------------------------
# gaussian_noise on torch tensors


def default_seed(torch_seed: int) -> int:
    """The seed an unseeded call draws after ``torch.manual_seed(torch_seed)``."""
    torch.manual_seed(torch_seed)
    return _eager.draw_seed(None)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0,), (), (5,), (3, 0, 2), (33, 65)])
def test_gaussian_noise_default_call_is_the_reference(isa, dtype, shape):
    x = specials(max(1, int(np.prod(shape))), dtype)[: int(np.prod(shape))].reshape(shape)
    seed = default_seed(3)
    torch.manual_seed(3)
    y = nst.gaussian_noise(x, 0.25)
    same_bits(y, expected(x, seed, 0, 0, 0.25))
    same_bits(nst.gaussian_noise(x, 0.25, seed=seed), y)  # the seeded call agrees
    leaf = x.clone().requires_grad_()  # with autograd: the noise added into a clone of x in place
    torch.manual_seed(3)
    yg = nst.gaussian_noise(leaf, 0.25)
    same_bits(yg.detach(), y)
    g = torch.randn(yg.shape, dtype=torch.float64).to(dtype)
    yg.backward(g)
    same_bits(leaf.grad, g)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("seeded", [False, True])
def test_plain_calls_take_one_core_call(monkeypatch, grad, seeded):
    # a plain call (contiguous CPU input, nothing to place) takes its one function, never the checked path
    from noiseshape.torch import functional as nf

    def refuse(*args, **kwargs):
        raise AssertionError("a plain call took the checked path")

    x = specials(40, torch.float32).reshape(5, 8)
    seed = 9 if seeded else default_seed(4)
    torch.manual_seed(4)
    monkeypatch.setattr(nf, "_prepare", refuse)
    leaf = x.clone().requires_grad_(grad)
    y = nst.gaussian_noise(leaf, 0.5, seed=9 if seeded else None)
    monkeypatch.undo()
    same_bits(y.detach(), expected(x, seed, 0, 0, 0.5))
    assert (y.grad_fn is not None) == grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gaussian_noise_with_grad_non_contiguous_and_offset_is_the_reference(isa, dtype):
    base = specials(12 * 10, dtype).reshape(12, 10)
    cases = {
        "transposed": base.t(),
        "strided": base[::2, 1::3],
        "offset": base[1:],
        "channels_last": specials(2 * 3 * 4 * 5, dtype).reshape(2, 3, 4, 5).to(memory_format=torch.channels_last),
    }
    for x in cases.values():
        want = expected(x.contiguous(), 4, 2, 6 * int(np.prod(x.shape[1:])), 1.5)
        y = nst.gaussian_noise(x, 1.5, seed=4, stream=2, batch_offset=6)
        same_bits(y, want)
        leaf = x.detach().clone().requires_grad_()
        yg = nst.gaussian_noise(leaf, 1.5, seed=4, stream=2, batch_offset=6)
        same_bits(yg.detach(), want)
        g = torch.randn(yg.shape, dtype=torch.float64).to(dtype)
        yg.backward(g)
        same_bits(leaf.grad, g)  # the identity: additive noise passes the gradient through


def test_gaussian_noise_noise_shape_is_the_reference(isa):
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    y = nst.gaussian_noise(x, 0.5, (None, 1, None), seed=1, stream=3)
    z = variates(1, 3, 0, 4 * 5, True).reshape(4, 1, 5)
    same_bits(y, torch.from_numpy(x.numpy() + z * 0.5))
    leaf = x.clone().requires_grad_()
    same_bits(nst.gaussian_noise(leaf, 0.5, (None, 1, None), seed=1, stream=3).detach(), y)


def test_gaussian_noise_on_the_pure_torch_contract_agrees(monkeypatch):
    x = torch.randn(7, 9)
    y = nst.gaussian_noise(x, 0.4, seed=5)
    monkeypatch.setattr(_ops, "FORCE_TORCH", True)
    # the pure-torch contract computes its own variates: within 2 float32 ulp of the core's
    torch.testing.assert_close(nst.gaussian_noise(x, 0.4, seed=5), y, rtol=3e-7, atol=1e-7)


def test_gradients_in_every_mode():
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(5, 4, dtype=torch.float64)
    t = torch.randn(5, 4, dtype=torch.float64)
    seed = default_seed(8)
    want = expected(x, seed, 0, 0, 0.3)
    torch.manual_seed(8)
    with fwAD.dual_level():  # the default call under forward mode
        y, tangent = fwAD.unpack_dual(nst.gaussian_noise(fwAD.make_dual(x, t), 0.3))
    same_bits(y, want)
    same_bits(tangent, t)
    y, tangent = torch.func.jvp(lambda v: nst.gaussian_noise(v, 0.3, seed=seed), (x,), (t,))
    same_bits(y, want)
    same_bits(tangent, t)
    jac = torch.func.jacrev(lambda v: nst.gaussian_noise(v, 0.3, seed=seed))(x)
    assert torch.equal(jac, torch.eye(20, dtype=torch.float64).reshape(5, 4, 5, 4))
    leaf = x.clone().requires_grad_()
    torch.manual_seed(8)
    y = nst.gaussian_noise(leaf, 0.3)
    same_bits(y.detach(), want)
    (g,) = torch.autograd.grad(y.pow(2).sum(), leaf, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), leaf)  # double backward: d/dx sum 2 (x + noise) = 2
    assert torch.equal(h, torch.full_like(x, 2.0))


def test_vmap_draws_one_noise_per_call():
    x = torch.randn(3, 6)
    y = torch.func.vmap(lambda v: nst.gaussian_noise(v, 0.2, seed=2))(x)
    z = torch.from_numpy(variates(2, 0, 0, 6, False))
    assert torch.equal(y, x + z * 0.2)  # the noise of one (6,) call, shared by the mapped rows


def test_default_call_statistics():
    n = 1 << 18
    y = nst.gaussian_noise(torch.zeros(n), 0.5).double()
    # 5 sigma: the sample mean has sigma 0.5 / sqrt(n), the sample std 0.5 / sqrt(2 n)
    assert abs(y.mean().item()) < 5 * 0.5 / n**0.5
    assert abs(y.std().item() - 0.5) < 5 * 0.5 / (2 * n) ** 0.5


def test_compile_fullgraph_dynamic_export_and_fake_tensors_match_eager():
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._subclasses.fake_tensor import FakeTensorMode

    def fn(v):
        return nst.gaussian_noise(v, 0.3, seed=4, stream=1)

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fn, backend=counter, fullgraph=True, dynamic=True)
    frames = []
    for batch in (2, 3, 5):
        x = torch.randn(batch, 6, requires_grad=True)
        y = compiled(x)
        frames.append(counter.frame_count)
        same_bits(y.detach(), fn(x.detach()))  # the traced path gives the eager path's values
        y.sum().backward()
        assert torch.equal(x.grad, torch.ones_like(x))
    assert frames[1:] == frames[:1] * 2  # new batch sizes compile nothing new

    class Noisy(torch.nn.Module):
        def forward(self, v):
            return fn(v)

    x = torch.randn(4, 6)
    exported = torch.export.export(Noisy(), (x,))
    same_bits(exported.module()(x), fn(x))
    with FakeTensorMode():
        fake = fn(torch.empty(4, 6, dtype=torch.bfloat16))
    assert fake.shape == (4, 6) and fake.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("extra", [-1, 0, 517])
def test_gaussian_noise_with_grad_around_the_one_pass_size(isa, dtype, extra):
    # from ONE_PASS_GRAD_MIN elements on, a call with autograd adds into a new tensor in one pass and
    # gets a native identity node; below it, into a clone: the same values and gradient either way
    from noiseshape.torch import _gauss

    n = _gauss.ONE_PASS_GRAD_MIN + extra
    x = specials(n, dtype).reshape(n, 1)
    want = expected(x, 7, 1, 0, 0.5)
    leaf = x.clone().requires_grad_()
    y = nst.gaussian_noise(leaf, 0.5, seed=7, stream=1)
    same_bits(y.detach(), want)
    same_bits(leaf.detach(), x)  # the input is neither written nor versioned
    assert leaf._version == 0 and y.data_ptr() != leaf.data_ptr()
    assert not y._is_view() and y.is_contiguous() and y.requires_grad
    hooked = []
    y.register_hook(lambda g: hooked.append(g.clone()))
    y.retain_grad()
    g = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    (gx,) = torch.autograd.grad(y, leaf, g, create_graph=True)
    same_bits(gx.detach(), g)
    same_bits(hooked[0], g)
    y2 = nst.gaussian_noise(leaf, 0.5, seed=7, stream=1)
    (y2 * y2).sum().backward()  # d/dx (x + s z)^2 = 2 (x + s z)
    same_bits(leaf.grad, (2 * y2.detach()).to(dtype))


def test_gaussian_noise_one_pass_size_with_forward_mode_and_no_grad():
    from torch.autograd import forward_ad as fwad

    from noiseshape.torch import _gauss

    n = _gauss.ONE_PASS_GRAD_MIN * 2
    x = specials(n, torch.float32)
    want = expected(x, 3, 0, 0, 2.0)
    tangent = torch.randn(n)
    with fwad.dual_level():
        y = nst.gaussian_noise(fwad.make_dual(x, tangent), 2.0, seed=3)
        primal, t = fwad.unpack_dual(y)
    same_bits(primal, want)
    same_bits(t, tangent)  # the tangent passes through
    leaf = x.clone().requires_grad_()
    with torch.no_grad():
        y = nst.gaussian_noise(leaf, 2.0, seed=3)
    assert y.grad_fn is None and not y.requires_grad
    same_bits(y, want)
