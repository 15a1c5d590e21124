"""The exit rule and staged execution on the shipped artefact: partitioned == whole."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from serflow_runtime.engine import decide, exit_mask, run_all, run_range
from serflow_runtime.runtimes import ServedModel

from .conftest import Split, all_logits, reference


def _logits(*rows: list[float]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize(
    ("ic_logits", "final", "tau", "want_exit"),
    [
        # max softmax of [0, 0] is exactly 0.5: tau equal to it exits (>=)
        ([[0.0, 0.0]], [5.0, 0.0], 0.5, 1),
        # a hair above the confidence: no exit at the IC
        ([[0.0, 0.0]], [5.0, 0.0], math.nextafter(0.5, 1.0), 2),
        # the first confident IC wins even when a later one is more confident
        ([[3.0, 0.0], [9.0, 0.0]], [0.0, 9.0], 0.9, 1),
        ([[0.0, 0.1], [9.0, 0.0]], [0.0, 9.0], 0.9, 2),
        # nobody confident: the final classifier answers, whatever its confidence
        ([[0.0, 0.1], [0.1, 0.0]], [0.0, 0.2], 0.99, 3),
        # softmax saturates to exactly 1.0: tau = 1 exits
        ([[100.0, 0.0]], [0.0, 1.0], 1.0, 1),
        # exits off: always the final classifier
        ([[100.0, 0.0]], [0.0, 1.0], None, 2),
    ],
)
def test_exit_rule_edges(
    ic_logits: list[list[float]], final: list[float], tau: float | None, want_exit: int
) -> None:
    logits = [_logits(r) for r in ic_logits] + [_logits(final)]
    ex, pred = decide(logits, tau)
    assert int(ex[0]) == want_exit
    assert int(pred[0]) == int(logits[want_exit - 1].argmax(1)[0])


def test_exit_mask_exits_off_never_exits() -> None:
    assert not exit_mask(np.eye(4, 10, dtype=np.float32) * 50, None).any()


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.85, 0.95, None])
@pytest.mark.parametrize("split", ["whole", "singletons", "shuffled-chunks"])
def test_partitioned_equals_whole(
    served: ServedModel, digits: Split, tau: float | None, split: str
) -> None:
    x = digits.x_val[:96]
    ref = reference(served, x, tau)
    ref_logits = all_logits(served, x)
    n = x.shape[0]
    if split == "whole":
        groups = [list(range(n))]
    elif split == "singletons":
        groups = [[i] for i in range(n)]
    else:
        perm = np.random.default_rng(7).permutation(n).tolist()
        groups, s = [], 0
        for sz in (1, 5, 17, 33, 40):
            groups.append(perm[s : s + sz])
            s += sz
    seen = set()
    for g in groups:
        res = run_all(served, x[g], tau, keep_logits=True)
        for e in res.exits:
            row = g[e.row]
            seen.add(row)
            assert (e.exit, e.cls) == ref[row], f"row {row}"
            np.testing.assert_allclose(
                res.logits[e.row], ref_logits[e.exit - 1][row], rtol=1e-4, atol=1e-4
            )
    assert seen == set(range(n))
    if tau is None:
        assert {ex for ex, _ in ref} == {served.k}


@pytest.mark.parametrize("cuts", [(2,), (1, 4), (3, 5, 6)])
def test_chained_ranges_equal_whole(served: ServedModel, digits: Split, cuts: tuple[int, ...]) -> None:
    """Running 1..c1, c1+1..c2, ... with survivors' activations handed on == whole model."""
    k = served.k
    x = digits.x_val[100:164]
    tau = 0.85
    ref = reference(served, x, tau)
    rows = list(range(x.shape[0]))
    h = x
    got: dict[int, tuple[int, int]] = {}
    for a, b in itertools.pairwise([0, *cuts, k]):
        res = run_range(served, h, a + 1, b, tau, rows)
        got.update({e.row: (e.exit, e.cls) for e in res.exits})
        if b < k:
            rows, h = res.survivor_rows, res.hidden  # type: ignore[assignment]
            assert h is not None and tuple(h.shape[1:]) == served.manifest.cut_shape(b)
    assert got == dict(enumerate(ref))


def test_shipped_model_is_trained(served: ServedModel, digits: Split) -> None:
    """Held-out accuracy per exit, from the artefact alone (chance is 0.1)."""
    acc = [float((lg.argmax(1) == digits.y_val).mean()) for lg in all_logits(served, digits.x_val)]
    assert acc[-1] > 0.9, acc
    assert max(acc[:-1]) > 0.6, acc
