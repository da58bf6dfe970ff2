"""Seeded layers under activation checkpointing, and what a ``training=False`` call checks."""

import pytest

torch = pytest.importorskip("torch")

from torch.utils.checkpoint import checkpoint, checkpoint_sequential  # noqa: E402

import noiseshape.torch as nst  # noqa: E402
from noiseshape import NoiseShapeError  # noqa: E402

LAYERS = [
    lambda: nst.Dropout(0.5, seed=5),
    lambda: nst.Dropout(0.5, (None, 1, None), seed=5),
    lambda: nst.LockedDropout(0.5, seed=6),
    lambda: nst.DropPath(0.5, seed=7),
    lambda: nst.GaussianDropout(0.3, seed=8),
    lambda: nst.GaussianNoise(0.3, seed=9),
    lambda: nst.AlphaDropout(0.3, seed=10),
]


class Block(torch.nn.Module):
    """A segment that calls its seeded layer twice (two streams per forward)."""

    def __init__(self, make):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.noise = make()

    def forward(self, x):
        return self.noise(torch.tanh(self.lin(self.noise(x))))


def _grads(blocks, x, mode):
    for b in blocks:
        b.zero_grad()
        b.noise.rng_key[1] = 0
    h = x
    for b in blocks:
        h = b(h) if mode == "none" else checkpoint(b, h, use_reentrant=mode == "reentrant")
    (h**2).sum().backward()
    return [p.grad.clone() for b in blocks for p in b.parameters()], h.detach()


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize("mode", ["reentrant", "non-reentrant"])
def test_checkpointed_seeded_layers_give_the_gradients_of_the_plain_run(make, mode):
    torch.manual_seed(0)
    blocks = [Block(make) for _ in range(3)]
    x = torch.randn(4, 3, 8, requires_grad=True)
    expected, y = _grads(blocks, x, "none")
    got, y_ckpt = _grads(blocks, x, mode)
    assert torch.equal(y, y_ckpt)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)  # bit for bit: the recomputation drew the forward's masks
    assert all(b.noise.rng_key[1].item() == 2 for b in blocks)  # two calls each, counted once


def _nested_then_sequential(model, h):
    """A checkpoint inside a checkpoint, then ``checkpoint_sequential`` (not traced by dynamo: it runs eagerly)."""

    def outer(u):
        return checkpoint(model[1], model[0](u), use_reentrant=False)

    h = checkpoint(outer, h, use_reentrant=False)
    return checkpoint_sequential(model[2:], 2, h, use_reentrant=False)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_checkpoint_sequential_and_a_second_backward(compiled):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[Block(LAYERS[0]) for _ in range(4)])
    x = torch.randn(4, 3, 8, requires_grad=True)
    plain = model(x)
    plain.sum().backward()
    expected = x.grad.clone()
    for m in model:
        m.noise.rng_key[1] = 0
    x.grad = None
    if compiled:
        torch._dynamo.reset()
        out = torch.compile(_nested_then_sequential, backend="aot_eager")(model, x)
    else:
        out = checkpoint_sequential(model, 2, x, use_reentrant=False)
    assert torch.equal(out, plain.detach())
    out.sum().backward(retain_graph=True)
    assert torch.equal(x.grad, expected)
    x.grad = None
    out.sum().backward()  # recomputes again (compiled: from the same saved keys): the same masks again
    assert torch.equal(x.grad, expected)
    assert all(m.noise.rng_key[1].item() == 2 for m in model)


def test_nested_checkpoints():
    torch.manual_seed(0)
    inner, outer = Block(LAYERS[0]), Block(LAYERS[0])

    def run(x, ckpt):
        def seg(h):
            h = outer(h)
            return checkpoint(inner, h, use_reentrant=False) if ckpt else inner(h)

        return checkpoint(seg, x, use_reentrant=False) if ckpt else seg(x)

    x = torch.randn(2, 8, requires_grad=True)
    run(x, False).pow(2).sum().backward()
    expected = x.grad.clone()
    x.grad = None
    outer.noise.rng_key[1] = inner.noise.rng_key[1] = 0
    run(x, True).pow(2).sum().backward()
    assert torch.equal(x.grad, expected)


# ---------------------------------------------------------------------------------------------
# torch.compile: the traced graph keeps each call's key for backward instead of recomputing it from
# the bumped rng_key buffer (which, recomputed after the forward, would give the next stream's masks)


def _compiled_grads(blocks, x, mode, backend="aot_eager", fullgraph=True):
    for b in blocks:
        b.zero_grad()
        b.noise.rng_key[1] = 0
    torch._dynamo.reset()

    @torch.compile(backend=backend, fullgraph=fullgraph)
    def f(h):
        for b in blocks:
            h = checkpoint(b, h, use_reentrant=mode == "reentrant")
        return h

    h = f(x)
    (h**2).sum().backward()
    return [p.grad.clone() for b in blocks for p in b.parameters()], h.detach()


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize(("mode", "fullgraph"), [("non-reentrant", True), ("reentrant", False)])
def test_checkpoint_under_compile(make, mode, fullgraph):
    torch.manual_seed(0)
    blocks = [Block(make) for _ in range(3)]
    x = torch.randn(4, 3, 8, requires_grad=True)
    expected, y = _grads(blocks, x, "none")
    got, y_compiled = _compiled_grads(blocks, x, mode, fullgraph=fullgraph)
    assert torch.equal(y, y_compiled)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)  # bit for bit: backward drew the forward's masks
    assert all(b.noise.rng_key[1].item() == 2 for b in blocks)  # two calls each, counted once


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: nst.SpatialDropout2d(0.5, seed=1), (2, 4, 5, 5)),
        (lambda: nst.FeatureAlphaDropout(0.3, seed=2), (2, 4, 5, 5)),
        (lambda: nst.DropBlock2d(0.3, 3, seed=3), (2, 4, 8, 8)),
        (lambda: nst.WeightDropout(torch.nn.Linear(5, 5), "weight", 0.5, seed=4), (2, 4, 5)),
    ],
    ids=["spatial2d", "feature_alpha", "drop_block", "weight_dropout"],
)
def test_checkpoint_under_compile_other_seeded_layers(make, shape):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(shape, requires_grad=True)

    def seg(h):
        return layer(torch.tanh(layer(h)))

    (seg(x) ** 2).sum().backward()
    expected = x.grad.clone()
    layer.rng_key[1], x.grad = 0, None
    torch._dynamo.reset()
    f = torch.compile(lambda h: checkpoint(seg, h, use_reentrant=False), backend="aot_eager", fullgraph=True)
    (f(x) ** 2).sum().backward()
    assert torch.equal(x.grad, expected)
    assert layer.rng_key[1].item() == 2


@pytest.mark.parametrize("make", [LAYERS[0], LAYERS[5]], ids=["dropout", "gaussian_noise"])
def test_checkpoint_under_compile_with_inductor(make):
    torch.manual_seed(0)
    blocks = [Block(make) for _ in range(2)]
    x = torch.randn(4, 3, 8, requires_grad=True)
    expected, y = _grads(blocks, x, "none")
    got, y_compiled = _compiled_grads(blocks, x, "non-reentrant", backend="inductor")
    torch.testing.assert_close(y_compiled, y)
    for a, b in zip(got, expected):
        # inductor reorders float sums (gradients differ from eager by ~1e-6 here); another stream's
        # masks would change them by 1 to 60
        torch.testing.assert_close(a, b)
    assert all(b.noise.rng_key[1].item() == 2 for b in blocks)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_pure_noise_segment_is_exact(backend):
    """A segment of noise only: the gradient is a product of masks and powers of two, exact under inductor too."""
    torch._dynamo.reset()
    layer = nst.Dropout(0.5, (None, 1, None), seed=11)
    x = torch.randn(4, 3, 8, requires_grad=True)
    (layer(layer(x)) * x.detach()).sum().backward()
    expected = x.grad.clone()
    layer.rng_key[1], x.grad = 0, None
    f = torch.compile(lambda h: checkpoint(lambda u: layer(layer(u)), h, use_reentrant=False), backend=backend)
    (f(x) * x.detach()).sum().backward()
    assert torch.equal(x.grad, expected)
    assert layer.rng_key[1].item() == 2


def test_two_compiled_forwards_then_one_backward():
    """Each forward keeps its own keys: the second forward has moved the counter before either backward runs."""
    torch.manual_seed(0)
    block = Block(LAYERS[2])
    x1, x2 = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    (block(x1).sum() + block(x2).pow(2).sum()).backward()
    expected = [x1.grad.clone(), x2.grad.clone()]
    block.noise.rng_key[1], x1.grad, x2.grad = 0, None, None
    torch._dynamo.reset()
    f = torch.compile(lambda h: checkpoint(block, h, use_reentrant=False), backend="aot_eager", fullgraph=True)
    (f(x1).sum() + f(x2).pow(2).sum()).backward()
    assert torch.equal(x1.grad, expected[0]) and torch.equal(x2.grad, expected[1])
    assert block.noise.rng_key[1].item() == 4


def test_compiled_selective_checkpoint_recomputing_everything_still_keeps_the_keys():
    from functools import partial

    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    torch.manual_seed(0)
    block = Block(LAYERS[4])
    x = torch.randn(4, 8, requires_grad=True)
    (block(x) ** 2).sum().backward()
    expected = x.grad.clone()
    block.noise.rng_key[1], x.grad = 0, None
    torch._dynamo.reset()
    context = partial(create_selective_checkpoint_contexts, lambda ctx, op, *a, **k: CheckpointPolicy.MUST_RECOMPUTE)

    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(h):
        return checkpoint(block, h, use_reentrant=False, context_fn=context)

    (f(x) ** 2).sum().backward()
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("make", [lambda: nst.Dropout(0.5), lambda: nst.DropPath(0.5)], ids=["dropout", "drop_path"])
def test_compiled_checkpoint_of_unseeded_layers_recomputes_the_forward_masks(make):
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(6, 3, 8).add_(0.1).requires_grad_()  # no zero: y / x is the mask times 2 (exact)
    f = torch.compile(lambda h: checkpoint(layer, h, use_reentrant=False), backend="aot_eager", fullgraph=True)
    y = f(x)
    y.sum().backward()
    assert 0 < (y == 0).sum() < y.numel()
    assert torch.equal(x.grad, y.detach() / x.detach())  # backward dropped what the forward dropped


# ---------------------------------------------------------------------------------------------
# training=False


@pytest.mark.parametrize(
    "call",
    [
        lambda x: nst.dropout(x, 0.5, training=False),
        lambda x: nst.dropout(x, 0.5, (None, 1, 1, 1, 1), training=False),
        lambda x: nst.spatial_dropout2d(x, 0.5, training=False),
        lambda x: nst.spatial_dropout3d(x, 0.5, training=False),
        lambda x: nst.locked_dropout(x, 0.5, training=False),
        lambda x: nst.drop_path(x, 0.5, training=False),
        lambda x: nst.alpha_dropout(x, 0.5, training=False),
        lambda x: nst.feature_alpha_dropout(x, 0.5, training=False),
        lambda x: nst.gaussian_dropout(x, 0.5, training=False),
        lambda x: nst.gaussian_noise(x, 0.5, training=False),
        lambda x: nst.drop_block2d(x, 0.5, 3, training=False),
    ],
)
@pytest.mark.parametrize("x", [torch.arange(6), torch.tensor(3.0), torch.ones(2, 3, dtype=torch.int32), "text"])
def test_eval_returns_x_whatever_its_dtype_or_rank(call, x):
    assert call(x) is x  # as torch.nn.functional.dropout(x, training=False)


@pytest.mark.parametrize(
    ("call", "fact"),
    [
        (lambda x: nst.dropout(x, 1.5, training=False), "p is 1.5"),
        (lambda x: nst.dropout(x, 0.5, (None, -1), training=False), "noise_shape[1] is -1"),
        (lambda x: nst.dropout(x, 0.5, (None, 1.5), training=False), "noise_shape[1] is 1.5"),
        (lambda x: nst.dropout(x, 0.5, broadcast_dims=("a",), training=False), "broadcast_dims[0]"),
        (lambda x: nst.dropout(x, 0.5, seed=-1, training=False), "seed is -1"),
        (lambda x: nst.dropout(x, 0.5, stream=2**64, training=False), "stream is"),
        (lambda x: nst.spatial_dropout2d(x, 0.5, "NCHW", training=False), "data_format is 'NCHW'"),
        (lambda x: nst.gaussian_dropout(x, 1.0, training=False), "infinite"),
        (lambda x: nst.gaussian_noise(x, -1.0, training=False), "stddev is -1.0"),
        (lambda x: nst.drop_block2d(x, 0.1, 0, training=False), "block_size is 0"),
        (lambda x: nst.drop_path(x, 0.5, training=False, generator=3), "generator is 3"),
    ],
)
def test_eval_still_checks_what_does_not_depend_on_x(call, fact):
    with pytest.raises(NoiseShapeError, match=None) as info:
        call(torch.arange(6))
    assert fact in str(info.value)


@pytest.mark.parametrize("reentrant", [True, False])
def test_only_calls_that_may_be_in_a_segment_search_the_stack(monkeypatch, reentrant):
    # a plain training forward cannot be inside a checkpointed segment: its call takes the counter without
    # walking up the Python stack; inside a segment's forward and its recomputation the walk runs
    from noiseshape.torch import _replay

    searched = []
    locate = _replay._locate
    monkeypatch.setattr(_replay, "_locate", lambda: searched.append(1) or locate())
    layer = nst.Dropout(0.5, seed=0)
    x = torch.randn(4, 8, requires_grad=True)
    layer(x).sum().backward()
    assert searched == [] and int(layer.rng_key[1]) == 1
    y = checkpoint(lambda v: layer(v * 1.0), x, use_reentrant=reentrant)
    y.sum().backward()
    assert len(searched) == 2  # the segment's forward, then its recomputation
    assert int(layer.rng_key[1]) == 2  # the recomputation replayed the forward's stream
