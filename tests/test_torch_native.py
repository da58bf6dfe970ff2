"""Small inputs: autograd from one native multiply by the scaled mask (``_eager.NATIVE_MAX``).

Forward values are the contract's, bit for bit (a dropped ``inf`` or ``nan`` is exactly +0); the
gradient and the tangent are ``g * m`` with ``m`` the scaled mask, equal in value to the noise
applied to ``g`` (a dropped position holds a zero of either sign, as torch's dropout gives).
"""

import pytest

torch = pytest.importorskip("torch")

import noiseshape.torch as nst  # noqa: E402
from noiseshape import _rng  # noqa: E402
from noiseshape._spec import resolve  # noqa: E402
from noiseshape.torch import _eager, _ops  # noqa: E402


def reference(x, p, noise_shape=None, *, seed, stream=0):
    """The NumPy flags broadcast over ``x``: kept values times the keep scale (in float32 or float64), dropped +0."""
    spec = resolve(tuple(x.shape), noise_shape, None)
    t = _rng.threshold(p)
    flags = torch.from_numpy(_rng.keep_flags(spec.shape, seed, stream, t))
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    scaled = (x.to(compute) * _rng.keep_scale(t)).to(x.dtype)
    return torch.where(flags, scaled, torch.zeros((), dtype=x.dtype))


def same_bits(a, b):
    width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    assert a.dtype == b.dtype and torch.equal(a.contiguous().view(width), b.contiguous().view(width))


SMALL_CASES = [
    ((7, 9), None),
    ((7, 9), (None, 1)),
    ((2, 3, 4, 5), (None, None, 1, 1)),
    ((4, 1, 6), (1, 1, None)),
    ((64, 64), None),  # NATIVE_MAX elements exactly
]


def _saved(fn):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = fn()
    return y, saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "noise_shape"), SMALL_CASES)
def test_small_inputs_get_a_native_node_and_the_contract_values(shape, noise_shape, dtype):
    assert torch.Size(shape).numel() <= _eager.NATIVE_MAX
    x = torch.randn(shape, dtype=dtype)
    x.view(-1)[::5] = float("inf")
    x.view(-1)[1::7] = float("nan")
    x.view(-1)[2::3] *= -1
    leaf = x.clone().requires_grad_()
    y, saved = _saved(lambda: nst.dropout(leaf, 0.3, noise_shape, seed=11, stream=2))
    assert type(y.grad_fn).__name__ == "MulBackward0"  # torch's own node, no Python backward
    expected = reference(x, 0.3, noise_shape, seed=11, stream=2)
    same_bits(y.detach(), expected)  # dropped inf / nan / negatives are exactly +0
    # what backward keeps: the scaled mask at the noise shape, nothing else
    mask_shape = _rng_shape(shape, noise_shape)
    assert [tuple(t.shape) for t in saved] == [mask_shape]
    assert saved[0].dtype == dtype
    g = torch.randn(shape, dtype=dtype)
    y.backward(g)
    grad_reference = reference(g, 0.3, noise_shape, seed=11, stream=2)
    assert torch.equal(leaf.grad, grad_reference)  # equal values (a dropped zero may carry g's sign)
    keep = reference(torch.ones(shape, dtype=dtype), 0.3, noise_shape, seed=11, stream=2) != 0
    assert torch.equal(leaf.grad == 0, ~keep | (g == 0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("shape", "noise_shape"), [((7, 9), None), ((64, 64), None), ((2, 3, 4, 5), (None, None, 1, 1))]
)
def test_dropped_negatives_are_plus_zero_without_inf_or_nan(shape, noise_shape, dtype):
    # finite x, half of it negative and -0: the full-shape factor's zeros take x's sign, so no rewrite pass is
    # needed; the broadcast one is rewritten. Either way every dropped element is +0.
    x = -torch.rand(shape, dtype=dtype)
    x.view(-1)[::2] *= -1
    x.view(-1)[3::10] = -0.0
    leaf = x.clone().requires_grad_()
    y = nst.dropout(leaf, 0.5, noise_shape, seed=5)
    assert type(y.grad_fn).__name__ == "MulBackward0"
    same_bits(y.detach(), reference(x, 0.5, noise_shape, seed=5))
    dropped = reference(torch.ones(shape, dtype=dtype), 0.5, noise_shape, seed=5) == 0
    assert dropped.any() and not torch.signbit(y.detach()[dropped]).any()


def _rng_shape(shape, noise_shape):
    return tuple(resolve(tuple(shape), noise_shape, None).shape)


def _swapped(noise_shape):
    """The noise shape of the input with its first and last axes swapped."""
    if noise_shape is None:
        return None
    entries = list(noise_shape)
    entries[0], entries[-1] = entries[-1], entries[0]
    return tuple(entries)


@pytest.mark.parametrize(("shape", "noise_shape"), SMALL_CASES[:3])
def test_native_and_recomputing_paths_agree(monkeypatch, shape, noise_shape):
    x = torch.randn(shape, dtype=torch.float64)
    g = torch.randn(shape, dtype=torch.float64)
    views = [(lambda t: t, noise_shape), (lambda t: t.transpose(0, -1), _swapped(noise_shape))]
    results = {}
    for native_max in (_eager.NATIVE_MAX, 0):
        monkeypatch.setattr(_eager, "NATIVE_MAX", native_max)
        for k, (view, spec) in enumerate(views):  # a contiguous and a transposed input
            leaf = x.clone().requires_grad_()
            y = nst.dropout(view(leaf), 0.4, spec, seed=5)
            assert (type(y.grad_fn).__name__ == "MulBackward0") == bool(native_max)
            y.backward(view(g))
            results[native_max > 0, k] = (y.detach(), leaf.grad)
    for k in range(2):
        (y_native, g_native), (y_function, g_function) = results[True, k], results[False, k]
        same_bits(y_native, y_function)
        assert torch.equal(g_native, g_function)


@pytest.mark.parametrize("noise_shape", [None, (None, 1)])
def test_forward_mode_and_double_backward_on_the_native_path(noise_shape):
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda t: nst.dropout(t, 0.3, noise_shape, seed=2)  # noqa: E731
    assert type(fn(x).grad_fn).__name__ == "MulBackward0"
    assert torch.autograd.gradcheck(fn, (x,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(fn, (x,))
    tangent = torch.randn(6, 5, dtype=torch.float64)
    _, jvp = torch.func.jvp(fn, (x.detach(),), (tangent,))
    assert torch.equal(jvp, fn(tangent))


def test_module_calls_take_the_native_path_and_replay_under_checkpoint():
    layer = nst.Dropout(0.5, seed=4)
    x = torch.randn(8, 16, requires_grad=True)
    y = layer(x)
    assert type(y.grad_fn).__name__ == "MulBackward0"
    layer2 = nst.Dropout(0.5, seed=4)
    x2 = x.detach().clone().requires_grad_()
    y2 = torch.utils.checkpoint.checkpoint(layer2, x2, use_reentrant=False)
    assert torch.equal(y.detach(), y2.detach())
    y.sum().backward()
    y2.sum().backward()
    assert torch.equal(x.grad, x2.grad)


@pytest.mark.parametrize(
    "case",
    [
        "large",
        "float16",
        "bfloat16",
        "inplace",
        "rate one",
        "pure torch",
    ],
)
def test_other_calls_keep_the_recomputing_function(monkeypatch, case):
    shape, dtype, kwargs, p = (4, 8), torch.float32, {}, 0.3
    if case == "large":
        shape = (_eager.NATIVE_MAX + 1,)
    elif case in ("float16", "bfloat16"):
        dtype = getattr(torch, case)  # x * (scale in x's dtype) would round the scale itself
    elif case == "inplace":
        kwargs = {"inplace": True}
    elif case == "rate one":
        p = 1.0
    else:
        monkeypatch.setattr(_ops, "FORCE_TORCH", True)
    leaf = torch.randn(shape, dtype=dtype, requires_grad=True)
    x = leaf * 1.0 if case == "inplace" else leaf
    y, saved = _saved(lambda: nst.dropout(x, p, seed=1, **kwargs))
    assert type(y.grad_fn).__name__ != "MulBackward0"
    assert saved == []  # nothing kept: backward redraws the mask
    y.backward(torch.ones_like(y))
    expected = reference(torch.ones(shape, dtype=dtype), p, seed=1)
    assert torch.equal(leaf.grad, expected)


@pytest.mark.parametrize(
    ("shape", "noise_shape", "native"),
    [
        ((1024, 16), (None, 1), True),  # 16384 elements, a mask of 1024: kept at the mask's size
        ((64, 4096), (None, 1), True),  # NATIVE_MAX_BROADCAST elements
        ((65, 4096), (None, 1), False),  # past it: nothing kept, backward redraws
        ((4097, 16), (None, 1), False),  # a reduced mask larger than NATIVE_MAX
        ((2, 8192), (1, None), False),
        ((16, 35, 128), (None, 1, None), True),  # a mask varying along the last axis (locked dropout)
        ((32, 64, 128), (None, 1, None), True),  # NATIVE_MAX_BROADCAST elements, a mask of NATIVE_MAX
        ((32, 65, 128), (None, 1, None), False),
        ((16, 35, 128), (None, None, 1), True),
    ],
)
def test_broadcast_masks_of_mid_size_inputs(shape, noise_shape, native):
    leaf = torch.randn(shape, requires_grad=True)
    y, saved = _saved(lambda: nst.dropout(leaf, 0.2, noise_shape, seed=8))
    mask_shape = _rng_shape(shape, noise_shape)
    assert (type(y.grad_fn).__name__ == "MulBackward0") == native
    assert [tuple(t.shape) for t in saved] == ([mask_shape] if native else [])
    same_bits(y.detach(), reference(leaf.detach(), 0.2, noise_shape, seed=8))
    y.backward(torch.ones(shape))
    assert torch.equal(leaf.grad, reference(torch.ones(shape), 0.2, noise_shape, seed=8))


def test_no_grad_calls_and_eval_do_not_build_a_mask_tensor():
    x = torch.randn(5, 5)
    y, saved = _saved(lambda: nst.dropout(x, 0.3, seed=3))
    assert y.grad_fn is None and saved == []
    t = _rng.threshold(0.3)
    keep = torch.from_numpy(_rng.lanes(3, 0, 0, 25) < t).reshape(5, 5)
    assert torch.equal(y == 0, ~keep | (x == 0))


def test_nothing_dropped_skips_no_value():
    # at a tiny rate nothing is dropped and the native multiply's values stand as they are: x * scale, bit for bit
    x = torch.tensor([-1.5, 0.0, -0.0, 3.0, float("inf"), float("-inf"), float("nan"), 1e-40], dtype=torch.float32)
    leaf = x.clone().requires_grad_()
    y = nst.dropout(leaf, 1e-5, seed=0)
    assert bool((reference(torch.ones(8), 1e-5, seed=0) != 0).all())  # this seed keeps all 8
    same_bits(y.detach(), reference(x, 1e-5, seed=0))  # -0.0 stays -0.0, inf stays inf: kept values


# ---------------------------------------------------------------------------------------------
# plain calls by their plan (noiseshape.torch._plans)


def _drawn_seed(seed):
    """The seed an unseeded call draws after ``torch.manual_seed(seed)`` (the first of torch.randint's two values)."""
    torch.manual_seed(seed)
    return int(torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64)[0]) % 2**64


PLAIN_CALLS = [  # (name, call(x, seed), shape, noise shape of the reference)
    ("dropout", lambda x, s: nst.dropout(x, 0.3, seed=s), (6, 5), None),
    ("dropout (None, 1)", lambda x, s: nst.dropout(x, 0.3, (None, 1), seed=s), (6, 5), (None, 1)),
    ("broadcast_dims", lambda x, s: nst.dropout(x, 0.3, broadcast_dims=(1,), seed=s), (6, 5), (None, 1)),
    ("spatial_dropout2d", lambda x, s: nst.spatial_dropout2d(x, 0.3, seed=s), (3, 4, 2, 2), (None, None, 1, 1)),
    (
        "spatial channels_last",
        lambda x, s: nst.spatial_dropout1d(x, 0.3, "channels_last", seed=s),
        (3, 5, 4),
        (None, 1, None),
    ),
    ("locked_dropout", lambda x, s: nst.locked_dropout(x, 0.3, seed=s), (3, 5, 4), (None, 1, None)),
    ("locked time first", lambda x, s: nst.locked_dropout(x, 0.3, False, seed=s), (5, 3, 4), (1, None, None)),
    ("drop_path", lambda x, s: nst.drop_path(x, 0.3, seed=s), (6, 2, 3), (None, 1, 1)),
    ("Dropout", lambda x, s: nst.Dropout(0.3, seed=s)(x), (6, 5), None),
    ("SpatialDropout2d", lambda x, s: nst.SpatialDropout2d(0.3, seed=s)(x), (3, 4, 2, 2), (None, None, 1, 1)),
    ("LockedDropout", lambda x, s: nst.LockedDropout(0.3, seed=s)(x), (3, 5, 4), (None, 1, None)),
    ("DropPath", lambda x, s: nst.DropPath(0.3, seed=s)(x), (6, 2, 3), (None, 1, 1)),
]


@pytest.mark.parametrize("seeded", [True, False])
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize(("name", "call", "shape", "noise_shape"), PLAIN_CALLS, ids=[c[0] for c in PLAIN_CALLS])
def test_plain_calls_take_their_plan_and_give_the_contract_values(
    monkeypatch, name, call, shape, noise_shape, grad, seeded
):  # fmt: skip
    from noiseshape.torch import functional as nf

    def refuse(*args, **kwargs):
        raise AssertionError("a plain call left its plan")

    x = torch.randn(shape, dtype=torch.float64)
    x.view(-1)[::4] *= -1
    for _ in range(2):  # the call that makes the plan, and one that finds it
        monkeypatch.setattr(nf, "_prepare", refuse)
        monkeypatch.setattr(_eager, "bernoulli", refuse)
        leaf = x.clone().requires_grad_(grad)
        if seeded:
            seed, y = 7, call(leaf, 7)
        else:
            seed = _drawn_seed(3)
            torch.manual_seed(3)
            y = call(leaf, None)
        monkeypatch.undo()
        same_bits(y.detach(), reference(x, 0.3, noise_shape, seed=seed))
        assert (y.grad_fn is not None) == grad
        if grad:
            ones = torch.ones(shape, dtype=torch.float64)
            y.backward(ones)
            assert torch.equal(leaf.grad, reference(ones, 0.3, noise_shape, seed=seed))


def test_a_bool_entry_is_refused_after_its_equal_has_a_plan():
    from noiseshape import NoiseShapeError

    x = torch.ones(4, 3)
    nst.dropout(x, 0.5, (None, 1), seed=1)  # (None, True) == (None, 1): a plan would find this call's
    with pytest.raises(NoiseShapeError, match=r"noise_shape\[1\] is True"):
        nst.dropout(x, 0.5, (None, True), seed=1)
    nst.dropout(x, 0.5, broadcast_dims=1, seed=1)
    with pytest.raises(NoiseShapeError, match="broadcast_dims is True"):
        nst.dropout(x, 0.5, broadcast_dims=True, seed=1)


def _grad_of(y, g):
    (grad,) = torch.autograd.grad(y, y.grad_fn.next_functions[0][0].variable, g, retain_graph=True)
    return grad


@pytest.mark.parametrize("noise_shape", [None, (None, 1)])
def test_a_mask_tensor_is_reused_only_once_nothing_refers_to_it(noise_shape):
    # backward's scaled mask is reused by a later call of the same plan only when no graph, view, saved-tensor
    # hook or Python name holds it: each case below would see the later call's mask if it were reused too soon
    shape, g = (6, 5), torch.randn(6, 5)
    leaf = torch.randn(shape, requires_grad=True)

    def call(seed):
        return nst.dropout(leaf, 0.5, noise_shape, seed=seed)

    def expected(seed):
        return reference(g, 0.5, noise_shape, seed=seed)

    call(0).backward(g)  # the plan and its spare
    live = [call(s) for s in (1, 2, 3)]  # graphs alive together
    for s, y in zip((1, 2, 3), live):
        assert torch.equal(_grad_of(y, g), expected(s))
    y = call(4)
    held = y.grad_fn._saved_other  # a Python name for the mask
    kept = held.clone()
    y.backward(g)
    del y
    call(5).backward(g)
    assert torch.equal(held, kept)
    del held
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.detach(), lambda t: t):  # a second TensorImpl
        y = call(6)
    call(7).backward(g)
    assert torch.equal(_grad_of(y, g), expected(6))
    y = call(8)
    y.backward(g, retain_graph=True)  # the graph outlives its first backward
    call(9).backward(g)
    assert torch.equal(_grad_of(y, g), expected(8))


def test_a_layer_whose_format_was_changed_to_an_unknown_one_is_refused():
    # the layer's rule of an unknown format plans nothing: the checked path reports it (no full-shape mask)
    from noiseshape import NoiseShapeError

    layer = nst.SpatialDropout2d(0.5)
    x = torch.ones(2, 3, 4, 4)
    layer(x)  # the plan of the known format
    layer.data_format = "channels_middle"
    with pytest.raises((NoiseShapeError, ValueError), match="channels_middle"):
        layer(x)
    locked = nst.LockedDropout(0.5)
    locked.batch_first = "yes"  # not a bool: the checked path's reading (truthy), not a plan
    y = locked(torch.ones(2, 5, 3))
    assert bool((y == y[:, :1]).all())
