"""Joint training of the backbone and every internal classifier (SDN's IC-joint mode),
for any network of the contract (the VGG-16-BN SDN or the residual network)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from serflow_runtime.checkpoint import AnyModel
from serflow_runtime.data import Dataset


@dataclass
class TrainConfig:
    epochs: int = 12
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    threads: int = 0  # 0: torch's default


def evaluate(
    model: AnyModel, x: torch.Tensor, y: torch.Tensor, batch: int = 256
) -> list[float]:
    """Accuracy of each exit (all K classifiers) on (x, y)."""
    model.eval()
    correct = [0] * model.arch.num_partitions
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            outs = model(x[i : i + batch])
            for k, lg in enumerate(outs):
                correct[k] += int((lg.argmax(1) == y[i : i + batch]).sum())
    return [c / max(1, x.shape[0]) for c in correct]


def train(
    model: AnyModel,
    ds: Dataset,
    cfg: TrainConfig,
    log: Callable[[str], None] = print,
) -> list[float]:
    """Train in place; returns per-exit accuracy on the held-out split."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((ds.x_train.shape[0] + cfg.batch - 1) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, steps))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(ds.x_train.shape[0], generator=gen)
        total = 0.0
        for i in range(0, perm.numel(), cfg.batch):
            idx = perm[i : i + cfg.batch]
            if idx.numel() < 2:  # batch norm needs two samples in training mode
                continue
            outs = model(ds.x_train[idx])
            loss = sum((loss_fn(o, ds.y_train[idx]) for o in outs), torch.zeros(()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
        acc = evaluate(model, ds.x_val, ds.y_val)
        log(
            f"epoch {epoch + 1}/{cfg.epochs} loss {total / perm.numel():.3f} "
            f"val acc per exit {' '.join(f'{a:.3f}' for a in acc)}"
        )
    model.eval()
    return evaluate(model, ds.x_val, ds.y_val)
