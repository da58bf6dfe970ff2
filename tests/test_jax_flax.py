"""The Flax modules: drop-in for flax.linen.Dropout and flax.nnx.Dropout, with the contract's masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import noiseshape.jax as nsj
from noiseshape import NoiseShapeError, _rng
from noiseshape.jax import linen as nsl
from noiseshape.jax import nnx as nsx


def _mask(shape, rate, seed, stream=0, offset=0):
    return _rng.keep_flags(shape, seed, stream, _rng.threshold(rate), batch_offset=offset)


class _Net(nn.Module):
    drop: type = nn.Dropout

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(8)(x)
        x = self.drop(0.5, broadcast_dims=(1,))(x, deterministic=not train)
        return nn.Dense(2)(x)


def test_linen_dropout_is_a_drop_in_for_flax_linen_dropout():
    x = jnp.ones((4, 3, 5))
    params = _Net().init(jax.random.key(0), x, train=False)
    ours = _Net(drop=nsl.Dropout)
    # same fields, same parameters (dropout has none), same eval output
    same = jax.tree.map(lambda a, b: bool((a == b).all()), ours.init(jax.random.key(0), x, train=False), params)
    assert jax.tree.all(same)
    assert np.array_equal(
        np.asarray(ours.apply(params, x, train=False)), np.asarray(_Net().apply(params, x, train=False))
    )
    y = ours.apply(params, x, train=True, rngs={"dropout": jax.random.key(7)})
    assert y.shape == (4, 3, 2) and not np.array_equal(np.asarray(y), np.asarray(ours.apply(params, x, train=False)))
    # the mask is the one of the key make_rng("dropout") hands the layer
    rngs = {"dropout": jax.random.key(7)}
    layer_key = nn.apply(lambda m: m.make_rng("dropout"), nsl.Dropout(0.5))({}, rngs=rngs)
    got = nsl.Dropout(0.5, broadcast_dims=(1,)).apply({}, x, deterministic=False, rngs=rngs)
    assert np.array_equal(np.asarray(got), np.asarray(nsj.dropout(x, 0.5, broadcast_dims=(1,), key=layer_key)))


def test_linen_family_takes_rng_collections_explicit_keys_and_offsets():
    x = jnp.ones((6, 4, 5))
    key = jax.random.key(11)
    seed = nsj.seed_of(key)
    y = nsl.Dropout(0.3, noise_shape=(None, 1, None), stream=2).apply({}, x, False, key, batch_offset=4)
    assert np.array_equal(np.asarray(y) != 0, np.broadcast_to(_mask((6, 1, 5), 0.3, seed, 2, 4), x.shape))
    z = nsl.Dropout(0.3, rng_collection="noise").apply({}, x, deterministic=False, rngs={"noise": key})
    assert z.shape == x.shape and 0 < float((z == 0).mean()) < 1
    for module in (
        nsl.AlphaDropout(0.2),
        nsl.GaussianDropout(0.2, broadcast_dims=(1,)),
        nsl.GaussianNoise(0.5, noise_shape=(1, None, None)),
        nsl.DropPath(0.5),
        nsl.SpatialDropout1d(0.5),
    ):
        same = module.apply({}, x, False, key)
        assert np.array_equal(np.asarray(same), np.asarray(module.apply({}, x, False, key)))
        assert not np.array_equal(np.asarray(same), np.asarray(x))
        assert module.apply({}, x, True) is x
    sp = nsl.SpatialDropout2d(0.5, data_format="channels_first").apply({}, jnp.ones((2, 3, 4, 4)), False, key)
    assert np.array_equal(np.asarray(sp) != 0, np.broadcast_to(_mask((2, 3, 1, 1), 0.5, seed), (2, 3, 4, 4)))


def test_linen_deterministic_must_come_from_exactly_one_place():
    with pytest.raises(NoiseShapeError, match="neither the field nor the call"):
        nsl.Dropout(0.5).apply({}, jnp.ones((2, 2)))
    with pytest.raises(NoiseShapeError, match="both the field and the call"):
        nsl.Dropout(0.5, deterministic=True).apply({}, jnp.ones((2, 2)), deterministic=False)
    assert nsl.Dropout(0.5, deterministic=True).apply({}, jnp.ones((2, 2))).shape == (2, 2)


def test_nnx_dropout_takes_what_flax_nnx_dropout_takes():
    x = jnp.ones((4, 3, 6))
    ours = nsx.Dropout(0.5, broadcast_dims=(1,), rngs=nnx.Rngs(dropout=3))
    theirs = nnx.Dropout(0.5, broadcast_dims=(1,), rngs=nnx.Rngs(dropout=3))
    stream = nnx.Rngs(dropout=3)["dropout"].fork()  # the keys the layer will draw, in order
    for _ in range(2):
        key = stream()
        y = ours(x)
        assert np.array_equal(np.asarray(y), np.asarray(nsj.dropout(x, 0.5, broadcast_dims=(1,), key=key)))
        assert theirs(x).shape == y.shape
    # deterministic from the call, the constructor, or nnx.view
    assert ours(x, deterministic=True) is x
    assert nnx.view(ours, deterministic=True)(x) is x
    # a key, an RngStream or Rngs at call time
    k = jax.random.key(4)
    assert np.array_equal(np.asarray(ours(x, rngs=k)), np.asarray(nsj.dropout(x, 0.5, broadcast_dims=(1,), key=k)))
    assert ours(x, rngs=nnx.Rngs(dropout=1)).shape == x.shape
    with pytest.raises(NoiseShapeError, match="rngs is NoneType"):
        nsx.Dropout(0.5)(x)
    with pytest.raises(NoiseShapeError, match="deterministic is not set"):
        nsx.Dropout(0.5, deterministic=None)(x)


def test_nnx_family_works_under_nnx_jit_and_grad():
    class Model(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(5, 5, rngs=rngs)
            self.drops = nnx.List(
                [
                    nsx.Dropout(0.2, noise_shape=(None, 1, None), rngs=rngs),
                    nsx.SpatialDropout1d(0.2, rngs=rngs),
                    nsx.DropPath(0.2, rngs=rngs),
                    nsx.AlphaDropout(0.1, rngs=rngs),
                    nsx.GaussianDropout(0.1, rngs=rngs),
                    nsx.GaussianNoise(0.1, broadcast_dims=(0,), rngs=rngs),
                ]
            )

        def __call__(self, x):
            x = self.lin(x)
            for d in self.drops:
                x = d(x)
            return x

    model = Model(nnx.Rngs(0, dropout=1))
    x = jnp.ones((3, 4, 5))

    @nnx.jit
    def loss_and_grad(m, v):
        return nnx.value_and_grad(lambda mm: (mm(v) ** 2).mean())(m)

    loss1, grads = loss_and_grad(model, x)
    loss2, _ = loss_and_grad(model, x)
    assert np.isfinite(float(loss1)) and float(loss1) != float(loss2)  # a fresh key per step
    assert float(jnp.abs(grads.lin.kernel[...]).sum()) > 0
    evaluated = nnx.view(model, deterministic=True)
    assert np.array_equal(np.asarray(evaluated(x)), np.asarray(model.lin(x)))
