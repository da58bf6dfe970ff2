"""A shared harness run on every noise layer: shapes, mask structure, statistics, eval, serialisation, dtypes, grads."""

import copy
import math
import pickle

import pytest

torch = pytest.importorskip("torch")

import noiseshape.torch as nst  # noqa: E402
from noiseshape import NoiseShapeError, _rng  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SIGMA = 5  # statistical bounds are 5 sigma: a false failure has probability below 6e-7 per check

# name, factory (takes seed=), input shape, axes along which the noise is shared, kind
CASES = [
    ("dropout", lambda **kw: nst.Dropout(0.5, **kw), (32, 16, 16), (), "bernoulli"),
    (
        "dropout-noise-shape",
        lambda **kw: nst.Dropout(0.5, noise_shape=(None, 1, None), **kw),
        (32, 16, 16),
        (1,),
        "bernoulli",
    ),
    (
        "dropout-broadcast-dims",
        lambda **kw: nst.Dropout(0.3, broadcast_dims=(0, 2), **kw),
        (8, 64, 8),
        (0, 2),
        "bernoulli",
    ),
    ("spatial1d", lambda **kw: nst.SpatialDropout1d(0.5, **kw), (32, 32, 6), (2,), "bernoulli"),
    (
        "spatial2d-last",
        lambda **kw: nst.SpatialDropout2d(0.5, "channels_last", **kw),
        (32, 3, 4, 32),
        (1, 2),
        "bernoulli",
    ),
    ("spatial3d", lambda **kw: nst.SpatialDropout3d(0.5, **kw), (32, 32, 2, 3, 2), (2, 3, 4), "bernoulli"),
    ("locked", lambda **kw: nst.LockedDropout(0.5, **kw), (32, 10, 32), (1,), "bernoulli"),
    (
        "locked-time-major",
        lambda **kw: nst.LockedDropout(0.5, batch_first=False, **kw),
        (10, 32, 32),
        (0,),
        "bernoulli",
    ),
    ("drop-path", lambda **kw: nst.DropPath(0.5, **kw), (512, 4, 3), (1, 2), "bernoulli"),
    ("alpha", lambda **kw: nst.AlphaDropout(0.5, noise_shape=(None, None, 1), **kw), (32, 32, 5), (2,), "alpha"),
    ("feature-alpha", lambda **kw: nst.FeatureAlphaDropout(0.5, **kw), (32, 32, 5), (2,), "alpha"),
    (
        "gaussian-dropout",
        lambda **kw: nst.GaussianDropout(0.5, noise_shape=(None, 1, None), **kw),
        (32, 8, 32),
        (1,),
        "gauss_mul",
    ),
    (
        "gaussian-noise",
        lambda **kw: nst.GaussianNoise(0.5, noise_shape=(1, None, None), **kw),
        (8, 32, 32),
        (0,),
        "gauss_add",
    ),
]
IDS = [c[0] for c in CASES]


def _input(kind, shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype) if kind == "gauss_add" else torch.ones(shape, dtype=dtype)


def _draws(shape, shared):
    return math.prod(n for i, n in enumerate(shape) if i not in shared)


def _reset(m):
    with torch.no_grad():
        m.rng_key[1] = 0


@pytest.mark.parametrize(("name", "make", "shape", "shared", "kind"), CASES, ids=IDS)
def test_shape_structure_and_mean(name, make, shape, shared, kind):
    layer = make(seed=11)
    y = layer(_input(kind, shape))
    assert y.shape == shape and y.dtype == torch.float32
    for axis in range(len(shape)):
        first = y.narrow(axis, 0, 1)
        if axis in shared:  # one draw along this axis
            assert torch.equal(y, first.expand_as(y))
        else:  # independent draws: with >= 8 draws of p = 0.5 all equal has probability < 2**-7 per row
            assert not torch.equal(y, first.expand_as(y))
    n = _draws(shape, shared)
    if kind == "bernoulli":
        q = _rng.threshold(0.5 if name not in ("dropout-broadcast-dims",) else 0.3) / 65536
        sigma = math.sqrt((1 - q) / (q * n))  # a kept unit is 1 / q with probability q
        assert abs(y.mean().item() - 1.0) < SIGMA * sigma
        assert set(y.unique().tolist()) <= {0.0, torch.tensor(1 / q, dtype=torch.float32).item()}
    elif kind == "gauss_mul":
        sigma = math.sqrt(0.5 / 0.5 / n)  # the factor is N(1, p / (1 - p))
        assert abs(y.mean().item() - 1.0) < SIGMA * sigma
    elif kind == "gauss_add":
        assert abs(y.mean().item()) < SIGMA * 0.5 / math.sqrt(n)
    else:  # alpha: two values, a * 1 + b (kept) and a * alpha' + b (dropped)
        assert y.unique().numel() == 2


@pytest.mark.parametrize("make", [nst.AlphaDropout, nst.FeatureAlphaDropout], ids=["alpha", "feature-alpha"])
def test_alpha_dropout_keeps_zero_mean_unit_variance(make):
    n = 200_000
    x = torch.randn(n // 50, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = make(0.2, seed=1)(x)
    # x ~ N(0, 1): y has mean 0 and variance 1; for FeatureAlphaDropout the 4000 masks are shared over 50
    # elements, which leaves the mean's variance at 1 / n (the masks are independent of x)
    assert abs(y.mean().item()) < SIGMA / math.sqrt(n)
    # the variance of the sample variance of a unit-variance variable is below 3 / n for these mixtures
    assert abs(y.var().item() - 1.0) < SIGMA * math.sqrt(3 / n) * 2


@pytest.mark.parametrize(("name", "make", "shape", "shared", "kind"), CASES, ids=IDS)
def test_eval_returns_the_input(name, make, shape, shared, kind):
    layer = make().eval()
    x = _input(kind, shape)
    assert layer(x) is x
    assert not layer.train().eval().training


@pytest.mark.parametrize(("name", "make", "shape", "shared", "kind"), CASES, ids=IDS)
def test_seeded_layers_round_trip(name, make, shape, shared, kind):
    layer = make(seed=5)
    x = _input(kind, shape)
    first = layer(x)
    assert int(layer.rng_key[1]) == 1  # the stream counter advanced once
    resumed = make(seed=5)  # a fresh layer given the saved state continues with the same masks
    resumed.load_state_dict(copy.deepcopy(layer.state_dict()))
    clones = [pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer), resumed]
    second = layer(x)
    assert not torch.equal(second, first)
    for clone in clones:
        assert torch.equal(clone(x), second)
        assert clone.rng_key.tolist() == [5, 2]  # each layer advances its own buffer, which state_dict saves
    assert layer.rng_key.tolist() == [5, 2]
    assert torch.equal(make(seed=5)(x), first)  # without the state it starts again from the first mask
    assert repr(eval(repr(layer), vars(nst))) == repr(layer)


@pytest.mark.parametrize(("name", "make", "shape", "shared", "kind"), CASES, ids=IDS)
def test_every_dtype(name, make, shape, shared, kind):
    reference = make(seed=3)(_input(kind, shape))
    for dtype in DTYPES:
        y = make(seed=3)(_input(kind, shape, dtype))
        assert y.dtype == dtype and y.shape == shape
        if kind == "bernoulli":  # the same mask whatever the dtype
            assert torch.equal(y == 0, reference == 0)
        else:
            tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-6)
            assert torch.allclose(y.float(), reference, rtol=tol, atol=tol)


@pytest.mark.parametrize(("name", "make", "shape", "shared", "kind"), CASES, ids=IDS)
def test_gradcheck(name, make, shape, shared, kind):
    layer = make(seed=2)
    small = tuple(min(n, 4) for n in shape)
    x = torch.randn(small, dtype=torch.float64, requires_grad=True)

    def f(x):
        _reset(layer)
        return layer(x)

    assert torch.autograd.gradcheck(f, (x,))


@pytest.mark.parametrize(
    "make",
    [nst.Dropout, nst.DropPath, nst.AlphaDropout, nst.LockedDropout],
    ids=["dropout", "drop-path", "alpha", "locked"],
)
def test_p_one_gives_zeros_and_zero_gradient(make):
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    x[0, 0, 0] = float("nan")
    x.requires_grad_()
    y = make(1.0)(x)
    assert torch.equal(y, torch.zeros_like(y))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_gaussian_dropout_rejects_p_one_and_gradchecks():
    with pytest.raises(NoiseShapeError, match="infinite"):
        nst.GaussianDropout(1.0)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: nst.gaussian_dropout(x, 0.3, seed=1), (x,))
    assert torch.autograd.gradcheck(lambda x: nst.gaussian_noise(x, 0.3, seed=1), (x,))
    assert torch.autograd.gradcheck(lambda x: nst.drop_block2d(x.view(1, 1, 3, 4), 0.3, 2, seed=1), (x,))


def test_drop_block_drops_whole_blocks():
    layer = nst.DropBlock2d(0.2, 3, seed=0)
    y = layer(torch.ones(4, 8, 16, 16))
    dropped = (y == 0).float()
    assert 0 < dropped.mean().item() < 1
    # every dropped unit lies in a fully dropped 3 x 3 block: the union of the fully dropped windows
    # (erosion then dilation) gives back the dropped set
    corners = -torch.nn.functional.max_pool2d(-dropped, 3, stride=1)
    union = torch.nn.functional.max_pool2d(torch.nn.functional.pad(corners, (2, 2, 2, 2)), 3, stride=1)
    assert torch.equal(union, dropped)
    assert abs(y.mean().item() - 1.0) < 1e-5  # kept units are rescaled by count / kept
    assert layer.eval()(y) is y
    assert torch.equal(nst.drop_block2d(torch.randn(2, 2, 5, 5), 1.0, 3), torch.zeros(2, 2, 5, 5))


def test_embedding_dropout_drops_whole_rows():
    emb = torch.nn.Embedding(50, 8)
    layer = nst.EmbeddingDropout(emb, 0.5, seed=1)
    words = torch.arange(50).repeat(3).view(3, 50)
    e = layer(words)
    dropped = (e == 0).all(dim=-1)
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))  # a word is dropped everywhere or nowhere
    assert 0 < dropped[0].sum() < 50
    q = _rng.threshold(0.5) / 65536
    assert torch.allclose(e[0][~dropped[0]], emb.weight[~dropped[0]] / q)
    e.sum().backward()
    assert torch.equal(emb.weight.grad.abs().sum(dim=1) == 0, dropped[0])  # no gradient to dropped rows
    assert torch.equal(layer.eval()(words), emb(words))
    restored = nst.EmbeddingDropout(torch.nn.Embedding(50, 8), 0.5, seed=1)
    restored.load_state_dict(layer.state_dict())
    assert torch.equal(restored.embedding.weight, emb.weight)


def test_weight_dropout_on_an_lstm():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, batch_first=True)
    layer = nst.WeightDropout(lstm, "weight_hh_l0", 0.5, noise_shape=(None, 1))
    x = torch.randn(3, 7, 6)
    a, _ = layer(x)
    b, _ = layer(x)
    assert not torch.equal(a, b)  # a new mask per call
    a.sum().backward()
    assert lstm.weight_hh_l0.grad is not None and lstm.weight_hh_l0.grad.abs().sum() > 0
    # whole rows (noise_shape (None, 1)) of the hidden-to-hidden weight get no gradient when dropped
    rows = lstm.weight_hh_l0.grad.abs().sum(dim=1) == 0
    assert 0 < rows.sum() < 20
    assert torch.equal(layer.eval()(x)[0], lstm(x)[0])
    assert set(layer.state_dict()) == {f"module.{k}" for k in lstm.state_dict()}


def test_compile_fullgraph_dynamic_batch_without_recompiling():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    layer = nst.Dropout(0.1, noise_shape=(None, 8, 1, 1), seed=3)
    compiled = torch.compile(layer, backend=counter, fullgraph=True, dynamic=True)
    eager = nst.Dropout(0.1, noise_shape=(None, 8, 1, 1), seed=3)
    frames = []
    for batch in (2, 3, 5):
        x = torch.randn(batch, 8, 4, 1, requires_grad=True)
        y = compiled(x)
        frames.append(counter.frame_count)
        assert torch.equal(y, eager(x))  # the seeded stream is the same compiled or not
        y.sum().backward()
        assert torch.equal(x.grad, (y != 0).to(x.dtype) / (_rng.threshold(0.1) / 65536))
    assert frames[0] >= 1 and frames[1:] == frames[:1] * 2  # new batch sizes compile nothing new
    assert int(layer.rng_key[1]) == 3


@pytest.mark.parametrize(
    "make",
    [
        lambda: nst.Dropout(0.2),
        lambda: nst.LockedDropout(0.2),
        lambda: nst.GaussianDropout(0.2, noise_shape=(None, 1, None)),
        lambda: nst.AlphaDropout(0.2),
    ],
    ids=["dropout", "locked", "gaussian", "alpha"],
)
def test_compile_inductor_fullgraph(make):
    torch._dynamo.reset()
    layer = make()
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(4, 6, 5, requires_grad=True)
    y = compiled(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape
    if isinstance(layer, (nst.Dropout, nst.LockedDropout)):
        assert torch.equal(x.grad == 0, y == 0)


def test_dropout_add_is_the_composition_and_checks_its_operands():
    x, r, b = torch.randn(3, 4, 5), torch.randn(3, 4, 5), torch.randn(5)
    for noise_shape in (None, (None, 1, None)):
        y = nst.dropout_add(x, r, 0.4, noise_shape, bias=b, seed=2, stream=3)
        assert torch.equal(y, r + nst.dropout(x + b, 0.4, noise_shape, seed=2, stream=3))
    assert torch.equal(nst.dropout_add(x, r, 0.4, bias=b, training=False), r + (x + b))
    with pytest.raises(NoiseShapeError, match=r"residual has shape \(3, 4\)"):
        nst.dropout_add(x, r[..., 0], 0.4)
    with pytest.raises(NoiseShapeError, match=r"bias has shape \(4,\).*give \(5,\) elements"):
        nst.dropout_add(x, r, 0.4, bias=torch.randn(4))


def test_dropout_add_gradcheck():
    x, r, b = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((3, 4), (3, 4), (4,)))
    assert torch.autograd.gradcheck(lambda x, r, b: nst.dropout_add(x, r, 0.4, bias=b, seed=5), (x, r, b))
