"""The harness: waits, ports, processes, and the documents it writes to the control plane
(the last ones on the real API server)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from serflow_testbed import harness
from serflow_testbed.harness import (
    Cluster,
    Processes,
    free_port,
    knative_ready_status,
    kwok_node,
    wait_for,
    wait_http,
)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname()[1] == port


def test_wait_for_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, [], {"ready": True}, {"later": 1}])
    assert wait_for("the third answer", lambda: next(answers), 60, every=0) == {"ready": True}
    assert next(answers) == {"later": 1}  # no call after the answer


def test_wait_for_names_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match=r"waiting for the pool \(last: None\)"):
        wait_for("the pool", lambda: None, timeout=0)


def test_wait_http_fails_at_once_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    procs = Processes()
    p = procs.start("gone", [sys.executable, "-c", "print('bad flag'); raise SystemExit(2)"], log)
    p.wait(30)
    with pytest.raises(RuntimeError, match=r"process exited 2 before .*bad flag"):
        wait_http(f"http://127.0.0.1:{free_port()}/readyz", 60, p, log)


def test_processes_stop_by_name_and_all(tmp_path: Path) -> None:
    procs = Processes()
    forever = [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"]
    a = procs.start("a", forever, tmp_path / "a.log")
    b = procs.start("b", forever, tmp_path / "b.log")
    procs.stop("a", timeout=30)
    assert a.returncode is not None and b.poll() is None
    procs.stop(timeout=30)
    assert b.returncode is not None


def test_a_failed_tool_names_its_stderr(tmp_path: Path) -> None:
    tool = tmp_path / "kubectl"
    tool.write_text("#!/bin/sh\necho 'error: the server has no such thing' >&2\nexit 1\n")
    tool.chmod(0o755)
    c = Cluster(tmp_path / "kubeconfig", tmp_path)
    with pytest.raises(subprocess.CalledProcessError, match="no such thing"):
        c.kubectl("get", "thing")
    assert c.kubectl("get", "thing", check=False).returncode == 1


def test_kwok_node_and_knative_status_documents() -> None:
    node = kwok_node("n-1", "c6i.large", "2", "4Gi", pool="default")
    assert node["metadata"]["labels"] == {
        "type": "kwok",
        "kubernetes.io/hostname": "n-1",
        "node.kubernetes.io/instance-type": "c6i.large",
        "serflow.io/pool": "default",
    }
    assert node["status"]["capacity"] == {"cpu": "2", "memory": "4Gi", "pods": "110"}
    assert "serflow.io/pool" not in kwok_node("n-2", "c6i.large", "2", "4Gi")["metadata"]["labels"]
    st = knative_ready_status("f", "ns")["status"]
    assert st["url"] == "http://f.ns.svc.cluster.local"
    assert {(c["type"], c["status"]) for c in st["conditions"]} == {
        ("ConfigurationsReady", "True"),
        ("Ready", "True"),
        ("RoutesReady", "True"),
    }


@pytest.mark.cluster
def test_on_the_api_server(cluster: Cluster, tmp_path: Path) -> None:
    """The chart, a kwok node, the ServiceAccount kubeconfig and Knative's Ready status,
    each as the API server and kwok take it."""
    harness.install_chart(cluster)
    name = f"harness-{uuid.uuid4().hex[:6]}"
    cluster.apply([kwok_node(name, "c6i.large", "2", "4Gi")])
    ready = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    try:
        wait_for(
            "kwok to make the node Ready",
            lambda: "True" in cluster.kubectl("get", "node", name, "-o", ready).stdout,
            60,
        )
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)

    kc = harness.sa_kubeconfig(cluster, tmp_path / "sa.kubeconfig", duration_s=600)
    assert yaml.safe_load(kc.read_text())["current-context"] == "sa"
    sa = Cluster(kc, cluster.bin_dir)
    who = json.loads(sa.kubectl("auth", "whoami", "-o", "json").stdout)
    assert who["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{harness.SYSTEM_NS}:{harness.SA}"
    )
    assert sa.kubectl("get", "secrets", "-n", harness.SYSTEM_NS, check=False).returncode != 0

    ns = f"harness-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    try:
        ksvc = {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "fn", "namespace": ns},
            "spec": {"template": {"spec": {"containers": [{"image": "registry.invalid/fn:1"}]}}},
        }
        cluster.apply([ksvc])
        harness.mark_knative_ready(cluster, ns, "fn")
        got = json.loads(cluster.kubectl("get", "ksvc", "fn", "-n", ns, "-o", "json").stdout)
        assert got["status"]["url"] == f"http://fn.{ns}.svc.cluster.local"
        ready = {c["type"]: c["status"] for c in got["status"]["conditions"]}
        assert ready == {"ConfigurationsReady": "True", "Ready": "True", "RoutesReady": "True"}
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
