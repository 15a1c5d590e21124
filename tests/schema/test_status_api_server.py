"""Every status the operator writes survives the real API server field by field.

A field missing from the CRD's status schema would be pruned by the API server without
an error, and state carried across a restart would be lost silently. Each status here
is made by the operator's own pure functions (planning, a refusal, an epoch, a
re-planning), written as the operator writes it (a merge patch on the status
subresource), read back and decoded.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from kubernetes import client

from serflow.controller.decide import (
    CounterReading,
    EpochState,
    Observation,
    decide,
    epoch_state_from_status,
)
from serflow.controller.kube import Kube
from serflow.controller.planning import Planned, Refused, plan_spec, refusal_status
from serflow.controller.replan import Replan, replan
from serflow.inference import parse_inference
from serflow.k8s import builders
from serflow.k8s.crd import PLURAL
from serflow.policy.monitor import TrafficEstimate
from serflow.policy.scaler import ScalerState
from serflow.schemas import GROUP, VERSION
from serflow.spec import parse_workload
from serflow.status import InferenceStatus, decode, encode
from tests.controller.manifests import manifest

pytestmark = pytest.mark.cluster

NAME = "vgg"
BURSTY = (240.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0) * 2
"""Bursts that a re-ranking replaces the manifest's pool with functions for (as in
tests/controller/test_replan.py)."""


def differences(written: Any, read: Any, path: str = "status") -> list[str]:
    """Each field the API server gave back otherwise than it was written."""
    if dataclasses.is_dataclass(written) and not isinstance(written, type):
        out = []
        for f in dataclasses.fields(written):
            want = getattr(written, f.name)
            if want is None:  # not written: the API server keeps what it had
                continue
            out += differences(want, getattr(read, f.name, None), f"{path}.{f.name}")
        return out
    if isinstance(written, dict):
        written = {k: v for k, v in written.items() if v is not None}  # nulls remove keys
    if isinstance(written, tuple) and written and dataclasses.is_dataclass(written[0]):
        if not isinstance(read, tuple) or len(read) != len(written):
            return [f"{path}: {written!r} != {read!r}"]
        return [d for i, (w, r) in enumerate(zip(written, read, strict=True))
                for d in differences(w, r, f"{path}[{i}]")]  # fmt: skip
    return [] if written == read else [f"{path}: wrote {written!r}, read {read!r}"]


def write_and_read(kube: Kube, namespace: str, written: InferenceStatus) -> InferenceStatus:
    assert kube.patch_status(namespace, NAME, encode(written))
    obj = client.CustomObjectsApi(kube.api).get_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, NAME
    )
    return decode(obj.get("status"))


def create(api_client: Any, namespace: str, m: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The object made on the API server: its owner reference, parsed spec and workload."""
    m["metadata"]["namespace"] = namespace
    made = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, m
    )
    owner = builders.Owner(NAME, namespace, made["metadata"]["uid"])
    return owner, parse_inference(m["spec"], NAME), parse_workload(m)


def test_every_status_the_operator_writes_round_trips(
    crd_cluster: Any, api_client: Any, namespace: str
) -> None:
    m = manifest(NAME)
    owner, inf, w = create(api_client, namespace, m)
    kube = Kube(api_client)
    written: list[tuple[str, InferenceStatus]] = []

    # A refusal (what reconcile writes for a spec it cannot plan).
    refused = refusal_status(
        Refused("InvalidSpec", "spec.x: bad"), InferenceStatus(), 1, "2026-01-01T00:00:00Z"
    )
    written.append(("refusal", refused))
    # Planning: the plan, every candidate, the pool and the route.
    planned = plan_spec(owner, inf, w, 1, InferenceStatus(), False, 0, "2026-01-01T00:00:01Z")
    assert isinstance(planned, Planned)
    placed = planned.placement
    written.append(("planning", placed.status))
    # Two epochs: a baseline, then a rate (the monitor, the counters, the history).
    state: EpochState = epoch_state_from_status(InferenceStatus(), placed)
    conditions = placed.status.conditions or ()
    for t, counters in enumerate(({"a": 0, "b": 0}, {"a": 100, "b": 60})):
        readings = tuple(CounterReading(k, v) for k, v in counters.items())
        obs = Observation(float(t), f"2026-01-01T00:00:0{t + 2}Z", readings, {}, conditions)
        d = decide(state, obs, placed.plan)
        state, conditions = d.state, d.status.conditions or ()
        written.append((f"epoch {t}", d.status))
    # An endpoint gone: the patch's null removes it.
    obs = Observation(2.0, "2026-01-01T00:00:04Z", (CounterReading("a", 160),), {}, conditions)
    d = decide(state, obs, placed.plan)
    written.append(("epoch with an endpoint gone", d.status))
    # A re-planning on bursts: the plan replaced, ranked by replay, with its saving.
    bursts = ScalerState(TrafficEstimate(30.0, 0.0, 16), 16, 3, BURSTY)
    r = replan(placed.plan, bursts, 3, d.status.conditions or (), "2026-01-01T00:00:05Z")
    assert isinstance(r, Replan), r
    written.append(("re-planning", r.placement.status))
    # Planning again on the same spec: a steady plan, and the replay's saving removed.
    again = plan_spec(owner, inf, w, 1, InferenceStatus(), False, 0, "2026-01-01T00:00:06Z")
    assert isinstance(again, Planned)
    written.append(("planning again", again.placement.status))

    for what, status in written:
        read = write_and_read(kube, namespace, status)
        assert not differences(status, read), (what, differences(status, read))
    last = read
    assert last.traffic is not None and last.traffic.counters == {"a": 160}  # b removed
    assert last.plan is not None and last.plan.replay_saving is None
    assert last.traffic.recent and last.plan.economics is not None


def test_a_spec_at_the_schemas_maximums_is_configured_with_a_bounded_status(
    crd_cluster: Any, api_client: Any, namespace: str
) -> None:
    from serflow.status import STATUS_BYTES_BOUND
    from serflow_testbed.manifests import largest_manifest

    # The API server accepts it: every CEL rule within its cost budget.
    owner, inf, w = create(api_client, namespace, largest_manifest(NAME))
    planned = plan_spec(owner, inf, w, 1, InferenceStatus(), False, 0, "2026-01-01T00:00:00Z")
    assert isinstance(planned, Planned)
    written = planned.placement.status
    assert written.plan is not None and written.plan.costed > 200_000
    read = write_and_read(Kube(api_client), namespace, written)
    assert not differences(written, read)
    stored = client.CustomObjectsApi(api_client).get_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, NAME
    )
    size = len(json.dumps(stored["status"]))
    assert size < STATUS_BYTES_BOUND // 100, size  # a few KB, not the 44 MB of every candidate
