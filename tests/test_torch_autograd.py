"""What autograd keeps, in-place use, layouts and zero-size tensors."""

import pytest

torch = pytest.importorskip("torch")

import noiseshape.torch as nst  # noqa: E402
from noiseshape import _rng  # noqa: E402
from noiseshape.torch import _eager, _ops  # noqa: E402


def saved_bytes(fn, x):
    """Bytes of the tensors autograd saves for backward while ``fn(x)`` runs."""
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    return sum(sizes), y


@pytest.mark.parametrize("save_bits", [True, False])
def test_full_shape_keeps_at_most_one_bit_per_element(monkeypatch, save_bits):
    monkeypatch.setattr(_ops, "SAVE_BITS", save_bits)
    x = torch.randn(16, 64, 128, requires_grad=True)
    n = x.numel()
    theirs, _ = saved_bytes(lambda x: torch.nn.functional.dropout(x, 0.1), x)
    ours, y = saved_bytes(lambda x: nst.dropout(x, 0.1), x)
    assert theirs >= n  # torch keeps at least a byte per element
    assert ours <= theirs / 32 and ours <= n / 8 + 16
    if not save_bits:
        assert ours == 0  # no tensor: the key stays Python ints on the graph, backward recomputes the mask
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, (y != 0).float() * (65536 / _rng.threshold(0.1)))


def test_non_contiguous_full_shape_keeps_no_mask():
    base = torch.randn(128, 64, requires_grad=True)
    assert base.numel() > _eager.NATIVE_MAX  # past the small inputs that keep their scaled mask
    x = base.t()  # full-shape dropout of a transposed view
    ours, y = saved_bytes(lambda x: nst.dropout(x, 0.1, seed=2), x)
    assert ours == 0  # no 1-byte-per-element mask: backward redraws it
    y.backward(torch.ones_like(y))
    assert torch.equal(base.grad.t(), nst.dropout(torch.ones(64, 128), 0.1, seed=2))


def test_broadcast_masks_are_redrawn_not_kept():
    x = torch.randn(16, 160, 128, requires_grad=True)
    assert x.numel() > _eager.NATIVE_MAX_BROADCAST  # past the inputs whose multiply keeps the reduced mask
    ours, _ = saved_bytes(lambda x: nst.dropout(x, 0.1, noise_shape=(None, 1, None)), x)
    assert ours == 0  # nothing: backward redraws the reduced mask from the key
    ours, _ = saved_bytes(lambda x: nst.spatial_dropout1d(x, 0.1), x)
    assert ours == 0
    ours, _ = saved_bytes(lambda x: nst.gaussian_dropout(x, 0.1), x)
    assert ours == 0  # only the key (Python ints): backward redraws the noise


@pytest.mark.parametrize("noise_shape", [None, (None, 1, None)])
def test_inplace_matches_out_of_place_with_gradients(noise_shape):
    leaf = torch.randn(4, 5, 6, requires_grad=True)
    x = leaf * 1.0
    y = nst.dropout(x, 0.3, noise_shape, seed=4, inplace=True)
    assert y is x
    expected = nst.dropout(leaf.detach(), 0.3, noise_shape, seed=4)
    assert torch.equal(y.detach(), expected)
    y.sum().backward()
    assert torch.equal(leaf.grad, (expected != 0).float() * (65536 / _rng.threshold(0.3)))
    with torch.no_grad():
        z = torch.randn(4, 5, 6)
        layer = nst.Dropout(0.3, noise_shape, inplace=True, seed=4)
        reference = nst.Dropout(0.3, noise_shape, seed=4)(z)
        assert layer(z) is z and torch.equal(z, reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_channels_last_and_views_keep_layout_and_gradients(dtype):
    base = torch.randn(2, 6, 4, 5).to(dtype)
    for x in (base.contiguous(memory_format=torch.channels_last), base.transpose(2, 3), base[:, ::2]):
        x = x.detach().requires_grad_()
        for noise_shape in (None, (None, None, 1, 1)):
            y = nst.dropout(x, 0.5, noise_shape, seed=1)
            assert torch.equal(y, nst.dropout(x.detach().contiguous(), 0.5, noise_shape, seed=1))
            y.backward(torch.ones_like(y))
            assert torch.equal(x.grad != 0, y != 0)
            x.grad = None


def test_zero_size_tensors():
    for shape, noise_shape in [((0, 5), None), ((0, 5), (None, 1)), ((3, 0, 2), (None, 1, None))]:
        x = torch.empty(shape, requires_grad=True)
        for fn in (
            lambda x, ns=noise_shape: nst.dropout(x, 0.5, ns),
            lambda x, ns=noise_shape: nst.alpha_dropout(x, 0.5, ns),
            lambda x, ns=noise_shape: nst.gaussian_dropout(x, 0.5, ns),
            lambda x, ns=noise_shape: nst.gaussian_noise(x, 0.5, ns),
        ):
            y = fn(x)
            assert y.shape == shape
            y.sum().backward()
            assert x.grad.shape == shape
            x.grad = None


def test_rate_zero_and_eval_return_the_input_itself():
    x = torch.randn(3, 4)
    assert nst.dropout(x, 0.0) is x
    assert nst.dropout(x, 0.7, training=False) is x
    state = torch.random.get_rng_state()
    nst.dropout(x, 0.5, training=False)
    assert torch.equal(state, torch.random.get_rng_state())  # nothing drawn when nothing is dropped
