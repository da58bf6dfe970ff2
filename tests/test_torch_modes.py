"""Every op of the family under every autograd mode: a table of samples and generic tests over it.

Forward mode (``torch.autograd.forward_ad``, ``torch.func.jvp``, ``jacfwd``), reverse mode,
forward-over-reverse (Hessian-vector products), ``vmap``, dtypes and non-contiguous inputs. The
oracle for a tangent is reverse mode (``jacrev``), which the custom ops have always supported, and
for linear ops the op itself applied to the tangent (the tangent gets the same noise).
"""

from typing import NamedTuple

import pytest

torch = pytest.importorskip("torch")

import noiseshape.torch as nst  # noqa: E402
from noiseshape import NoiseShapeError  # noqa: E402
from noiseshape.torch import _ops  # noqa: E402


class Sample(NamedTuple):
    name: str
    fn: object  # x -> y, seeded (a pure function of x)
    shape: tuple
    linear: bool  # y = noise * x exactly


def _layer(make):
    """A seeded layer made fresh per call, so every call draws the same stream."""
    return lambda x: make()(x)


SAMPLES = [
    Sample("dropout", lambda x: nst.dropout(x, 0.5, seed=0), (4, 6), True),
    Sample("dropout-noise-shape", lambda x: nst.dropout(x, 0.5, (None, 1, None), seed=1), (3, 4, 5), True),
    Sample("dropout-broadcast-dims", lambda x: nst.dropout(x, 0.4, broadcast_dims=(0,), seed=2), (3, 7), True),
    Sample("spatial1d", lambda x: nst.spatial_dropout1d(x, 0.5, seed=3), (3, 4, 5), True),
    Sample("spatial2d", lambda x: nst.spatial_dropout2d(x, 0.5, seed=4), (2, 3, 4, 2), True),
    Sample("spatial3d", lambda x: nst.spatial_dropout3d(x, 0.5, "channels_last", seed=5), (2, 2, 2, 2, 3), True),
    Sample("locked", lambda x: nst.locked_dropout(x, 0.5, seed=6), (3, 5, 4), True),
    Sample("locked-time-major", lambda x: nst.locked_dropout(x, 0.5, batch_first=False, seed=6), (5, 3, 4), True),
    Sample("drop-path", lambda x: nst.drop_path(x, 0.5, seed=7), (6, 2, 3), True),
    Sample("gaussian-dropout", lambda x: nst.gaussian_dropout(x, 0.3, (None, 1), seed=8), (4, 5), True),
    Sample("gaussian-dropout-full", lambda x: nst.gaussian_dropout(x, 0.3, seed=8), (4, 5), True),
    Sample("gaussian-noise", lambda x: nst.gaussian_noise(x, 0.3, seed=9), (4, 5), False),
    Sample("gaussian-noise-noise-shape", lambda x: nst.gaussian_noise(x, 0.3, (None, 1), seed=9), (4, 5), False),
    Sample("alpha", lambda x: nst.alpha_dropout(x, 0.3, (None, 1), seed=10), (4, 5), False),
    Sample("feature-alpha", lambda x: nst.feature_alpha_dropout(x, 0.3, seed=10), (3, 4, 2), False),
    Sample("Dropout", _layer(lambda: nst.Dropout(0.5, seed=11)), (4, 6), True),
    Sample("Dropout-noise-shape", _layer(lambda: nst.Dropout(0.5, (None, 1), seed=11)), (4, 6), True),
    Sample("SpatialDropout2d", _layer(lambda: nst.SpatialDropout2d(0.5, seed=12)), (2, 3, 2, 2), True),
    Sample("LockedDropout", _layer(lambda: nst.LockedDropout(0.5, seed=13)), (3, 4, 2), True),
    Sample("DropPath", _layer(lambda: nst.DropPath(0.5, seed=14)), (6, 3), True),
    Sample("GaussianDropout", _layer(lambda: nst.GaussianDropout(0.4, seed=15)), (4, 3), True),
    Sample("GaussianNoise", _layer(lambda: nst.GaussianNoise(0.4, seed=15)), (4, 3), False),
    Sample("AlphaDropout", _layer(lambda: nst.AlphaDropout(0.4, seed=16)), (4, 3), False),
]
IDS = [s.name for s in SAMPLES]


def _x(s, dtype=torch.float64):
    return torch.randn(s.shape, dtype=dtype, generator=torch.Generator().manual_seed(len(s.name)))


@pytest.fixture(params=["core", "torch"])
def path(request, monkeypatch):
    """The C core path and the pure-torch path (the custom ops' kernels, as on devices without the core)."""
    monkeypatch.setattr(_ops, "FORCE_TORCH", request.param == "torch")
    return request.param


@pytest.mark.parametrize("s", SAMPLES, ids=IDS)
def test_gradcheck_forward_and_reverse(s, path):
    x = _x(s).requires_grad_()
    assert torch.autograd.gradcheck(s.fn, (x,), check_forward_ad=True, check_backward_ad=True)
    assert torch.autograd.gradgradcheck(s.fn, (x,), check_fwd_over_rev=True)


@pytest.mark.parametrize("s", SAMPLES, ids=IDS)
def test_jvp_carries_the_noise_to_the_tangent(s, path):
    x = _x(s)
    tangent = torch.randn(s.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(99))
    y, ty = torch.func.jvp(s.fn, (x,), (tangent,))
    assert torch.equal(y, s.fn(x))
    jac = torch.func.jacrev(s.fn)(x).reshape(y.numel(), x.numel())  # reverse mode: the oracle
    torch.testing.assert_close(ty.reshape(-1), jac @ tangent.reshape(-1), rtol=1e-12, atol=1e-12)
    if s.linear:
        assert torch.equal(ty, s.fn(tangent))  # bit for bit: the same noise
    assert ty.abs().sum() > 0  # the lost tangent was all zeros
    torch.testing.assert_close(torch.func.jacfwd(s.fn)(x), torch.func.jacrev(s.fn)(x), rtol=0, atol=0)


@pytest.mark.parametrize("s", SAMPLES, ids=IDS)
def test_forward_ad_dual_tensors(s, path):
    import torch.autograd.forward_ad as fwAD

    x = _x(s)
    tangent = torch.ones(s.shape, dtype=torch.float64)
    with fwAD.dual_level():
        out = fwAD.unpack_dual(s.fn(fwAD.make_dual(x, tangent)))
    assert out.tangent is not None
    assert torch.equal(out.tangent, torch.func.jvp(s.fn, (x,), (tangent,))[1])


@pytest.mark.parametrize("s", SAMPLES, ids=IDS)
def test_hessian_vector_products_forward_over_reverse(s):
    x = _x(s)
    v = torch.randn(s.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def loss(x):
        return (s.fn(x) ** 3).sum()

    _, hvp = torch.func.jvp(torch.func.grad(loss), (x,), (v,))
    expected = torch.autograd.functional.hvp(loss, x, v)[1]  # reverse over reverse
    torch.testing.assert_close(hvp, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("s", SAMPLES, ids=IDS)
def test_vmap_of_a_seeded_call_is_the_call_per_sample(s):
    xs = torch.stack([_x(s), _x(s) * 2, _x(s) - 1])
    assert torch.equal(torch.func.vmap(s.fn)(xs), torch.stack([s.fn(x) for x in xs]))


def test_vmap_of_an_unseeded_call_needs_a_randomness_choice():
    xs = torch.ones(3, 8)
    with pytest.raises(RuntimeError, match="randomness"):
        torch.func.vmap(lambda x: nst.dropout(x, 0.5))(xs)
    torch.manual_seed(0)
    same = torch.func.vmap(lambda x: nst.dropout(x, 0.5), randomness="same")(xs)
    assert torch.equal(same, same[:1].expand(3, 8))
    torch.manual_seed(0)
    assert torch.equal(same[0], nst.dropout(xs[0], 0.5))


UNSEEDED = {
    "dropout": lambda t: nst.dropout(t, 0.3),
    "dropout (None, 1)": lambda t: nst.dropout(t, 0.3, (None, 1)),
    "spatial_dropout1d": lambda t: nst.spatial_dropout1d(t.reshape(2, 4, 4), 0.3).reshape(8, 4),
    "drop_path": lambda t: nst.drop_path(t, 0.3),
    "gaussian_noise": lambda t: nst.gaussian_noise(t, 0.3),
    "Dropout layer": nst.Dropout(0.3),
}


@pytest.mark.parametrize("name", list(UNSEEDED))
def test_unseeded_calls_inside_grad_transforms_draw_what_eager_draws(name):
    fn = UNSEEDED[name]
    x = torch.randn(8, 4, dtype=torch.float64)
    tangent = torch.randn(8, 4, dtype=torch.float64)
    torch.manual_seed(5)
    y = fn(x)
    torch.manual_seed(5)
    y_jvp, jvp = torch.func.jvp(fn, (x,), (tangent,))
    torch.manual_seed(5)
    grad = torch.func.grad(lambda t: (fn(t) * tangent).sum())(x)
    torch.manual_seed(5)
    y_vjp, pullback = torch.func.vjp(fn, x)
    assert torch.equal(y_jvp, y) and torch.equal(y_vjp, y)
    noise = (y - x) if name == "gaussian_noise" else None
    expected = tangent if noise is not None else torch.where(y != 0, tangent * (y / x), torch.zeros(()))
    torch.testing.assert_close(jvp, expected, rtol=1e-12, atol=0)  # the same noise on the tangent
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(pullback(tangent)[0], expected, rtol=1e-12, atol=0)


def test_vmap_with_different_randomness_of_an_unseeded_call_is_a_clear_error():
    with pytest.raises(NoiseShapeError, match="randomness='same'"):
        torch.func.vmap(lambda x: nst.dropout(x, 0.5), randomness="different")(torch.ones(3, 8))


@pytest.mark.parametrize("s", [s for s in SAMPLES if s.linear], ids=[s.name for s in SAMPLES if s.linear])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_noncontiguous_inputs_and_dtypes_match_contiguous(s, dtype, path):
    base = torch.randn(*s.shape[::-1], dtype=torch.float32).to(dtype)
    x = base.permute(*reversed(range(base.dim())))  # non-contiguous, shape s.shape
    assert not x.is_contiguous() or x.dim() == 1
    leaf = x.detach().requires_grad_()
    y = s.fn(leaf)
    assert torch.equal(y, s.fn(x.contiguous()))
    y.backward(torch.ones_like(y))
    assert torch.equal(leaf.grad, s.fn(torch.ones_like(x)))


def test_a_seeded_layer_made_outside_a_transform_advances_inside_it():
    layer = nst.Dropout(0.5, seed=3)
    x = torch.randn(4, 6, dtype=torch.float64)
    grads = [torch.func.grad(lambda v: layer(v).sum())(x) for _ in range(2)]
    fresh = nst.Dropout(0.5, seed=3)
    for g in grads:
        assert torch.equal(g, fresh(torch.ones_like(x)))  # stream 0, then stream 1
    assert layer.rng_key[1].item() == 2


def test_custom_ops_refuse_a_tangent_they_cannot_carry():
    import torch.autograd.forward_ad as fwAD

    key = _ops.make_key(0)
    with fwAD.dual_level():
        x = fwAD.make_dual(torch.ones(6), torch.ones(6))
        with pytest.raises(NoiseShapeError, match="forward-mode tangent"):
            torch.ops.noiseshape.dropout_full(x, key, 0, 32768, 2.0, False)
        with pytest.raises(NoiseShapeError, match="forward-mode tangent"):
            torch.ops.noiseshape.gaussian_mul(x, key, [6], 0, 0.5)
