"""Multi-process checks of noiseshape on torch.distributed: gloo on CPU, one spawn, many checks.

``python tests/distributed_checks.py OUT.json`` spawns 4 processes (a 1-d mesh of 4, a 2 x 2 mesh, DDP
groups of 1, 2 and 4 ranks), runs every check on every rank and writes, per check, whether it held on
all ranks and what each rank measured. ``test_distributed.py`` runs it once and asserts each check.

The single-process reference of every check is the same call on the full tensor (the global batch),
computed on every rank; bitwise comparisons view floats as integers (so ``-0.0 != 0.0``).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 4
CHECKS: dict = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def bitwise(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    view = {torch.float32: torch.int32, torch.float64: torch.int64}.get(a.dtype)
    return torch.equal(a.view(view), b.view(view)) if view else torch.equal(a, b)


def same_grad_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Gradients: equal values (on small inputs a dropped position's zero keeps the incoming gradient's sign)."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def maxdiff(a, b) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def data(*shape, seed=0, integer=False):
    g = torch.Generator().manual_seed(seed)
    if integer:  # non-zero integers: every sum of them is exact and a kept value is never 0
        magnitude = torch.randint(1, 9, shape, generator=g)
        return (magnitude * (torch.randint(0, 2, shape, generator=g) * 2 - 1)).float()
    return torch.randn(*shape, generator=g)


# ---------------------------------------------------------------------------------------------
# DTensor: every op, every layout


def _ops():
    import noiseshape.torch as nst

    def mod(factory):
        return lambda x: factory()(x)

    return {
        "dropout": ("mul", lambda x: nst.dropout(x, 0.3, seed=11)),
        "dropout_shared_axis1": ("mul", lambda x: nst.dropout(x, 0.5, (None, 1, None), seed=12)),
        "dropout_inplace": ("mul", lambda x: nst.dropout(x * 1.0, 0.5, (None, None, 1), seed=28, inplace=True)),
        "dropout_batch_shared": ("mul", lambda x: nst.dropout(x, 0.5, broadcast_dims=(0, 2), seed=13)),
        "dropout_batch_offset": ("mul", lambda x: nst.dropout(x, 0.5, (None, None, 1), seed=14, batch_offset=9)),
        "dropout_add": ("mul", lambda x: nst.dropout_add(x, x, 0.25, (None, 1, None), seed=15)),
        "alpha_dropout": ("affine", lambda x: nst.alpha_dropout(x, 0.2, (None, None, 1), seed=16)),
        "feature_alpha_dropout": ("affine", lambda x: nst.feature_alpha_dropout(x, 0.2, seed=17)),
        "gaussian_dropout": ("mul", lambda x: nst.gaussian_dropout(x, 0.3, (None, 1, None), seed=18)),
        "gaussian_dropout_full": ("mul", lambda x: nst.gaussian_dropout(x, 0.3, seed=19)),
        "gaussian_noise": ("add", lambda x: nst.gaussian_noise(x, 0.5, (1, None, None), seed=20)),
        "spatial_dropout1d": ("mul", lambda x: nst.spatial_dropout1d(x, 0.5, seed=21)),
        "locked_dropout_time_major": ("mul", lambda x: nst.locked_dropout(x, 0.5, batch_first=False, seed=22)),
        "drop_path": ("mul", lambda x: nst.drop_path(x, 0.5, seed=23)),
        "Dropout_module": ("mul", mod(lambda: nst.Dropout(0.4, (None, 1, None), seed=24))),
        "GaussianNoise_module": ("add", mod(lambda: nst.GaussianNoise(0.3, seed=25))),
        "AlphaDropout_module": ("affine", mod(lambda: nst.AlphaDropout(0.1, seed=26))),
        "DropBlock2d": ("mul4d", lambda x: nst.drop_block2d(x, 0.3, 3, seed=27)),
    }


def _layouts(ctx):
    from torch.distributed.tensor import Partial, Replicate, Shard

    m1, m2 = ctx["mesh4"], ctx["mesh22"]
    return {
        "Replicate": (m1, [Replicate()]),
        "Shard(0) uneven, an empty shard": (m1, [Shard(0)]),
        "Shard(1) (shared axis for some)": (m1, [Shard(1)]),
        "Shard(2) uneven": (m1, [Shard(2)]),
        "2-d (Shard(0), Shard(2))": (m2, [Shard(0), Shard(2)]),
        "2-d nested (Shard(1), Shard(1))": (m2, [Shard(1), Shard(1)]),
        "2-d (Replicate, Shard(1))": (m2, [Replicate(), Shard(1)]),
        "Partial": (m1, [Partial()]),
        "2-d (Shard(0), Partial)": (m2, [Shard(0), Partial()]),
    }


def _partial_parts(x, mesh, placements):
    """Local summands of ``x`` (integer-valued, so every order of summation is exact) for a Partial DTensor."""
    from torch.distributed.tensor import DTensor, Partial, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(x.shape, mesh, placements)
    block = x[tuple(slice(o, o + n) for o, n in zip(offset, shape))]
    coord = mesh.get_coordinate()
    n_partial = 1
    first = True
    for dim, p in enumerate(placements):
        if isinstance(p, Partial):
            n_partial *= mesh.size(dim)
            first = first and coord[dim] == 0
    noise = torch.randint(-4, 5, block.shape, generator=torch.Generator().manual_seed(99)).float()
    part = (block - noise * (n_partial - 1)) if first else noise
    assert all(isinstance(p, (Partial, Shard)) or p.is_replicate() for p in placements)
    leaf = part.clone().requires_grad_()
    return leaf, DTensor.from_local(leaf, mesh, placements, run_check=False, shape=x.shape, stride=x.stride())


@check
def dtensor_ops(ctx):
    """Every op on every layout: y.full_tensor() and the gradient bit-identical, placements kept, no collective."""
    from torch.distributed.tensor import Replicate, distribute_tensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    from torch.distributed.tensor.debug import CommDebugMode

    import noiseshape

    rows, ok = [], True
    for op_name, (kind, f) in _ops().items():
        for lay_name, (mesh, placements) in _layouts(ctx).items():
            partial = "Partial" in lay_name
            x = data(4, 6, 6, 6, seed=1, integer=partial) if kind == "mul4d" else data(5, 6, 7, seed=1, integer=partial)
            g = data(*x.shape, seed=2, integer=True)
            ref_x = x.clone().requires_grad_()
            ref = f(ref_x)
            ref.backward(g)
            if partial and kind not in ("mul", "mul4d"):
                leaf, xd = _partial_parts(x, mesh, placements)
                try:
                    f(xd)
                    raised = False
                except noiseshape.NoiseShapeError:
                    raised = True
                ok &= raised
                rows.append({"op": op_name, "layout": lay_name, "clear error": raised})
                continue
            if partial:
                leaf, xd = _partial_parts(x, mesh, placements)
            else:
                xd = distribute_tensor(x, mesh, placements).requires_grad_()
                leaf = xd
            # the gradient of a Partial output arrives replicated (each summand gets all of it)
            gd = distribute_tensor(g, mesh, [Replicate() if p.is_partial() else p for p in placements])
            with CommDebugMode() as comm:
                y = f(xd)
                y.backward(gd)
            same_placements = tuple(y.placements) == tuple(placements)
            full = y.full_tensor()
            grad = leaf.grad if partial else leaf.grad.full_tensor()
            if partial:
                # every rank's summand gets the full gradient: compare each rank's local gradient
                shape_ok = grad.shape == leaf.shape
                sh, off = compute_local_shape_and_global_offset(x.shape, mesh, placements)
                ref_grad = ref_x.grad[tuple(slice(o, o + n) for o, n in zip(off, sh))]
                same_grad = shape_ok and same_grad_values(grad, ref_grad)
            else:
                same_grad = same_grad_values(grad, ref_x.grad)
            # a Partial input is reduced after the noise: equal up to the order of that sum
            same_y = maxdiff(full, ref) < 1e-5 if partial else bitwise(full, ref.detach())
            masks = bool(torch.equal(full == 0, ref.detach() == 0))
            n_comm = comm.get_total_counts()
            row = {
                "op": op_name,
                "layout": lay_name,
                "bitwise": same_y,
                "masks": masks,
                "grad": same_grad,
                "maxdiff": maxdiff(full, ref),
                "placements": same_placements,
                "collectives": n_comm,
            }
            rows.append(row)
            ok &= same_y and same_grad and same_placements and masks and n_comm == 0
    return ok, {"cases": rows}


@check
def dtensor_weights(ctx):
    """Noise on sharded weights: WeightDropout of a Colwise/Rowwise Linear, embedding dropout of a sharded table;
    outputs and weight gradients bit-identical to one process, no collective in the noise."""
    import copy

    from torch import nn
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    import noiseshape.torch as nst

    mesh, out, ok = ctx["mesh4"], {}, True
    x = data(3, 8, seed=7)
    for name, style in {
        "WeightDropout, Colwise": ColwiseParallel(output_layouts=Replicate()),
        "WeightDropout, Rowwise": RowwiseParallel(input_layouts=Replicate()),
    }.items():
        torch.manual_seed(0)
        ref = nst.WeightDropout(nn.Linear(8, 8), "weight", 0.5, noise_shape=(1, None), seed=3)
        par = copy.deepcopy(ref)
        parallelize_module(par.module, mesh, style)
        y, y_ref = par(x), ref(x)
        y.sum().backward()
        y_ref.sum().backward()
        # a Rowwise output is a sum over the ranks: equal up to its order; the weight gradients are exact
        close = maxdiff(_full(y), y_ref) < 1e-6 if "Rowwise" in name else bitwise(_full(y), y_ref)
        same = close and same_grad_values(par.module.weight.grad.full_tensor(), ref.module.weight.grad)
        out[name] = same
        ok &= same
    emb = torch.randn(10, 8)
    idx = torch.tensor([[1, 2, 1, 9]])
    ref = nst.embedding_dropout(idx, emb, 0.5, seed=2)
    for placement in (Shard(0), Shard(1)):
        w = distribute_tensor(emb, mesh, [placement])
        got = nst.embedding_dropout(distribute_tensor(idx, mesh, [Replicate()]), w, 0.5, seed=2)
        same = bitwise(got.full_tensor(), ref)
        out[f"embedding_dropout, weight {placement}"] = same
        ok &= same
    return ok, out


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


@check
def dtensor_triton_path(ctx):
    """The DTensor path through the Triton kernels (Triton's interpreter on CPU): the C core's single-process masks."""
    from torch.distributed.tensor import distribute_tensor

    import noiseshape.torch as nst
    from noiseshape.torch import _ops

    x = data(5, 6, 7, seed=8)
    out, ok = {}, True
    for lay_name, (mesh, placements) in _layouts(ctx).items():
        if "Partial" in lay_name or lay_name == "Replicate":
            continue
        for name, f in {
            "dropout": lambda t: nst.dropout(t, 0.3, (None, 1, None), seed=1),
            "gaussian_dropout": lambda t: nst.gaussian_dropout(t, 0.3, seed=2),
        }.items():
            ref = f(x)
            _ops.FORCE_TRITON = True
            try:
                got = f(distribute_tensor(x, mesh, placements)).full_tensor()
            finally:
                _ops.FORCE_TRITON = False
            if name == "dropout":
                same = bitwise(got, ref)
            else:  # Box-Muller in the interpreter: within float32 rounding of the reference
                same = maxdiff(got, ref) < 1e-6 and torch.equal(got == 0, ref == 0)
            out[f"{name}, {lay_name}"] = same
            ok &= same
    return ok, out


@check
def dtensor_errors(ctx):
    """_StridedShard and mismatched residual placements raise NoiseShapeError."""
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.placement_types import _StridedShard

    import noiseshape
    import noiseshape.torch as nst

    out = {}
    x = data(8, 4)
    m2 = ctx["mesh22"]
    local = x[:2]  # any local block: the error comes before any use of the values
    strided = DTensor.from_local(local, m2, [_StridedShard(0, split_factor=2), Shard(0)], run_check=False)
    for name, call in {
        "_StridedShard": lambda: nst.dropout(strided, 0.5, seed=0),
        "residual placements": lambda: nst.dropout_add(
            distribute_tensor(x, ctx["mesh4"], [Shard(0)]), distribute_tensor(x, ctx["mesh4"], [Replicate()]), 0.5
        ),
    }.items():
        try:
            call()
            out[name] = "no error"
        except noiseshape.NoiseShapeError as e:
            out[name] = str(e).splitlines()[-1].strip()
        except Exception as e:  # a raw internal error is a failure
            out[name] = f"wrong error {type(e).__name__}: {e}"
    ok = all(not v.startswith(("no error", "wrong error")) for v in out.values())
    return ok, out


# ---------------------------------------------------------------------------------------------
# tensor and sequence parallelism


def _example(name):
    """A module of ``examples/`` (the tensor-parallel example's block and comparison are checked here)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@check
def tensor_parallel_block(ctx):
    """examples/tensor_parallel.py: Colwise/Rowwise (+ SequenceParallel) block on 4 and 2 ranks draws the masks of one
    process, outputs and gradients equal up to reduction order, and the noise adds no collective."""
    example = _example("tensor_parallel")
    rows = [example.compare(ctx[mesh], sp) for mesh in ("mesh4", "tp2") for sp in (False, True)]
    ok = all(
        r["masks_identical"]
        and r["max_output_difference"] < 1e-5
        and r["max_grad_difference"] < 1e-4
        and r["collectives"] == r["collectives_without_noise"]
        for r in rows
    )
    return ok, {"cases": rows}


@check
def noise_in_block_is_collective_free(ctx):
    """The block's noise calls on its DTensor activations (both TP layouts) run no collective, forward or backward."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.debug import CommDebugMode

    import noiseshape.torch as nst

    mesh = ctx["tp2"]
    out, ok = {}, True
    cases = {
        "attention probs (B, H, T, T) Shard(1)": (data(2, 4, 8, 8), [Shard(1)], (None, None, 1, None)),
        "MLP hidden (B, T, 4C) Shard(2)": (data(2, 8, 64), [Shard(2)], (None, 1, None)),
        "sequence-parallel residual Shard(1)": (data(2, 8, 16), [Shard(1)], None),
        "tensor-parallel residual Replicate": (data(2, 8, 16), [Replicate()], None),
    }
    for name, (x, pl, ns) in cases.items():
        xd = distribute_tensor(x, mesh, pl).requires_grad_()
        rd = distribute_tensor(x, mesh, pl)
        gd = distribute_tensor(torch.ones_like(x), mesh, pl)
        with CommDebugMode() as comm:
            y = nst.dropout_add(xd, rd, 0.3, ns, seed=1)
            y.backward(gd)
        out[name] = comm.get_total_counts()
        ok &= out[name] == 0
    return ok, out


# ---------------------------------------------------------------------------------------------
# data parallelism and micro-batches


def _dp_model():
    from torch import nn

    import noiseshape.torch as nst

    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(6, 12),
        nst.Dropout(0.5, seed=31),
        nn.Tanh(),
        nst.Dropout(0.3, noise_shape=(None, 1), seed=32),
        nn.Linear(12, 3),
    )


def _record(model):
    """Forward hooks keeping the output of every noise layer (the masks are where it is 0)."""
    import noiseshape.torch as nst

    seen = []
    for m in model.modules():
        if isinstance(m, (nst.Dropout,)):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
    return seen


def _single_process_run(x, y, steps, *, micro=None):
    """Reference: one process, the global batch; optionally ``micro`` micro-batches per step."""
    from noiseshape.torch.distributed import accumulate, global_samples, row_offsets

    model = _dp_model()
    seen = _record(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    n = len(x)
    for _ in range(steps):
        opt.zero_grad()
        if micro is None:
            ((model(x) - y) ** 2).sum().div(n).backward()
        else:
            sizes = [len(c) for c in torch.arange(n).tensor_split(micro)]
            with accumulate(model):
                for off, m in zip(row_offsets(sizes), sizes):
                    with global_samples(off, m):
                        ((model(x[off : off + m]) - y[off : off + m]) ** 2).sum().div(n).backward()
        opt.step()
    return model, seen


@check
def data_parallel(ctx):
    """DDP (3 steps) on 1, 2 and 4 ranks, contiguous offsets (uneven) and strided sample ids: per-sample masks
    identical to one process on the global batch, parameters equal up to reduction order, streams in step."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from noiseshape.torch.distributed import global_samples, rank_offset

    n, steps = 7, 3
    x, y = data(n, 6, seed=4), data(n, 3, seed=5)
    ref, ref_seen = _single_process_run(x, y, steps)
    rows, ok = [], True
    for size, group in ctx["dp_groups"].items():
        for mode in ("offset", "sample_ids"):
            r, w = dist.get_rank(group), size
            model = _dp_model()
            seen = _record(model)
            ddp = DDP(model, process_group=group)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
            # contiguous rows (the last rank's batch smallest), or DistributedSampler's strided split
            ids = torch.arange(n).tensor_split(w)[r] if mode == "offset" else torch.arange(r, n, w)
            for _ in range(steps):
                opt.zero_grad()
                if mode == "offset":
                    block = global_samples(rank_offset(len(ids), group), len(ids))
                else:
                    block = global_samples(sample_ids=ids)
                with block:
                    out = ddp(x[ids])
                ((out - y[ids]) ** 2).sum().mul(w / n).backward()  # DDP averages over the ranks
                opt.step()
            masks = all(torch.equal(s == 0, rs[ids] == 0) for s, rs in zip(seen, ref_seen))
            pdiff = max(maxdiff(p, q) for p, q in zip(model.parameters(), ref.parameters()))
            keys = [m.rng_key.tolist() for m in model.modules() if hasattr(m, "rng_key")]
            ref_keys = [m.rng_key.tolist() for m in ref.modules() if hasattr(m, "rng_key")]
            rows.append({"world": size, "rows": mode, "masks": masks, "param_maxdiff": pdiff, "keys": keys})
            ok &= masks and pdiff < 1e-5 and keys == ref_keys
    return ok, {"cases": rows}


@check
def micro_batches(ctx):
    """k micro-batches of gradient accumulation equal one big batch: masks bitwise, parameters up to reduction order."""
    n, steps = 7, 3
    x, y = data(n, 6, seed=4), data(n, 3, seed=5)
    ref, ref_seen = _single_process_run(x, y, steps)
    rows, ok = [], True
    for k in (2, 3, 7):
        model, seen = _single_process_run(x, y, steps, micro=k)
        # seen holds, per micro-batch, both noise layers' outputs interleaved: regroup by layer
        layer_outputs = [torch.cat(seen[j::2]) for j in range(2)]
        ref_outputs = [torch.cat(ref_seen[j::2]) for j in range(2)]
        masks = all(torch.equal(a == 0, b == 0) for a, b in zip(layer_outputs, ref_outputs))
        pdiff = max(maxdiff(p, q) for p, q in zip(model.parameters(), ref.parameters()))
        keys = [m.rng_key.tolist() for m in model.modules() if hasattr(m, "rng_key")]
        ref_keys = [m.rng_key.tolist() for m in ref.modules() if hasattr(m, "rng_key")]
        rows.append({"k": k, "masks": masks, "param_maxdiff": pdiff, "streams": keys == ref_keys})
        ok &= masks and pdiff < 1e-5 and keys == ref_keys
    return ok, {"cases": rows}


@check
def checkpoint_recompute(ctx):
    """Seeded layers on DTensor activations under activation checkpointing (both modes): the recomputation draws
    the forward's masks, so gradients are those without checkpointing, and each stream advances once."""
    from torch import nn
    from torch.distributed.tensor import Shard, distribute_tensor
    from torch.utils.checkpoint import checkpoint

    import noiseshape.torch as nst

    x = data(4, 6, 8, seed=6)
    out, ok = {}, True
    for reentrant in (False, True):
        runs = []
        for ckpt in (False, True):
            model = nn.Sequential(nst.Dropout(0.5, seed=3), nn.Tanh(), nst.Dropout(0.5, (None, 1, None), seed=4))
            xd = distribute_tensor(x, ctx["mesh4"], [Shard(2)]).requires_grad_()
            y = checkpoint(model, xd, use_reentrant=reentrant) if ckpt else model(xd)
            y.sum().backward()
            runs.append((xd.grad.full_tensor(), [m.rng_key.tolist() for m in model if hasattr(m, "rng_key")]))
        same = bitwise(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1] == [[3, 1], [4, 1]]
        out[f"use_reentrant={reentrant}"] = same
        ok &= same
    return ok, out


# ---------------------------------------------------------------------------------------------
# seeds


@check
def seeds_across_ranks(ctx):
    """Unseeded calls on differently seeded ranks differ; agree_seed makes them agree."""
    import noiseshape.torch as nst
    from noiseshape.torch.distributed import agree_seed

    rank = dist.get_rank()
    torch.manual_seed(1000 + rank)  # ranks seeded differently
    x = torch.ones(64)
    unseeded = nst.dropout(x, 0.5)
    seed = agree_seed()
    agreed = nst.dropout(x, 0.5, seed=seed)
    gen = torch.Generator().manual_seed(agree_seed(123))
    from_gen = nst.dropout(x, 0.5, generator=gen)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (unseeded.tolist(), agreed.tolist(), from_gen.tolist(), seed))
    differ = len({tuple(g[0]) for g in gathered}) > 1
    same = len({tuple(g[1]) for g in gathered}) == 1 and len({g[3] for g in gathered}) == 1
    same_gen = len({tuple(g[2]) for g in gathered}) == 1
    return differ and same and same_gen, {"unseeded_differ": differ, "agreed_same": same, "generator_same": same_gen}


# ---------------------------------------------------------------------------------------------
# driver


def _setup():
    from torch.distributed.device_mesh import init_device_mesh

    ctx = {
        "mesh4": init_device_mesh("cpu", (WORLD,)),
        "mesh22": init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp")),
    }
    ctx["tp2"] = ctx["mesh22"]["tp"]
    rank = dist.get_rank()
    groups = {}
    for size in (1, 2, 4):
        mine = None
        for start in range(0, WORLD, size):
            g = dist.new_group(list(range(start, start + size)))
            if start <= rank < start + size:
                mine = g
        groups[size] = mine
    ctx["dp_groups"] = groups
    return ctx


def _worker(rank, port, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels run in the interpreter on CPU tensors
    if sys.platform == "linux":  # gloo on the loopback device, whether or not the host name resolves
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    try:
        ctx = _setup()
        results = {}
        for name, fn in CHECKS.items():
            t0 = time.perf_counter()
            try:
                ok, info = fn(ctx)
            except Exception:
                ok, info = False, {"error": traceback.format_exc()}
            gathered = [None] * WORLD
            dist.all_gather_object(gathered, (bool(ok), info))
            results[name] = {
                "ok": all(g[0] for g in gathered),
                "ranks": [g[1] for g in gathered],
                "seconds": time.perf_counter() - t0,
            }
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(results, f, indent=1, default=str)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    mp.spawn(_worker, args=(free_port(), sys.argv[1]), nprocs=WORLD)
