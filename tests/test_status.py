"""The typed status: conditions, the codec, and the CRD's status schema made from the types.

The round trip through a real API server is in tests/schema/test_status_api_server.py.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from serflow import status as st
from serflow.domain import RankedBy
from serflow.k8s.crd import crd
from serflow.policy.configurator import configure
from serflow.spec import parse_workload
from serflow.status import (
    Condition,
    ConditionType,
    InferenceStatus,
    SampleKind,
    TrafficStatus,
    decode,
    encode,
    set_condition,
)
from tests.controller.manifests import manifest


def test_condition_transition_time_moves_only_on_flip() -> None:
    c = set_condition((), ConditionType.READY, False, "NotReady", "wait", 1, "t1")
    c = set_condition(c, ConditionType.READY, False, "NotReady", "still", 2, "t2")
    assert c == (Condition("Ready", "False", "NotReady", "still", "t1", 2),)
    c = set_condition(c, ConditionType.READY, True, "Serving", "ok", 2, "t3")
    assert c[0].last_transition_time == "t3" and c[0].true
    c = set_condition(c, ConditionType.SCALED, True, "PoolSize", "1/1", 2, "t3")
    assert [x.type for x in c] == ["Ready", "Scaled"]
    long = set_condition((), ConditionType.READY, False, "NotReady", "x" * 40000, 1, "t")
    assert len(long[0].message) == st.MESSAGE_LIMIT


def _full_status() -> InferenceStatus:
    w = parse_workload(manifest())
    plan = configure(w, 30.0)
    assert plan.chosen is not None
    conds = set_condition((), ConditionType.CONFIGURED, True, "Planned", "x", 4, "t")
    return InferenceStatus(
        observed_generation=4,
        conditions=conds,
        plan=st.plan_status(plan, plan.chosen, RankedBy.REPLAY, 0.125),
        traffic=TrafficStatus(
            ewma=3.5,
            deviation=1.0,
            target=4.5,
            samples=4,
            epoch=9,
            last_sample=SampleKind.OK,
            samples_missed=1,
            recent=(1.0, 2.5),
            counters={"a": 10, "b": 20},
            rate=2.5,
        ),
        instances=st.InstanceCounts(2, 1),
        split=st.RouteSplit(0.25, 250, 750),
        cost_per_hour=0.5,
    )


def test_encode_then_decode_is_the_identity_through_json() -> None:
    full = _full_status()
    doc = json.loads(json.dumps(encode(full)))
    assert decode(doc) == full
    assert doc["plan"]["rankedBy"] == "replay" and doc["traffic"]["lastSample"] == "ok"
    assert doc["split"] == {"poolShare": 0.25, "poolWeight": 250, "functionWeight": 750}


def test_a_patch_writes_only_its_sections_and_nulls_what_it_removes() -> None:
    partial = InferenceStatus(instances=st.InstanceCounts(1, 0))
    assert encode(partial) == {"instances": {"desired": 1, "ready": 0}}
    plan = dataclasses.replace(_full_status().plan or st.PlanStatus(), replay_saving=None)
    assert encode(plan)["replaySaving"] is None  # removes an earlier saving
    gone = TrafficStatus(counters={"a": None, "b": 3})
    assert encode(gone)["counters"] == {"a": None, "b": 3}
    assert decode({"traffic": encode(gone)}).traffic == TrafficStatus(counters={"b": 3})
    assert "rate" not in encode(TrafficStatus())  # an epoch without a rate keeps the last


def test_decode_tolerates_what_an_older_operator_wrote() -> None:
    assert decode(None) == InferenceStatus()
    old = decode({"plan": {"tau": 0.5, "pool": "iaas"}, "unknownKey": 1})
    assert old.plan is not None and old.plan.economics is None and old.plan.tau == 0.5


def _fields_of(schema: dict[str, Any], path: str = "") -> set[str]:
    out = set()
    for key, sub in (schema.get("properties") or {}).items():
        out.add(f"{path}.{key}")
        out |= _fields_of(sub, f"{path}.{key}")
        out |= _fields_of(sub.get("items") or {}, f"{path}.{key}[]")
    return out


def _fields_of_type(cls: type, path: str = "") -> set[str]:
    out = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f"{path}.{st._json_name(f.name)}"
        out.add(key)
        tp = st._optional(hints[f.name])[0]
        if dataclasses.is_dataclass(tp):
            out |= _fields_of_type(typing.cast(type, tp), key)
        elif typing.get_origin(tp) is tuple:
            item = typing.get_args(tp)[0]
            if dataclasses.is_dataclass(item):
                out |= _fields_of_type(typing.cast(type, item), f"{key}[]")
    return out


def test_the_crd_status_schema_is_the_typed_status() -> None:
    served = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    fields = _fields_of(served)
    assert fields == _fields_of_type(InferenceStatus)
    for key in (".traffic.recent", ".plan.economics.hasPool", ".conditions[].lastTransitionTime"):
        assert key in fields
    # Every field says what it is: the descriptions are the fields' docstrings.
    traffic = served["properties"]["traffic"]["properties"]
    assert traffic["ewma"]["description"] == "Smoothed arrival rate, req/s."
    assert traffic["lastSample"]["enum"] == ["ok", "baseline", "missing"]
    assert traffic["recent"]["maxItems"] == 8000
    cond = served["properties"]["conditions"]["items"]
    assert set(cond["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}
    missing = [
        k for k, v in served["properties"]["plan"]["properties"].items() if "description" not in v
    ]
    assert not missing


def test_every_printer_column_reads_a_field_of_the_typed_status() -> None:
    version = crd()["spec"]["versions"][0]
    fields = _fields_of(version["schema"]["openAPIV3Schema"]["properties"]["status"])
    paths = [c["jsonPath"] for c in version["additionalPrinterColumns"]]
    on_status = [p for p in paths if p.startswith(".status.")]
    assert on_status, paths
    for path in on_status:
        # ".status.conditions[?(@.type=="Ready")].status" reads conditions[].status
        key = path.removeprefix(".status").replace('[?(@.type=="Ready")]', "[]")
        assert key in fields, path


def _longest_float() -> float:
    return -1.2345678901234567e-300  # 24 characters as JSON, as long as a float gets


def test_the_largest_status_the_schema_allows_stays_under_the_bound() -> None:
    name = "n" * st.NAME_LIMIT
    cond = Condition("T" * 316, "Unknown", "R" * 1024, "m" * 32768, "2026-01-01T00:00:00Z", 2**62)
    cand = st.CandidateStatus(
        tau=_longest_float(), accuracy=_longest_float(), pool=name, function=name,
        feasible=False, reason="r" * st.REASON_LIMIT, instance=name, cut=2**62,
        granularity=name, cost_per_hour=_longest_float(), tcip=_longest_float(),
    )  # fmt: skip
    f = _longest_float()
    largest = InferenceStatus(
        observed_generation=2**62,
        conditions=(cond,) * st.CONDITIONS_LIMIT,
        plan=st.PlanStatus(
            tau=f, accuracy=f, pool=name, instance=name, cut=2**62, granularity=name,
            function=name, mu=f, tcip=f, cost_per_hour=f, rate=f, worst_batch_seconds=f,
            economics=st.Economics(f, f, f, f, True, 2**62),
            candidates=(cand,) * (3 * st.CANDIDATES_PER_POOL), costed=2**62,
            ranked_by=RankedBy.REPLAY, replay_saving=f,
        ),
        traffic=TrafficStatus(
            ewma=f, deviation=f, target=f, samples=2**62, epoch=2**62,
            last_sample=SampleKind.BASELINE, samples_missed=2**62, recent=(f,) * 8000,
            counters={f"{i:0{st.ENDPOINT_NAME_LIMIT}d}": 2**62 for i in range(st.ENDPOINTS_LIMIT)},
            rate=f,
        ),
        instances=st.InstanceCounts(2**62, 2**62),
        split=st.RouteSplit(f, 2**62, 2**62),
        cost_per_hour=f,
        served=st.ServedSpec(2**62, "s" * st.SERVED_SPEC_LIMIT),
    )  # fmt: skip
    size = len(json.dumps(encode(largest)))
    assert 600 * 1024 < size <= st.STATUS_BYTES_BOUND, size
    # And the schema allows nothing larger: each bound used above is the schema's.
    served = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    p = served["properties"]
    assert p["conditions"]["maxItems"] == st.CONDITIONS_LIMIT
    assert p["plan"]["properties"]["candidates"]["maxItems"] == 3 * st.CANDIDATES_PER_POOL
    assert p["traffic"]["properties"]["recent"]["maxItems"] == 8000
    assert p["traffic"]["properties"]["counters"]["maxProperties"] == st.ENDPOINTS_LIMIT
    assert p["plan"]["properties"]["pool"]["maxLength"] == st.NAME_LIMIT
    assert p["served"]["properties"]["spec"]["maxLength"] == st.SERVED_SPEC_LIMIT
    assert str(st.ENDPOINT_NAME_LIMIT) in p["traffic"]["properties"]["counters"][
        "x-kubernetes-validations"][0]["rule"]  # fmt: skip


def test_the_plan_status_keeps_the_best_few_per_pool() -> None:
    from serflow_testbed.manifests import largest_manifest

    w = parse_workload(largest_manifest())
    plan = configure(w, 30.0)
    assert plan.chosen is not None and len(plan.candidates) > 200_000
    kept = st.plan_status(plan, plan.chosen)
    assert kept.costed == len(plan.candidates)
    pools = [c.pool for c in kept.candidates]
    assert sorted(set(pools)) == ["faas", "hybrid", "iaas"]
    assert all(pools.count(p) <= st.CANDIDATES_PER_POOL for p in set(pools))
    chosen = st.candidate_status(plan.chosen)
    assert chosen in kept.candidates
    for pool in set(pools):  # the cheapest of each pool kind, cheapest first
        costs = [c.cost_per_hour for c in kept.candidates if c.pool == pool]
        best = min(x.cost_per_hour for x in plan.candidates if x.setup.pool.value == pool)
        assert costs == sorted(costs) and costs[0] == best  # type: ignore[type-var]
    assert len(json.dumps(encode(kept))) < 4096


def test_the_served_spec_is_kept_compact_or_not_at_all() -> None:
    from serflow_testbed.manifests import largest_manifest

    spec = largest_manifest()["spec"]
    served = st.served_spec(spec, 3)
    assert served is not None and served.generation == 3
    assert json.loads(served.spec) == spec and ", " not in served.spec
    # Too large: written empty, so that a spec kept before does not outlive its plan.
    too_large = {**spec, "padding": "x" * st.SERVED_SPEC_LIMIT}
    assert st.served_spec(too_large, 4) == st.ServedSpec(4, "")
