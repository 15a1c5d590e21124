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
