"""The exit rule and partitioned execution.

Exit rule (DESIGN.md section 2): a request leaves at the first exit whose max softmax
is >= tau; if none does, the final classifier answers.  ``tau=None`` turns exits off:
every request runs to the final classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from serflow_runtime.model import EarlyExitVGG


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Max softmax probability per row."""
    return torch.softmax(logits.float(), dim=1).amax(dim=1)


def exit_mask(logits: torch.Tensor, tau: float | None) -> torch.Tensor:
    """Rows that leave at this (internal) exit."""
    if tau is None:
        return torch.zeros(logits.shape[0], dtype=torch.bool)
    # Compare in float64 so tau is taken exactly as given (not rounded to float32).
    return confidence(logits).double() >= tau


def decide(all_logits: list[torch.Tensor], tau: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-network reference: (exit index 1..K, predicted class) per row."""
    k = len(all_logits)
    n = all_logits[0].shape[0]
    exit_at = torch.full((n,), k, dtype=torch.long)
    pred = all_logits[-1].argmax(dim=1)
    undecided = torch.ones(n, dtype=torch.bool)
    for i, lg in enumerate(all_logits[:-1], start=1):
        m = exit_mask(lg, tau) & undecided
        exit_at[m] = i
        pred[m] = lg[m].argmax(dim=1)
        undecided &= ~m
    return exit_at, pred


@dataclass
class Exit:
    row: int  # the row's id in the caller's numbering
    exit: int  # 1-based exit index
    cls: int
    confidence: float


@dataclass
class StageResult:
    exits: list[Exit] = field(default_factory=list)
    survivor_rows: list[int] = field(default_factory=list)
    hidden: torch.Tensor | None = None  # survivors' activations after the last partition run
    logits: dict[int, torch.Tensor] = field(default_factory=dict)  # row -> logits at its exit


def run_range(
    model: EarlyExitVGG,
    x: torch.Tensor,
    start: int,
    end: int,
    tau: float | None,
    rows: list[int] | None = None,
    keep_logits: bool = False,
) -> StageResult:
    """Run partitions start..end (1-based, inclusive) on ``x``; only survivors go on.

    Eval mode makes each row's result independent of which other rows share the batch.
    """
    k = model.arch.num_partitions
    if not 1 <= start <= end <= k:
        raise ValueError(f"bad partition range {start}..{end} for K={k}")
    ids = torch.arange(x.shape[0]) if rows is None else torch.tensor(rows, dtype=torch.long)
    res = StageResult()
    with torch.inference_mode():
        for i in range(start, end + 1):
            if x.shape[0] == 0:
                break
            h, lg = model.part(i)(x)
            m = torch.ones(x.shape[0], dtype=torch.bool) if i == k else exit_mask(lg, tau)
            if bool(m.any()):
                conf = confidence(lg[m])
                cls = lg[m].argmax(dim=1)
                for j, r in enumerate(ids[m].tolist()):
                    res.exits.append(Exit(r, i, int(cls[j]), float(conf[j])))
                if keep_logits:
                    for r, row in zip(ids[m].tolist(), lg[m], strict=True):
                        res.logits[r] = row.clone()
            keep = ~m
            x, ids = h[keep], ids[keep]
    if end < k:
        res.survivor_rows = ids.tolist()
        # With no survivor the loop may stop early; keep the shape of the cut after `end`.
        res.hidden = x.contiguous() if ids.numel() else torch.empty((0, *model.cut_shape(end)))
    return res


def run_all(
    model: EarlyExitVGG, x: torch.Tensor, tau: float | None, keep_logits: bool = False
) -> StageResult:
    return run_range(model, x, 1, model.arch.num_partitions, tau, keep_logits=keep_logits)
