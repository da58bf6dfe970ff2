"""noiseshape.jax under jit (any batch size), grad (both modes), vmap and sharded arrays."""

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

import noiseshape.jax as nsj
from noiseshape import _rng

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def _reference_mask(shape, rate, seed, stream=0, offset=0, shared=False):
    return _rng.keep_flags(shape, seed, stream, _rng.threshold(rate), batch_offset=offset, batch_shared=shared)


def test_jit_retraces_for_each_batch_size_and_keeps_the_masks():
    f = jax.jit(lambda x, key: nsj.dropout(x, 0.5, (None, 1, None), key=key))
    key = jax.random.key(3)
    for n in (1, 5, 8):  # a batch size the function never saw retraces; masks stay the contract's
        x = jnp.ones((n, 4, 6))
        y = np.asarray(f(x, key))
        assert np.array_equal(y != 0, np.broadcast_to(_reference_mask((n, 1, 6), 0.5, 3), (n, 4, 6)))
    assert np.array_equal(
        np.asarray(f(jnp.ones((5, 4, 6)), key)),
        np.asarray(nsj.dropout(jnp.ones((5, 4, 6)), 0.5, (None, 1, None), key=key)),
    )


def test_grad_in_reverse_and_forward_mode_is_the_mask_times_the_scale():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, 5)), jnp.float32)
    key = jax.random.key(1)

    def loss(v):
        return (nsj.dropout(v, 0.25, broadcast_dims=(1,), key=key) * jnp.arange(5.0)).sum()

    scale = 65536 / _rng.threshold(0.25)
    expect = np.broadcast_to(_reference_mask((4, 1, 5), 0.25, 1), x.shape) * np.float32(scale) * np.arange(5.0)
    assert np.allclose(np.asarray(jax.grad(loss)(x)), expect)
    assert np.allclose(np.asarray(jax.jacfwd(loss)(x)), expect)
    _, tangent = jax.jvp(lambda v: nsj.gaussian_noise(v, 0.5, key=key), (x,), (jnp.ones_like(x),))
    assert np.array_equal(np.asarray(tangent), np.ones(x.shape, np.float32))  # additive noise: d/dx = 1
    gd = jax.grad(lambda v: nsj.gaussian_dropout(v, 0.2, seed=4).sum())(x)
    assert np.allclose(np.asarray(gd), np.asarray(nsj.gaussian_dropout(jnp.ones_like(x), 0.2, seed=4)))
    # a zero rate and rate 1 differentiate too (zeros have a zero gradient, also at nan)
    assert np.array_equal(np.asarray(jax.grad(lambda v: nsj.dropout(v, 1.0, seed=0).sum())(x)), np.zeros(x.shape))


def test_vmap_over_keys_draws_each_key_s_mask_and_over_data_shares_one():
    keys = jax.random.split(jax.random.key(0), 3)
    x = jnp.ones((3, 2, 8))
    per_key = jax.vmap(lambda v, k: nsj.dropout(v, 0.5, key=k))(x, keys)
    for i in range(3):
        seed = nsj.seed_of(keys[i])
        assert np.array_equal(np.asarray(per_key[i]) != 0, _reference_mask((2, 8), 0.5, seed))
    shared = jax.vmap(lambda v: nsj.dropout(v, 0.5, seed=9, stream=2))(x)
    assert np.array_equal(np.asarray(shared[0]) != 0, _reference_mask((2, 8), 0.5, 9, 2))
    assert all(np.array_equal(np.asarray(shared[i]), np.asarray(shared[0])) for i in range(3))


def test_micro_batches_in_a_scan_reproduce_the_whole_batch():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((8, 3, 4)), jnp.float32)
    whole = nsj.dropout(x, 0.4, (None, 1, None), seed=6)

    def step(carry, i):
        part = jax.lax.dynamic_slice_in_dim(x, i * 2, 2)
        return carry, nsj.dropout(part, 0.4, (None, 1, None), seed=6, batch_offset=i * 2)

    _, parts = jax.lax.scan(step, None, jnp.arange(4))
    assert np.array_equal(np.asarray(parts).reshape(x.shape), np.asarray(whole))


_SHARDED = """
import numpy as np, jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import noiseshape.jax as nsj
from noiseshape import _rng
assert jax.device_count() == 4, jax.devices()
x = np.random.default_rng(0).standard_normal((8, 6, 12)).astype(np.float32)
key = jax.random.key(5)
cases = [
    ("dropout", lambda v, k: nsj.dropout(v, 0.3, key=k, batch_offset=3), None),
    ("gauss", lambda v, k: nsj.gaussian_noise(v, 0.5, broadcast_dims=(1,), key=k), None),
]
expect = {name: np.asarray(jax.jit(f)(x, key)) for name, f, _ in cases}
full = _rng.keep_flags((8, 6, 12), 5, 0, _rng.threshold(0.3), batch_offset=3)
assert np.array_equal(expect["dropout"] != 0, full)
meshes = [
    (Mesh(np.array(jax.devices()), ("b",)), P("b")),
    (Mesh(np.array(jax.devices()), ("b",)), P(None, None, "b")),
    (Mesh(np.array(jax.devices()).reshape(2, 2), ("b", "f")), P("b", None, "f")),
]
for mesh, spec in meshes:
    xs = jax.device_put(x, NamedSharding(mesh, spec))
    for name, f, _ in cases:
        y = jax.jit(f)(xs, key)
        assert len(y.addressable_shards) == 4
        assert np.array_equal(np.asarray(y), expect[name]), (name, spec)
print("ok", len(meshes) * len(cases))
"""


def test_sharded_arrays_get_the_global_array_s_masks_whatever_the_mesh():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SHARDED)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", "6"]
