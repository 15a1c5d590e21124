"""One epoch of the operator: gather (I/O only) -> decide (pure) -> execute (writes only).

The daemon in ``handlers`` calls ``run_epoch`` once per epoch with the plan that planning
left in the object's memo and the state the previous epoch returned; nothing here reads
the SerflowInference itself or runs the configurator.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serflow import wire
from serflow.controller import metrics, routes
from serflow.controller.decide import (
    ChosenPlan,
    Decision,
    EpochState,
    Event,
    EventReason,
    Observation,
    decide,
)
from serflow.controller.kube import Kube, read_counters, stats_urls
from serflow.k8s import builders
from serflow.k8s.naming import controller_uid
from serflow.status import Condition, encode


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Clock:
    """Where an epoch gets its time from (tests pass their own)."""

    monotonic: Callable[[], float] = time.monotonic
    """Seconds for rates and epoch lengths."""
    wall: Callable[[], str] = utc_now
    """UTC timestamps for conditions and events."""


def gather(
    kube: Kube,
    plan: ChosenPlan,
    clock: Clock,
    conditions: Sequence[Condition],
    generation: int = 0,
) -> Observation:
    """Read the counters and the children; ``conditions`` and ``generation`` come from
    the daemon's live body."""
    inf, owner = plan.inference, plan.owner
    pods = (
        {}
        if inf.routing.stats_urls
        else kube.pod_ips(owner.namespace, builders.labels(owner, "router"))
    )
    urls = stats_urls(inf.routing.stats_urls, pods, wire.STATS_PORT)
    readings = read_counters(urls, wire.request_counter(inf.routing.stat_prefix))
    now = clock.monotonic()
    applied = set(plan.child_keys())
    children = {
        key: kube.child(key[0], key[1], owner.namespace, key[2], confirm_missing=key in applied)
        for key in plan.observed_keys()
    }
    # Pods whose artefact cannot be fetched never start: their initializers say why.
    fetched = inf.model.storage_uri != ""
    failures = kube.fetch_failures(owner.namespace, builders.owned_labels(owner)) if fetched else []
    return Observation(
        now=now,
        wall=clock.wall(),
        counters=readings,
        children=children,
        conditions=tuple(conditions),
        generation=generation,
        fetch_failures=tuple(failures),
    )


def replaced(obj: Mapping[str, Any]) -> Event:
    return Event(
        EventReason.REPLACED,
        f"{obj['kind']} {obj['metadata']['name']}: an immutable field changed; recreated",
    )


def apply_children(
    kube: Kube, plan: ChosenPlan, children: Sequence[Mapping[str, Any]]
) -> list[Event]:
    """Apply children (recreating one whose immutable field changed); once the router's
    ConfigMap is applied, its route is what the route server hands the router's pods (the
    kubelet would write it into them only at its next periodic sync)."""
    events = []
    for obj in children:
        if kube.apply_or_replace(obj):
            events.append(replaced(obj))
        publish_route(plan, obj)
    return events


def publish_route(plan: ChosenPlan, obj: Mapping[str, Any] | None) -> None:
    """When ``obj`` is the router's ConfigMap (as applied or as read), its route is the
    object's route now."""
    route = None if obj is None else builders.router_route(obj)
    if route is not None:
        routes.ROUTES.publish(plan.owner.namespace, plan.owner.name, route)


def install(kube: Kube, plan: ChosenPlan, children: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Put a plan in force: apply its children, then delete the functions an earlier plan
    made that this one has not (another cut has other stages). The events say what was
    recreated or deleted, or which name another object holds (left alone: the epochs,
    which read every child, leave it so too)."""
    owner = plan.owner
    events, mine = [], []
    for obj in children:
        name = obj["metadata"]["name"]
        live = kube.child(obj["apiVersion"], obj["kind"], owner.namespace, name,
                          confirm_missing=True)  # fmt: skip
        if live is not None and controller_uid(live) != owner.uid:
            events.append(Event(EventReason.NOT_OWNED, f"{obj['kind']} {name} exists and is "
                                "not this object's: left alone (delete or rename it)"))  # fmt: skip
        else:
            mine.append(obj)
    events += apply_children(kube, plan, mine)
    listed = kube.names(
        "serving.knative.dev/v1", "Service", owner.namespace, builders.owned_labels(owner)
    )
    for api_version, kind, name in plan.stale_functions(listed):
        kube.delete(api_version, kind, owner.namespace, name)
        events.append(
            Event(EventReason.PRUNED, f"Knative Service {name}: not in the plan; deleted")
        )
    return events


def execute(
    kube: Kube, plan: ChosenPlan, decision: Decision, at: str, seen: str | None = None
) -> bool:
    """Apply the children that differ, delete what the decision gave up on, patch the
    status, post the events, set the gauges.

    ``seen``: the object's resourceVersion the epoch decided on. If the object changed
    since (a spec change planned or refused meanwhile), the status is not written, so
    the epoch's conditions, computed from the older view, cannot undo the newer ones;
    returns whether it was written. The children it applied are level-triggered and the
    next epoch decides again on the new object.
    """
    owner = plan.owner
    events = [*decision.events, *apply_children(kube, plan, decision.apply)]
    for api_version, kind, name in decision.delete:
        kube.delete(api_version, kind, owner.namespace, name, foreground=True)
    written = kube.patch_status(owner.namespace, owner.name, encode(decision.status), seen)
    ref = {**owner.reference(), "namespace": owner.namespace}
    involved = {k: ref[k] for k in ("apiVersion", "kind", "name", "namespace", "uid")}
    for e in events:
        kube.post_event(involved, e.reason.value, e.message, at)
    est = decision.state.scaler.estimate
    metrics.record(owner.namespace, owner.name, decision.sample.rate, est.ewma, est.dev,
                   decision.target_rate, decision.state.scaler.desired, decision.ready,
                   decision.pool_share, decision.cost_per_hour)  # fmt: skip
    return written


def run_epoch(
    kube: Kube,
    plan: ChosenPlan,
    state: EpochState,
    clock: Clock,
    conditions: Sequence[Condition],
    seen: str | None = None,
    generation: int = 0,
) -> tuple[Decision, bool]:
    """Gather, decide, execute; the decision's state is the next epoch's. Also whether
    its status was written (see ``execute``). The router's ConfigMap as read is its route
    until this epoch applies another (after a restart or a take-over, the route server
    knows it from here)."""
    obs = gather(kube, plan, clock, conditions, generation)
    for child in obs.children.values():
        publish_route(plan, child)
    decision = decide(state, obs, plan)
    return decision, execute(kube, plan, decision, obs.wall, seen)
