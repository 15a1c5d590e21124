"""Plans ranked on the traffic, not only its mean.

The configurator ranks setups by their cost at one steady rate, which cannot see
burstiness: on bursty traffic an IaaS plan can cost more than FaaS-only. Given a trace
(a user's, or the operator's own rate history), the cheapest few feasible candidates are
replayed with the scaler that will run them, and the cheapest replay is chosen. Without
a trace the steady ranking stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from serflow.policy.configurator import Candidate, Plan, PoolKind
from serflow.sim import PolicyName, SimResult, replay
from serflow.spec import Workload

SHORTLIST = 3
"""How many of the steadily cheapest feasible candidates are replayed, beside the
cheapest of each pool kind (so FaaS-only and an IaaS pool always compete)."""


class RankedBy(StrEnum):
    """Which ranking chose the plan."""

    STEADY = "steady"
    """Cost at the long-term rate (no trace, or nothing feasible to replay)."""
    REPLAY = "replay"
    """Cost of a replay of the traffic with the scaler that will run the plan."""


@dataclass(frozen=True)
class Replayed:
    """One shortlisted candidate and what its replay cost."""

    candidate: Candidate
    """The setup, costed at the steady rate."""
    result: SimResult
    """Its replay with the scaler."""


@dataclass(frozen=True)
class Ranking:
    """The chosen candidate and why."""

    chosen: Candidate | None
    """The cheapest by the ranking used; None when nothing is feasible."""
    by: RankedBy
    """Which ranking chose it."""
    replayed: tuple[Replayed, ...]
    """The shortlist's replays, cheapest first (empty for the steady ranking)."""


def shortlist(plan: Plan, few: int = SHORTLIST) -> list[Candidate]:
    """The ``few`` steadily cheapest feasible candidates plus the cheapest of each pool kind."""
    feasible = sorted((c for c in plan.candidates if c.feasible), key=lambda c: c.cost_per_s)
    out = feasible[:few]
    for kind in PoolKind:
        best = next((c for c in feasible if c.setup.pool is kind), None)
        if best is not None and best not in out:
            out.append(best)
    return out


def rank(
    w: Workload,
    plan: Plan,
    counts: Sequence[int],
    scaler: PolicyName = PolicyName.EXPECTED_COST,
    few: int = SHORTLIST,
) -> Ranking:
    """Rank the shortlist by replaying ``counts`` with ``scaler``; the steady ranking without."""
    if scaler not in (PolicyName.SERFLOW, PolicyName.EXPECTED_COST):
        raise ValueError(f"a plan runs with an online scaler, not {scaler.value}")
    if not counts or plan.chosen is None:
        return Ranking(plan.chosen, RankedBy.STEADY, ())
    replayed = sorted(
        (Replayed(c, replay(w, c, counts, scaler)) for c in shortlist(plan, few)),
        key=lambda r: r.result.total_cost,
    )
    return Ranking(replayed[0].candidate, RankedBy.REPLAY, tuple(replayed))
