"""Monte Carlo dropout (Gal & Ghahramani, 2016): a predictive mean and spread from a dropout network.

A small MLP with noiseshape Dropout is fitted to noisy samples of sin(x) for x in [-2, 2]; at test
time `mc_sample` keeps only the dropout layers stochastic and draws many forward passes, each with one
mask shared by the whole batch (one coherent function per pass). Where the data pinned the function
down, the passes agree; away from it they fan out: the example prints the predictive standard
deviation on the training interval and more than 3 away from it (about 4 times larger), and
`--plot band.png` draws the mean and the +-2 standard deviation band (needs matplotlib).

    python examples/mc_uncertainty.py [--steps 1500] [--passes 100] [--plot band.png]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import noiseshape.torch as nst

DATA = (-2.0, 2.0)  # the training interval
FAR = 3.0  # "far from the data": more than this away from the training interval


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--plot", metavar="FILE", help="write the band as a picture (.png or .svg)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x = torch.linspace(*DATA, 80).unsqueeze(1)
    y = torch.sin(x) + 0.1 * torch.randn_like(x)
    model = nn.Sequential(
        nn.Linear(1, 128), nn.ReLU(), nst.Dropout(0.2), nn.Linear(128, 128), nn.ReLU(), nst.Dropout(0.2),
        nn.Linear(128, 1),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5)
    for _ in range(args.steps):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    grid = torch.linspace(-8, 8, 321).unsqueeze(1)
    samples = nst.mc_sample(model, grid, args.passes, share_batch=True).squeeze(-1)  # (passes, 321)
    mean, std = samples.mean(0), samples.std(0)
    g = grid.squeeze(1)
    distance = (DATA[0] - g).clamp(min=0) + (g - DATA[1]).clamp(min=0)  # 0 on the training interval
    result = {
        "train_mse": loss.item(),
        "std_near_data": std[distance == 0].mean().item(),
        "std_far_from_data": std[distance > FAR].mean().item(),
    }
    near, far = result["std_near_data"], result["std_far_from_data"]
    print(f"training MSE {result['train_mse']:.4f} (the noise variance is 0.01)")
    print(f"mean predictive std on the training interval {near:.3f}, more than {FAR:g} away from it {far:.3f}")
    print(f"the passes spread {far / near:.1f} times wider where there was no data")
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--plot needs matplotlib: pip install 'noiseshape[plot]'")
            return result
        fig, ax = plt.subplots(figsize=(7, 4))
        gn = g.numpy()
        ax.fill_between(gn, (mean - 2 * std).numpy(), (mean + 2 * std).numpy(), alpha=0.3, label="mean ± 2 std")
        ax.plot(gn, mean.numpy(), label="predictive mean")
        ax.plot(gn, torch.sin(g).numpy(), "k--", linewidth=1, label="sin(x)")
        ax.scatter(x.squeeze(1).numpy(), y.squeeze(1).numpy(), s=8, color="k", label="training data")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(f"Monte Carlo dropout, {args.passes} passes")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")
    return result


if __name__ == "__main__":
    main()
