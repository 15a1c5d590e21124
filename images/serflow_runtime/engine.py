"""The exit rule and partitioned execution, on numpy for every runtime.

Exit rule (DESIGN.md section 2): a request leaves at the first exit whose confidence
is >= tau; if none does, the final classifier answers.  The confidence is the
manifest's named ``exitRule`` (``max-softmax``: the largest softmax probability, the
paper's).  ``tau=None`` turns exits off: every request runs to the final classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from serflow_runtime.artefact import DEFAULT_EXIT_RULE
from serflow_runtime.runtimes import ServedModel


def confidence(logits: np.ndarray) -> np.ndarray:
    """Max softmax probability per row, in float64 (so tau is compared exactly as given)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    # max softmax = exp(0) / sum(exp(z - max))
    out: np.ndarray = 1.0 / np.exp(z).sum(axis=1)
    return out


CONFIDENCE: dict[str, Callable[[np.ndarray], np.ndarray]] = {"max-softmax": confidence}
"""Each named exit rule's confidence per row (``artefact.EXIT_RULES`` names them)."""


def exit_mask(logits: np.ndarray, tau: float | None, rule: str = DEFAULT_EXIT_RULE) -> np.ndarray:
    """Rows that leave at this (internal) exit."""
    if tau is None:
        return np.zeros(logits.shape[0], dtype=bool)
    return CONFIDENCE[rule](logits) >= tau


def decide(
    all_logits: list[np.ndarray], tau: float | None, rule: str = DEFAULT_EXIT_RULE
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-network reference: (exit index 1..K, predicted class) per row."""
    k = len(all_logits)
    n = all_logits[0].shape[0]
    exit_at = np.full(n, k, dtype=np.int64)
    pred = all_logits[-1].argmax(axis=1)
    undecided = np.ones(n, dtype=bool)
    for i, lg in enumerate(all_logits[:-1], start=1):
        m = exit_mask(lg, tau, rule) & undecided
        exit_at[m] = i
        pred[m] = lg[m].argmax(axis=1)
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
    hidden: np.ndarray | None = None  # survivors' activations after the last stage run
    logits: dict[int, np.ndarray] = field(default_factory=dict)  # row -> logits at its exit


def run_range(
    model: ServedModel,
    x: np.ndarray,
    start: int,
    end: int,
    tau: float | None,
    rows: list[int] | None = None,
    keep_logits: bool = False,
) -> StageResult:
    """Run stages start..end (1-based, inclusive) on ``x``; only survivors go on.

    Each row's result is independent of which other rows share the batch (inference only).
    """
    k = model.k
    if not 1 <= start <= end <= k:
        raise ValueError(f"bad partition range {start}..{end} for K={k}")
    ids = np.arange(x.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    res = StageResult()
    rule = model.manifest.exit_rule
    for i in range(start, end + 1):
        if x.shape[0] == 0:
            break
        h, lg = model.run_stage(i, x)
        m = np.ones(x.shape[0], dtype=bool) if i == k else exit_mask(lg, tau, rule)
        if m.any():
            conf = CONFIDENCE[rule](lg[m])
            cls = lg[m].argmax(axis=1)
            for j, r in enumerate(ids[m].tolist()):
                res.exits.append(Exit(r, i, int(cls[j]), float(conf[j])))
            if keep_logits:
                for r, row in zip(ids[m].tolist(), lg[m], strict=True):
                    res.logits[r] = row.copy()
        keep = ~m
        x, ids = h[keep], ids[keep]
    if end < k:
        res.survivor_rows = ids.tolist()
        # With no survivor the loop may stop early; keep the shape of the cut after `end`.
        res.hidden = (
            np.ascontiguousarray(x, dtype=np.float32)
            if ids.size
            else np.empty((0, *model.manifest.cut_shape(end)), dtype=np.float32)
        )
    return res


def run_all(model: ServedModel, x: np.ndarray, tau: float | None, keep_logits: bool = False) -> StageResult:
    return run_range(model, x, 1, model.k, tau, keep_logits=keep_logits)
