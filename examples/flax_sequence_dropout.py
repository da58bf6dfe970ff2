"""A Flax sequence classifier with time-shared dropout: noiseshape.jax.linen.Dropout(0.3, broadcast_dims=(1,)).

Input (N, T=40, F=8): 40 time steps of 8 noisy signals; class 1 adds a slow sine plus an offset of 1 to one of them.
Dense(32) per step -> Dropout(0.3, broadcast_dims=(1,)), which drops the same hidden features at every
time step of a sample (the flax.linen.Dropout spelling, drawn by noiseshape's Philox contract) ->
mean over time -> Dense(2). The training step is one ``jax.jit``; each step's dropout key is
``fold_in(key, step)``, so its mask can be reproduced in NumPy or PyTorch from ``seed_of(key)``.

    python examples/flax_sequence_dropout.py [--steps 300] [--samples 2000]
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import numpy as np
import optax

import noiseshape.jax as nsj
from noiseshape.jax import linen as nsl


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = 0.8 * rng.standard_normal((n, 40, 8)).astype(np.float32)
    y = rng.integers(0, 2, n)
    t = np.arange(40, dtype=np.float32)
    for i in np.flatnonzero(y):
        x[i, :, rng.integers(0, 8)] += np.sin(2 * np.pi * t / 40 + rng.uniform(0, 2 * np.pi)) + 1.0
    return x, y


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.relu(nn.Dense(32)(x))  # (N, T, 32)
        h = nsl.Dropout(0.3, broadcast_dims=(1,))(h, deterministic=not train)  # one feature mask per sample
        return nn.Dense(2)(h.mean(axis=1))


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x_train, y_train = make_data(args.samples, rng)
    x_test, y_test = make_data(max(args.samples // 4, 64), rng)
    model = Classifier()
    params = model.init(jax.random.key(0), x_train[:1], train=False)
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)
    dropout_key = jax.random.key(1)

    @jax.jit
    def train_step(params, opt_state, xb, yb, step):
        def loss_fn(p):
            logits = model.apply(p, xb, train=True, rngs={"dropout": jax.random.fold_in(dropout_key, step)})
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for step in range(args.steps):
        idx = rng.integers(0, args.samples, args.batch)
        params, opt_state, loss = train_step(params, opt_state, x_train[idx], y_train[idx], step)
        if (step + 1) % max(args.steps // 5, 1) == 0:
            print(f"step {step + 1}: loss {float(loss):.3f}")
    logits = model.apply(params, x_test, train=False)
    accuracy = float((logits.argmax(-1) == y_test).mean())
    print(f"test accuracy {accuracy:.3f}; dropout keys come from seed {nsj.seed_of(dropout_key)} folded per step")
    return accuracy


if __name__ == "__main__":
    main()
