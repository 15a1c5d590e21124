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

from serflow.domain import RankedBy, ScalingSpec, Workload
from serflow.policy.configurator import Candidate, Plan, PoolKind
from serflow.policy.scaler import KEPT_WINDOWS
from serflow.sim import PolicyName, SimResult, online_policy, replay

SHORTLIST = 3
"""How many of the steadily cheapest feasible candidates are replayed, beside the
cheapest of each pool kind (so FaaS-only and an IaaS pool always compete)."""


@dataclass(frozen=True)
class Replayed:
    """One shortlisted candidate and what its replay cost."""

    candidate: Candidate
    """The setup, costed at the steady rate."""
    result: SimResult
    """Its replay with the scaler."""
    cost: float
    """What the ranking compares, $: the replay's cost, or, warm, that of its second pass."""


def replayed(
    w: Workload, c: Candidate, counts: Sequence[int], scaler: PolicyName, warm: bool = False
) -> Replayed:
    """Replay ``counts`` on ``c``. Warm: replay them twice and cost the second pass alone
    (the doubled replay less the single one, which is its first pass), so that the pool's
    cold start from nothing, which a running plan does not pay again, is not counted."""
    once = replay(w, c, counts, scaler)
    if not warm:
        return Replayed(c, once, once.total_cost)
    twice = replay(w, c, [*counts, *counts], scaler)
    return Replayed(c, once, twice.total_cost - once.total_cost)


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
    warm: bool = False,
) -> Ranking:
    """Rank the shortlist by replaying ``counts`` with ``scaler`` (warm: see ``replayed``);
    the steady ranking without counts."""
    if scaler not in (PolicyName.SERFLOW, PolicyName.EXPECTED_COST):
        raise ValueError(f"a plan runs with an online scaler, not {scaler.value}")
    if not counts or plan.chosen is None:
        return Ranking(plan.chosen, RankedBy.STEADY, ())
    out = sorted(
        (replayed(w, c, counts, scaler, warm) for c in shortlist(plan, few)),
        key=lambda r: r.cost,
    )
    return Ranking(out[0].candidate, RankedBy.REPLAY, tuple(out))


# --- The operator's re-ranking ----------------------------------------------------------

RERANK_TICKS = KEPT_WINDOWS
"""Scaling ticks between two re-rankings of a running plan: as many as its rate history
spans (``ScalerState.recent``), so that each ranking replays traffic the previous one did
not see (and never one per epoch)."""

SWITCH_MARGIN = 0.05
"""A running plan is replaced only when the replay says another saves more than this
share of its cost: the replay fills the pool from each epoch's exact count, which is
1 to 4% cheaper than the operator's Envoy split (README), so a smaller saving is within
the replay's own error, and children must not churn on it."""


def history_counts(recent: Sequence[float], epoch_s: float) -> list[int]:
    """The operator's rate history (req/s per epoch) as per-epoch request counts."""
    return [round(r * epoch_s) for r in recent]


def ranks_on_history(scaling: ScalingSpec, history: int) -> bool:
    """Whether a plan is ranked on the object's own rates: ``scaling.replan`` allows it and
    the history (``history`` rates) spans a re-ranking period."""
    return scaling.replan and history >= RERANK_TICKS * scaling.interval_epochs


def rerank_due(epoch: int, scaling: ScalingSpec, history: int) -> bool:
    """Whether the epoch just observed ends a re-ranking period, with a full history
    (never with ``scaling.replan`` false)."""
    period = RERANK_TICKS * scaling.interval_epochs
    return epoch > 0 and epoch % period == 0 and ranks_on_history(scaling, history)


@dataclass(frozen=True)
class Rerank:
    """A running plan against the ranking by a replay of its own traffic."""

    ranking: Ranking
    """The shortlist's ranking on the history."""
    current_cost: float
    """The running plan's warm replay cost, $."""
    saving: float
    """The share of ``current_cost`` the ranking's choice saves (0 when it is the same)."""
    switch: bool
    """True when the saving exceeds ``SWITCH_MARGIN``: run the ranking's choice."""


def same_setup(a: Candidate, b: Candidate) -> bool:
    """The same setup at the same tau (costs and the planning rate aside)."""
    return a.setup == b.setup and a.tau == b.tau


def rerank(
    w: Workload,
    plan: Plan,
    current: Candidate,
    counts: Sequence[int],
    margin: float = SWITCH_MARGIN,
) -> Rerank:
    """Rank ``plan``'s shortlist on ``counts``, warm, with the workload's scaler; switch
    from ``current`` only when that saves more than ``margin`` of its own warm cost."""
    scaler = online_policy(w.scaling.policy)
    ranking = rank(w, plan, counts, scaler, warm=True)
    ran = next((r for r in ranking.replayed if same_setup(r.candidate, current)), None)
    cost = (ran or replayed(w, current, counts, scaler, warm=True)).cost
    best = ranking.replayed[0] if ranking.replayed else None
    if best is None or same_setup(best.candidate, current) or cost <= 0:
        return Rerank(ranking, cost, 0.0, False)
    saving = 1.0 - best.cost / cost
    return Rerank(ranking, cost, saving, saving > margin)
