"""Drop-in conversion of torch.nn models, Monte Carlo dropout and the Conv2d seed example."""

import math
import re
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import noiseshape.torch as nst  # noqa: E402
from noiseshape import NoiseShapeError, _rng  # noqa: E402


def test_convert_replaces_each_torch_dropout_layer():
    model = nn.Sequential(
        nn.Dropout(0.1, inplace=True),
        nn.Sequential(nn.Dropout1d(0.2), nn.Dropout2d(0.3)),
        nn.Dropout3d(0.4),
        nn.AlphaDropout(0.5),
        nn.FeatureAlphaDropout(0.6),
        nn.Linear(2, 2),
    ).eval()
    converted = nst.convert(model)
    expected = [
        (nst.Dropout, 0.1),
        (nst.SpatialDropout1d, 0.2),
        (nst.SpatialDropout2d, 0.3),
        (nst.SpatialDropout3d, 0.4),
        (nst.AlphaDropout, 0.5),
        (nst.FeatureAlphaDropout, 0.6),
    ]
    layers = [converted[0], converted[1][0], converted[1][1], converted[2], converted[3], converted[4]]
    for layer, (cls, p) in zip(layers, expected):
        assert type(layer) is cls and layer.p == p and not layer.training
    assert converted[0].inplace
    assert type(model[0]) is nn.Dropout  # deep-copied by default
    assert nst.convert(model, inplace=True) is model and type(model[0]) is nst.Dropout
    assert type(nst.convert(nn.Dropout(0.2))) is nst.Dropout


def test_converted_layers_have_the_same_mask_structure():
    x = torch.ones(8, 16, 6, 6)
    y = nst.convert(nn.Dropout2d(0.5))(x)
    assert torch.equal(y, y[..., :1, :1].expand_as(y))  # whole channels, like torch's Dropout2d
    with pytest.raises(NoiseShapeError, match="needs 4"):
        nst.convert(nn.Dropout2d(0.5))(torch.ones(3, 4, 5))  # torch guesses a layout here; we don't


def test_converted_transformer_trains_and_matches_in_eval():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.2, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    converted = nst.convert(model)
    assert not any(type(m) is nn.Dropout for m in converted.modules())
    assert sum(isinstance(m, nst.Dropout) for m in converted.modules()) == 6
    x = torch.randn(3, 5, 16)
    model.eval(), converted.eval()
    assert torch.equal(converted(x), model(x))
    converted.train()
    out = converted(x)
    out.sum().backward()
    assert all(p.grad is not None for p in converted.parameters())


class _Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.drop = nn.Dropout(0.3)
        self.lstm = nn.LSTM(8, 8, num_layers=2, dropout=0.25, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, words):
        h, _ = self.lstm(self.drop(self.embed(words)))
        return self.out(self.drop(h))


def test_converted_lstm_model_trains_and_matches_in_eval():
    torch.manual_seed(0)
    model = _Tagger()
    converted = nst.convert(model)
    assert isinstance(converted.drop, nst.Dropout)
    assert converted.lstm.dropout == 0.25  # the LSTM's internal dropout is not a module: left as it is
    words = torch.randint(0, 20, (4, 7))
    model.eval(), converted.eval()
    assert torch.equal(converted(words), model(words))
    converted.train()
    converted(words).sum().backward()
    assert converted.embed.weight.grad is not None


def test_seed_example_conv_maxpool_channel_dropout():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 64, (11, 2)), nn.MaxPool2d((2, 1)), nst.Dropout(0.1, noise_shape=(None, 64, 1, 1)))
    dropped_channels = 0
    for batch in (1, 2, 5, 32):
        y = net(torch.randn(batch, 1, 100, 2))
        assert y.shape == (batch, 64, 45, 1)
        zero = y == 0
        assert torch.equal(zero, zero[:, :, :1].expand_as(zero))  # whole channels are zeroed
        dropped_channels += int(zero[:, :, 0, 0].sum())
    # 40 samples x 64 channels, each dropped with probability q' = 1 - t / 65536: 5 sigma binomial bound
    n, q = 40 * 64, 1 - _rng.threshold(0.1) / 65536
    assert abs(dropped_channels - n * q) < 5 * math.sqrt(n * q * (1 - q))


def test_mc_dropout_freezes_batchnorm_and_restores_flags():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nst.Dropout(0.5), nn.Linear(16, 2))
    model.train()
    stats = model[1].running_mean.clone()
    x = torch.randn(8, 4)
    with nst.mc_dropout(model) as m:
        assert m is model and not model[1].training and model[2].training and not model.training
        a, b = model(x), model(x)
    assert not torch.equal(a, b)  # still stochastic
    assert torch.equal(model[1].running_mean, stats)  # BatchNorm frozen
    assert all(mod.training for mod in model.modules())


def test_mc_sample_shares_one_mask_across_the_batch_on_request():
    torch.manual_seed(0)
    model = nst.convert(nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.5), nn.Linear(32, 2))).eval()
    x = torch.randn(1, 4).expand(6, 4)  # six copies of one input
    shared = nst.mc_sample(model, x, 5, share_batch=True)
    assert shared.shape == (5, 6, 2)
    assert torch.equal(shared, shared[:, :1].expand_as(shared))  # one function draw per pass
    assert not torch.equal(shared[0], shared[1])  # passes differ
    independent = nst.mc_sample(model, x, 5)
    assert not torch.equal(independent, independent[:, :1].expand_as(independent))
    assert not model.training and not model[1].share_batch
    with pytest.raises(NoiseShapeError, match="convert it first"):
        nst.mc_sample(nn.Sequential(nn.Dropout(0.5)), x, 2, share_batch=True)


# ------------------------------------------------------------------------------------------ where convert differs
# Each difference from torch.nn that convert's docstring and the README state is pinned here.


@pytest.mark.parametrize(
    ("layer", "shape", "needs"),
    [
        (nn.Dropout1d, (4, 5), "needs 3"),  # torch reads (C, L) as one unbatched sample
        (nn.Dropout2d, (3, 4, 5), "needs 4"),  # torch warns and drops 1-D channels of (N, C, L)
        (nn.Dropout2d, (2, 3, 4, 5, 6), "needs 4"),  # torch warns and drops along axis 1 anyway
        (nn.Dropout3d, (3, 4, 5, 6), "needs 5"),  # torch reads (C, D, H, W) as one unbatched sample
    ],
)
def test_converted_spatial_layers_need_batched_input_of_their_rank(layer, shape, needs):
    x = torch.ones(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns for some of these layouts
        assert layer(0.5)(x).shape == x.shape  # torch accepts it
    with pytest.raises(NoiseShapeError, match=re.escape(needs)) as err:
        nst.convert(layer(0.5))(x)
    assert "unsqueeze(0)" in str(err.value)  # the message says how to add the batch axis


def test_converted_masks_are_reproducible_but_not_torchs():
    model = nn.Sequential(nn.Dropout(0.5))
    converted = nst.convert(model)
    x = torch.ones(4, 256)
    torch.manual_seed(0)
    ours = converted(x)
    torch.manual_seed(0)
    assert torch.equal(converted(x), ours)  # torch.manual_seed fixes our masks too
    torch.manual_seed(0)
    assert not torch.equal(model(x), ours)  # but they are drawn by Philox4x32, not by torch's generator


def test_converted_scale_is_the_inverse_of_the_realised_keep_probability():
    t = _rng.threshold(0.1)
    assert 65536 / t != 1 / 0.9  # the keep probability is quantised to t / 65536
    y = nst.convert(nn.Dropout(0.1))(torch.ones(4096))
    kept = y[y != 0]
    assert torch.equal(kept, torch.full_like(kept, 65536 / t))
    assert not torch.equal(kept, torch.full_like(kept, 1 / 0.9))  # torch scales by 1 / (1 - p)


def test_hooks_on_replaced_layers_are_not_carried_over():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(o))
    converted = nst.convert(model)
    converted(torch.ones(1, 2))
    assert seen == []
    model(torch.ones(1, 2))
    assert len(seen) == 1


def test_convert_docstring_and_readme_state_the_differences():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()  # in the repository and the sdist
    section = readme[readme.index("Where `convert` differs from torch.nn") :]
    for doc in (nst.convert.__doc__, section):
        for words in ("unbatched", "3-D input", "torch.manual_seed", "65536", "hooks"):
            assert words in doc, words


def test_converted_model_moves_and_casts_like_the_original():
    # nn.Module.to / .double / .float / .cpu walk the children with Module._apply
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.AlphaDropout(0.2), nn.Dropout2d(0.1))
    converted = nst.convert(model).to(torch.float64).cpu().float().double()
    assert converted[0].weight.dtype == torch.float64
    layers = [nst.GaussianDropout(0.1), nst.Dropout(0.5, seed=3), nst.DropPath(0.1), nst.FeatureAlphaDropout(0.2)]
    for layer in layers:
        assert layer.to(torch.float64) is layer
    x = torch.ones(2, 4, dtype=torch.float64)
    assert converted[:3](x).dtype == torch.float64
