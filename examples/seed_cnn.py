"""The classic multivariate time-series CNN with channel dropout: Dropout(0.1, noise_shape=(None, 64, 1, 1)).

Input (N, 1, 100, 2): 100 time steps of 2 signals. Conv2d(1, 64, (11, 2)) -> MaxPool2d((2, 1)) ->
Dropout(0.1, noise_shape=(None, 64, 1, 1)), which drops whole feature maps (one draw per sample and
channel, shared over time), then a linear classifier. The data set is synthetic: class 1 hides a short
burst of a sine in one of the two signals.

    python examples/seed_cnn.py [--epochs 5] [--samples 2000]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import noiseshape.torch as nst


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = 0.5 * torch.randn(n, 1, 100, 2, generator=generator)
    y = torch.randint(0, 2, (n,), generator=generator)
    t = torch.arange(20, dtype=torch.float32)
    burst = torch.sin(2 * math.pi * t / 5)
    for i in torch.nonzero(y).flatten().tolist():
        start = int(torch.randint(0, 80, (1,), generator=generator))
        signal = int(torch.randint(0, 2, (1,), generator=generator))
        x[i, 0, start : start + 20, signal] += burst
    return x, y


class SeedCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 64, (11, 2))
        self.pool = nn.MaxPool2d((2, 1))
        self.drop = nst.Dropout(0.1, noise_shape=(None, 64, 1, 1))
        self.head = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.pool(torch.relu(self.conv(x))))  # (N, 64, 45, 1), whole channels dropped
        return self.head(h.amax(dim=(2, 3)))


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x_train, y_train = make_data(args.samples, g)
    x_test, y_test = make_data(max(args.samples // 4, 64), g)
    model = SeedCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), args.batch):  # the last batch is smaller: None takes any batch size
            idx = order[i : i + args.batch]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
