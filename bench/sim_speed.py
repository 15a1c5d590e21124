"""Replay speed: 45,000 epochs through every policy (the same-rules limit included), on one core.

Usage: python bench/sim_speed.py [--trace FILE] [--repeat N]
Uses the WITS trace when it is beside the repository (../shared/traces/wits_logs.txt),
the synthetic generator otherwise, and says which.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from serflow.policy.configurator import PoolKind, best_at, configure
from serflow.presets import preset_text
from serflow.sim import PolicyName, replay
from serflow.spec import parse_workload
from serflow.traces import read_trace, synthetic_trace

WITS = Path(__file__).resolve().parents[2] / "shared" / "traces" / "wits_logs.txt"
EPOCHS = 45_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", type=Path, default=WITS)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if args.trace.exists():
        counts, source = read_trace(args.trace), args.trace.name
    else:
        counts, source = synthetic_trace(EPOCHS, seed=0), "synthetic (seed 0)"
    while len(counts) < EPOCHS:  # the WITS file has 44,999 lines
        counts = counts + counts[: EPOCHS - len(counts)]
    counts = counts[:EPOCHS]
    w = parse_workload(yaml.safe_load(preset_text("paper")))
    rate = sum(counts) / len(counts) / w.objective.epoch
    print(f"trace: {source}, {len(counts)} epochs, mean rate {rate:.2f} req/s")
    for tau in (0.5, 0.85):
        picks = {
            PolicyName.FAAS: best_at(configure(w, rate, [PoolKind.FAAS]), tau),
            PolicyName.LIBRA: best_at(configure(w, rate, [PoolKind.IAAS]), tau),
            PolicyName.SERFLOW: best_at(configure(w, rate), tau),
        }
        picks[PolicyName.BOUND] = picks[PolicyName.SERFLOW]
        picks[PolicyName.EXPECTED_COST] = picks[PolicyName.SERFLOW]
        picks[PolicyName.LIMIT] = picks[PolicyName.SERFLOW]
        times: dict[PolicyName, float] = {}
        for pol, cand in picks.items():
            assert cand is not None
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.process_time()
                replay(w, cand, counts, pol)
                best = min(best, time.process_time() - t0)
            times[pol] = best
        total = sum(times.values())
        parts = ", ".join(f"{p.value} {t:.3f}" for p, t in times.items())
        print(
            f"tau {tau}: all {len(times)} policies {total:.3f} s CPU "
            f"({len(times) * EPOCHS / total:,.0f} policy-epochs/s; {parts})"
        )


if __name__ == "__main__":
    main()
