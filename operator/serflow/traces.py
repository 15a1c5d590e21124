"""Request-rate traces: per-epoch request counts from files, and a synthetic bursty generator."""

from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path

from serflow.documents import read_bounded
from serflow.errors import InputError

MAX_TRACE_BYTES = 64 * 1024 * 1024
"""Refuse larger trace files rather than reading them into memory."""


def parse_trace(text: str, source: str = "trace") -> list[int]:
    """One non-negative integer a line, or CSV with a ``count`` column. Blank lines are skipped."""
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if "," in first or first.strip().lower() == "count":
        return _parse_csv(text, source)
    counts = []
    for no, line in enumerate(lines, start=1):
        v = line.strip()
        if not v:
            continue
        counts.append(_count(v, f"{source}:{no}"))
    if not counts:
        raise InputError(source, "empty trace (expected one integer a line)")
    return counts


def _parse_csv(text: str, source: str) -> list[int]:
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if "count" not in header:
        raise InputError(
            f"{source}:1", f"expected a 'count' column in the CSV header, got {header}"
        )
    col = header.index("count")
    counts = []
    for no, row in enumerate(reader, start=2):
        if not row or not any(x.strip() for x in row):
            continue
        if col >= len(row):
            raise InputError(f"{source}:{no}", "missing the 'count' column")
        counts.append(_count(row[col].strip(), f"{source}:{no}"))
    if not counts:
        raise InputError(source, "empty trace (no rows under the CSV header)")
    return counts


def _count(v: str, where: str) -> int:
    try:
        x = float(v)
    except ValueError:
        raise InputError(where, f"expected a non-negative integer, got {v[:40]!r}") from None
    if not math.isfinite(x) or x < 0 or x != int(x):
        raise InputError(where, f"expected a non-negative integer, got {v[:40]!r}")
    return int(x)


def read_trace(path: str | Path) -> list[int]:
    p = Path(path)
    try:
        text = read_bounded(p, MAX_TRACE_BYTES, "trace")
    except FileNotFoundError:
        raise InputError(str(p), "no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as e:
        raise InputError(str(p), f"cannot read the trace ({type(e).__name__})") from None
    return parse_trace(text, str(p))


def scale_counts(counts: list[int], factor: float) -> list[int]:
    """Multiply every count (rounded half to even, as Python rounds)."""
    if not math.isfinite(factor) or factor < 0:
        raise InputError("--scale", f"expected a non-negative number, got {factor}")
    return [round(c * factor) for c in counts]


def synthetic_trace(
    epochs: int = 2000,
    seed: int = 0,
    base: float = 150.0,
    daily_swing: float = 0.5,
    period: int = 1440,
    burst_rate: float = 0.01,
    burst_height: float = 2.0,
    burst_epochs: int = 30,
) -> list[int]:
    """A bursty per-epoch count trace: a daily sine, Poisson noise and random bursts.

    Bursts start with probability ``burst_rate`` per epoch and multiply the load by up to
    ``burst_height`` for ``burst_epochs`` epochs. Deterministic for a seed.
    """
    rng = random.Random(seed)
    out, burst_left, burst_mult = [], 0, 1.0
    for t in range(epochs):
        if burst_left == 0 and rng.random() < burst_rate:
            burst_left, burst_mult = burst_epochs, 1.0 + rng.random() * (burst_height - 1.0)
        mult = burst_mult if burst_left else 1.0
        burst_left = max(0, burst_left - 1)
        mean = base * (1.0 + daily_swing * math.sin(2 * math.pi * t / period)) * mult
        out.append(_poisson(rng, max(0.0, mean)))
    return out


def _poisson(rng: random.Random, mean: float) -> int:
    if mean > 50:  # normal approximation keeps large means fast
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
