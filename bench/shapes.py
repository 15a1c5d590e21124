"""Both scalers on traffic shapes that are not in the shared traces: level steps, a
sawtooth, a triangle, a noisy sine, isolated spikes.

Usage: python bench/shapes.py [--out bench/results/shapes.md]

Each shape is generated here (deterministic) at scale 0.5, 1 and 2; the paper preset at
tau 0.85 on LIBRA's setup (IaaS instances, FaaS for the excess), where both scalers run
a pool. Costs against the same-rules limit. The scalers' parameters are the defaults.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import yaml

from serflow.policy.configurator import PoolKind, best_at, configure
from serflow.presets import preset_text
from serflow.sim import PolicyName, replay
from serflow.spec import parse_workload

TAU = 0.85
SCALES = (0.5, 1.0, 2.0)


def shapes() -> dict[str, list[int]]:
    rng = random.Random(9)
    return {
        "steps 100/300, 500 epochs each": ([100] * 500 + [300] * 500) * 5,
        "sawtooth 50 to 300 over 800 epochs": [int(50 + 250 * (t % 800) / 800) for t in range(5000)],
        "triangle 50 to 300, period 1000": [
            int(50 + 250 * abs((t % 1000) / 500 - 1)) for t in range(5000)
        ],
        "sine 150 +- 100, period 600, noise 40": [
            max(0, round(150 + 100 * math.sin(2 * math.pi * t / 600) + rng.gauss(0, 40)))
            for t in range(5000)
        ],
        "spikes of 300 (1 epoch in 20) over 100": [
            300 if rng.random() < 0.05 else 100 for _ in range(5000)
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench/results/shapes.md"))
    args = ap.parse_args()
    w = parse_workload(yaml.safe_load(preset_text("paper")))
    rows = []
    for name, base in shapes().items():
        for scale in SCALES:
            counts = [round(x * scale) for x in base]
            rate = sum(counts) / len(counts) / w.objective.epoch
            cand = best_at(configure(w, rate, [PoolKind.IAAS]), TAU)
            assert cand is not None
            cost = {
                p: replay(w, cand, counts, p).total_cost
                for p in (PolicyName.LIBRA, PolicyName.EXPECTED_COST, PolicyName.LIMIT)
            }
            lim = cost[PolicyName.LIMIT]
            rows.append(
                f"| {name} | {scale:g} | {cost[PolicyName.LIBRA]:.4f} "
                f"| {cost[PolicyName.EXPECTED_COST]:.4f} | {lim:.4f} "
                f"| {cost[PolicyName.LIBRA] / lim:.3f} | **{cost[PolicyName.EXPECTED_COST] / lim:.3f}** |"
            )
    lines = [
        "# Both scalers on generated traffic shapes",
        "",
        "Made by `python bench/shapes.py` (paper preset, LIBRA's setup, tau 0.85; costs",
        "in $). Ratios are cost / same-rules limit (>= 1: dearer than the limit).",
        "",
        "| shape | scale | paper's rule | expected-cost | limit | paper / limit "
        "| expected-cost / limit |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
