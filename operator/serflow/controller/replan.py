"""Re-ranking a running plan on its own traffic (pure: no I/O, no clock).

Every ``RERANK_TICKS`` scaling ticks, once the object's rate history spans that period,
the configurator's shortlist is replayed on the history with the object's scaler
(``serflow.ranking.rerank``). The running plan is replaced only when another saves more
than ``SWITCH_MARGIN`` of its replayed cost; the daemon then applies what ``replan``
returns as planning would, and otherwise keeps the plan (``Kept`` says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from serflow.controller.decide import Event, EventReason
from serflow.controller.planning import ChosenPlan, Placement, place
from serflow.domain import RankedBy
from serflow.policy.configurator import configure, instance_cold_epochs
from serflow.policy.scaler import ScalerState, ScalingContext, planned_size
from serflow.policy.scalers import SCALERS
from serflow.ranking import Rerank, history_counts, ranks_on_history, rerank, rerank_due
from serflow.status import Condition, ConditionType, candidate_line, plan_status, set_condition


class Kept(StrEnum):
    """Why ``replan`` keeps the running plan (each is a different state of the object)."""

    PINNED = "pinned"
    """``spec.scaling.replan`` is false."""
    SHORT_HISTORY = "short-history"
    """The rate history does not span a re-ranking period yet."""
    NOT_DUE = "not-due"
    """The epoch does not end a re-ranking period."""
    NOTHING_FEASIBLE = "nothing-feasible"
    """No setup is feasible at the history's mean rate."""
    NO_SAVING = "no-saving"
    """No candidate saves more than ``SWITCH_MARGIN`` of the running plan's replayed cost."""


@dataclass(frozen=True)
class Replan:
    """A running plan replaced by the ranking of its own traffic."""

    placement: Placement
    """The plan to run from now on, put in force (its status includes status.plan)."""
    event: Event
    """What changed, and by how much the replay says it saves."""
    rerank: Rerank
    """The ranking that chose it."""


def replan(
    plan: ChosenPlan,
    scaler: ScalerState,
    ready: int,
    conditions: Sequence[Condition],
    now: str,
) -> Replan | Kept:
    """After an epoch: the plan that replaces ``plan``, or why it is kept. ``conditions``
    are the object's, ``now`` the wall time for a condition that changes."""
    w = plan.workload
    if not rerank_due(scaler.epoch, w.scaling, len(scaler.recent)):
        if not w.scaling.replan:
            return Kept.PINNED
        if not ranks_on_history(w.scaling, len(scaler.recent)):
            return Kept.SHORT_HISTORY
        return Kept.NOT_DUE
    counts = history_counts(scaler.recent, w.objective.epoch)
    rate = sum(counts) / len(counts) / w.objective.epoch
    configured = configure(w, rate)
    if configured.chosen is None:
        return Kept.NOTHING_FEASIBLE
    r = rerank(w, configured, plan.candidate, counts)
    cand = r.ranking.chosen
    if not r.switch or cand is None:  # a switch always has a chosen candidate
        return Kept.NO_SAVING
    cold = instance_cold_epochs(w, cand)
    ctx = ScalingContext(rate, scaler, cand.economics, w.scaling, cold)
    desired = planned_size(SCALERS[w.scaling.policy], ctx)
    new = ChosenPlan(plan.owner, plan.inference, w, cand, plan.generation)
    c = set_condition(conditions, ConditionType.CONFIGURED, True, "Replanned",
                      candidate_line(cand), plan.generation, now)  # fmt: skip
    placed = place(new, desired, ready, scaler.estimate.ewma or rate, c, now)
    status = replace(placed.status, plan=plan_status(configured, cand, RankedBy.REPLAY, r.saving))
    message = (
        f"{plan.candidate.setup.describe()} -> {candidate_line(cand)}: the replay of the last "
        f"{len(counts)} epochs costs {100 * r.saving:.1f}% less"
    )
    return Replan(replace(placed, status=status), Event(EventReason.REPLANNED, message), r)
