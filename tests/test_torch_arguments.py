"""Arguments of the torch frontend and its layers: caught early, each with a clear NoiseShapeError.

Layers check what they can when they are built (as Keras layers do); every message names the
operation and the argument, and says what to write instead.
"""

import re

import numpy as np
import pytest
import torch

import noiseshape as ns
import noiseshape.numpy as nsn
import noiseshape.torch as nst


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(ns.NoiseShapeError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def fact(msg: str) -> str:
    """The message without its header line (which names the operation)."""
    return msg.split("\n", 1)[1]


# ---------------------------------------------------------------------------
# one message for a batch_offset past the index range, on every frontend


def test_batch_offset_out_of_range_reads_the_same_everywhere():
    offset = 2**62
    facts = {
        "numpy.keep_mask": fact(message(nsn.keep_mask, (1, 4), 0.5, seed=0, batch_offset=offset)),
        "torch.keep_mask": fact(message(nst.keep_mask, (1, 4), 0.5, seed=0, batch_offset=offset)),
        "torch.dropout": fact(message(nst.dropout, torch.ones(1, 4), 0.5, seed=0, batch_offset=offset)),
    }
    assert len(set(facts.values())) == 1, facts
    assert "batch_offset 4611686018427387904 puts the mask's global indices past 2**63 - 1" in facts["torch.dropout"]


def test_drop_block2d_batch_offset_out_of_range():
    msg = message(nst.drop_block2d, torch.ones(2, 1, 8, 8), 0.3, 3, seed=0, batch_offset=2**62)
    assert msg.startswith("noiseshape.torch.drop_block2d on input of shape (2, 1, 8, 8):")
    assert re.search(r"batch_offset 4611686018427387904 puts the mask's global indices past 2\*\*63 - 1", msg)
    # the largest offset that fits still draws
    inner = 1 * 6 * 6
    y = nst.drop_block2d(torch.ones(2, 1, 8, 8), 0.3, 3, seed=0, batch_offset=(2**63 - 2) // inner - 2)
    assert y.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("shape", ["23", (2.7, 3), (2, -1), (True,), 4])
def test_torch_keep_mask_refuses_junk_shapes(shape):
    assert "non-negative integers" in message(nst.keep_mask, shape, 0.5, seed=0)


# ---------------------------------------------------------------------------
# layers check noise_shape and broadcast_dims when they are built


@pytest.mark.parametrize(
    ("noise_shape", "fragment"),
    [
        ((20, 1.5, 10), "noise_shape[1] is 1.5 (float)"),
        ((20, -1, 10), "noise_shape[1] is -1; sizes cannot be negative"),
        ((20, 0, 10), "noise_shape[1] is 0; a size 0 matches only an empty axis"),
        ((20, "1", 10), "noise_shape[1] is '1' (str)"),
        ((None, ..., ...), "'...' may stand only once"),
        ((np.array([1, 2]), ...), "noise_shape[0] is array([1, 2]) (ndarray)"),
        ("abc", "noise_shape is 'abc'"),
    ],
)
@pytest.mark.parametrize("layer", [nst.Dropout, nst.AlphaDropout, nst.GaussianDropout])
def test_constructors_check_noise_shape(layer, noise_shape, fragment):
    msg = message(layer, 0.5, noise_shape=noise_shape)
    assert msg.startswith(f"noiseshape.torch.{layer.__name__}(noise_shape=")
    assert fragment in msg


def test_constructors_of_gaussian_noise_and_weight_dropout_check_noise_shape():
    assert "noise_shape[0] is -2" in message(nst.GaussianNoise, 0.1, noise_shape=(-2, None))
    lin = torch.nn.Linear(3, 2)
    assert "noise_shape[1] is 0.5 (float)" in message(nst.WeightDropout, lin, "weight", 0.5, noise_shape=(1, 0.5))


def test_valid_noise_shapes_still_build_and_draw():
    drop = nst.Dropout(0.5, noise_shape=(None, 1, ...))
    assert drop.noise_shape == (None, 1, ...)
    y = drop(torch.ones(4, 3, 5))
    assert torch.equal(y, y[:, :1].expand_as(y))
    assert nst.Dropout(0.5, noise_shape=[None, np.int64(1)]).noise_shape == (None, 1)


@pytest.mark.parametrize("dims", [np.int64(1), 1, (1,), [np.int32(1)]])
def test_broadcast_dims_accepts_what_the_function_accepts(dims):
    drop = nst.Dropout(0.5, broadcast_dims=dims, seed=3)
    x = torch.ones(4, 6, 2)
    y = drop(x)
    want = nst.dropout(x, 0.5, broadcast_dims=dims, seed=3)
    assert torch.equal(y, want)
    assert torch.equal(y, y[:, :1].expand_as(y))


@pytest.mark.parametrize(("dims", "fragment"), [("a", "broadcast_dims is 'a'"), ((1.0,), "broadcast_dims[0] is 1.0")])
def test_broadcast_dims_errors_show_a_broadcast_dims_example(dims, fragment):
    msg = message(nst.Dropout, 0.5, broadcast_dims=dims)
    assert fragment in msg
    assert "broadcast_dims=(1,)" in msg
    assert "(None, 1, None)" not in msg


# ---------------------------------------------------------------------------
# inplace is keyword-only: a positional True says so


@pytest.mark.parametrize(
    ("layer", "call"),
    [
        (nst.Dropout, "Dropout(0.2, inplace=True)"),
        (nst.AlphaDropout, "AlphaDropout(0.2, inplace=True)"),
        (nst.SpatialDropout1d, "SpatialDropout1d(0.2, inplace=True)"),
        (nst.SpatialDropout2d, "SpatialDropout2d(0.2, inplace=True)"),
        (nst.SpatialDropout3d, "SpatialDropout3d(0.2, inplace=True)"),
        (nst.FeatureAlphaDropout, "FeatureAlphaDropout(0.2, inplace=True)"),
    ],
)
@pytest.mark.parametrize("flag", [True, False])
def test_positional_inplace_says_it_is_keyword_only(layer, call, flag):
    msg = message(layer, 0.2, flag)
    assert "inplace is keyword-only" in msg
    assert call.replace("True", str(flag)) in msg


def test_positional_arguments_that_exist_still_work():
    assert nst.LockedDropout(0.2, False).batch_first is False
    assert nst.DropPath(0.2, False).scale_by_keep is False
    assert nst.SpatialDropout2d(0.2, "channels_last").data_format == "channels_last"


# ---------------------------------------------------------------------------
# messages count axes right


@pytest.mark.parametrize(
    ("fn", "x"),
    [
        (lambda x: nst.drop_block2d(x, 0.5, 1), torch.ones(3)),
        (lambda x: nst.DropBlock2d(0.5, 1)(x), torch.ones(3)),
        (lambda x: nst.spatial_dropout2d(x, 0.5), torch.ones(3)),
        (lambda x: nst.feature_alpha_dropout(x, 0.5), torch.ones(3)),
        (lambda x: nst.dropout(x, 0.5, (None, 1)), torch.ones(3)),
    ],
)
def test_one_axis_reads_one_axis(fn, x):
    msg = message(fn, x)
    assert "1 axis" in msg and "1 axes" not in msg


# ---------------------------------------------------------------------------
# inputs the kernels cannot take


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_parameters_of_weight_dropout(dtype):
    lin = torch.nn.Linear(2, 2).to(dtype)
    msg = message(lambda: nst.WeightDropout(lin, "weight", 0.5)(torch.ones(2, 2, dtype=dtype)))
    assert f"has dtype {dtype}" in msg and "floating-point" in msg


def test_complex_embedding_of_embedding_dropout():
    emb = torch.nn.Embedding(4, 2, dtype=torch.complex64)
    msg = message(lambda: nst.EmbeddingDropout(emb, 0.5)(torch.tensor([1])))
    assert "has dtype torch.complex64" in msg and "floating-point" in msg


@pytest.mark.parametrize("names", [5, [5], None, ["weight", 1.0]])
def test_weight_dropout_names_must_be_strings(names):
    msg = message(nst.WeightDropout, torch.nn.Linear(2, 2), names)
    assert "names" in msg and "parameter names" in msg


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize(
    "fn",
    [
        lambda x: nst.dropout(x, 0.5),
        lambda x: nst.Dropout(0.5)(x),
        lambda x: nst.gaussian_noise(x, 0.1),
        lambda x: nst.alpha_dropout(x, 0.5),
    ],
)
def test_sparse_input_is_refused_with_the_fix(fn, layout):
    x = torch.eye(3)
    x = x.to_sparse() if layout == "coo" else x.to_sparse_csr()
    msg = message(fn, x)
    assert "sparse" in msg and "x.to_dense()" in msg


@pytest.mark.parametrize("shape", [(0, 2, 8, 8), (2, 0, 8, 8), (2, 2, 0, 8), (2, 2, 8, 0), (0, 0, 0, 0)])
@pytest.mark.parametrize("module", [False, True])
def test_drop_block2d_of_zero_size_input_returns_it_empty(shape, module):
    x = torch.ones(shape, requires_grad=True)
    y = nst.DropBlock2d(0.3, 3)(x) if module else nst.drop_block2d(x, 0.3, 3, seed=0)
    assert y.shape == shape
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == shape


def test_drop_block2d_block_larger_than_a_nonempty_map_is_still_an_error():
    assert "block_size is 5 but the feature map is (4, 8); use block_size <= 4" in message(
        nst.drop_block2d, torch.ones(1, 1, 4, 8), 0.3, 5
    )


def test_feature_alpha_dropout_takes_p_alone_positionally():
    msg = message(nst.FeatureAlphaDropout, 0.2, 0.3)
    assert "FeatureAlphaDropout takes p alone" in msg and "FeatureAlphaDropout(0.2, inplace=False" in msg


@pytest.mark.parametrize("offset", [1, 2, 3])
@pytest.mark.parametrize("noise_shape", [None, (None, 1)])
def test_tensors_at_odd_byte_addresses(offset, noise_shape):
    n = 1000
    buf = bytearray(4 * n + 8)
    x = torch.frombuffer(buf, dtype=torch.float32, count=n, offset=offset).view(100, 10)
    x.copy_(torch.linspace(-3, 3, n).view(100, 10))
    assert x.data_ptr() % 4 != 0
    y = nst.dropout(x, 0.3, noise_shape, seed=4)
    assert torch.equal(y, nst.dropout(x.clone(), 0.3, noise_shape, seed=4))


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: nst.LockedDropout(0.5, "no"), "batch_first is 'no' (str)"),
        (lambda: nst.DropPath(0.1, "no"), "scale_by_keep is 'no' (str)"),
        (lambda: nst.Dropout(0.5, inplace="yes"), "inplace is 'yes' (str)"),
        (lambda: nst.SpatialDropout2d(0.5, inplace=None), "inplace is None"),
        (lambda: nst.LockedDropout(0.5, 2), "batch_first is 2 (int)"),
    ],
)
def test_flags_are_true_or_false_not_anything_truthy(build, fragment):
    msg = message(build)
    assert fragment in msg and "give True or False" in msg


def test_flags_accept_numpy_bools():
    assert nst.LockedDropout(0.5, np.bool_(False)).batch_first is False
    assert nst.Dropout(0.5, inplace=np.True_).inplace is True


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"noise_shape": np.array(5)}, "noise_shape is array(5); give a tuple"),
        ({"broadcast_dims": np.array(1)}, "broadcast_dims is array(1); give a tuple"),
        ({"broadcast_dims": (1, 1)}, "broadcast_dims names axis 1 twice (entries 0 and 1)"),
    ],
)
def test_constructors_refuse_specs_that_no_input_could_take(kwargs, fragment):
    assert fragment in message(nst.Dropout, 0.5, **kwargs)
