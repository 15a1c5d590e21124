"""Pool sizing on every trace at hand: the paper's rule and the expected-cost scaler
against the same-rules limit and the per-epoch bound.

Usage: python bench/scaling.py [--out bench/results/scaling.md]

For each trace (the shared traces beside the repository when present: WITS first 400
epochs and all of it, sin, square; the synthetic generator at seeds 1, 2, 3), each scale
(0.5, 1, 2) and each tau of the paper preset, the configurator plans at the trace's mean
rate and the simulator replays FaaS-only, LIBRA and the chosen setup under both scalers,
with the same-rules limit and the per-epoch bound of that setup. A second table does
the same on LIBRA's setup (IaaS instances for the whole model), where the two scalers
differ at every tau. The scaler's parameters are the defaults; nothing here tunes them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from serflow.policy.configurator import Candidate, PoolKind, best_at, configure
from serflow.presets import preset_text
from serflow.sim import PolicyName, replay
from serflow.spec import Workload, parse_workload
from serflow.traces import read_trace, synthetic_trace

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
SCALES = (0.5, 1.0, 2.0)


def traces() -> tuple[dict[str, list[int]], list[str]]:
    out: dict[str, list[int]] = {}
    notes = []
    wits = SHARED / "wits_logs.txt"
    if wits.exists():
        counts = read_trace(wits)
        out["WITS first 400"] = counts[:400]
        out["WITS all"] = counts
    else:
        notes.append("WITS trace not beside the repository: skipped")
    for name in ("sin_logs.txt", "square_load.txt"):
        path = SHARED / name
        if path.exists():
            out[name.removesuffix(".txt")] = read_trace(path)
        else:
            notes.append(f"{name} not beside the repository: skipped")
    for seed in (1, 2, 3):
        out[f"synthetic seed {seed}"] = synthetic_trace(5000, seed=seed)
    return out, notes


def pick(w: Workload, rate: float, tau: float, pools: list[PoolKind]) -> Candidate:
    c = best_at(configure(w, rate, pools), tau)
    assert c is not None, f"no feasible setup at tau {tau}"
    return c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench/results/scaling.md"))
    args = ap.parse_args()
    w = parse_workload(yaml.safe_load(preset_text("paper")))
    found, notes = traces()
    chosen_rows, libra_rows = [], []
    worst_ec, worst_plan = 0.0, 0.0
    t0 = time.process_time()
    for name, base in found.items():
        for scale in SCALES:
            counts = [round(x * scale) for x in base]
            rate = sum(counts) / len(counts) / w.objective.epoch
            for tau in (t.tau for t in w.profile.thresholds):
                faas = replay(w, pick(w, rate, tau, [PoolKind.FAAS]), counts, PolicyName.FAAS)
                iaas = pick(w, rate, tau, [PoolKind.IAAS])
                chosen = pick(w, rate, tau, list(PoolKind))
                cost = {
                    p: replay(w, chosen, counts, p).total_cost
                    for p in (PolicyName.SERFLOW, PolicyName.EXPECTED_COST, PolicyName.LIMIT, PolicyName.BOUND)
                }
                on_libra = {
                    p: replay(w, iaas, counts, p).total_cost
                    for p in (PolicyName.LIBRA, PolicyName.EXPECTED_COST, PolicyName.LIMIT, PolicyName.BOUND)
                }
                lim, ec = cost[PolicyName.LIMIT], cost[PolicyName.EXPECTED_COST]
                cheaper_baseline = min(faas.total_cost, on_libra[PolicyName.LIBRA])
                worst_ec = max(worst_ec, ec / lim, on_libra[PolicyName.EXPECTED_COST] / on_libra[PolicyName.LIMIT])
                worst_plan = max(worst_plan, ec / cheaper_baseline)
                chosen_rows.append(
                    f"| {name} | {scale:g} | {tau:g} | {chosen.setup.describe()} | {faas.total_cost:.4f} "
                    f"| {on_libra[PolicyName.LIBRA]:.4f} | {cost[PolicyName.SERFLOW]:.4f} | {ec:.4f} "
                    f"| {lim:.4f} | {cost[PolicyName.BOUND]:.4f} | {cost[PolicyName.SERFLOW] / lim:.3f} "
                    f"| **{ec / lim:.3f}** | {ec / cost[PolicyName.BOUND]:.3f} | {ec / cheaper_baseline:.3f} |"
                )
                ll = on_libra[PolicyName.LIMIT]
                libra_rows.append(
                    f"| {name} | {scale:g} | {tau:g} | {on_libra[PolicyName.LIBRA]:.4f} "
                    f"| {on_libra[PolicyName.EXPECTED_COST]:.4f} | {ll:.4f} | {on_libra[PolicyName.BOUND]:.4f} "
                    f"| {on_libra[PolicyName.LIBRA] / ll:.3f} | **{on_libra[PolicyName.EXPECTED_COST] / ll:.3f}** |"
                )
    took = time.process_time() - t0
    lines = [
        "# Pool sizing: the paper's rule and the expected-cost scaler against the limits",
        "",
        "Made by `python bench/scaling.py` (paper preset, per-use prices; costs in $).",
        "`limit` is the same-rules limit (one size per S-epoch window, the same cold start",
        "and billing, knowing the trace); `bound` the per-epoch clairvoyant bound. Ratios",
        "are cost / limit (>= 1: dearer than the limit). `vs cheaper baseline` is the",
        "expected-cost scaler's cost / min(FaaS-only, LIBRA): <= 1 means the plan with",
        "the new scaler was never dearer than the cheaper of the two.",
        "",
        *[f"- {n}" for n in notes],
        "",
        "## The configurator's setup (what SERFLOW deploys)",
        "",
        "| trace | scale | tau | setup | FaaS-only | LIBRA | paper's rule | expected-cost | limit | bound "
        "| paper / limit | expected-cost / limit | expected-cost / bound | vs cheaper baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *chosen_rows,
        "",
        "## LIBRA's setup (IaaS instances for the whole model): both scalers at every tau",
        "",
        "| trace | scale | tau | LIBRA (paper's rule) | expected-cost | limit | bound | LIBRA / limit "
        "| expected-cost / limit |",
        "|---|---|---|---|---|---|---|---|---|",
        *libra_rows,
        "",
        f"Worst expected-cost / limit over both tables: **{worst_ec:.3f}**. "
        f"Worst expected-cost plan / cheaper baseline: **{worst_plan:.3f}**. "
        f"CPU for the whole script: {took:.0f} s.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}: worst expected-cost / limit {worst_ec:.3f}, "
          f"worst plan / cheaper baseline {worst_plan:.3f}")


if __name__ == "__main__":
    main()
