"""Leader election on the real control plane: two operator replicas peer through the
chart's kopf peering object; one works, the other waits, and takes over when the first is
gone (SIGKILL, as a node lost), within the peering lifetime, with the object's epochs
going on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serflow.controller.handlers import PEERING_LIFETIME_S
from serflow_testbed.harness import (
    RELEASE,
    Cluster,
    free_port,
    install_chart,
    operator_argv,
    operator_env,
    sa_kubeconfig,
    stop_process,
    wait_for,
)
from tests.controller.manifests import manifest

pytestmark = pytest.mark.cluster

PEERING = f"{RELEASE}-serflow-operator"
"""The peering object's name: the chart's (templates/peering.yaml)."""


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    install_chart(cluster)
    name = f"sfpeer-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    # A namespaced operator peers in its namespace: the chart's namespaced install makes
    # this object in each watched namespace.
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
               "metadata": {"name": PEERING, "namespace": name}}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(peering))
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _epoch(cluster: Cluster, ns: str, name: str) -> int:
    """Epochs run so far: the stats endpoint never answers, so each one counts a missed
    sample in the status it writes."""
    r = cluster.kubectl("get", "serflowinference", name, "-n", ns, "-o", "json", check=False)
    status = json.loads(r.stdout).get("status") or {} if r.returncode == 0 else {}
    return int((status.get("traffic") or {}).get("samplesMissed") or 0)


def test_one_replica_works_and_the_other_takes_over(
    cluster: Cluster, ns: str, tmp_path: Path
) -> None:
    kc = sa_kubeconfig(cluster, tmp_path / "sa", 900)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    route_ports: dict[str, int] = {}
    def start(who: str, priority: int) -> None:
        logs[who] = tmp_path / f"{who}.log"
        argv = [*operator_argv(ns), f"--peering={PEERING}", f"--priority={priority}"]
        env = operator_env(kc)
        route_ports[who] = int(env["SERFLOW_ROUTES_PORT"])
        procs[who] = subprocess.Popen(argv, env={**os.environ, **env},
                                      stdout=logs[who].open("ab"), stderr=subprocess.STDOUT)  # fmt: skip

    def route(who: str) -> int:
        """What the replica's route server answers for the object's route."""
        return _route_status(route_ports[who], ns, "peered")

    try:
        # As a rolling update brings a replica up beside one that works.
        start("first", 200)
        # kwok's pods are never dialled: the epochs read a loopback endpoint (no sample).
        idle = f"http://127.0.0.1:{free_port()}/stats"
        m = manifest("peered", routing={"statsUrls": [idle]})
        m["spec"]["scaling"]["epochSeconds"] = 1
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(m))
        wait_for("epochs from the first replica", lambda: _epoch(cluster, ns, "peered") >= 3, 90)
        start("second", 100)
        resumed = "Resuming operations after the pause"
        wait_for("the second replica up", lambda: "Activity 'startup' succeeded"
                 in logs["second"].read_text(), 60)  # fmt: skip
        at = _epoch(cluster, ns, "peered")
        wait_for("more epochs from the first", lambda: _epoch(cluster, ns, "peered") > at + 3, 60)
        # kopf starts a peered replica paused; it stays so while a higher priority works
        second = logs["second"].read_text()
        assert resumed not in second and "[peered]" not in second, second[-2000:]
        # Only the replica that works serves the router's route; the other answers 404
        # (the router's sidecar then asks again, or follows its ConfigMap).
        assert (route("first"), route("second")) == (200, 404)
        # The first is lost as with its node: no goodbye, its record only goes stale.
        procs["first"].send_signal(signal.SIGKILL)
        procs["first"].wait()
        lost = time.monotonic()
        at = _epoch(cluster, ns, "peered")
        wait_for("the second replica to take over", lambda: _epoch(cluster, ns, "peered") > at + 2,
                 timeout=PEERING_LIFETIME_S * 3 + 30, every=1)  # fmt: skip
        took = time.monotonic() - lost
        assert resumed in logs["second"].read_text()
        assert route("second") == 200  # its epochs read the route back from the ConfigMap
        print(f"taken over {took:.1f} s after the first replica was lost "
              f"(peering lifetime {PEERING_LIFETIME_S} s)")  # fmt: skip
    finally:
        for p in procs.values():
            if p.poll() is None:
                stop_process(p, 30)
        for who, log in logs.items():
            print(f"--- {who}\n{log.read_text()[-2500:]}")


def _route_status(port: int, ns: str, name: str) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/routes/{ns}/{name}")
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def test_the_chart_peers_its_replicas(cluster: Cluster) -> None:
    """Every install peers (so scaling the Deployment is safe); with replicas to spare a
    disruption budget keeps one and the replicas spread over nodes."""
    def rendered(*sets: str) -> list[dict[str, Any]]:
        import yaml

        args = [a for s in sets for a in ("--set", s)]
        out = cluster.helm("template", "r", "charts/serflow-operator", *args).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    one = {d["kind"]: d for d in rendered()}
    assert one["ClusterKopfPeering"]["metadata"]["name"] == "r-serflow-operator"
    args = one["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=r-serflow-operator" in args
    assert "PodDisruptionBudget" not in one
    two = {d["kind"]: d for d in rendered("replicas=2")}
    assert two["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert "podAntiAffinity" in two["Deployment"]["spec"]["template"]["spec"]["affinity"]
    scoped = [d for d in rendered("watchAllNamespaces=false", "watchNamespaces={a,b}")
              if d["kind"] == "KopfPeering"]  # fmt: skip
    assert sorted(d["metadata"]["namespace"] for d in scoped) == ["a", "b"]


def test_the_chart_tells_the_operator_its_image_and_route_server(cluster: Cluster) -> None:
    """The routers' route-sync sidecars run the operator's own image and reach its route
    server through a Service of the chart, on the port the operator binds."""
    import yaml

    out = cluster.helm("template", "r", "charts/serflow-operator", "-n", "ops",
                       "--set", "image.repository=reg/op", "--set", "image.tag=v7").stdout  # fmt: skip
    docs = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
    (op,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in op["env"]}
    assert env["SERFLOW_OPERATOR_IMAGE"] == op["image"] == "reg/op:v7"
    assert env["SERFLOW_ROUTES_URL"] == f"http://r-serflow-operator.ops.svc:{env['SERFLOW_ROUTES_PORT']}"
    assert env["SERFLOW_ROUTES_ADDR"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in op["ports"]}
    assert str(ports["routes"]) == env["SERFLOW_ROUTES_PORT"]
    svc = docs["Service"]
    assert svc["metadata"]["name"] == "r-serflow-operator"
    assert svc["spec"]["ports"] == [{"name": "routes", "port": ports["routes"], "targetPort": "routes"}]
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert "ValidatingAdmissionPolicy" not in docs
    # By digest when the chart is given one (as the kind path installs it): the same image.
    digest = "sha256:" + "ab" * 32
    out = cluster.helm("template", "r", "charts/serflow-operator", "--set", "image.repository=reg/op",
                       "--set", f"image.digest={digest}").stdout  # fmt: skip
    dep = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    (op,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in op["env"]}
    assert env["SERFLOW_OPERATOR_IMAGE"] == op["image"] == f"reg/op@{digest}"
