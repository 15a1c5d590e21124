"""The epoch (gather -> decide -> execute) in this process, on the real API server.

A fake clock drives the epochs; the counters come from a tiny stats endpoint on
127.0.0.1 that serves what the test sets (and can answer 503). The plan is made here,
as the create handler would, so that what one epoch does can be counted on its own.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client, config

import serflow.controller.handlers as handlers
import serflow.controller.planning as planning
import serflow.controller.routes as routes
import serflow.policy.configurator as configurator
from serflow.controller.decide import (
    Decision,
    EpochState,
    Event,
    EventReason,
    epoch_state_from_status,
)
from serflow.controller.epoch import Clock, apply_children, install, run_epoch
from serflow.controller.kube import Kube
from serflow.controller.planning import ChosenPlan, Placement
from serflow.inference import parse_inference
from serflow.k8s import builders, envoy
from serflow.k8s.crd import GROUP, PLURAL, VERSION
from serflow.policy.configurator import PoolKind
from serflow.policy.monitor import TrafficEstimate, observe
from serflow.policy.scaler import ScalerState, desired_instances
from serflow.spec import parse_workload
from serflow.status import (
    Condition,
    InferenceStatus,
    RouteSplit,
    SampleKind,
    decode_conditions,
)
from tests.controller.manifests import manifest

pytestmark = pytest.mark.cluster

NAME = "ep"
COUNTER = "http.ingress.downstream_rq_total"


@dataclass
class StatsEndpoint:
    """Envoy's stats listener as the operator reads it: one counter, or a 503 when told."""

    value: int = 0
    failures: int = 0
    """How many of the next scrapes answer 503."""
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if endpoint.failures:
                    endpoint.failures -= 1
                    self.send_response(503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = f"{COUNTER}: {endpoint.value}\n".encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/stats"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class FakeClock:
    """Monotonic seconds the test sets; a fixed wall time."""

    t: float = 0.0

    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.t, wall=lambda: "2026-01-01T00:00:00Z")


@dataclass
class Requests:
    """Every request an ApiClient sends: (method, path)."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def wrap(self, api: client.ApiClient) -> None:
        send: Callable[..., Any] = api.rest_client.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, urllib.parse.urlsplit(url).path))
            return send(method, url, *args, **kwargs)

        api.rest_client.request = request


@dataclass
class Bed:
    """One SerflowInference planned here, its children applied, and an epoch runner."""

    kube: Kube
    requests: Requests
    stats: StatsEndpoint
    time: FakeClock
    placed: Placement
    state: EpochState
    conditions: tuple[Condition, ...] = ()
    """The object's conditions as the daemon's live body would hold them."""
    written: bool = False
    """Whether the last epoch wrote its status."""

    def epoch(self, at: float, value: int | None = None, seen: str | None = None) -> Decision:
        """One epoch at ``at`` seconds, the counter at ``value`` (None: the scrape fails),
        decided on the object's resourceVersion ``seen`` (None: unconditional)."""
        self.time.t = at
        if value is None:
            self.stats.failures = 1
        else:
            self.stats.value = value
        d, self.written = run_epoch(
            self.kube, self.plan, self.state, self.time.clock(), self.conditions, seen
        )
        self.state, self.conditions = d.state, d.status.conditions or ()
        return d

    @property
    def plan(self) -> ChosenPlan:
        return self.placed.plan

    def resource_version(self) -> str:
        obj = self.custom().get_namespaced_custom_object(
            GROUP, VERSION, self.plan.owner.namespace, PLURAL, NAME
        )
        return str(obj["metadata"]["resourceVersion"])

    def status(self) -> dict[str, Any]:
        obj = self.custom().get_namespaced_custom_object_status(
            GROUP, VERSION, self.plan.owner.namespace, PLURAL, NAME
        )
        return dict(obj.get("status") or {})

    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.kube.api)

    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(api_version, kind, self.plan.owner.namespace, name)




@pytest.fixture
def bed(cluster: Any, crd_cluster: Any, namespace: str) -> Iterator[Bed]:
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    requests = Requests()
    requests.wrap(api)
    kube = Kube(api)
    stats = StatsEndpoint()
    stats.start()
    m = manifest(NAME)
    m["spec"]["routing"] = {"statsUrls": [stats.url]}
    m["spec"]["scaling"]["intervalEpochs"] = 1  # resize every epoch: a skipped one would show
    m["metadata"]["namespace"] = namespace
    obj = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, m
    )
    w = parse_workload(m)
    chosen = configurator.configure(w, w.expected_rate).chosen
    assert chosen is not None
    owner = builders.Owner(NAME, namespace, obj["metadata"]["uid"])
    desired = desired_instances(w.expected_rate, chosen.economics, w.scaling)
    plan = ChosenPlan(owner, parse_inference(m["spec"], NAME), w, chosen, 1)
    placed = Placement(plan, desired, RouteSplit(0.0, 0, 1000), tuple(plan.children(desired, 0)),
                       InferenceStatus())  # fmt: skip
    for child in placed.children:
        kube.apply(child)
    try:
        state = epoch_state_from_status(InferenceStatus(), placed)
        yield Bed(kube, requests, stats, FakeClock(), placed, state)
    finally:
        stats.stop()
        api.close()


def _spy_on_planning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning must not happen inside an epoch: make every way to it fail loudly."""

    def planned(*_: Any, **__: Any) -> Any:
        raise AssertionError("an epoch planned")

    monkeypatch.setattr(configurator, "configure", planned)
    monkeypatch.setattr(planning, "configure", planned)
    monkeypatch.setattr(handlers, "plan_spec", planned)
    monkeypatch.setattr(handlers, "read_inputs", planned)
    monkeypatch.setattr(handlers, "start_profiling", planned)


def test_one_epoch_reads_only_its_children_and_plans_nothing(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    _spy_on_planning(monkeypatch)
    first = bed.epoch(0.0, 0)
    # The children as the API server stores them (defaults, canonical quantities) match
    # what the builders set: nothing counts as drift.
    assert first.sample.kind is SampleKind.BASELINE
    assert not _drift(first)
    bed.requests.calls.clear()
    d = bed.epoch(1.0, 20)
    assert d.sample.rate == 20.0 and not _drift(d)
    ns = bed.plan.owner.namespace
    own = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/{NAME}"
    assert ("GET", own) not in bed.requests.calls
    # Reads: each child once, and each function's pinned Revision (its readiness). Writes:
    # the status, what this epoch decided to change (the route, when kwok's pool pods
    # became ready meanwhile), and its events.
    applied = [("PATCH", _path(o, ns)) for o in d.apply]
    events = [("POST", f"/api/v1/namespaces/{ns}/events")] * len(d.events)
    # No pod is read or written: a new route reaches the routers through the route server.
    pod_calls = [c for c in bed.requests.calls if "/pods" in c[1]]
    assert not pod_calls, pod_calls
    assert sorted(bed.requests.calls) == sorted(
        [
            ("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{NAME}-pool"),
            ("GET", f"/api/v1/namespaces/{ns}/services/{NAME}-pool"),
            ("GET", f"/apis/serving.knative.dev/v1/namespaces/{ns}/services/{NAME}-spill"),
            *(
                ("GET", f"/apis/serving.knative.dev/v1/namespaces/{ns}/revisions/{k[2]}")
                for k in bed.plan.readiness_keys()
            ),
            ("GET", f"/api/v1/namespaces/{ns}/configmaps/{NAME}-envoy"),
            ("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{NAME}-envoy"),
            ("GET", f"/api/v1/namespaces/{ns}/services/{NAME}-envoy"),
            ("GET", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{NAME}-envoy"),
            *(
                ("GET", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{NAME}-{p}")
                for p in ("pool", "spill", "tail", "envoy")
            ),
            ("PATCH", f"{own}/status"),
            *applied,
            *events,
        ]
    )


def _drift(d: Decision) -> list[str]:
    return [e.message for e in d.events if e.reason is EventReason.DRIFT_CORRECTED]


def _path(obj: dict[str, Any], ns: str) -> str:
    group = obj["apiVersion"]
    base = f"/api/{group}" if "/" not in group else f"/apis/{group}"
    plural = {"Deployment": "deployments", "Service": "services", "ConfigMap": "configmaps"}
    return f"{base}/namespaces/{ns}/{plural[obj['kind']]}/{obj['metadata']['name']}"


def test_a_failed_scrape_leaves_ewma_and_pool_size_unchanged(bed: Bed) -> None:
    w = bed.plan.workload
    a, b, k = w.scaling.ewma_a, w.scaling.ewma_b, w.scaling.k
    econ = bed.plan.candidate.economics
    seen = []
    for at, value in [(0.0, 0), (1.0, 20), (2.0, None), (3.0, 60), (4.0, 80)]:
        bed.epoch(at, value)
        st = bed.status()
        pool = bed.get("apps/v1", "Deployment", f"{NAME}-pool")
        assert pool is not None
        seen.append((st["traffic"], st["instances"]["desired"], pool["spec"]["replicas"]))
    traffic = [t for t, _, _ in seen]
    assert [t["lastSample"] for t in traffic] == ["baseline", "ok", "missing", "ok", "ok"]
    assert [t["samplesMissed"] for t in traffic] == [0, 0, 1, 1, 1]
    assert [t.get("rate") for t in traffic] == [None, 20.0, 20.0, 20.0, 20.0]
    # What the monitor should hold: the prior (the expected rate), then 20 req/s three
    # times; the failed epoch repeats the previous one exactly.
    est = TrafficEstimate(w.expected_rate, 0.0, 1)
    want = [est]
    for rate in (20.0, None, 20.0, 20.0):
        est = est if rate is None else observe(est, rate, a, b)
        want.append(est)
    got = [TrafficEstimate(t["ewma"], t["deviation"], t["samples"]) for t in traffic]
    assert got == want
    sizes = [desired_instances(e.target(k), econ, w.scaling) for e in want]
    assert [d for _, d, _ in seen] == [r for _, _, r in seen] == [bed.placed.desired, *sizes[1:]]
    assert seen[2][0] | {"lastSample": "ok", "samplesMissed": 0} == seen[1][0]


def test_drifted_children_are_restored_in_one_epoch(bed: Bed, cluster: Any) -> None:
    bed.epoch(0.0, 0)
    ns = bed.plan.owner.namespace
    kubectl = cluster.kubectl
    kubectl("scale", "deployment", f"{NAME}-pool", "-n", ns, "--replicas=7")
    kubectl("delete", "ksvc", f"{NAME}-spill", "-n", ns)
    kubectl("patch", "configmap", f"{NAME}-envoy", "-n", ns, "--type=merge",
            "-p", json.dumps({"data": {"route.yaml": "{}"}}))  # fmt: skip
    kubectl("set", "image", f"deployment/{NAME}-envoy", "-n", ns, "envoy=example/other:1")
    other = {"spec": {"selector": {"app.kubernetes.io/component": "other"}}}
    kubectl("patch", "service", f"{NAME}-pool", "-n", ns, "--type=merge", "-p", json.dumps(other))
    # A policy opened to every peer, another deleted: both closed again.
    kubectl("patch", "networkpolicy", f"{NAME}-pool", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"ingress": [{}]}}))  # fmt: skip
    kubectl("delete", "networkpolicy", f"{NAME}-tail", "-n", ns)
    d = bed.epoch(1.0, None)
    assert sorted(_drift(d)) == [
        f"ConfigMap {NAME}-envoy: data.route.yaml changed; re-applied",
        f"Deployment {NAME}-envoy: spec.template.spec.containers[envoy].image changed; re-applied",
        f"Deployment {NAME}-pool: spec.replicas changed; re-applied",
        f"NetworkPolicy {NAME}-pool: spec.ingress[0].from changed; re-applied",
        f"NetworkPolicy {NAME}-tail: deleted; re-applied",
        f"Service {NAME}-pool: spec.selector.app.kubernetes.io/component changed; re-applied",
        f"Service {NAME}-spill: deleted; re-applied",
    ]
    want = {(o["kind"], o["metadata"]["name"]): o for o in bed.plan.children(
        bed.state.scaler.desired, bed.state.pool_weight)}  # fmt: skip
    pool = bed.get("apps/v1", "Deployment", f"{NAME}-pool") or {}
    assert pool["spec"]["replicas"] == bed.placed.desired
    envoy = bed.get("apps/v1", "Deployment", f"{NAME}-envoy") or {}
    image = envoy["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == bed.plan.inference.routing.image
    cm = bed.get("v1", "ConfigMap", f"{NAME}-envoy") or {}
    assert cm["data"] == want[("ConfigMap", f"{NAME}-envoy")]["data"]
    svc = bed.get("v1", "Service", f"{NAME}-pool") or {}
    assert svc["spec"]["selector"] == builders.labels(bed.plan.owner, "pool")
    assert bed.get("serving.knative.dev/v1", "Service", f"{NAME}-spill") is not None
    for policy in ("pool", "tail"):
        got = bed.get("networking.k8s.io/v1", "NetworkPolicy", f"{NAME}-{policy}") or {}
        assert got["spec"] == want[("NetworkPolicy", f"{NAME}-{policy}")]["spec"]
    events = client.CoreV1Api(bed.kube.api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={NAME},reason=DriftCorrected"
    )
    assert len(events.items) == 7
    # A container another client adds (a mesh's sidecar injector, say) stays, and is not
    # drift: applying ours again would leave it there, epoch after epoch.
    sidecar = {"name": "mesh-proxy", "image": "example/mesh:1"}
    kubectl("patch", "deployment", f"{NAME}-pool", "-n", ns, "-p",
            json.dumps({"spec": {"template": {"spec": {"containers": [sidecar]}}}}))  # fmt: skip
    d = bed.epoch(2.0, None)
    assert _drift(d) == [] and d.apply == ()
    pool = bed.get("apps/v1", "Deployment", f"{NAME}-pool") or {}
    names = [c["name"] for c in pool["spec"]["template"]["spec"]["containers"]]
    assert "mesh-proxy" in names and len(names) == 2
    again = bed.epoch(2.0, None)
    assert not _drift(again)


def test_a_clusterip_pool_service_of_an_older_version_is_recreated_headless(
    bed: Bed, cluster: Any
) -> None:
    """An operator before the headless pool Service made it a ClusterIP one; clusterIP is
    immutable, so the epoch deletes and recreates it, and says so."""
    bed.epoch(0.0, 0)
    ns = bed.plan.owner.namespace
    pool = f"{NAME}-pool"
    old = bed.get("v1", "Service", pool) or {}
    cluster.kubectl("delete", "service", pool, "-n", ns)
    older = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": pool, "namespace": ns, "labels": old["metadata"]["labels"],
                     "ownerReferences": old["metadata"]["ownerReferences"]},
        "spec": {"selector": old["spec"]["selector"], "ports": old["spec"]["ports"]},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(older))
    assert (bed.get("v1", "Service", pool) or {})["spec"]["clusterIP"] != "None"
    bed.epoch(1.0, None)
    svc = bed.get("v1", "Service", pool) or {}
    assert svc["spec"]["clusterIP"] == "None"
    events = client.CoreV1Api(bed.kube.api).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={NAME},reason=Replaced"
    )
    assert [e.message for e in events.items] == [
        f"Service {pool}: an immutable field changed; recreated"
    ]
    assert not _drift(bed.epoch(2.0, None))


def _ksvcs(bed: Bed) -> set[str]:
    ns = bed.plan.owner.namespace
    return set(bed.kube.names("serving.knative.dev/v1", "Service", ns,
                              builders.owned_labels(bed.plan.owner)))  # fmt: skip


def _install(bed: Bed, plan: ChosenPlan) -> list[Event]:
    return install(bed.kube, plan, plan.children(bed.placed.desired, 0))


def test_a_plan_with_another_cut_prunes_the_functions_it_has_not(bed: Bed) -> None:
    """A hybrid plan's tail function, left by an earlier plan, is deleted when a plan
    without it is put in force; the functions it has stay."""
    w = bed.plan.workload
    hybrid = configurator.configure(w, w.expected_rate, [PoolKind.HYBRID]).chosen
    assert hybrid is not None
    earlier = replace(bed.plan, candidate=hybrid)
    assert not [e for e in _install(bed, earlier) if e.reason is EventReason.PRUNED]
    ksvc = ("serving.knative.dev/v1", "Service")
    tails = {k[2] for k in set(earlier.child_keys()) - set(bed.plan.child_keys()) if k[:2] == ksvc}
    assert tails and tails <= _ksvcs(bed), "the hybrid plan has no function of its own"
    events = _install(bed, bed.plan)
    assert sorted(e.message for e in events if e.reason is EventReason.PRUNED) == sorted(
        f"Knative Service {n}: not in the plan; deleted" for n in tails
    )
    wanted = {k[2] for k in bed.plan.child_keys() if k[:2] == ksvc}
    assert _ksvcs(bed) == wanted
    assert not [e for e in _install(bed, bed.plan) if e.reason is EventReason.PRUNED]


BURSTY = (240.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0) * 2
"""Rates of 16 epochs (the manifest re-ranks every 8 ticks of 2 epochs): one burst per
8 epochs, which functions serve for less than a pool sized for it."""


def test_the_daemon_puts_a_replacement_plan_in_force(bed: Bed) -> None:
    w = bed.plan.workload
    iaas = configurator.configure(w, 30.0).chosen
    assert iaas is not None and iaas.setup.pool is PoolKind.IAAS
    plan = replace(bed.plan, candidate=iaas)
    running = Placement(plan, 3, RouteSplit(1.0, 1000, 0), tuple(plan.children(3, 1000)),
                        InferenceStatus())  # fmt: skip
    install(bed.kube, plan, running.children)
    state = replace(bed.state, scaler=ScalerState(TrafficEstimate(30.0, 0.0, 16), 16, 3, BURSTY))
    done = handlers.replan_and_apply(bed.kube, running, state, 0, [])
    assert done is not None
    new, _ = done
    assert new.placement.plan.candidate.setup.pool is PoolKind.FAAS
    pool = bed.get("apps/v1", "Deployment", f"{NAME}-pool") or {}
    assert pool["spec"]["replicas"] == new.placement.desired == 0
    st = bed.status()
    assert (st["plan"]["pool"], st["plan"]["rankedBy"]) == ("faas", "replay")
    assert st["plan"]["replaySaving"] == new.rerank.saving
    # Not due (one epoch later) or steady traffic: nothing is written.
    later = replace(state, scaler=replace(state.scaler, epoch=17))
    assert handlers.replan_and_apply(bed.kube, running, later, 0, []) is None
    steady = replace(state, scaler=replace(state.scaler, recent=(30.0,) * 16))
    assert handlers.replan_and_apply(bed.kube, running, steady, 0, []) is None


def test_an_epoch_on_an_older_view_does_not_undo_a_newer_condition(bed: Bed) -> None:
    """The daemon decides on its live body while a spec change is planned or refused: its
    conditions, computed from the older view, must not overwrite the newer ones."""
    bed.epoch(0.0, 0, seen=bed.resource_version())
    assert bed.written
    seen = bed.resource_version()
    # Meanwhile the spec handler refuses a new spec (as the NoFeasibleSetup path writes).
    refused = {"type": "Configured", "status": "False", "reason": "NoFeasibleSetup",
               "message": "SLO 0.05 s", "observedGeneration": 2,
               "lastTransitionTime": "2026-01-01T00:00:01Z"}  # fmt: skip
    assert bed.kube.patch_status(bed.plan.owner.namespace, NAME, {"conditions": [refused]})
    bed.epoch(1.0, 20, seen=seen)
    assert not bed.written
    assert bed.status()["conditions"] == [refused]
    # The next epoch decides on the new view and writes.
    bed.conditions = decode_conditions([refused])
    bed.epoch(2.0, 40, seen=bed.resource_version())
    assert bed.written
    kinds = {c["type"]: c for c in bed.status()["conditions"]}
    assert kinds["Configured"] == refused


def test_a_new_route_is_served_to_the_routers_at_once_and_no_pod_is_written(bed: Bed) -> None:
    """The kubelet refreshes a mounted ConfigMap only on its periodic sync (a minute): the
    route the operator applies is what its route server hands the routers' sidecars from
    then on, and no pod is written. After a restart (nothing published yet) an epoch
    publishes the route it reads back; once the object's daemon stops, none is served."""
    owner = bed.plan.owner
    routes.ROUTES.open(owner.namespace, owner.name)
    try:
        bed.requests.calls.clear()
        for weight in (1000, 250):
            (cm,) = [
                o for o in bed.plan.children(bed.placed.desired, weight) if o["kind"] == "ConfigMap"
            ]
            apply_children(bed.kube, bed.plan, [cm])
            served = routes.ROUTES.get(owner.namespace, owner.name)
            assert served is not None and served[1] == builders.router_route(cm)
            assert json.loads(served[1])["resources"][0]["virtual_hosts"]
        assert not [c for c in bed.requests.calls if "/pods" in c[1]], bed.requests.calls
        # A restarted operator (or one taking over): the epoch reads the route back.
        routes.ROUTES.forget(owner.namespace, owner.name)
        routes.ROUTES.open(owner.namespace, owner.name)
        bed.epoch(1.0, 0)
        served = routes.ROUTES.get(owner.namespace, owner.name)
        stored = bed.kube.configmap_data(owner.namespace, builders.Names(owner.name).envoy)
        assert served is not None and stored is not None
        assert served[1] == stored[envoy.ROUTE_FILE]
    finally:
        routes.ROUTES.forget(owner.namespace, owner.name)
    # Stopped here: an epoch still under way publishes nothing.
    apply_children(bed.kube, bed.plan, [cm])
    assert routes.ROUTES.get(owner.namespace, owner.name) is None
