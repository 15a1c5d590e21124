"""The early-exit VGG-16-BN as a torch module: shapes and IC placement."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

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
