"""The early-exit VGG-16-BN: shapes, IC placement, exit rule, partitioned == whole."""

from __future__ import annotations

import itertools
import math

import pytest

torch = pytest.importorskip("torch")

from serflow_runtime.engine import decide, exit_mask, run_all, run_range  # noqa: E402
from serflow_runtime.model import CHANNELS, Arch, build  # noqa: E402


@pytest.mark.parametrize(
    ("width", "exits"),
    [
        (0.125, (2, 4, 6, 7, 9, 10)),
        (0.125, tuple(range(1, 11))),
        (0.25, (3,)),
        (0.125, (12,)),
    ],
)
def test_partitions_shapes_follow_ic_placement(width: float, exits: tuple[int, ...]) -> None:
    m = build(width, exits).eval()
    k = len(exits) + 1
    assert m.arch.num_partitions == k == len(m.partitions)
    # partitions tile the 13 blocks exactly once, in order
    assert m.part(1).first == 1
    assert m.part(k).last == 13
    for i in range(1, k):
        assert m.part(i + 1).first == m.part(i).last + 1
        assert m.part(i).last == exits[i - 1]
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        h = x
        for i in range(1, k + 1):
            h, lg = m.part(i)(h)
            assert lg.shape == (3, 10)
            if i < k:
                assert tuple(h.shape[1:]) == m.cut_shape(i)


def test_full_vgg16_is_available() -> None:
    m = build(1.0).eval()
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(CHANNELS)
    # The hidden tensor per image is 8..64 KiB in fp32 at the default cuts (DESIGN section 3).
    sizes = [math.prod(m.cut_shape(i)) * 4 for i in range(1, m.arch.num_partitions)]
    assert min(sizes) == 8 * 1024 and max(sizes) == 64 * 1024
    with torch.inference_mode():
        outs = m(torch.randn(2, 3, 32, 32))
    assert len(outs) == 7 and all(o.shape == (2, 10) for o in outs)


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"exits": (4, 2)}, "increasing"),
        ({"exits": (2, 2)}, "increasing"),
        ({"exits": (13,)}, "1..12"),
        ({"width": 0.0}, "width"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_bad_architecture_refused(kw: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Arch(**kw)  # type: ignore[arg-type]


def _logits(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


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
        # softmax saturates to exactly 1.0 in float32: tau = 1 exits
        ([[100.0, 0.0]], [0.0, 1.0], 1.0, 1),
        # exits off: always the final classifier
        ([[100.0, 0.0]], [0.0, 1.0], None, 2),
    ],
)
def test_exit_rule_edges(
    ic_logits: list[list[float]], final: list[float], tau: float | None, want_exit: int
) -> None:
    all_logits = [_logits(r) for r in ic_logits] + [_logits(final)]
    ex, pred = decide(all_logits, tau)
    assert int(ex[0]) == want_exit
    assert int(pred[0]) == int(all_logits[want_exit - 1].argmax(1)[0])


def test_exit_mask_exits_off_never_exits() -> None:
    assert not bool(exit_mask(torch.full((4, 10), 50.0) * torch.eye(4, 10), None).any())


def _reference(model: object, x: torch.Tensor, tau: float | None) -> tuple[list[int], list[int]]:
    with torch.inference_mode():
        outs = model(x)  # type: ignore[operator]
    ex, pred = decide(outs, tau)
    return ex.tolist(), pred.tolist()


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.85, 0.95, None])
@pytest.mark.parametrize("split", ["whole", "singletons", "shuffled-chunks"])
def test_partitioned_equals_whole(
    loaded: object, digits: object, tau: float | None, split: str
) -> None:
    model = loaded.model  # type: ignore[attr-defined]
    x = digits.x_val[:96]  # type: ignore[attr-defined]
    ref_exit, ref_pred = _reference(model, x, tau)
    with torch.inference_mode():
        ref_logits = model(x)
    n = x.shape[0]
    if split == "whole":
        groups = [list(range(n))]
    elif split == "singletons":
        groups = [[i] for i in range(n)]
    else:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(7)).tolist()
        sizes = [1, 5, 17, 33, 40]
        groups, s = [], 0
        for sz in sizes:
            groups.append(perm[s : s + sz])
            s += sz
    seen = set()
    for g in groups:
        res = run_all(model, x[g], tau, keep_logits=True)
        for e in res.exits:
            row = g[e.row]
            seen.add(row)
            assert (e.exit, e.cls) == (ref_exit[row], ref_pred[row]), f"row {row}"
            torch.testing.assert_close(
                res.logits[e.row], ref_logits[e.exit - 1][row], rtol=1e-4, atol=1e-4
            )
    assert seen == set(range(n))
    if tau is None:
        assert set(ref_exit) == {model.arch.num_partitions}


@pytest.mark.parametrize("cuts", [(2,), (1, 4), (3, 5, 6)])
def test_chained_ranges_equal_whole(loaded: object, digits: object, cuts: tuple[int, ...]) -> None:
    """Running 1..c1, c1+1..c2, ... with survivors' activations handed on == whole model."""
    model = loaded.model  # type: ignore[attr-defined]
    k = model.arch.num_partitions
    x = digits.x_val[100:164]  # type: ignore[attr-defined]
    tau = 0.85
    ref_exit, ref_pred = _reference(model, x, tau)
    bounds = [0, *cuts, k]
    rows = list(range(x.shape[0]))
    h = x
    got: dict[int, tuple[int, int]] = {}
    for a, b in itertools.pairwise(bounds):
        res = run_range(model, h, a + 1, b, tau, rows)
        got.update({e.row: (e.exit, e.cls) for e in res.exits})
        if b < k:
            rows, h = res.survivor_rows, res.hidden
            assert h is not None and tuple(h.shape[1:]) == model.cut_shape(b)
    assert got == {r: (ref_exit[r], ref_pred[r]) for r in range(x.shape[0])}


def test_shipped_model_is_trained(loaded: object, digits: object) -> None:
    from serflow_runtime.train import evaluate

    acc = evaluate(loaded.model, digits.x_val, digits.y_val)  # type: ignore[attr-defined]
    assert acc[-1] > 0.9, acc  # chance is 0.1
    assert max(acc[:-1]) > 0.6, acc
