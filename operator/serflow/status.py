"""The SerflowInference's status, typed: every key the operator writes or reads back is a
field here, and nowhere else.

``encode`` makes the JSON merge patch the operator sends, ``decode`` reads a status
back (tolerating keys an older operator did not write), and ``schema`` is the CRD's
status schema, generated from these classes so that a field cannot be written that the
API server would prune. JSON names are the fields' names in camelCase; descriptions are
the fields' docstrings.

A status write is a merge patch: a section left ``None`` is not written (the API server
keeps what it had); a field marked ``NULLABLE`` is written as null when ``None`` (the
patch removes an earlier value).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from serflow.domain import RankedBy, ScalingSpec
from serflow.policy.configurator import (
    Candidate,
    Granularity,
    Plan,
    PoolKind,
    Setup,
    best_per_pool,
)
from serflow.policy.cost import PoolEconomics

NULLABLE = {"nullable": True}
"""Field metadata: None is written as null, so the merge patch removes an earlier value."""
REQUIRED = {"required": True}
"""Field metadata: the schema requires the field (metav1.Condition's required fields)."""
T = TypeVar("T")

MESSAGE_LIMIT = 32000
"""A condition message is cut to this many characters (the schema allows 32768)."""
REASON_LIMIT = 1024
"""A candidate's reason is cut to this many characters (the schema's bound)."""
NAME_LIMIT = 253
"""Any other string of the status: names of instance types, function sizes, pools."""
CANDIDATES_PER_POOL = 3
"""status.plan keeps, per pool kind, this many of the best feasible candidates (or the
first infeasible one, which says why): the configurator costs the product of the spec's
lists, up to about 205,000 candidates at the schema's maximums, 44 MB as a status."""
CONDITIONS_LIMIT = 8
"""Conditions the status may hold: the operator writes four."""
ENDPOINT_NAME_LIMIT = 512
"""An endpoint's name in status.traffic.counters: a pod's name or a stats URL."""
ENDPOINTS_LIMIT = 116
"""Stats endpoints status.traffic.counters may hold: the router's replicas (at most 100)
or spec.routing.statsUrls (at most 16)."""
SERVED_SPEC_LIMIT = 128 * 1024
"""status.served keeps the spec of the running plan when its compact JSON takes at most
this many characters (the spec at the schema's maximums where candidates multiply takes
about 19,000)."""
STATUS_BYTES_BOUND = 768 * 1024
"""What the schema's bounds allow the status to take as JSON, at most (a test builds the
largest one): well under etcd's object limit of about 1.5 MB."""


class ConditionType(StrEnum):
    CONFIGURED = "Configured"
    SCALED = "Scaled"
    ROUTED = "Routed"
    READY = "Ready"


class SampleKind(StrEnum):
    """What one epoch's scrape of the counters gave."""

    OK = "ok"
    """Every endpoint answered and at least one had a baseline: a rate."""
    BASELINE = "baseline"
    """Nothing to subtract from yet (first reading, or every replica is new): no rate."""
    MISSING = "missing"
    """An endpoint did not answer, or there was none: no rate, the baseline is kept."""


@dataclass(frozen=True)
class Condition:
    """A metav1.Condition."""

    type: str = field(default="", metadata={**REQUIRED, "maxLength": 316})
    """Configured, Scaled, Routed or Ready (another writer's types are kept as they are)."""
    status: str = field(
        default="Unknown", metadata={**REQUIRED, "enum": ["True", "False", "Unknown"]}
    )
    """True, False or Unknown."""
    reason: str = field(default="", metadata={**REQUIRED, "maxLength": 1024})
    """CamelCase reason."""
    message: str = field(default="", metadata={**REQUIRED, "maxLength": 32768})
    """Human-readable detail."""
    last_transition_time: str = field(default="", metadata={**REQUIRED, "format": "date-time"})
    """When the status last flipped (RFC 3339, UTC)."""
    observed_generation: int = 0
    """Generation the condition was set for."""

    @property
    def true(self) -> bool:
        return self.status == "True"


@dataclass(frozen=True)
class Economics:
    """What the epochs need of the plan, kept so that a restart need not re-plan."""

    mu: float = 0.0
    """Requests per second one pool instance serves within the SLO."""
    instance_price_per_second: float = 0.0
    """The pool instance's price, $/s."""
    faas_per_request: float = 0.0
    """Function cost of a request the pool does not take, $."""
    add_per_request: float = 0.0
    """Function cost added to a request the pool takes (the hybrid tail), $."""
    has_pool: bool = False
    """Whether the setup has a pool at all."""
    batches_per_instance: int = 0
    """Batches one instance works on at once."""


@dataclass(frozen=True)
class CandidateStatus:
    """One costed candidate."""

    tau: float = 0.0
    """Confidence threshold."""
    accuracy: float = 0.0
    """Profiled accuracy at tau."""
    pool: str = ""
    """faas, iaas or hybrid."""
    function: str = ""
    """Function size for spill and tail."""
    feasible: bool = False
    """Meets the SLO and the accuracy target."""
    reason: str = field(default="", metadata={"maxLength": REASON_LIMIT})
    """Why not, when infeasible."""
    instance: str | None = None
    """Instance type of the pool (absent for FaaS)."""
    cut: int | None = None
    """Hybrid: the pool runs partitions 1..cut (absent otherwise)."""
    granularity: str | None = None
    """Hybrid tail deployment (absent otherwise)."""
    cost_per_hour: float | None = None
    """Cost at the plan's rate, $/h (absent when infeasible)."""
    tcip: float | None = None
    """T-CIP: the rate from which an instance costs less than functions, req/s (absent
    without a pool)."""


@dataclass(frozen=True)
class PlanStatus:
    """The chosen plan."""

    tau: float = 0.0
    """Confidence threshold."""
    accuracy: float = 0.0
    """Profiled accuracy at tau."""
    pool: str = ""
    """faas, iaas or hybrid."""
    instance: str = ""
    """Instance type of the pool ('' for FaaS)."""
    cut: int = 0
    """Hybrid: the pool runs partitions 1..cut (0 otherwise)."""
    granularity: str = ""
    """Hybrid tail deployment ('' otherwise)."""
    function: str = ""
    """Function size for spill and tail."""
    mu: float = 0.0
    """Requests per second one pool instance serves within the SLO."""
    tcip: float = 0.0
    """T-CIP, req/s (-1 without a pool)."""
    cost_per_hour: float = 0.0
    """Cost at the plan's rate, $/h."""
    rate: float = 0.0
    """The rate the plan was made for, req/s."""
    worst_batch_seconds: float | None = None
    """Warm worst-case batch processing time, seconds (absent: written before it was kept)."""
    economics: Economics | None = None
    """What the epochs need of the plan (absent: written before it was kept)."""
    candidates: tuple[CandidateStatus, ...] = field(
        default=(), metadata={"maxItems": 3 * CANDIDATES_PER_POOL}
    )
    """Per pool kind, the best few feasible candidates the configurator costed (or the
    first infeasible one, which says why)."""
    costed: int = 0
    """How many candidates the configurator costed."""
    ranked_by: RankedBy = field(default=RankedBy.STEADY)
    """Which ranking chose the plan: the cost at the steady rate, or a replay of the
    object's own rate history."""
    replay_saving: float | None = field(default=None, metadata=NULLABLE)
    """When a re-ranking replaced the running plan: the share of its replayed cost the
    new plan saves."""


@dataclass(frozen=True)
class TrafficStatus:
    """Traffic estimates (req/s) and the monitor's state."""

    ewma: float = 0.0
    """Smoothed arrival rate, req/s."""
    deviation: float = 0.0
    """Smoothed deviation of the rate, req/s."""
    target: float = 0.0
    """The rate the pool is sized for, req/s."""
    samples: int = 0
    """Rates the monitor has folded in (a prior from the spec counts as one)."""
    epoch: int = 0
    """Epochs with a rate since the object was created."""
    last_sample: SampleKind = SampleKind.BASELINE
    """The last epoch's scrape: a rate, a baseline only, or missing (skipped)."""
    samples_missed: int = 0
    """Epochs whose scrape failed (the monitor skipped them)."""
    recent: tuple[float, ...] = field(default=(), metadata={"maxItems": 8 * 1000})
    """The rate history re-ranking replays: the last 8 x S observed rates, oldest first,
    req/s."""
    counters: Mapping[str, int | None] = field(
        default_factory=dict,
        metadata={
            "maxProperties": ENDPOINTS_LIMIT,
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, size(k) <= {ENDPOINT_NAME_LIMIT})",
                    "message": f"an endpoint is named in at most {ENDPOINT_NAME_LIMIT} characters",
                }
            ],
        },
    )
    """Last downstream_rq_total per stats endpoint (null in a patch: an endpoint gone
    since, which a merge patch would otherwise keep)."""
    rate: float | None = None
    """The last observed rate, req/s (not written when the epoch had none)."""


@dataclass(frozen=True)
class InstanceCounts:
    """Pool size."""

    desired: int = 0
    """Instances the plan wants."""
    ready: int = 0
    """Instances ready."""


@dataclass(frozen=True)
class RouteSplit:
    """Envoy's weights."""

    pool_share: float = 0.0
    """Share of the traffic routed to the pool."""
    pool_weight: int = 0
    """The pool's route weight, of 1000."""
    function_weight: int = 0
    """The functions' route weight, of 1000."""


@dataclass(frozen=True)
class ServedSpec:
    """The spec the running plan was made from. Only the operator writes status, so after
    a restart it can trust this to keep that plan scaling while a newer spec is refused."""

    generation: int = 0
    """The spec's metadata.generation."""
    spec: str = field(default="", metadata={"maxLength": SERVED_SPEC_LIMIT})
    """The spec as compact JSON; empty when it was too large to keep."""


@dataclass(frozen=True)
class InferenceStatus:
    """What serflow decided and observed. Every list, map and string here is bounded, so
    that the status stays under 768 KiB as JSON."""

    observed_generation: int | None = None
    """The spec generation the status reflects."""
    conditions: tuple[Condition, ...] | None = field(
        default=None,
        metadata={
            "maxItems": CONDITIONS_LIMIT,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    """Configured, Scaled, Routed and Ready."""
    plan: PlanStatus | None = None
    """The chosen plan."""
    traffic: TrafficStatus | None = None
    """Traffic estimates (req/s) and the monitor's state."""
    instances: InstanceCounts | None = None
    """Pool size."""
    split: RouteSplit | None = None
    """Envoy's weights."""
    cost_per_hour: float | None = None
    """Cost rate of the current pool at the current EWMA, $/h."""
    served: ServedSpec | None = None
    """The spec of the plan that serves."""


def served_spec(spec: Mapping[str, Any], generation: int) -> ServedSpec:
    """status.served for a spec put in force; its spec empty when too large to keep (so
    that a spec kept before does not outlive its plan)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return ServedSpec(generation, text if len(text) <= SERVED_SPEC_LIMIT else "")


# --- Conditions ---------------------------------------------------------------------------


def set_condition(
    conditions: Sequence[Condition],
    type_: ConditionType,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> tuple[Condition, ...]:
    """metav1.Condition semantics: lastTransitionTime moves only when the status flips."""
    status = "True" if ok else "False"
    since = now
    out: list[Condition] = []
    for c in conditions:
        if c.type != type_.value:
            out.append(c)
        elif c.status == status:
            since = c.last_transition_time
    out.append(Condition(type_.value, status, reason, message[:MESSAGE_LIMIT], since, generation))
    return tuple(out)


def find_condition(conditions: Sequence[Condition], type_: ConditionType) -> Condition | None:
    """The condition of that type, or None."""
    return next((c for c in conditions if c.type == type_.value), None)


def condition_true(conditions: Sequence[Condition], type_: ConditionType) -> bool:
    c = find_condition(conditions, type_)
    return c is not None and c.true


# --- From the policy's types --------------------------------------------------------------


def candidate_line(c: Candidate) -> str:
    """One line on a candidate, for conditions and events."""
    e = c.economics
    n = e.instances_for(c.rate)
    tcip = "" if not e.has_pool else f", T-CIP {e.tcip:.4g} req/s, {n} instance(s)"
    return (
        f"tau {c.tau:g} (accuracy {c.accuracy:.3f}), {c.setup.describe()}, "
        f"${c.cost_per_hour:.5f}/h, mu {e.mu:.4g} req/s{tcip}"
    )


def _finite(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else x


def candidate_status(c: Candidate) -> CandidateStatus:
    s, e = c.setup, c.economics
    return CandidateStatus(
        tau=c.tau,
        accuracy=c.accuracy,
        pool=s.pool.value,
        function=s.function,
        feasible=c.feasible,
        reason=c.reason[:REASON_LIMIT],
        instance=s.instance or None,
        cut=s.cut or None,
        granularity=s.granularity.value if s.granularity else None,
        cost_per_hour=c.cost_per_hour if c.feasible else None,
        tcip=_finite(e.tcip),
    )


def plan_status(
    plan: Plan, chosen: Candidate, by: RankedBy = RankedBy.STEADY, saving: float | None = None
) -> PlanStatus:
    """status.plan: the chosen candidate, every candidate's cost, which ranking chose it
    and, when a replay replaced a running plan, the saving."""
    s, e = chosen.setup, chosen.economics
    tcip = _finite(e.tcip)
    return PlanStatus(
        tau=chosen.tau,
        accuracy=chosen.accuracy,
        pool=s.pool.value,
        instance=s.instance,
        cut=s.cut,
        granularity=s.granularity.value if s.granularity else "",
        function=s.function,
        mu=e.mu,
        tcip=-1.0 if tcip is None else tcip,
        cost_per_hour=chosen.cost_per_hour,
        rate=plan.rate,
        worst_batch_seconds=chosen.worst_batch_s,
        economics=Economics(
            mu=e.mu,
            instance_price_per_second=e.instance_price,
            faas_per_request=e.faas_per_request,
            add_per_request=e.add_per_request,
            has_pool=e.has_pool,
            batches_per_instance=e.batches_per_instance,
        ),
        candidates=tuple(
            candidate_status(x) for x in best_per_pool(plan.candidates, CANDIDATES_PER_POOL)
        ),
        costed=len(plan.candidates),
        ranked_by=by,
        replay_saving=saving,
    )


def candidate_from_status(plan_st: PlanStatus, scaling: ScalingSpec) -> Candidate | None:
    """The chosen candidate status.plan describes, for the spec whose ``scaling`` it was
    planned with (its instance bounds); None when it predates status.plan.economics."""
    e = plan_st.economics
    if e is None or plan_st.worst_batch_seconds is None:
        return None
    g = plan_st.granularity
    return Candidate(
        tau=plan_st.tau,
        accuracy=plan_st.accuracy,
        setup=Setup(
            pool=PoolKind(plan_st.pool),
            function=plan_st.function,
            instance=plan_st.instance,
            cut=plan_st.cut,
            granularity=Granularity(g) if g else None,
        ),
        worst_batch_s=plan_st.worst_batch_seconds,
        feasible=True,
        reason="",
        economics=PoolEconomics(
            mu=e.mu,
            instance_price=e.instance_price_per_second,
            faas_per_request=e.faas_per_request,
            add_per_request=e.add_per_request,
            has_pool=e.has_pool,
            batches_per_instance=e.batches_per_instance,
            min_instances=scaling.min_instances,
            max_instances=scaling.max_instances,
        ),
        rate=plan_st.rate,
        cost_per_s=plan_st.cost_per_hour / 3600.0,
    )


# --- The codec ----------------------------------------------------------------------------


def _json_name(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(p.title() for p in rest)


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether it was optional)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a status class (resolved once: annotations are strings)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _encode_value(tp: Any, value: Any) -> Any:
    tp, _ = _optional(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        return encode(value)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return [_encode_value(typing.get_args(tp)[0], v) for v in value]
    if origin in (Mapping, dict):
        return {str(k): _encode_value(typing.get_args(tp)[1], v) for k, v in value.items()}
    if isinstance(value, StrEnum):
        return value.value
    return value


def encode(obj: Any) -> dict[str, Any]:
    """The JSON merge patch of a status dataclass: None fields left out, except NULLABLE
    ones, written as null."""
    hints = _hints(type(obj))
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and not f.metadata.get("nullable"):
            continue
        out[_json_name(f.name)] = _encode_value(hints[f.name], value)
    return out


def _decode_value(tp: Any, value: Any) -> Any:
    tp, _ = _optional(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        return decode_as(typing.cast(type, tp), value) if isinstance(value, Mapping) else None
    origin = typing.get_origin(tp)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_decode_value(item, v) for v in value or ())
    if origin in (Mapping, dict):
        item = typing.get_args(tp)[1]
        return {str(k): _decode_value(item, v) for k, v in (value or {}).items() if v is not None}
    if tp is float:
        return float(value)
    if tp is int:
        return int(value)
    if tp is bool:
        return bool(value)
    if inspect.isclass(tp) and issubclass(tp, StrEnum):
        return tp(value)
    return str(value)


def decode_as(cls: type[T], doc: Mapping[str, Any]) -> T:
    """A status dataclass from its JSON; absent keys take the field's default."""
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = _json_name(f.name)
        if key in doc:
            kwargs[f.name] = _decode_value(hints[f.name], doc[key])
    return cls(**kwargs)


def decode(status: Mapping[str, Any] | None) -> InferenceStatus:
    """The typed status of an object's ``status`` (None or {}: nothing written yet)."""
    return decode_as(InferenceStatus, status or {})


def decode_conditions(conditions: Sequence[Mapping[str, Any]] | None) -> tuple[Condition, ...]:
    return tuple(decode_as(Condition, c) for c in conditions or ())


# --- The CRD's status schema --------------------------------------------------------------


def _docstrings(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body)."""
    tree = ast.parse(inspect.getsource(cls))
    body = typing.cast(ast.ClassDef, tree.body[0]).body
    docs: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _schema_of(tp: Any) -> dict[str, Any]:
    tp, _ = _optional(tp)
    if dataclasses.is_dataclass(tp):
        return schema_of(typing.cast(type, tp))
    origin = typing.get_origin(tp)
    if origin is tuple:
        return {"type": "array", "items": _schema_of(typing.get_args(tp)[0])}
    if origin in (Mapping, dict):
        return {"type": "object", "additionalProperties": _schema_of(typing.get_args(tp)[1])}
    if inspect.isclass(tp) and issubclass(tp, StrEnum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if tp is int:  # every count, generation and counter here is non-negative
        return {"type": "integer", "minimum": 0}
    if tp is str:
        return {"type": "string", "maxLength": NAME_LIMIT}
    return {"type": {bool: "boolean", float: "number"}[tp]}


_SCHEMA_KEYS = ("maxLength", "maxItems", "maxProperties", "format", "enum",
                "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
                "x-kubernetes-validations")  # fmt: skip


def schema_of(cls: type) -> dict[str, Any]:
    """The OpenAPI schema of a status dataclass, descriptions from its docstrings."""
    hints, docs = _hints(cls), _docstrings(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        s = _schema_of(hints[f.name])
        s.update({k: v for k, v in f.metadata.items() if k in _SCHEMA_KEYS})
        if f.name in docs:
            s["description"] = docs[f.name]
        props[_json_name(f.name)] = s
        if f.metadata.get("required"):
            required.append(_json_name(f.name))
    out: dict[str, Any] = {"type": "object", "properties": props}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    if required:
        out["required"] = required
    return out


def schema() -> dict[str, Any]:
    """The CRD's status schema."""
    return schema_of(InferenceStatus)
