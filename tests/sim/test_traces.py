"""Trace files: formats, scaling, the synthetic generator and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from serflow.errors import InputError
from serflow.traces import parse_trace, read_trace, scale_counts, synthetic_trace

SHARED_WITS = Path(__file__).resolve().parents[3] / "shared" / "traces" / "wits_logs.txt"


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("1\n2\n3\n", [1, 2, 3]),
        ("1\n\n2\n", [1, 2]),
        ("7", [7]),
        ("time,count\n0,5\n6,8\n", [5, 8]),
        ("count\n4\n", [4]),
        ("3.0\n", [3]),
    ],
)
def test_formats(text: str, counts: list[int]) -> None:
    assert parse_trace(text) == counts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1\nabc\n", "t.txt:2: expected a non-negative integer, got 'abc'"),
        ("1\n-4\n", "t.txt:2: expected a non-negative integer, got '-4'"),
        ("1.5\n", "t.txt:1: expected a non-negative integer, got '1.5'"),
        ("nan\n", "t.txt:1: expected a non-negative integer, got 'nan'"),
        ("", "t.txt: empty trace (expected one integer a line)"),
        ("\n\n", "t.txt: empty trace (expected one integer a line)"),
        (
            "time,rate\n1,2\n",
            "t.txt:1: expected a 'count' column in the CSV header, got ['time', 'rate']",
        ),
    ],
)
def test_bad_traces(text: str, message: str) -> None:
    with pytest.raises(InputError) as e:
        parse_trace(text, "t.txt")
    assert str(e.value) == message


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_trace(tmp_path / "nope.txt")


def test_scale() -> None:
    assert scale_counts([10, 3], 0.5) == [5, 2]
    with pytest.raises(InputError):
        scale_counts([1], -1)


def test_synthetic_is_deterministic_and_bursty() -> None:
    a = synthetic_trace(3000, seed=3)
    assert a == synthetic_trace(3000, seed=3)
    assert a != synthetic_trace(3000, seed=4)
    assert len(a) == 3000 and min(a) >= 0
    assert max(a) > 1.5 * (sum(a) / len(a))  # bursts and the daily swing


@pytest.mark.skipif(
    not SHARED_WITS.exists(), reason="the shared WITS trace is not beside the repository"
)
def test_reads_the_wits_trace() -> None:
    counts = read_trace(SHARED_WITS)
    assert len(counts) > 40_000 and min(counts) >= 0
