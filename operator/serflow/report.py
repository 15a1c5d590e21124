"""Turning plans and replays into tables and JSON (pure: strings and dicts out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from serflow.domain import RankedBy
from serflow.policy.configurator import Candidate, Plan
from serflow.ranking import Ranking
from serflow.sim import PhaseRange, PolicyName, SimResult
from serflow.status import candidate_line


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _num(x: float, spec: str = ".4g") -> str:
    return "inf" if math.isinf(x) else format(x, spec)


def plan_text(plan: Plan) -> str:
    rows = []
    ordered = sorted(plan.candidates, key=lambda c: (c.tau, not c.feasible, c.cost_per_s))
    for c in ordered:
        rows.append(
            [
                f"{c.tau:g}",
                f"{c.accuracy:.3f}",
                c.setup.describe(),
                _num(c.worst_batch_s, ".3g"),
                "yes" if c.feasible else "no",
                _num(c.cost_per_hour, ".5f") if c.feasible else "-",
                _num(c.economics.tcip, ".3g") if c.setup.pool.value != "faas" else "-",
                c.reason,
            ]
        )
    out = [
        f"Candidates at {plan.rate:.4g} req/s (cost per hour at that steady rate):",
        table(["tau", "acc", "setup", "worst s", "ok", "$/h", "T-CIP r/s", "why not"], rows),
        "",
    ]
    if plan.chosen is None:
        out.append(f"No plan: {plan.reason}")
    else:
        out.append("Chosen: " + candidate_line(plan.chosen))
    for x in plan.crossings:
        out.append(f"S-CIP {x.a.value}/{x.b.value}: tau = {x.tau:.3f}")
    return "\n".join(out)


def ranking_text(r: Ranking, trace: str) -> str:
    """The shortlist's replays and which ranking chose the plan."""
    if r.by is RankedBy.STEADY:
        return "Ranked by: steady cost (nothing to replay)"
    first = r.replayed[0].result
    rows = [
        [
            f"{x.candidate.tau:g}",
            x.candidate.setup.describe(),
            _num(x.candidate.cost_per_hour, ".5f"),
            f"{x.result.total_cost:.4f}",
            f"{100 * x.result.slo_attainment:.2f}%",
        ]
        for x in r.replayed
    ]
    return "\n".join(
        [
            "",
            f"Replayed on {trace} ({first.epochs} epochs, {first.requests} requests) "
            f"with the {first.policy.value} scaler:",
            table(["tau", "setup", "steady $/h", "replay $", "SLO"], rows),
            "",
            "Ranked by: replay. Chosen: " + candidate_line(r.replayed[0].candidate),
        ]
    )


def ranking_dict(r: Ranking) -> dict[str, Any]:
    return {
        "by": r.by.value,
        "chosen": candidate_dict(r.chosen) if r.chosen else None,
        "replayed": [
            {
                **candidate_dict(x.candidate),
                "replayCost": x.result.total_cost,
                "sloAttainment": x.result.slo_attainment,
                "scaler": x.result.policy.value,
            }
            for x in r.replayed
        ],
    }


def candidate_dict(c: Candidate) -> dict[str, Any]:
    e = c.economics
    return {
        "tau": c.tau,
        "accuracy": c.accuracy,
        "pool": c.setup.pool.value,
        "instance": c.setup.instance or None,
        "cut": c.setup.cut or None,
        "granularity": c.setup.granularity.value if c.setup.granularity else None,
        "function": c.setup.function,
        "worstBatchSeconds": None if math.isinf(c.worst_batch_s) else c.worst_batch_s,
        "feasible": c.feasible,
        "reason": c.reason,
        "costPerHour": c.cost_per_hour if c.feasible else None,
        "tcip": None if math.isinf(e.tcip) else e.tcip,
        "instances": e.instances_for(c.rate) if c.feasible else None,
        "mu": e.mu,
    }


def plan_dict(plan: Plan) -> dict[str, Any]:
    return {
        "rate": plan.rate,
        "chosen": candidate_dict(plan.chosen) if plan.chosen else None,
        "reason": plan.reason,
        "scip": [{"a": x.a.value, "b": x.b.value, "tau": x.tau} for x in plan.crossings],
        "candidates": [candidate_dict(c) for c in plan.candidates],
    }


def result_dict(
    r: SimResult, against: dict[PolicyName, SimResult], phases: PhaseRange | None = None
) -> dict[str, Any]:
    return {
        "policy": r.policy.value,
        "tau": r.tau,
        "setup": r.setup,
        "epochs": r.epochs,
        "requests": r.requests,
        "poolRequests": r.pool_requests,
        "faasRequests": r.faas_requests,
        "totalCost": r.total_cost,
        "instanceCost": r.instance_cost,
        "functionCost": r.function_cost,
        "costPerMillion": r.cost_per_million,
        "costVsLibra": cost_change(r, against.get(PolicyName.LIBRA)),
        "costVsFaas": cost_change(r, against.get(PolicyName.FAAS)),
        "ratioToBound": ratio(r, against.get(PolicyName.BOUND)),
        "ratioToLimit": ratio(r, against.get(PolicyName.LIMIT)),
        "sloAttainment": r.slo_attainment,
        "instanceSeconds": r.instance_seconds,
        "functionSeconds": r.function_seconds,
        "invocations": r.invocations,
        "phaseRange": None
        if phases is None
        else {"cheapest": phases.cheapest, "dearest": phases.dearest, "phases": phases.phases},
    }


def phase_text(ranges: dict[tuple[float, PolicyName], PhaseRange]) -> str:
    """One line per (tau, policy): the cost range over the scaling-tick phases."""
    phases = next(iter(ranges.values())).phases
    lines = [f"total cost over the {phases} scaling-tick phases (phase 0 is the table's):"]
    for (tau, pol), pr in ranges.items():
        lines.append(f"  tau {tau:g} {pol.value}: {pr.cheapest:.4f} to {pr.dearest:.4f} $")
    return "\n".join(lines)


SIGN_NOTE = "vs LIBRA, vs FaaS: cost change against that baseline (negative: cheaper)"
"""The one sign convention of every cost comparison the tools print."""


def cost_change(r: SimResult, base: SimResult | None) -> float | None:
    """cost / base cost - 1: negative when cheaper than the base, positive when dearer."""
    if base is None or base.total_cost <= 0:
        return None
    return r.total_cost / base.total_cost - 1.0


def ratio(r: SimResult, bound: SimResult | None) -> float | None:
    if bound is None or bound.total_cost <= 0:
        return None
    return r.total_cost / bound.total_cost


def simulate_text(by_tau: dict[float, dict[PolicyName, SimResult]]) -> str:
    rows = []
    for tau, results in by_tau.items():
        for r in results.values():
            rows.append(
                [
                    f"{tau:g}",
                    r.policy.value,
                    r.setup,
                    f"{r.total_cost:.4f}",
                    f"{r.cost_per_million:.3f}",
                    _pct(cost_change(r, results.get(PolicyName.LIBRA))),
                    _pct(cost_change(r, results.get(PolicyName.FAAS))),
                    _x(ratio(r, results.get(PolicyName.BOUND))),
                    _x(ratio(r, results.get(PolicyName.LIMIT))),
                    f"{100 * r.slo_attainment:.2f}%",
                    f"{100 * r.pool_requests / r.requests:.1f}%" if r.requests else "-",
                    f"{r.instance_seconds:.0f}",
                    f"{r.function_seconds:.0f}",
                ]
            )
    header = [
        "tau",
        "policy",
        "setup",
        "cost $",
        "$/M req",
        "vs LIBRA",
        "vs FaaS",
        "x bound",
        "x limit",
        "SLO",
        "pool",
        "inst-s",
        "fn-s",
    ]
    return table(header, rows) + "\n" + SIGN_NOTE + "; x bound, x limit: cost / that bound's cost"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
