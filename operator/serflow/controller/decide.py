"""Pure decisions of one epoch: the rate sampled, the pool sized, the children kept as
the plan wants them.

An epoch is gather -> decide -> execute (``serflow.controller.epoch``): the gather step
reads an ``Observation``, ``decide`` turns it and the carried ``EpochState`` into a
``Decision`` (data only: no I/O, no clock), and the execute step writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from serflow.controller.planning import (
    ChildKey,
    ChosenPlan,
    Placement,
    child_key,
    place,
    scaler_from_status,
)
from serflow.k8s import builders
from serflow.k8s.naming import controller_uid
from serflow.k8s.storage import fetch_problem
from serflow.policy.configurator import instance_cold_epochs
from serflow.policy.monitor import TrafficEstimate
from serflow.policy.scaler import ScalerState, ScalingContext, step
from serflow.policy.scalers import SCALERS
from serflow.status import (
    Condition,
    ConditionType,
    InferenceStatus,
    SampleKind,
    TrafficStatus,
    condition_true,
    decode_conditions,
    find_condition,
    set_condition,
)

__all__ = ["ChildKey", "ChosenPlan", "child_key"]  # re-exported: what an epoch reads by


def with_prior(state: ScalerState, expected_rate: float) -> ScalerState:
    """Seed a monitor that has seen nothing with the spec's expected rate.

    The operator's epochs start when the object is created, usually before traffic
    arrives; without a prior the first (empty) epoch would size the pool at 0 and undo the
    plan made for the expected rate. The prior counts as one sample: real epochs then
    move the EWMA as usual.
    """
    if state.estimate.samples or expected_rate <= 0:
        return state
    return ScalerState(
        TrafficEstimate(ewma=expected_rate, dev=0.0, samples=1),
        state.epoch,
        state.desired,
        (expected_rate,),
    )


def parse_counter(text: str, name: str) -> int | None:
    """The value of one counter in Envoy's plain /stats output ('name: value' lines)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


# --- One epoch: observation in, decision out -------------------------------------------


@dataclass(frozen=True)
class CounterReading:
    """One stats endpoint's downstream_rq_total as scraped this epoch."""

    endpoint: str
    """Pod name or stats URL."""
    value: int | None
    """The counter; None when the scrape failed (no answer, an error status, no counter)."""


@dataclass(frozen=True)
class RateSample:
    """The rate one epoch observed, with its validity, and the baseline to carry."""

    kind: SampleKind
    """Whether this is a rate at all."""
    rate: float | None
    """Requests per second since the baseline (only for OK)."""
    counters: Mapping[str, int]
    """The baseline for the next epoch: counter per endpoint."""
    counters_at: float | None
    """Monotonic time the baseline was read at (None: not read by this process)."""


def sample_rate(
    prev: Mapping[str, int],
    prev_at: float | None,
    readings: Sequence[CounterReading],
    now: float,
) -> RateSample:
    """Requests per second from the downstream_rq_total counters of several Envoys.

    A failed or partial scrape is no sample: the baseline stays, so the next good scrape
    spans both epochs and reads the true rate (not a dip then a spike). A counter that
    went down was reset (Envoy restarted): its whole value is new. An endpoint seen for
    the first time only sets its baseline; one gone since is left out.
    """
    if not readings or any(r.value is None for r in readings):
        return RateSample(SampleKind.MISSING, None, prev, prev_at)
    now_counters = {r.endpoint: r.value for r in readings if r.value is not None}
    common = [k for k in now_counters if k in prev]
    if prev_at is None or not common or now <= prev_at:
        return RateSample(SampleKind.BASELINE, None, now_counters, now)
    total = 0
    for key in common:
        v, p = now_counters[key], prev[key]
        total += v if v < p else v - p
    return RateSample(SampleKind.OK, total / (now - prev_at), now_counters, now)


@dataclass(frozen=True)
class Observation:
    """What one epoch gathered: read from the API server and Envoy, nothing decided."""

    now: float
    """Monotonic seconds when the counters were read (the injected clock)."""
    wall: str
    """UTC time for conditions' lastTransitionTime (the injected clock)."""
    counters: tuple[CounterReading, ...]
    """One reading per stats endpoint expected this epoch."""
    children: Mapping[ChildKey, Mapping[str, Any] | None]
    """Each child of the plan, and each function's readiness object, as the API server
    has it (None: not found)."""
    conditions: tuple[Condition, ...]
    """The object's own conditions (from the daemon's live body)."""
    generation: int = 0
    """The object's metadata.generation (from the live body; 0: not known). Above the
    plan's, the spec that followed was not configured (refused, or its profile pending)
    and the last good plan keeps serving."""
    fetch_failures: tuple[str, ...] = ()
    """The termination messages of this object's pods' failed artefact fetches
    (``KIND: REASON``; read only when the spec has a storage URI)."""

    def ready_instances(self, pool: str) -> int:
        """readyReplicas of the pool Deployment (0 when it is missing)."""
        d = self.children.get(("apps/v1", "Deployment", pool)) or {}
        return int((d.get("status") or {}).get("readyReplicas") or 0)

    def serving(self, key: ChildKey) -> bool:
        """Whether the object (a Revision, a Knative Service) reports Ready=True."""
        obj = self.children.get(key) or {}
        return condition_true(_conditions_of(obj), _READY)

    def why_not_serving(self, key: ChildKey) -> str:
        """What a function's readiness object says of itself while not Ready: its Ready
        condition's reason and message (Knative carries an unschedulable pod's or a
        failed image's cause up to them), or that it is missing."""
        obj = self.children.get(key)
        if obj is None:
            return f"{key[1]} {key[2]} not found"
        ready = find_condition(_conditions_of(obj), _READY)
        if ready is None:
            return f"{key[1]} {key[2]} has no Ready condition yet"
        said = ": ".join(x for x in (ready.reason, ready.message) if x)
        return f"{key[1]} {key[2]} Ready={ready.status}" + (
            f" ({said[:MESSAGE_CHARS]})" if said else ""
        )


def _conditions_of(obj: Mapping[str, Any] | None) -> tuple[Condition, ...]:
    return decode_conditions(((obj or {}).get("status") or {}).get("conditions"))


MESSAGE_CHARS = 200
"""How much of a child's own message a condition quotes: enough for a scheduler's or a
registry's reason, bounded so that one child cannot bloat the status."""


def waiting_for(obs: Observation, plan: ChosenPlan, ready: int, desired: int) -> str:
    """The Ready condition's message while not Ready: every part that is not, and why."""
    parts = [f"pool {ready}/{desired} instances ready"] if ready < desired else []
    parts += [obs.why_not_serving(k) for k in plan.readiness_keys() if not obs.serving(k)]
    return "waiting for " + "; ".join(parts) if parts else "waiting for the pool or functions"


_READY = ConditionType.READY


@dataclass(frozen=True)
class EpochState:
    """What one epoch carries to the next (and, through status, across restarts)."""

    scaler: ScalerState
    """Traffic monitor, epoch count and desired pool size."""
    counters: Mapping[str, int]
    """Baseline counter per stats endpoint."""
    counters_at: float | None
    """Monotonic time of the baseline (None after a restart: the next read is a baseline)."""
    samples_missed: int
    """Epochs whose scrape failed, since the object was created."""
    pool_weight: int
    """Route weight of the pool last applied (of 1000)."""

    def replanned(self, placed: Placement) -> EpochState:
        """The state after planning put a plan in force: its size and weight."""
        s = self.scaler
        return replace(
            self,
            scaler=ScalerState(s.estimate, s.epoch, placed.desired, s.recent),
            pool_weight=placed.split.pool_weight,
        )


def epoch_state_from_status(status: InferenceStatus, placed: Placement) -> EpochState:
    """The carried state as the last epoch (or planning) left it in status."""
    t = status.traffic or TrafficStatus()
    s = scaler_from_status(status)
    return EpochState(
        scaler=ScalerState(s.estimate, s.epoch, placed.desired, s.recent),
        counters={k: v for k, v in t.counters.items() if v is not None},
        counters_at=None,
        samples_missed=t.samples_missed,
        pool_weight=placed.split.pool_weight,
    )


class EventReason(StrEnum):
    """Reasons of the events an epoch posts."""

    SCALED = "Scaled"
    ROUTED = "Routed"
    DRIFT_CORRECTED = "DriftCorrected"
    REPLACED = "Replaced"
    """A child recreated: its change touched a field the API server keeps immutable."""
    REPLANNED = "Replanned"
    """A replay of the object's own traffic replaced the running plan."""
    PRUNED = "Pruned"
    """A function an earlier plan made and this one has not (another cut): deleted."""
    NOT_OWNED = "NotOwned"
    """A child's name taken by an object this one does not control: left alone."""
    RETRIED = "Retried"
    """A function's Revision Knative gave up on, deleted for its Knative Service to make
    it again."""


@dataclass(frozen=True)
class Event:
    """A Normal event on the SerflowInference."""

    reason: EventReason
    """CamelCase reason."""
    message: str
    """What happened, for people."""


@dataclass(frozen=True)
class Decision:
    """Everything one epoch decided, as data: the executor only carries it out."""

    state: EpochState
    """To carry to the next epoch."""
    sample: RateSample
    """The rate observed (or why none)."""
    target_rate: float
    """lam* the pool is sized for, req/s."""
    ready: int
    """Ready pool instances observed."""
    pool_share: float
    """Share of traffic routed to the pool."""
    cost_per_hour: float
    """Cost rate at the EWMA, $/h."""
    apply: tuple[dict[str, Any], ...]
    """Children to server-side apply, in order: new or different from what is observed."""
    status: InferenceStatus
    """The status to write (a merge patch)."""
    events: tuple[Event, ...]
    """Events to post."""
    delete: tuple[ChildKey, ...] = ()
    """Objects to delete: functions' Revisions Knative gave up on (``gave_up``)."""


NOT_OWNED = EventReason.NOT_OWNED.value
"""The Ready reason while a child's name is taken by an object this one does not control."""


GAVE_UP = "ProgressDeadlineExceeded"
"""The Ready reason of a Revision whose pods did not come up within Knative's progress
deadline (capacity, a slow fetch): Knative scales it to zero and never tries again, even
once there is room (knative/serving#9432), so the function would stay down for good."""


def gave_up(obs: Observation, plan: ChosenPlan) -> list[ChildKey]:
    """The functions' pinned Revisions Knative gave up on. Deleted, each is made again by
    its Knative Service under the same name (the template pins it), so the router and the
    pool keep their targets; the progress deadline itself spaces the retries."""
    out = []
    for key in plan.readiness_keys():
        obj = obs.children.get(key)
        if key[1] != "Revision" or obj is None or (obj.get("metadata") or {}).get(
            "deletionTimestamp"
        ):
            continue  # not a Revision, not there, or already going (deleted once is enough)
        ready = find_condition(_conditions_of(obj), _READY)
        if ready is not None and not ready.true and ready.reason == GAVE_UP:
            out.append(key)
    return out


def first_difference(desired: Any, observed: Any, path: str = "") -> str | None:
    """The first field the builders set that the observed object does not hold, or None.

    Only what ``desired`` sets is compared, so fields the API server or a webhook adds
    (defaults, status, managedFields, a sidecar in a list merged by name) never count as
    drift. An empty value the builders
    set matches an absent one (the API server drops empty maps); quantities compare by
    value ("6144Mi" is stored as "6Gi").
    """
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return path or "."
        for key, want in desired.items():
            sub = f"{path}.{key}"
            if observed.get(key) is None:
                if want in ({}, [], None, ""):
                    continue
                return sub
            found = first_difference(want, observed[key], sub)
            if found:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return path
        if _named(desired) and _named(observed):
            # A list merged by name on apply (containers, volumes, env, ports): an item
            # another client added (a mesh's sidecar, say) stays there whatever we apply,
            # so it is not drift; ours are compared by name wherever they stand.
            seen = {item["name"]: item for item in observed}
            for want in desired:
                sub = f"{path}[{want['name']}]"
                if want["name"] not in seen:
                    return sub
                found = first_difference(want, seen[want["name"]], sub)
                if found:
                    return found
            return None
        if len(observed) != len(desired):
            return path
        for i, (want, got) in enumerate(zip(desired, observed, strict=True)):
            found = first_difference(want, got, f"{path}[{i}]")
            if found:
                return found
        return None
    if desired == observed or _same_quantity(desired, observed, path):
        return None
    return path


def _named(items: list[Any]) -> bool:
    """Whether every item is a map with a name (a list the API server merges by name)."""
    return bool(items) and all(
        isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in items
    )


def _same_quantity(a: Any, b: Any, path: str) -> bool:
    if ".resources." not in path and not path.endswith(".sizeLimit"):
        return False
    try:
        return bool(parse_quantity(a) == parse_quantity(b))  # type: ignore[no-untyped-call]
    except ValueError:
        return False


def decide(state: EpochState, obs: Observation, plan: ChosenPlan) -> Decision:
    """One epoch: fold the sample into the monitor, size the pool, split the route, and
    bring every child back to what the plan wants.

    A missing sample leaves the monitor, the epoch count and the pool size as they were;
    the route still follows the ready instances.
    """
    w, cand = plan.workload, plan.candidate
    econ, knobs = cand.economics, w.scaling
    sample = sample_rate(state.counters, state.counters_at, obs.counters, obs.now)
    scaler = with_prior(state.scaler, w.expected_rate)
    ctx = ScalingContext(sample.rate, scaler, econ, knobs, instance_cold_epochs(w, cand))
    scaled, scaler = step(SCALERS[knobs.policy], ctx)  # no rate: nothing moves
    target = scaled.target_rate
    ready = obs.ready_instances(builders.Names(plan.owner.name).pool)
    desired = scaler.desired
    gen, t = plan.generation, obs.wall
    sized = set_condition(obs.conditions, ConditionType.SCALED, ready >= desired, "PoolSize",
                           f"{ready}/{desired} instances ready", gen, t)  # fmt: skip
    placed = place(plan, desired, ready, scaler.estimate.ewma, sized, t)
    pool_w = placed.split.pool_weight
    missed = state.samples_missed + (1 if sample.kind is SampleKind.MISSING else 0)
    new = EpochState(scaler, sample.counters, sample.counters_at, missed, pool_w)

    events: list[Event] = []
    if desired != state.scaler.desired:
        events.append(Event(EventReason.SCALED, (
            f"pool {state.scaler.desired} -> {desired} instances "
            f"(target {target:.4g} req/s, T-CIP {econ.tcip:.4g})"
        )))  # fmt: skip
    if pool_w != state.pool_weight:
        events.append(
            Event(EventReason.ROUTED, f"pool weight {state.pool_weight} -> {pool_w}/1000")
        )
    # Level-triggered: what was applied last epoch tells drift from this epoch's own changes.
    before = {child_key(o): o for o in plan.children(state.scaler.desired, state.pool_weight)}
    apply: list[dict[str, Any]] = []
    foreign: list[str] = []
    for obj in placed.children:
        key = child_key(obj)
        seen = obs.children.get(key)
        if seen is not None and controller_uid(seen) != plan.owner.uid:
            foreign.append(f"{key[1]} {key[2]} exists and is not this object's")
            continue  # someone else's: never taken over, changed or deleted
        if seen is not None and first_difference(obj, seen) is None:
            continue
        apply.append(obj)
        drift = "missing" if seen is None else first_difference(before[key], seen)
        if drift:
            what = "deleted" if seen is None else f"{drift.lstrip('.')} changed"
            events.append(
                Event(EventReason.DRIFT_CORRECTED, f"{key[1]} {key[2]}: {what}; re-applied")
            )

    ready_ok = ready >= desired and all(obs.serving(k) for k in plan.readiness_keys())
    ready_ok = ready_ok and not foreign
    said = "pool, functions and route ready" if ready_ok else waiting_for(obs, plan, ready, desired)
    reason = "Serving" if ready_ok else "NotReady"
    fetch = None if ready_ok else fetch_problem(list(obs.fetch_failures))
    if fetch is not None:  # the pods cannot start: say why first
        reason, said = fetch[0], f"{fetch[1]}; {said}"
    if foreign:  # a name taken: nothing else can be fixed by waiting
        reason, said = NOT_OWNED, f"{'; '.join(foreign)} (delete or rename it); {said}"
    if obs.generation > plan.generation:
        said += (
            f" (the plan of generation {plan.generation} serves: generation "
            f"{obs.generation} is not configured, see Configured)"
        )
    c = set_condition(placed.status.conditions or (), ConditionType.READY, ready_ok,
                      reason, said, gen, t)  # fmt: skip
    traffic = TrafficStatus(
        ewma=scaler.estimate.ewma,
        deviation=scaler.estimate.dev,
        target=target,
        samples=scaler.estimate.samples,
        epoch=scaler.epoch,
        last_sample=sample.kind,
        samples_missed=missed,
        # Rounded: the history is bounded in count (8 x S) and so, with this, in bytes.
        recent=tuple(round(x, 4) for x in scaler.recent),
        # A merge patch keeps map keys it does not name: null removes a gone endpoint.
        counters={**{k: None for k in state.counters}, **new.counters},
        rate=sample.rate,
    )
    status = replace(placed.status, conditions=c, traffic=traffic)
    cost = placed.status.cost_per_hour or 0.0
    share = placed.split.pool_share
    retry = gave_up(obs, plan)
    events += [Event(EventReason.RETRIED, f"{obs.why_not_serving(k)}; Knative does not "
                     "retry it: deleted for its Knative Service to make it again")
               for k in retry]  # fmt: skip
    return Decision(new, sample, target, ready, share, cost, tuple(apply), status, tuple(events),
                    tuple(retry))  # fmt: skip
