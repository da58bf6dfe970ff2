"""Tensor and sequence parallelism with noiseshape: the parallel block draws exactly the single-process masks.

A transformer block (attention with shaped dropout of the probabilities, an MLP whose dropout is shared
over time, residual dropout through ``dropout_add``) is parallelised with
``torch.distributed.tensor.parallel.parallelize_module`` (Colwise q/k/v/fc1, Rowwise o/fc2, and
SequenceParallel norms with a sequence-sharded residual stream). Each noise call sees a DTensor shard
and draws the mask at its global coordinates, so the masks do not depend on the layout, nothing is
communicated for them, and no RNG state is forked per rank.

Run on CPU (gloo) with two processes::

    torchrun --nproc-per-node 2 examples/tensor_parallel.py

Rank 0 prints, per layout, whether every mask equals the single-process one and how far outputs and
gradients are apart (only the order of the parallel reductions differs).
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import noiseshape.torch as nst


class Block(nn.Module):
    """Pre-norm transformer block; ``trace`` keeps every noise output (the masks are where it is 0).

    ``noise=False`` sets every rate to 0: the same block without noise, to count its own collectives.
    """

    def __init__(self, dim: int = 16, heads: int = 4, noise: bool = True):
        super().__init__()
        self.heads = heads
        self.p = 0.1 if noise else 0.0
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        # one draw per (sample, head, key): the same keys are dropped for every query
        self.attn_drop = nst.Dropout(2 * self.p, noise_shape=(None, None, 1, None), seed=5)
        # one draw per (sample, feature), shared over the sequence
        self.mlp_drop = nst.Dropout(3 * self.p, noise_shape=(None, 1, None), seed=6)
        self.trace: list = []

    def forward(self, x):
        h = self.ln1(x)
        q, k, v = (z(h).unflatten(-1, (self.heads, -1)).transpose(1, 2) for z in (self.q, self.k, self.v))
        a = self.attn_drop((q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1))
        self.trace.append(a)
        x = nst.dropout_add(self.o((a @ v).transpose(1, 2).flatten(-2)), x, self.p, seed=7)
        self.trace.append(x)
        m = self.mlp_drop(F.gelu(self.fc1(self.ln2(x))))
        self.trace.append(m)
        out = nst.dropout_add(self.fc2(m), x, self.p, seed=8)
        self.trace.append(out)
        return out


def parallelize(block: Block, mesh, sequence_parallel: bool) -> Block:
    """Colwise q/k/v/fc1 and Rowwise o/fc2; with ``sequence_parallel`` also SequenceParallel norms."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    if sequence_parallel:  # the residual stream stays sharded along the sequence: Shard(1) DTensors
        col = ColwiseParallel(input_layouts=Shard(1), use_local_output=False)
        row = RowwiseParallel(output_layouts=Shard(1), use_local_output=False)
        plan = {"ln1": SequenceParallel(), "ln2": SequenceParallel()}
    else:  # a replicated residual stream: plain tensors between the parallel regions
        col = ColwiseParallel(use_local_output=False)
        row = RowwiseParallel()
        plan = {}
    plan.update(q=col, k=col, v=col, o=row, fc1=col, fc2=row)
    return parallelize_module(block, mesh, plan)


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _maxdiff(a, b) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def compare(mesh, sequence_parallel: bool, batch: int = 2, seq: int = 8, dim: int = 16) -> dict:
    """One training step of the parallel block against the same block in one process (run on every rank)."""
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.distributed.tensor.debug import CommDebugMode

    x = torch.randn(batch, seq, dim, generator=torch.Generator().manual_seed(3))
    collectives, runs = {}, {}
    for noise in (False, True):
        torch.manual_seed(0)
        ref = Block(dim, noise=noise)
        par = parallelize(copy.deepcopy(ref), mesh, sequence_parallel)
        xd = (distribute_tensor(x, mesh, [Shard(1)]) if sequence_parallel else x.clone()).requires_grad_()
        with CommDebugMode() as comm:
            y = par(xd)
            y.sum().backward()
        collectives[noise] = comm.get_total_counts()
        runs[noise] = ref, par, xd, y
    ref, par, xd, y = runs[True]
    ref_x = x.clone().requires_grad_()
    y_ref = ref(ref_x)
    y_ref.sum().backward()
    grads = [(_full(p.grad), r.grad) for p, r in zip(par.parameters(), ref.parameters())]
    grads.append((_full(xd.grad), ref_x.grad))
    return {
        "layout": ("TP + SequenceParallel" if sequence_parallel else "TP") + f", {mesh.size()} ranks",
        "masks_identical": all(torch.equal(_full(p) == 0, r == 0) for p, r in zip(par.trace, ref.trace)),
        "max_output_difference": _maxdiff(_full(y), y_ref),
        "max_grad_difference": max(_maxdiff(a, b) for a, b in grads),
        "collectives": collectives[True],
        "collectives_without_noise": collectives[False],
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo")
    try:
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        results = [compare(mesh, sp) for sp in (False, True)]
        if dist.get_rank() == 0:
            for r in results:
                print(
                    f"{r['layout']}: masks identical to one process: {r['masks_identical']}; "
                    f"max |output diff| {r['max_output_difference']:.1e}, "
                    f"max |grad diff| {r['max_grad_difference']:.1e}; "
                    f"collectives {r['collectives']} (the same block without noise: {r['collectives_without_noise']})"
                )
        return results
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
