"""The pure epoch (``decide``), stepped with a fake clock against hand-computed numbers."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from serflow.controller.decide import (
    CounterReading,
    Decision,
    EpochState,
    EventReason,
    Observation,
    decide,
    epoch_state_from_status,
    first_difference,
)
from serflow.controller.planning import ChildKey, ChosenPlan, Placement, child_key
from serflow.inference import parse_inference
from serflow.k8s import builders
from serflow.policy.configurator import configure
from serflow.policy.cost import PoolEconomics
from serflow.spec import parse_workload
from serflow.status import Condition, InferenceStatus, RouteSplit, SampleKind, decode, encode
from tests.controller.manifests import manifest

# mu 10 req/s per instance, TCIP = 1 / (0.25 - 0) = 4 req/s (as in tests/policy).
ECON = PoolEconomics(
    mu=10.0, instance_price=1.0, faas_per_request=0.25, add_per_request=0.0, has_pool=True
)


def make_plan(expected_rate: float = 0.0, desired: int = 1, access: str = "revision") -> Placement:
    """The manifest's plan (S = 2, a = b = 0.5, k = 1) with easy economics, in force with
    ``desired`` instances and every request routed to the pool."""
    m = manifest("vgg", traffic={"expectedRate": expected_rate})
    m["spec"]["functions"] = {"access": access}
    w = parse_workload(m)
    chosen = configure(w, 30.0).chosen
    assert chosen is not None
    cand = dataclasses.replace(chosen, economics=ECON)
    owner = builders.Owner("vgg", "ns", "uid-1")
    plan = ChosenPlan(owner, parse_inference(m["spec"], "vgg"), w, cand, 3)
    children = tuple(plan.children(desired, 1000))
    return Placement(plan, desired, RouteSplit(1.0, 1000, 0), children, InferenceStatus())


class World:
    """The children as the API server would hold them: what was last applied, plus status."""

    def __init__(self, placed: Placement) -> None:
        self.plan = placed.plan
        self.objects: dict[ChildKey, dict[str, Any] | None] = {
            child_key(o): o for o in placed.children
        }
        self.ready = placed.desired
        self.functions_ready = True
        """Whether Knative's controller reports the functions' Revisions Ready."""
        self.routes_ready = False
        """Whether a networking layer made the Knative Services' routes (so them) Ready."""
        self.functions_say: dict[str, str] = {}
        """What a not-Ready Revision's Ready condition adds (reason, message)."""

    def observe(
        self, now: float, counters: Mapping[str, int | None], conditions: Sequence[Condition] = ()
    ) -> Observation:
        children: dict[ChildKey, Mapping[str, Any] | None] = {}
        for key, obj in self.objects.items():
            if obj is None:
                children[key] = None
                continue
            seen = copy.deepcopy(obj)
            if key[1] == "Deployment" and key[2].endswith("-pool"):
                seen["status"] = {"readyReplicas": self.ready}
            if key[1] == "Service" and key[0].startswith("serving"):
                ok = "True" if self.functions_ready and self.routes_ready else "False"
                seen["status"] = {"conditions": [{"type": "Ready", "status": ok}]}
            children[key] = seen
        for key in self.plan.readiness_keys():
            if key[1] == "Revision":
                ok = "True" if self.functions_ready else "False"
                said = self.functions_say if ok == "False" else {}
                children[key] = {
                    "status": {"conditions": [{"type": "Ready", "status": ok, **said}]}
                }
        readings = tuple(CounterReading(k, v) for k, v in counters.items())
        return Observation(now, f"t{now:g}", readings, children, tuple(conditions))

    def execute(self, d: Decision) -> None:
        for obj in d.apply:
            self.objects[child_key(obj)] = obj


def start(placed: Placement) -> EpochState:
    return epoch_state_from_status(InferenceStatus(), placed)


def run(
    placed: Placement, scrapes: Sequence[Mapping[str, int | None]], world: World | None = None
) -> list[Decision]:
    """One epoch per second (the fake clock), each scrape the counters of that second."""
    world = world or World(placed)
    state = start(placed)
    out = []
    for t, counters in enumerate(scrapes):
        d = decide(state, world.observe(float(t), counters), placed.plan)
        world.execute(d)
        state = d.state
        out.append(d)
    return out


def test_a_failed_scrape_is_skipped_not_a_dip_then_a_spike() -> None:
    # One Envoy at a steady 20 req/s misses the scrape at t=2. Counting the failure as 0
    # read 20, 0, 40, 20; as "no sample" the rate stays 20 and nothing moves.
    placed = make_plan()
    ds = run(placed, [{"a": 0}, {"a": 20}, {"a": None}, {"a": 60}, {"a": 80}, {"a": 120}])
    assert [d.sample.kind for d in ds] == [
        SampleKind.BASELINE, SampleKind.OK, SampleKind.MISSING, SampleKind.OK, SampleKind.OK,
        SampleKind.OK,
    ]  # fmt: skip
    assert [d.sample.rate for d in ds] == [None, 20.0, None, 20.0, 20.0, 40.0]
    est = [(d.state.scaler.estimate.ewma, d.state.scaler.estimate.dev) for d in ds]
    # t5: ewma .5*40 + .5*20 = 30, dev .5*|40-20| + .5*0 = 10
    assert est == [(0.0, 0.0), (20.0, 0.0), (20.0, 0.0), (20.0, 0.0), (20.0, 0.0), (30.0, 10.0)]
    # Epochs count samples; the pool is resized on epochs 0, 2, 4 (S = 2): at t1 for
    # target 20 (2 instances), at t4 for 20 again, at t5 not (epoch 3).
    assert [d.state.scaler.epoch for d in ds] == [0, 1, 1, 2, 3, 4]
    assert [d.state.scaler.desired for d in ds] == [1, 2, 2, 2, 2, 2]
    assert [d.target_rate for d in ds] == [0.0, 20.0, 20.0, 20.0, 20.0, 40.0]
    skipped = ds[2]
    assert skipped.state.scaler == ds[1].state.scaler  # EWMA, deviation, epoch, size
    assert skipped.state.counters == {"a": 20} and skipped.state.counters_at == 1.0
    assert encode(skipped.status)["traffic"]["lastSample"] == "missing"
    assert encode(skipped.status)["traffic"]["samplesMissed"] == 1
    assert "rate" not in encode(skipped.status)["traffic"]  # the last rate stays as it was
    assert encode(ds[3].status)["traffic"] | {"counters": None} == {
        "ewma": 20.0, "deviation": 0.0, "target": 20.0, "samples": 2, "epoch": 2,
        "counters": None, "lastSample": "ok", "samplesMissed": 1, "rate": 20.0,
        "recent": [20.0, 20.0],  # the paper's rule keeps the history too: the re-ranking replays it
    }  # fmt: skip
    assert encode(ds[3].status)["instances"] == {"desired": 2, "ready": 1}
    assert encode(ds[-1].status)["traffic"]["samplesMissed"] == 1


def test_weights_follow_ready_instances_and_the_ewma() -> None:
    placed = make_plan()
    world = World(placed)
    state = start(placed)
    got = []
    for t, (count, ready) in enumerate([(0, 1), (20, 1), (60, 2), (100, 2), (120, 4)]):
        world.ready = ready
        d = decide(state, world.observe(float(t), {"a": count}), placed.plan)
        world.execute(d)
        state = d.state
        got.append((d.state.scaler.desired, d.pool_share, encode(d.status)["split"]["poolWeight"]))
    # t0 baseline, ewma 0: 1 ready -> share 1. t1: 20 req/s -> desired 2, 1 ready: 10/20.
    # t2: 40 -> ewma 30, dev 10, no resize (epoch 1); 2 ready: 20/30.
    # t3: 40 -> ewma 35, dev .5*10 + .5*10 = 10, target 45 -> desired 5 (q 4, r 5 > 4);
    # 2 ready: 20/35. t4: 20 -> ewma 27.5, dev .5*15 + 5 = 12.5; 4 ready: min(1, 40/27.5).
    assert got == [
        (1, 1.0, 1000),
        (2, 0.5, 500),
        (2, pytest.approx(2 / 3), 667),
        (5, pytest.approx(4 / 7), 571),
        (5, 1.0, 1000),
    ]


def test_rescale_and_route_are_applied_and_announced_not_reported_as_drift() -> None:
    placed = make_plan()
    ds = run(placed, [{"a": 0}, {"a": 20}, {"a": 40}])
    assert ds[0].apply == ()  # nothing changed, nothing drifted: no write but the status
    kinds = [(child_key(o)[1], child_key(o)[2]) for o in ds[1].apply]
    assert kinds == [("Deployment", "vgg-pool"), ("ConfigMap", "vgg-envoy")]
    assert ds[1].apply[0]["spec"]["replicas"] == 2
    assert [e.reason for e in ds[1].events] == [EventReason.SCALED, EventReason.ROUTED]
    assert ds[1].events[0].message.startswith("pool 1 -> 2 instances (target 20 req/s")
    # The route's version is its content: the new weights, a new version.
    assert '"weight": 500' in ds[1].apply[1]["data"]["route.yaml"]
    before = next(o for o in placed.children if o["kind"] == "ConfigMap")
    assert before["data"]["route.yaml"] != ds[1].apply[1]["data"]["route.yaml"]
    assert ds[2].apply == () and ds[2].events == ()  # applied last epoch, observed now


def test_counter_reset_and_replicas_coming_and_going() -> None:
    placed = make_plan()
    ds = run(
        placed,
        [
            {"a": 100},
            {"a": 110},  # 10
            {"a": 4},  # a restarted: 4 since
            {"a": 16, "b": 500},  # b new: baseline only -> 12
            {"a": 26, "b": 520},  # both: 10 + 20
            {"b": 540},  # a gone: 20
        ],
    )
    assert [d.sample.rate for d in ds] == [None, 10.0, 4.0, 12.0, 30.0, 20.0]
    assert ds[-1].state.counters == {"b": 540}
    assert encode(ds[-1].status)["traffic"]["counters"] == {"a": None, "b": 540}  # a removed


def test_partial_scrape_keeps_every_baseline() -> None:
    placed = make_plan()
    ds = run(
        placed, [{"a": 0, "b": 0}, {"a": 10, "b": 10}, {"a": 20, "b": None}, {"a": 30, "b": 30}]
    )
    assert [d.sample.rate for d in ds] == [None, 20.0, None, 20.0]
    assert ds[2].state.counters == {"a": 10, "b": 10}


def test_prior_until_the_first_sample_and_restart_reads_a_baseline() -> None:
    placed = make_plan(expected_rate=30.0, desired=3)
    ds = run(placed, [{"a": 0}, {"a": 10}])
    # The baseline epoch already sees the prior (30): share 3*10/30.
    assert ds[0].state.scaler.estimate.ewma == 30.0 and ds[0].pool_share == 1.0
    # t1: 10 req/s folds into the prior: ewma 20, dev 10, target 30 -> 3 instances.
    assert (ds[1].state.scaler.estimate.ewma, ds[1].state.scaler.estimate.dev) == (20.0, 10.0)
    assert ds[1].state.scaler.desired == 3
    # A restarted daemon seeds from status, but its first read is a baseline: the counters
    # in status were read by another process at a time it does not know.
    status = decode(json.loads(json.dumps(encode(ds[1].status))))  # as the API server has it
    again = epoch_state_from_status(status, placed)
    assert again.scaler.estimate == ds[1].state.scaler.estimate
    # The rate history too: re-ranking replays it, the expected-cost scaler sizes on it.
    assert again.scaler.recent == ds[1].state.scaler.recent == (30.0, 10.0)
    assert again.replanned(placed).scaler.recent == again.scaler.recent
    assert again.counters == {"a": 10} and again.counters_at is None
    d = decide(again, World(placed).observe(100.0, {"a": 500}), placed.plan)
    assert d.sample.kind is SampleKind.BASELINE
    assert d.state.scaler == again.scaler


def test_drift_is_corrected_and_announced() -> None:
    placed = make_plan()
    world = World(placed)
    pool = ("apps/v1", "Deployment", "vgg-pool")
    envoy_cm = ("v1", "ConfigMap", "vgg-envoy")
    spill = ("serving.knative.dev/v1", "Service", "vgg-spill")
    scaled = copy.deepcopy(world.objects[pool])
    assert scaled is not None
    scaled["spec"]["replicas"] = 7
    world.objects[pool] = scaled
    edited = copy.deepcopy(world.objects[envoy_cm])
    assert edited is not None
    edited["data"]["route.yaml"] = "{}"
    world.objects[envoy_cm] = edited
    world.objects[spill] = None
    d = decide(start(placed), world.observe(0.0, {"a": 0}), placed.plan)
    assert [child_key(o) for o in d.apply] == [pool, spill, envoy_cm]
    assert d.apply[0]["spec"]["replicas"] == 1
    assert [(e.reason, e.message) for e in d.events] == [
        (EventReason.DRIFT_CORRECTED, "Deployment vgg-pool: spec.replicas changed; re-applied"),
        (EventReason.DRIFT_CORRECTED, "Service vgg-spill: deleted; re-applied"),
        (EventReason.DRIFT_CORRECTED,
         "ConfigMap vgg-envoy: data.route.yaml changed; re-applied"),
    ]  # fmt: skip
    world.execute(d)
    assert decide(d.state, world.observe(1.0, {"a": None}), placed.plan).apply == ()


def test_ready_condition_needs_the_pool_and_every_function() -> None:
    placed = make_plan()
    world = World(placed)
    world.functions_ready = False
    d = decide(start(placed), world.observe(0.0, {"a": 0}), placed.plan)
    ready = {c["type"]: c for c in encode(d.status)["conditions"]}
    assert ready["Ready"]["status"] == "False" and ready["Scaled"]["status"] == "True"
    assert (
        ready["Ready"]["observedGeneration"] == 3 and ready["Ready"]["lastTransitionTime"] == "t0"
    )
    world.functions_ready = True
    d = decide(d.state, world.observe(1.0, {"a": None}, d.status.conditions or ()), placed.plan)
    assert {c["type"]: c["status"] for c in encode(d.status)["conditions"]}["Ready"] == "True"


def test_not_ready_says_which_part_waits_and_why() -> None:
    # A hybrid's tail that cannot schedule keeps its workers unready: the condition must
    # name the pool's count and quote the function's own reason, bounded in length.
    placed = make_plan()
    world = World(placed)
    world.ready, world.functions_ready = 0, False
    world.functions_say = {
        "reason": "Unschedulable",
        "message": "0/2 nodes are available: " + "x" * 500,
    }
    d = decide(start(placed), world.observe(0.0, {"a": 0}), placed.plan)
    msg = {c["type"]: c for c in encode(d.status)["conditions"]}["Ready"]["message"]
    (rev,) = (k[2] for k in placed.plan.readiness_keys())
    assert msg.startswith(
        f"waiting for pool 0/1 instances ready; Revision {rev} Ready=False "
        "(Unschedulable: 0/2 nodes are available: xxx"
    )
    assert len(msg) < 300
    # A readiness object not there yet, and one without a Ready condition, say so.
    world.ready = 1
    gone = world.observe(1.0, {"a": None})
    gone = dataclasses.replace(
        gone, children={**gone.children, placed.plan.readiness_keys()[0]: None}
    )
    d = decide(d.state, gone, placed.plan)
    msg = {c["type"]: c for c in encode(d.status)["conditions"]}["Ready"]["message"]
    assert msg == f"waiting for Revision {rev} not found"
    bare = dataclasses.replace(
        gone, children={**gone.children, placed.plan.readiness_keys()[0]: {}}
    )
    after = decide(d.state, bare, placed.plan).status
    msg = {c["type"]: c for c in encode(after)["conditions"]}["Ready"]["message"]
    assert msg == f"waiting for Revision {rev} has no Ready condition yet"


def test_function_readiness_follows_the_access_mode() -> None:
    # Revision access: the pinned Revisions say it, with no networking layer (routes never Ready).
    placed = make_plan()
    assert [k[1] for k in placed.plan.readiness_keys()] == ["Revision"]
    assert set(placed.plan.readiness_keys()) <= set(placed.plan.observed_keys())
    world = World(placed)
    d = decide(start(placed), world.observe(0.0, {"a": 0}), placed.plan)
    assert {c["type"]: c["status"] for c in encode(d.status)["conditions"]}["Ready"] == "True"
    # Route access: only the Knative Services' Ready counts, which needs the routes.
    placed = make_plan(access="route")
    assert placed.plan.readiness_keys() == [("serving.knative.dev/v1", "Service", "vgg-spill")]
    world = World(placed)
    d = decide(start(placed), world.observe(0.0, {"a": 0}), placed.plan)
    assert {c["type"]: c["status"] for c in encode(d.status)["conditions"]}["Ready"] == "False"
    world.routes_ready = True
    d = decide(d.state, world.observe(1.0, {"a": None}, d.status.conditions or ()), placed.plan)
    assert {c["type"]: c["status"] for c in encode(d.status)["conditions"]}["Ready"] == "True"


def _pod(name: str, image: str, sidecar: bool = False) -> dict[str, Any]:
    mesh = [{"name": "mesh", "image": "m"}] if sidecar else []
    return {"containers": [*mesh, {"name": name, "image": image}]}


def _memory(q: str) -> dict[str, Any]:
    return {"r": {"resources": {"limits": {"memory": q}}}}


@pytest.mark.parametrize(
    ("desired", "observed", "diff"),
    [
        ({"a": {"b": 1}}, {"a": {"b": 1, "default": 2}}, None),  # added by the server
        ({"a": {}, "b": []}, {}, None),  # empty maps are dropped by the server
        ({"a": 0}, {}, ".a"),  # a zero is a value
        (_memory("6144Mi"), _memory("6Gi"), None),  # stored in canonical form
        (_memory("6144Mi"), _memory("5Gi"), ".r.resources.limits.memory"),
        ({"args": ["1", "2"]}, {"args": ["1"]}, ".args"),
        ({"c": [{"image": "x"}]}, {"c": [{"image": "y", "name": "n"}]}, ".c[0].image"),
        ({"tau": "1"}, {"tau": "1.0"}, ".tau"),  # only quantities compare by value
        # Lists merged by name: another client's items are theirs, ours match by name.
        (_pod("w", "x"), _pod("w", "x", sidecar=True), None),
        (_pod("w", "x"), _pod("w", "y", sidecar=True), ".containers[w].image"),
        (_pod("w", "x"), {"containers": [{"name": "mesh", "image": "m"}]}, ".containers[w]"),
    ],
)
def test_first_difference(desired: Any, observed: Any, diff: str | None) -> None:
    assert first_difference(desired, observed) == diff


def test_while_a_newer_spec_is_not_configured_ready_says_which_plan_serves() -> None:
    placed = make_plan()  # generation 3
    world = World(placed)
    world.routes_ready = True
    obs = world.observe(0.0, {"a": 0})
    newer = dataclasses.replace(obs, generation=4)
    said = {
        c["type"]: c for c in encode(decide(start(placed), newer, placed.plan).status)["conditions"]
    }
    assert said["Ready"]["status"] == "True"
    assert said["Ready"]["message"].endswith(
        "(the plan of generation 3 serves: generation 4 is not configured, see Configured)"
    )
    same = {
        c["type"]: c for c in encode(decide(start(placed), obs, placed.plan).status)["conditions"]
    }
    assert same["Ready"]["message"] == "pool, functions and route ready"


def test_a_failed_fetch_is_why_the_pods_do_not_start() -> None:
    """Pods whose artefact fails its digest never start: Ready says that first, with the
    initializer's own line, and returns to Serving once the pods are ready."""
    placed = make_plan()
    world = World(placed)
    world.ready, world.functions_ready = 0, False
    failed = dataclasses.replace(
        world.observe(0.0, {"a": 0}),
        fetch_failures=("mismatch: manifest.json has digest 0a1b2c..., expected 3d4e5f...",),
    )
    d = decide(start(placed), failed, placed.plan)
    ready = {c["type"]: c for c in encode(d.status)["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ArtefactMismatch")
    assert ready["message"].startswith(
        "the artefact's fetch failed: mismatch: manifest.json has digest 0a1b2c..., "
        "expected 3d4e5f...; waiting for pool 0/1 instances ready"
    )
    world.ready, world.functions_ready = 1, True
    d = decide(d.state, world.observe(1.0, {"a": None}, d.status.conditions or ()), placed.plan)
    ready = {c["type"]: c for c in encode(d.status)["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "Serving")


def test_a_revision_knative_gave_up_on_is_deleted_for_knative_to_make_again() -> None:
    # Knative's progress deadline passed with the pods unschedulable: it scaled the Revision
    # to zero for good. The epoch deletes it (its Knative Service makes it again under the
    # same name) and says so; while Knative still waits (Unschedulable), nothing is deleted.
    placed = make_plan()
    world = World(placed)
    world.functions_ready = False
    world.functions_say = {"reason": "Unschedulable", "message": "0/2 nodes are available"}
    d = decide(start(placed), world.observe(0.0, {"a": 0}), placed.plan)
    assert d.delete == () and EventReason.RETRIED not in {e.reason for e in d.events}
    world.functions_say = {"reason": "ProgressDeadlineExceeded",
                           "message": "Initial scale was never achieved"}  # fmt: skip
    d = decide(d.state, world.observe(1.0, {"a": 0}), placed.plan)
    (rev,) = placed.plan.readiness_keys()
    assert d.delete == (rev,)
    (said,) = [e.message for e in d.events if e.reason is EventReason.RETRIED]
    assert said.startswith(f"Revision {rev[2]} Ready=False (ProgressDeadlineExceeded: Initial")
    # Being deleted (foreground: until its dependents are gone), it is not deleted again.
    going = world.observe(2.0, {"a": 0})
    obj = {**(going.children[rev] or {}), "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}
    again = decide(d.state, dataclasses.replace(going, children={**going.children, rev: obj}),
                   placed.plan)  # fmt: skip
    assert again.delete == () and EventReason.RETRIED not in {e.reason for e in again.events}
    # Route access reads readiness from the Knative Services: no Revision to delete there.
    routed = make_plan(access="route")
    world = World(routed)
    world.functions_ready = False
    world.functions_say = {"reason": "ProgressDeadlineExceeded", "message": "x"}
    assert decide(start(routed), world.observe(0.0, {"a": 0}), routed.plan).delete == ()


def test_a_child_name_taken_by_someone_else_is_left_alone_and_said() -> None:
    # A Deployment of another owner (or of none) under the pool's name: never applied
    # over (a server-side apply would take it over), and Ready says whose name it is.
    placed = make_plan()
    world = World(placed)
    pool = next(k for k in world.objects if k[1] == "Deployment" and k[2].endswith("-pool"))
    theirs = copy.deepcopy(world.objects[pool])
    assert theirs is not None
    theirs["metadata"]["ownerReferences"] = [{**placed.plan.owner.reference(), "uid": "other"}]
    theirs["spec"]["replicas"] = 9
    world.objects[pool] = theirs
    d = decide(start(placed), world.observe(0.0, {"a": 0}), placed.plan)
    assert pool not in {child_key(o) for o in d.apply}
    ready = {c["type"]: c for c in encode(d.status)["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "NotOwned")
    assert ready["message"].startswith(f"Deployment {pool[2]} exists and is not this object's")
    # Without owner references at all, the same.
    del theirs["metadata"]["ownerReferences"]
    d = decide(d.state, world.observe(1.0, {"a": 0}), placed.plan)
    assert pool not in {child_key(o) for o in d.apply}
