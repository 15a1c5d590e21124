"""Pure decisions of the operator: status documents, conditions, and one epoch.

An epoch is gather -> decide -> execute (``serflow.controller.epoch``): the gather step
reads an ``Observation``, ``decide`` turns it and the carried ``EpochState`` into a
``Decision`` (data only: no I/O, no clock), and the execute step writes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from serflow.domain import ScalingPolicy, ScalingSpec, Workload
from serflow.inference import InferenceSpec
from serflow.k8s import builders
from serflow.policy.balancer import pool_share, route_weights
from serflow.policy.configurator import (
    Candidate,
    Granularity,
    Plan,
    PoolKind,
    Setup,
    instance_cold_epochs,
)
from serflow.policy.cost import PoolEconomics
from serflow.policy.expected_cost import remember, step_with
from serflow.policy.monitor import TrafficEstimate
from serflow.policy.scaler import ScalerState
from serflow.ranking import RankedBy
from serflow.report import candidate_dict


class ConditionType(StrEnum):
    CONFIGURED = "Configured"
    SCALED = "Scaled"
    ROUTED = "Routed"
    READY = "Ready"


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: ConditionType,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """metav1.Condition semantics: lastTransitionTime moves only when the status flips."""
    status = "True" if ok else "False"
    out: list[dict[str, Any]] = []
    since = now
    for c in conditions:
        if c.get("type") != type_.value:
            out.append(dict(c))
        elif c.get("status") == status:
            since = str(c.get("lastTransitionTime", now))
    out.append(
        {
            "type": type_.value,
            "status": status,
            "reason": reason,
            "message": message[:32000],
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }
    )
    return out


def find_condition(
    conditions: Sequence[Mapping[str, Any]], type_: ConditionType
) -> Mapping[str, Any] | None:
    """The condition of that type, or None."""
    return next((c for c in conditions if c.get("type") == type_.value), None)


def condition_true(conditions: Sequence[Mapping[str, Any]], type_: ConditionType) -> bool:
    c = find_condition(conditions, type_)
    return c is not None and c.get("status") == "True"


def _finite(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else x


def plan_status(
    plan: Plan,
    chosen: Candidate | None = None,
    by: RankedBy = RankedBy.STEADY,
    saving: float | None = None,
) -> dict[str, Any]:
    """status.plan: the chosen candidate (``plan.chosen`` unless given), every candidate's
    cost, which ranking chose it and, when a replay replaced a running plan, the saving."""
    c = chosen or plan.chosen
    assert c is not None
    cands = []
    for x in plan.candidates:
        d = candidate_dict(x)
        cands.append({k: v for k, v in d.items() if v is not None and k in _CANDIDATE_KEYS})
    return {
        "tau": c.tau,
        "accuracy": c.accuracy,
        "pool": c.setup.pool.value,
        "instance": c.setup.instance,
        "cut": c.setup.cut,
        "granularity": c.setup.granularity.value if c.setup.granularity else "",
        "function": c.setup.function,
        "mu": c.economics.mu,
        "tcip": _finite(c.economics.tcip) if _finite(c.economics.tcip) is not None else -1.0,
        "costPerHour": c.cost_per_hour,
        "rate": plan.rate,
        "worstBatchSeconds": c.worst_batch_s,
        "economics": economics_status(c.economics),
        "candidates": cands,
        "rankedBy": by.value,
        "replaySaving": saving,  # None: a merge patch removes an earlier one
    }


def economics_status(e: PoolEconomics) -> dict[str, Any]:
    """status.plan.economics: what the epochs need of the plan, kept so a restart need not re-plan."""
    return {
        "mu": e.mu,
        "instancePricePerSecond": e.instance_price,
        "faasPerRequest": e.faas_per_request,
        "addPerRequest": e.add_per_request,
        "hasPool": e.has_pool,
        "batchesPerInstance": e.batches_per_instance,
    }


def candidate_from_status(plan_st: Mapping[str, Any], scaling: ScalingSpec) -> Candidate | None:
    """The chosen candidate status.plan describes, for the spec whose ``scaling`` it was
    planned with (its instance bounds); None when it predates status.plan.economics."""
    e = plan_st.get("economics")
    if not e or "worstBatchSeconds" not in plan_st:
        return None
    g = plan_st.get("granularity") or ""
    return Candidate(
        tau=float(plan_st["tau"]),
        accuracy=float(plan_st["accuracy"]),
        setup=Setup(
            pool=PoolKind(plan_st["pool"]),
            function=str(plan_st["function"]),
            instance=str(plan_st.get("instance") or ""),
            cut=int(plan_st.get("cut") or 0),
            granularity=Granularity(g) if g else None,
        ),
        worst_batch_s=float(plan_st["worstBatchSeconds"]),
        feasible=True,
        reason="",
        economics=PoolEconomics(
            mu=float(e["mu"]),
            instance_price=float(e["instancePricePerSecond"]),
            faas_per_request=float(e["faasPerRequest"]),
            add_per_request=float(e["addPerRequest"]),
            has_pool=bool(e["hasPool"]),
            batches_per_instance=int(e["batchesPerInstance"]),
            min_instances=scaling.min_instances,
            max_instances=scaling.max_instances,
        ),
        rate=float(plan_st["rate"]),
        cost_per_s=float(plan_st["costPerHour"]) / 3600.0,
    )


_CANDIDATE_KEYS = {
    "tau", "accuracy", "pool", "instance", "cut", "granularity", "function", "feasible",
    "reason", "costPerHour", "tcip",
}  # fmt: skip


def same_setup(a: Mapping[str, Any], c: Candidate) -> bool:
    """Whether status.plan describes this candidate's setup (tau included)."""
    s = c.setup
    return (
        a.get("pool") == s.pool.value
        and a.get("instance", "") == s.instance
        and a.get("cut", 0) == s.cut
        and a.get("granularity", "") == (s.granularity.value if s.granularity else "")
        and a.get("function") == s.function
        and math.isclose(float(a.get("tau", -1)), c.tau)
    )


def scaler_from_status(status: Mapping[str, Any]) -> ScalerState:
    t = status.get("traffic") or {}
    inst = status.get("instances") or {}
    return ScalerState(
        estimate=TrafficEstimate(
            ewma=float(t.get("ewma", 0.0)),
            dev=float(t.get("deviation", 0.0)),
            samples=int(t.get("samples", 0)),
        ),
        epoch=int(t.get("epoch", 0)),
        desired=int(inst.get("desired", 0)),
        recent=tuple(float(x) for x in t.get("recent") or ()),
    )


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

ChildKey = tuple[str, str, str]
"""(apiVersion, kind, name) of a child."""


def child_key(obj: Mapping[str, Any]) -> ChildKey:
    return (str(obj["apiVersion"]), str(obj["kind"]), str(obj["metadata"]["name"]))


@dataclass(frozen=True)
class ChosenPlan:
    """What planning (create, update, resume) hands the epochs: the builders' inputs.

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
    desired: int
    """Pool size applied at planning time."""
    pool_weight: int
    """Route weight of the pool applied at planning time (of 1000)."""
    route_version: str
    """version_info of the route applied at planning time."""

    def children(self, desired: int, pool_weight: int, route_version: str) -> list[dict[str, Any]]:
        return builders.children(
            self.owner, self.inference, self.workload, self.candidate,
            desired, pool_weight, route_version,
        )  # fmt: skip

    def child_keys(self) -> list[ChildKey]:
        return [child_key(o) for o in self.children(self.desired, self.pool_weight, "")]

    def readiness_keys(self) -> list[ChildKey]:
        """The objects whose Ready condition says each function serves: its pinned
        Revision, or its Knative Service (``spec.functions.access``)."""
        targets = builders.function_targets(self.owner, self.inference, self.workload, self.candidate)
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


class SampleKind(StrEnum):
    """What one epoch's scrape of the counters gave."""

    OK = "ok"
    """Every endpoint answered and at least one had a baseline: a rate."""
    BASELINE = "baseline"
    """Nothing to subtract from yet (first reading, or every replica is new): no rate."""
    MISSING = "missing"
    """An endpoint did not answer, or there was none: no rate, the baseline is kept."""


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
    conditions: tuple[Mapping[str, Any], ...]
    """The object's own conditions (from the daemon's live body)."""

    def ready_instances(self, pool: str) -> int:
        """readyReplicas of the pool Deployment (0 when it is missing)."""
        d = self.children.get(("apps/v1", "Deployment", pool)) or {}
        return int((d.get("status") or {}).get("readyReplicas") or 0)

    def serving(self, key: ChildKey) -> bool:
        """Whether the object (a Revision, a Knative Service) reports Ready=True."""
        obj = self.children.get(key) or {}
        return condition_true((obj.get("status") or {}).get("conditions") or [], _READY)

    def why_not_serving(self, key: ChildKey) -> str:
        """What a function's readiness object says of itself while not Ready: its Ready
        condition's reason and message (Knative carries an unschedulable pod's or a
        failed image's cause up to them), or that it is missing."""
        obj = self.children.get(key)
        if obj is None:
            return f"{key[1]} {key[2]} not found"
        ready = find_condition((obj.get("status") or {}).get("conditions") or [], _READY)
        if ready is None:
            return f"{key[1]} {key[2]} has no Ready condition yet"
        said = ": ".join(str(ready[k]) for k in ("reason", "message") if ready.get(k))
        return f"{key[1]} {key[2]} Ready={ready.get('status', 'Unknown')}" + (
            f" ({said[:MESSAGE_CHARS]})" if said else ""
        )


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
    route_version: str
    """version_info of the route last applied."""

    def replanned(self, plan: ChosenPlan) -> EpochState:
        """The state after planning applied a new plan: its size, weight and route."""
        s = self.scaler
        return replace(
            self,
            scaler=ScalerState(s.estimate, s.epoch, plan.desired),
            pool_weight=plan.pool_weight,
            route_version=plan.route_version,
        )


def epoch_state_from_status(status: Mapping[str, Any], plan: ChosenPlan) -> EpochState:
    """The carried state as the last epoch (or planning) left it in status."""
    t = status.get("traffic") or {}
    s = scaler_from_status(status)
    return EpochState(
        scaler=ScalerState(s.estimate, s.epoch, plan.desired),
        counters={str(k): int(v) for k, v in (t.get("counters") or {}).items() if v is not None},
        counters_at=None,
        samples_missed=int(t.get("samplesMissed", 0)),
        pool_weight=plan.pool_weight,
        route_version=plan.route_version,
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
    status: dict[str, Any]
    """The status merge patch."""
    events: tuple[Event, ...]
    """Events to post."""


def first_difference(desired: Any, observed: Any, path: str = "") -> str | None:
    """The first field the builders set that the observed object does not hold, or None.

    Only what ``desired`` sets is compared, so fields the API server or a webhook adds
    (defaults, status, managedFields) never count as drift. An empty value the builders
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
        if not isinstance(observed, list) or len(observed) != len(desired):
            return path
        for i, (want, got) in enumerate(zip(desired, observed, strict=True)):
            found = first_difference(want, got, f"{path}[{i}]")
            if found:
                return found
        return None
    if desired == observed or _same_quantity(desired, observed, path):
        return None
    return path


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
    if sample.rate is not None:
        cold = instance_cold_epochs(w, cand)
        scaled, scaler = step_with(knobs.policy, scaler, sample.rate, econ, knobs, cold)
        if knobs.policy is ScalingPolicy.PAPER:  # the re-ranking replays it whichever scales
            scaler = replace(scaler, recent=remember(scaler.recent, sample.rate, knobs))
        target = scaled.target_rate
    else:
        target = scaler.estimate.target(knobs.k)
    names = builders.Names(plan.owner.name)
    ready = obs.ready_instances(names.pool)
    desired = scaler.desired
    # Instances being scaled in drain: only the ones that stay take new traffic.
    share = pool_share(min(ready, desired), econ.mu, scaler.estimate.ewma)
    pool_w, fn_w = route_weights(share)
    version = (
        state.route_version
        if pool_w == state.pool_weight
        else f"g{plan.generation}e{scaler.epoch}w{pool_w}"
    )
    missed = state.samples_missed + (1 if sample.kind is SampleKind.MISSING else 0)
    new = EpochState(scaler, sample.counters, sample.counters_at, missed, pool_w, version)

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
    before = {
        child_key(o): o
        for o in plan.children(state.scaler.desired, state.pool_weight, state.route_version)
    }
    apply: list[dict[str, Any]] = []
    for obj in plan.children(desired, pool_w, version):
        key = child_key(obj)
        seen = obs.children.get(key)
        if seen is not None and first_difference(obj, seen) is None:
            continue
        apply.append(obj)
        drift = "missing" if seen is None else first_difference(before[key], seen)
        if drift:
            what = "deleted" if seen is None else f"{drift.lstrip('.')} changed"
            events.append(
                Event(EventReason.DRIFT_CORRECTED, f"{key[1]} {key[2]}: {what}; re-applied")
            )

    functions_ok = all(obs.serving(key) for key in plan.readiness_keys())
    ready_ok = ready >= desired and functions_ok
    gen, t = plan.generation, obs.wall
    c = set_condition(obs.conditions, ConditionType.SCALED, ready >= desired, "PoolSize",
                      f"{ready}/{desired} instances ready", gen, t)  # fmt: skip
    c = set_condition(
        c, ConditionType.ROUTED, True, "RouteApplied", f"pool weight {pool_w}/1000", gen, t
    )
    c = set_condition(c, ConditionType.READY, ready_ok, "Serving" if ready_ok else "NotReady",
                      "pool, functions and route ready" if ready_ok
                      else waiting_for(obs, plan, ready, desired), gen, t)  # fmt: skip
    cost = econ.cost_rate(scaler.estimate.ewma) * 3600
    traffic: dict[str, Any] = {
        "ewma": scaler.estimate.ewma,
        "deviation": scaler.estimate.dev,
        "target": target,
        "samples": scaler.estimate.samples,
        "epoch": scaler.epoch,
        # A merge patch keeps map keys it does not name: null removes a gone endpoint.
        "counters": {**{k: None for k in state.counters}, **new.counters},
        "lastSample": sample.kind.value,
        "samplesMissed": missed,
        # Rounded: the history is bounded in count (8 x S) and so, with this, in bytes.
        "recent": [round(x, 4) for x in scaler.recent],
    }
    if sample.rate is not None:
        traffic["rate"] = sample.rate
    status = {
        "traffic": traffic,
        "instances": {"desired": desired, "ready": ready},
        "split": {"poolShare": share, "poolWeight": pool_w, "functionWeight": fn_w},
        "costPerHour": cost,
        "conditions": c,
    }
    return Decision(new, sample, target, ready, share, cost, tuple(apply), status, tuple(events))
