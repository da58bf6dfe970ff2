"""An LSTM classifier with variational (locked) dropout and DropConnect, against plain dropout.

LockedDropout draws one mask per sequence and reuses it at every time step (Gal & Ghahramani, 2016);
WeightDropout drops entries of the LSTM's hidden-to-hidden matrix (Wan et al., 2013; Merity et al.,
2017). The task is synthetic: is the number of positive tokens in a sequence of +1/-1 tokens (with
noise) above half? Both models train for the same number of steps and print their test accuracy.

    python examples/variational_lstm.py [--epochs 5] [--samples 2000]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import noiseshape.torch as nst


def make_data(n: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 2, (n, steps), generator=generator).float() * 2 - 1
    x = torch.stack([tokens, 0.5 * torch.randn(n, steps, generator=generator)], dim=-1)
    return x, (tokens.sum(1) > 0).long()


class Classifier(nn.Module):
    def __init__(self, variational: bool, hidden: int = 32, p: float = 0.25) -> None:
        super().__init__()
        lstm = nn.LSTM(2, hidden, batch_first=True)
        if variational:
            self.drop_in = nst.LockedDropout(p, batch_first=True)
            self.lstm = nst.WeightDropout(lstm, ["weight_hh_l0"], p)
            self.drop_out = nst.LockedDropout(p, batch_first=True)
        else:
            self.drop_in = nn.Dropout(p)
            self.lstm = lstm
            self.drop_out = nn.Dropout(p)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.drop_in(x))
        return self.head(self.drop_out(out)[:, -1])


def train(model: nn.Module, data, epochs: int, batch: int) -> float:
    (x, y), (x_test, y_test) = data
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    data = (make_data(args.samples, args.steps, g), make_data(max(args.samples // 4, 64), args.steps, g))
    results = {}
    for name, variational in (("plain dropout", False), ("locked + weight dropout", True)):
        torch.manual_seed(0)
        results[name] = train(Classifier(variational), data, args.epochs, args.batch)
        print(f"{name:>24}: test accuracy {results[name]:.3f}")
    return results


if __name__ == "__main__":
    main()
