"""Monte Carlo dropout (Gal & Ghahramani, 2016): a predictive mean and spread from a dropout network.

A small MLP with noiseshape Dropout is fitted to noisy samples of sin(x) on two separate intervals;
at test time `mc_sample` keeps only the dropout layers stochastic and draws many forward passes, each
with one mask shared by the whole batch (one coherent function per pass). It prints the predictive
spread near the training data and far from it; `--plot band.png` draws the mean and the +-2 standard
deviation band (needs matplotlib).

    python examples/mc_uncertainty.py [--steps 1500] [--passes 100] [--plot band.png]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import noiseshape.torch as nst


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--plot", metavar="FILE", help="write the band as a picture (.png or .svg)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x = torch.cat([torch.linspace(-3, -1, 40), torch.linspace(1, 3, 40)]).unsqueeze(1)
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

    grid = torch.linspace(-5, 5, 201).unsqueeze(1)
    samples = nst.mc_sample(model, grid, args.passes, share_batch=True).squeeze(-1)  # (passes, 201)
    mean, std = samples.mean(0), samples.std(0)
    inside = ((grid.squeeze(1).abs() >= 1) & (grid.squeeze(1).abs() <= 3)).nonzero().flatten()
    outside = (grid.squeeze(1).abs() >= 4).nonzero().flatten()
    result = {
        "train_mse": loss.item(),
        "std_near_data": std[inside].mean().item(),
        "std_far_from_data": std[outside].mean().item(),
    }
    print(f"training MSE {result['train_mse']:.4f}")
    near, far = result["std_near_data"], result["std_far_from_data"]
    print(f"mean predictive std near the data {near:.3f}, far from it {far:.3f}")
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--plot needs matplotlib: pip install 'noiseshape[plot]'")
            return result
        fig, ax = plt.subplots(figsize=(7, 4))
        g = grid.squeeze(1).numpy()
        ax.fill_between(g, (mean - 2 * std).numpy(), (mean + 2 * std).numpy(), alpha=0.3, label="mean ± 2 std")
        ax.plot(g, mean.numpy(), label="predictive mean")
        ax.plot(g, torch.sin(grid).squeeze(1).numpy(), "k--", linewidth=1, label="sin(x)")
        ax.scatter(x.squeeze(1).numpy(), y.squeeze(1).numpy(), s=8, color="k", label="training data")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(f"Monte Carlo dropout, {args.passes} passes")
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")
    return result


if __name__ == "__main__":
    main()
