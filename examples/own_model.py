"""Serve your own model: an early-exit network of your own, exported as a serflow artefact.

    python examples/own_model.py OUT

Any network keeps serflow's contract when it is cut into K torch modules, each mapping
the previous hidden tensor (the first: the input, as clients send it) to
``(hidden, logits)``. This one reads the 13 measurements of scikit-learn's wine data
(three cultivars) and has an exit after each of its three stages; it trains in seconds.
``export_network`` writes OUT: one ONNX graph per stage (checked against torch), the
held-out split as the calibration set the profiler measures on, and a manifest that
declares the input (``float32``, shape ``[13]``, no preprocessing) and the exit rule.
Then profile it, plan it, and serve it from a storage URI (README, "Serve your own model").
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split
from torch import nn

from serflow_runtime.export import export_network


class Stage(nn.Module):
    """One stage: a residual layer and its exit (the first also scales the raw input)."""

    def __init__(self, width: int, classes: int, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None, features: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.scale = mean is not None
        if mean is not None and std is not None:
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.embed = nn.Linear(features, width)
        self.layer = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.exit = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale:
            x = self.embed((x - self.mean) / self.std)
        h = x + self.layer(x)
        return h, self.exit(h)


def main(out: str) -> None:
    torch.manual_seed(0)
    data = load_wine()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    mean, std = torch.from_numpy(x_train.mean(0)), torch.from_numpy(x_train.std(0) + 1e-6)
    classes = [str(c) for c in data.target_names]
    stages = [Stage(16, len(classes), mean, std, x.shape[1]), Stage(16, len(classes)),
              Stage(16, len(classes))]  # fmt: skip
    params = [p for s in stages for p in s.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(200):  # every exit learns: the sum of their losses
        opt.zero_grad()
        h, loss = xt, torch.zeros(())
        for s in stages:
            h, logits = s(h)
            loss = loss + nn.functional.cross_entropy(logits, yt)
        loss.backward()
        opt.step()
    m = export_network(
        stages,
        out,
        name="wine",
        example=torch.from_numpy(x_val[:4]),
        classes=classes,
        calibration=(x_val, y_val),
        input_name="measurements",
        describes={"architecture": "residual-mlp", "data": "scikit-learn wine, 30% held out"},
    )
    print(f"wrote {out}: {m.num_stages} stages, input {m.input.dtype} {list(m.input.shape)}, "
          f"digest {m.digest}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/own_model.py OUT")
    main(sys.argv[1])
