"""Per-call size sweep and training steps of real models: noiseshape against what a torch user writes.

``noiseshape bench --sweep`` and ``noiseshape bench --models`` (``python benchmarks/models.py``).
Every case runs in bursts and the bursts of the cases being compared take turns, so a slow spell of
a shared machine lands on all of them alike; tables give medians and ratios from one run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["models", "models_table", "sweep", "sweep_table"]


def _interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, burst: int = 5, rounds: dict[str, list[float]] | None = None
) -> dict[str, float]:
    """Median seconds per call of each function, the bursts of all functions taking turns.

    The order of the turns rotates from round to round, so every function runs after every other
    equally often (what ran just before, a forward or a backward, moves the next timing by up to 15%).
    ``rounds``, where given, gets each function's median of each round's burst.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    burst = min(burst, repeats)
    for fn in fns.values():
        for _ in range(min(3, repeats)):
            fn()
    order = list(fns.items())
    for r in range(max(1, -(-repeats // burst))):
        for name, fn in order[r % len(order) :] + order[: r % len(order)]:
            fn()
            for _ in range(burst):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
            if rounds is not None:
                rounds.setdefault(name, []).append(statistics.median(times[name][-burst:]))
    return {k: statistics.median(v) for k, v in times.items()}


def _sweep_cases(n: int):
    """(case, ours(x), peer(x), shape) for a float32 input of ``n`` elements."""
    import torch
    import torch.nn.functional as F

    from . import torch as nst

    rate, keep = 0.1, 0.9
    rows = max(1, n // 16)
    shaped = (rows, 16)
    spatial = (max(1, n // 256), 4, 8, 8) if n >= 256 else (1, n // 64 or 1, 8, 8)
    small_maps = (max(1, n // 256), 16, 4, 4) if n >= 256 else (1, n // 16 or 1, 4, 4)  # a CNN's last stages
    steps = (max(1, n // 1024), 16, 64) if n >= 1024 else (1, max(1, n // 64), min(n, 64))
    yield "dropout", lambda x: nst.dropout(x, rate), lambda x: F.dropout(x, rate), (n,)
    # a seeded layer (reproducible masks; its stream moves on every call) against torch's layer
    yield "Dropout(seed=0) layer", nst.Dropout(rate, seed=0), torch.nn.Dropout(rate), (n,)
    yield (
        "dropout (None, 1)",
        lambda x: nst.dropout(x, rate, (None, 1)),
        lambda x: x * torch.bernoulli(torch.full((x.shape[0], 1), keep)) / keep,
        shaped,
    )
    yield (  # Keras' (batch, 1, features): the same features dropped at every step of a sample
        "dropout (None, 1, None)",
        lambda x: nst.dropout(x, rate, (None, 1, None)),
        lambda x: x * torch.bernoulli(torch.full((x.shape[0], 1, x.shape[2]), keep)) / keep,
        steps,
    )
    yield "spatial_dropout2d", lambda x: nst.spatial_dropout2d(x, rate), lambda x: F.dropout2d(x, rate), spatial
    yield "spatial_dropout2d 4x4", lambda x: nst.spatial_dropout2d(x, rate), lambda x: F.dropout2d(x, rate), small_maps
    yield (
        "drop_path",
        lambda x: nst.drop_path(x, rate),
        lambda x: x * torch.bernoulli(torch.full((x.shape[0], 1), keep)) / keep,
        shaped,
    )
    yield "gaussian_noise", lambda x: nst.gaussian_noise(x, 0.1), lambda x: x + torch.randn_like(x) * 0.1, (n,)


def sweep(exponents=range(4, 25, 4), repeats: int = 30, progress=None, case: str | None = None) -> list[dict]:
    """Per-call median microseconds, forward and forward+backward, ours and the peer, at ``2**e`` elements.

    Each case takes ``repeats`` timed calls of each kind; sizes up to ``2**12`` elements, whose calls
    take microseconds, take ten times as many (the medians settle), sizes above ``2**16`` a third.
    ``case`` keeps only the case of that name.
    """
    import torch

    names = [c[0] for c in _sweep_cases(16)]
    if case is not None and case not in names:
        raise ValueError(f"case is {case!r}; choose one of {names}")
    out = []
    for e in exponents:
        n = 1 << e
        reps = max(5, repeats * 10 if e <= 12 else repeats if e <= 16 else repeats // 3)
        for name, ours, peer, shape in _sweep_cases(n):
            if case is not None and name != case:
                continue
            if progress:
                progress(f"2^{e} {name}")
            x = torch.randn(shape)
            leaf = x.clone().requires_grad_()
            g = torch.randn(shape)

            def fb(fn, leaf=leaf, g=g):
                def step():
                    leaf.grad = None
                    fn(leaf).backward(g)

                return step

            def fwd(fn, x=x):
                return lambda: fn(x)

            t = _interleaved(
                {
                    "ours": fwd(ours),
                    "peer": fwd(peer),
                    "ours_fb": fb(ours),
                    "peer_fb": fb(peer),
                },
                reps,
            )
            out.append({"elements": f"2^{e}", "case": name, **{k: v * 1e6 for k, v in t.items()}})
    return out


def _markdown(header: str, cells: list[str]) -> str:
    """A Markdown table: ``header`` cells separated by ``|``, the first column left-aligned, numbers right."""
    columns = header.count("|") - 1
    return "\n".join([header, "|---|" + "---:|" * (columns - 1), *cells])


def sweep_table(rows: list[dict]) -> str:
    return _markdown(
        "| elements | case | forward us: torch | noiseshape | ratio | fwd+bwd us: torch | noiseshape | ratio |",
        [
            f"| {r['elements']} | {r['case']} | {r['peer']:.1f} | {r['ours']:.1f} | {r['ours'] / r['peer']:.2f} "
            f"| {r['peer_fb']:.1f} | {r['ours_fb']:.1f} | {r['ours_fb'] / r['peer_fb']:.2f} |"
            for r in rows
        ],
    )


# ---------------------------------------------------------------------------------------------
# models


def _models():
    """(name, build() -> (model with torch's dropout, its noiseshape version), input factory, loss)."""
    import torch
    from torch import nn

    from . import torch as nst

    class HandLocked(nn.Module):
        """Locked dropout as written by hand in AWD-LSTM-style code (one Bernoulli mask per sequence)."""

        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training:
                return x
            mask = torch.bernoulli(x.new_full((x.shape[0], 1, x.shape[2]), 1 - self.p)) / (1 - self.p)
            return x * mask

    class LSTMLM(nn.Module):
        def __init__(self, drop):
            super().__init__()
            self.emb, self.lstm, self.drop = nn.Embedding(1000, 128), nn.LSTM(128, 128, 2), drop
            self.out = nn.Linear(128, 1000)

        def forward(self, tokens):
            h = self.drop(self.emb(tokens))
            h, _ = self.lstm(h.transpose(0, 1))
            return self.out(self.drop(h.transpose(0, 1)))

    class HandDropPath(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training:
                return x
            keep = 1 - self.p
            return x * torch.bernoulli(x.new_full((x.shape[0],) + (1,) * (x.dim() - 1), keep)) / keep

    class Block(nn.Module):
        def __init__(self, drop_path):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(192), nn.LayerNorm(192)
            self.attn = nn.MultiheadAttention(192, 3, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(192, 768), nn.GELU(), nn.Dropout(0.1), nn.Linear(768, 192))
            self.dp = drop_path

        def forward(self, x):
            h = self.n1(x)
            x = x + self.dp(self.attn(h, h, h, need_weights=False)[0])
            return x + self.dp(self.mlp(self.n2(x)))

    def mlp():
        layers = []
        for _ in range(4):
            layers += [nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.1)]
        return nn.Sequential(*layers, nn.Linear(256, 10))

    def cnn():
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.1),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )  # fmt: skip

    def transformer():
        layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.1, batch_first=True)
        return nn.Sequential(
            nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Flatten(), nn.LazyLinear(10)
        )

    tokens = lambda: torch.randint(0, 1000, (16, 35))  # noqa: E731
    return [
        ("MLP 4 x Linear(256), batch 64", mlp, lambda m: nst.convert(m), lambda: torch.randn(64, 256), "cls"),
        (
            "LSTM LM, locked dropout (16 x 35 tokens)",
            lambda: LSTMLM(HandLocked(0.3)),
            lambda m: _with(m, drop=nst.LockedDropout(0.3)),
            tokens,
            "lm",
        ),
        (
            "TransformerEncoder 2 x 128, batch 16 x 32",
            transformer,
            lambda m: nst.convert(m),
            lambda: torch.randn(16, 32, 128),
            "cls",
        ),
        (
            "CNN with Dropout2d, batch 32 x 3 x 32 x 32",
            cnn,
            lambda m: nst.convert(m),
            lambda: torch.randn(32, 3, 32, 32),
            "cls",
        ),
        (
            "ViT block, drop path, batch 32 x 65 x 192",
            lambda: nn.Sequential(Block(HandDropPath(0.1)), Block(HandDropPath(0.1)), nn.Flatten(), nn.LazyLinear(10)),
            lambda m: nst.convert(_set_drop_path(m, nst.DropPath)),
            lambda: torch.randn(32, 65, 192),
            "cls",
        ),
    ]


def _with(model, **modules):
    """``model`` with its submodules of these names replaced."""
    for name, module in modules.items():
        model.set_submodule(name, module)
    return model


def _set_drop_path(model, make):
    for block in model[:2]:
        block.dp = make(0.1)
    return model


def _saved_bytes(step) -> int:
    import torch

    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(backward=False)
    return total[0]


def models(repeats: int = 20, progress=None, seconds: float = 3.0) -> list[dict]:
    """Training-step time (forward, backward, SGD) and bytes autograd keeps, torch's dropout vs noiseshape.

    Each side takes ``repeats`` timed steps, or as many as fill about ``seconds`` where that is more
    (a step of the MLP takes 4-6 ms: 25 of them are a tenth of a second, which one slow spell of a
    shared machine decides).
    """
    import copy

    import torch
    import torch.nn.functional as F

    out = []
    for name, build, convert, make_input, kind in _models():
        if progress:
            progress(name)
        torch.manual_seed(0)
        base = build()
        x = make_input()
        base(x)  # materialise lazy layers
        # both sides are copies, made alike: a model and its deep copy can differ by a few percent
        # per step from where their tensors landed (an LSTM: 2% in one run)
        theirs, ours = copy.deepcopy(base), convert(copy.deepcopy(base))
        target = torch.randint(0, 1000 if kind == "lm" else 10, x.shape[:2] if kind == "lm" else x.shape[:1])

        def stepper(model, x=x, target=target):
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)

            def step(backward=True):
                logits = model(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
                if backward:
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            return step

        steps = {"torch": stepper(theirs.train()), "noiseshape": stepper(ours.train())}
        start = time.perf_counter()
        steps["torch"]()
        reps = max(repeats, min(int(seconds / (time.perf_counter() - start)), 50 * repeats))
        rounds: dict[str, list[float]] = {}
        t = _interleaved(steps, reps, burst=3, rounds=rounds)
        paired = sorted(a / b for a, b in zip(rounds["noiseshape"], rounds["torch"]))
        out.append(
            {
                "model": name,
                "torch_ms": t["torch"] * 1e3,
                "noiseshape_ms": t["noiseshape"] * 1e3,
                "steps": reps,
                # each round's ratio (the two bursts ran back to back), so drift between rounds cancels
                "paired_ratio": statistics.median(paired),
                "paired_ratio_quartiles": (paired[len(paired) // 4], paired[(3 * len(paired)) // 4]),
                "torch_saved_mib": _saved_bytes(steps["torch"]) / 2**20,
                "noiseshape_saved_mib": _saved_bytes(steps["noiseshape"]) / 2**20,
            }
        )
    return out


def models_table(rows: list[dict]) -> str:
    return _markdown(
        "| model | step ms: torch dropout | noiseshape | ratio | paired ratio (quartiles) "
        "| saved for backward MiB: torch | noiseshape |",
        [
            f"| {r['model']} | {r['torch_ms']:.2f} | {r['noiseshape_ms']:.2f} "
            f"| {r['noiseshape_ms'] / r['torch_ms']:.2f} "
            f"| {r['paired_ratio']:.2f} ({r['paired_ratio_quartiles'][0]:.2f}-{r['paired_ratio_quartiles'][1]:.2f}) "
            f"| {r['torch_saved_mib']:.2f} | {r['noiseshape_saved_mib']:.2f} |"
            for r in rows
        ],
    )
