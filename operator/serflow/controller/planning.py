"""Planning, once (pure: no I/O, no clock).

A plan (``ChosenPlan``: the spec and the chosen candidate) is put in force by
``place``: the pool's share of the traffic at the ready instances, Envoy's weights, the
children the builders make of it, and the status sections that say so. Planning on
create, update and resume (``plan_spec``), re-planning on the object's own traffic
(``serflow.controller.replan``) and every epoch (``serflow.controller.decide``) go
through it; each adds only what is its own (the plan's status, the monitor's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from serflow.domain import RankedBy, ScalingSpec, Workload
from serflow.inference import InferenceSpec
from serflow.k8s import builders
from serflow.policy.balancer import pool_share, route_weights
from serflow.policy.configurator import (
    Candidate,
    configure,
    instance_cold_epochs,
)
from serflow.policy.monitor import TrafficEstimate
from serflow.policy.scaler import ScalerState, ScalingContext, planned_size
from serflow.policy.scalers import SCALERS
from serflow.ranking import history_counts, rank, ranks_on_history
from serflow.sim import online_policy
from serflow.status import (
    Condition,
    ConditionType,
    InferenceStatus,
    InstanceCounts,
    PlanStatus,
    RouteSplit,
    candidate_from_status,
    candidate_line,
    condition_true,
    plan_status,
    set_condition,
)

ChildKey = tuple[str, str, str]
"""(apiVersion, kind, name) of a child."""


def child_key(obj: dict[str, Any]) -> ChildKey:
    return (str(obj["apiVersion"]), str(obj["kind"]), str(obj["metadata"]["name"]))


@dataclass(frozen=True)
class ChosenPlan:
    """What planning (create, update, resume, re-planning) hands the epochs.

    An epoch builds its children from this alone: it neither re-reads the profile nor
    re-runs the configurator.
    """

    owner: builders.Owner
    """The SerflowInference the children belong to."""
    inference: InferenceSpec
    """The parsed spec (images, routing, functions)."""
    workload: Workload
    """Profile, prices, objective and scaling knobs the plan was made from."""
    candidate: Candidate
    """The chosen setup and its economics."""
    generation: int
    """metadata.generation the plan was made for."""

    def children(self, desired: int, pool_weight: int) -> list[dict[str, Any]]:
        """The children at this pool size and route weight, in apply order."""
        return builders.children(
            self.owner, self.inference, self.workload, self.candidate, desired, pool_weight
        )

    def child_keys(self) -> list[ChildKey]:
        return [child_key(o) for o in self.children(0, 0)]

    def readiness_keys(self) -> list[ChildKey]:
        """The objects whose Ready condition says each function serves: its pinned
        Revision, or its Knative Service (``spec.functions.access``)."""
        targets = builders.function_targets(
            self.owner, self.inference, self.workload, self.candidate
        )
        return [t.readiness for t in targets]

    def stale_functions(self, names: Iterable[str]) -> list[ChildKey]:
        """Of the object's Knative Services ``names``, the ones this plan has not: a plan
        with another cut or pool kind has other stages, and the old ones would stay."""
        keys = set(self.child_keys())
        ksvc = ("serving.knative.dev/v1", "Service")
        return [(*ksvc, n) for n in sorted(names) if (*ksvc, n) not in keys]

    def observed_keys(self) -> list[ChildKey]:
        """What an epoch reads: the children, then the functions' readiness objects."""
        keys = self.child_keys()
        return keys + [k for k in self.readiness_keys() if k not in keys]


@dataclass(frozen=True)
class Placement:
    """A plan put in force at one pool size: what to apply and what the status says."""

    plan: ChosenPlan
    """The plan."""
    desired: int
    """Pool instances it runs with."""
    split: RouteSplit
    """The pool's share of the traffic and Envoy's weights."""
    children: tuple[dict[str, Any], ...]
    """Every child at that size and split, in apply order."""
    status: InferenceStatus
    """Instances, split, cost rate and the Routed condition."""


def place(
    plan: ChosenPlan,
    desired: int,
    ready: int,
    rate: float,
    conditions: Sequence[Condition],
    now: str,
) -> Placement:
    """Put ``plan`` in force with ``desired`` instances while ``ready`` are: only the
    instances that stay and are ready take traffic (those being scaled in drain), at
    ``rate`` req/s (the smoothed rate, or the plan's when none is known yet)."""
    econ = plan.candidate.economics
    share = pool_share(min(ready, desired), econ.mu, rate)
    pool_w, fn_w = route_weights(share)
    split = RouteSplit(share, pool_w, fn_w)
    c = set_condition(conditions, ConditionType.ROUTED, True, "RouteApplied",
                      f"pool weight {pool_w}/1000", plan.generation, now)  # fmt: skip
    status = InferenceStatus(
        conditions=c,
        instances=InstanceCounts(desired, ready),
        split=split,
        cost_per_hour=econ.cost_rate(rate) * 3600,
    )
    return Placement(plan, desired, split, tuple(plan.children(desired, pool_w)), status)


# --- Planning a spec (create, update, resume) ---------------------------------------------


def same_setup(p: PlanStatus | None, c: Candidate) -> bool:
    """Whether status.plan describes this candidate's setup (tau included)."""
    if p is None:
        return False
    s = c.setup
    return (
        p.pool == s.pool.value
        and p.instance == s.instance
        and p.cut == s.cut
        and p.granularity == (s.granularity.value if s.granularity else "")
        and p.function == s.function
        and abs(p.tau - c.tau) <= 1e-9 * max(1.0, abs(c.tau))
    )


def scaler_from_status(status: InferenceStatus) -> ScalerState:
    """The monitor and the pool size as the last epoch (or planning) left them."""
    t = status.traffic
    desired = status.instances.desired if status.instances else 0
    if t is None:
        return ScalerState(TrafficEstimate(0.0, 0.0, 0), 0, desired)
    return ScalerState(
        estimate=TrafficEstimate(ewma=t.ewma, dev=t.deviation, samples=t.samples),
        epoch=t.epoch,
        desired=desired,
        recent=t.recent,
    )


@dataclass(frozen=True)
class Refused:
    """Why a spec cannot be planned; the children are left as they were."""

    reason: str
    """CamelCase reason for the conditions and the event."""
    message: str
    """What is wrong, for people."""


@dataclass(frozen=True)
class Planned:
    """A spec planned (or its plan kept on resume) and put in force."""

    placement: Placement
    """What to apply, and the status to write."""
    kept: bool
    """The plan status already held for this spec was kept (a restart, no re-planning)."""
    changed: bool
    """The setup differs from the one status described before."""


def kept_plan(
    resume: bool, status: InferenceStatus, gen: int, scaling: ScalingSpec
) -> Candidate | None:
    """On resume, the plan status holds for this very spec (so a restart does not re-plan)."""
    if not resume or status.observed_generation != gen or status.plan is None:
        return None
    if not condition_true(status.conditions or (), ConditionType.CONFIGURED):
        return None
    return candidate_from_status(status.plan, scaling)


def plan_spec(
    owner: builders.Owner,
    inference: InferenceSpec,
    workload: Workload,
    gen: int,
    status: InferenceStatus,
    resume: bool,
    ready: int,
    now: str,
) -> Planned | Refused:
    """Plan a spec: keep the plan status holds for it on resume, else run the configurator
    at the smoothed rate (the spec's expected rate before any traffic) and, when the
    object's own rate history is long enough, rank the shortlist on a replay of it."""
    w = workload
    state = scaler_from_status(status)
    rate = state.estimate.ewma if state.estimate.samples else w.expected_rate
    kept = kept_plan(resume, status, gen, w.scaling)
    plan_st: PlanStatus | None = None
    if kept is not None:
        cand = kept
    else:
        configured = configure(w, rate)
        if configured.chosen is None:
            return Refused("NoFeasibleSetup", configured.reason)
        cand, by = configured.chosen, RankedBy.STEADY
        if ranks_on_history(w.scaling, len(state.recent)):
            # A full history of the object's own traffic: rank on it, not on its mean.
            counts = history_counts(state.recent, w.objective.epoch)
            ranking = rank(w, configured, counts, online_policy(w.scaling.policy), warm=True)
            cand, by = ranking.chosen or cand, ranking.by
        plan_st = plan_status(configured, cand, by)
    changed = not same_setup(status.plan, cand)
    desired = (
        planned_size(SCALERS[w.scaling.policy], ScalingContext(
            rate, state, cand.economics, w.scaling, instance_cold_epochs(w, cand)))
        if changed or status.plan is None
        else state.desired
    )  # fmt: skip
    chosen = ChosenPlan(owner, inference, w, cand, gen)
    c = set_condition(status.conditions or (), ConditionType.CONFIGURED, True, "Planned",
                      candidate_line(cand), gen, now)  # fmt: skip
    placed = place(chosen, desired, ready, rate, c, now)
    status_written = replace(placed.status, observed_generation=gen, plan=plan_st)
    return Planned(replace(placed, status=status_written), kept is not None, changed)


def epoch_may_run(placed: Placement, generation: int | None, status: InferenceStatus) -> bool:
    """Whether the epochs may run ``placed`` on an object of this metadata.generation
    whose status is ``status``: the current spec was handled (the status says so for this
    generation) and either it is this plan's, or it was not configured (refused, or its
    profile pending), so that the last good plan keeps scaling and correcting drift
    meanwhile.

    Not yet: the spec is being planned, or the watch has not brought planning's status
    patch, or a new plan's status came before it reached the daemon; an epoch then would
    run a plan the status no longer describes.
    """
    if status.observed_generation != generation:
        return False
    configured = condition_true(status.conditions or (), ConditionType.CONFIGURED)
    return placed.plan.generation == generation if configured else True


def as_when_served(status: InferenceStatus, now: str) -> InferenceStatus | None:
    """The status as it was when the spec in ``status.served`` was configured, for
    ``plan_spec`` to keep that plan on resume (its plan, monitor and size are still the
    status's own: a refused spec writes none of them); None when status holds none."""
    served = status.served
    if served is None or not served.spec or status.plan is None:
        return None
    c = set_condition(status.conditions or (), ConditionType.CONFIGURED, True, "Planned",
                      "", served.generation, now)  # fmt: skip
    return replace(status, observed_generation=served.generation, conditions=c)


def refusal_status(
    refused: Refused, status: InferenceStatus, gen: int, now: str, serving: bool = False
) -> InferenceStatus:
    """The status of a spec that cannot be planned: Configured false, and Ready false
    unless an earlier plan is ``serving`` (its epochs then keep Ready as it is, saying
    which plan serves)."""
    c = set_condition(status.conditions or (), ConditionType.CONFIGURED, False,
                      refused.reason, refused.message, gen, now)  # fmt: skip
    if not serving:
        c = set_condition(c, ConditionType.READY, False, refused.reason, refused.message, gen, now)
    return InferenceStatus(observed_generation=gen, conditions=c)
