"""What the whole model answers, to check a served answer against: every exit's logits
for every row, and the (exit, class) the exit rule makes of them.

Here and not in the tests' conftest because ``bench/faults.py`` checks its answers with
them too (``bench/`` imports nothing from ``tests/``)."""

from __future__ import annotations

import numpy as np

from serflow_runtime.engine import decide
from serflow_runtime.runtimes import ServedModel


def all_logits(model: ServedModel, x: np.ndarray) -> list[np.ndarray]:
    """Every exit's logits for every row (no row leaves early)."""
    out = []
    for i in range(1, model.k + 1):
        x, lg = model.run_stage(i, x)
        out.append(lg)
    return out


def reference(model: ServedModel, x: np.ndarray, tau: float | None) -> list[tuple[int, int]]:
    """(exit, class) per row from the whole network and the exit rule."""
    ex, pred = decide(all_logits(model, x), tau, model.manifest.exit_rule)
    return list(zip(ex.tolist(), pred.tolist(), strict=True))
