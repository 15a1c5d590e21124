"""``helm uninstall`` with a live object, on the kind cluster (issue 26): the chart's
pre-delete hook stops the operator and takes its finalizer off the object, so that the
object, and its namespace, can be deleted afterwards with no operator; until then the
object stays, as Helm keeps its CRD.

The last module under tests/kind (the session's cluster, tests/kind/conftest.py): it
leaves the operator uninstalled. Skipped only where no Docker engine can run or the
binaries cannot be built, saying why.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from serflow.k8s.crd import FINALIZER
from serflow_testbed.harness import RELEASE, SYSTEM_NS, Cluster, wait_for
from serflow_testbed.kind import KindSession, install_operator, pinned

pytestmark = pytest.mark.kind

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-kind.yaml"


def _object(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    r = cluster.kubectl("-n", ns, "get", "sfi", name, "-o", "json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else None


def test_uninstall_releases_live_objects(session: KindSession) -> None:
    cluster = session.running
    assert cluster is not None
    install_operator(cluster)
    ns = f"uninstall-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    doc = yaml.safe_load(EXAMPLE.read_text())
    name = doc["metadata"]["name"]
    doc["metadata"]["namespace"] = ns
    cluster.apply(pinned([doc]))

    # The operator has taken it up: its finalizer on it and a child made (the router).
    def taken_up() -> bool:
        o = _object(cluster, ns, name) or {}
        made = cluster.kubectl("-n", ns, "get", "deployments", "-l",
                               f"app.kubernetes.io/instance={name}", "-o", "name").stdout  # fmt: skip
        return FINALIZER in (o.get("metadata", {}).get("finalizers") or []) and bool(made)

    wait_for("the operator's finalizer and a child", taken_up, 180, every=2)

    t0 = time.monotonic()
    r = cluster.helm("uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "300s")
    print(f"kind uninstall: helm uninstall {time.monotonic() - t0:.0f} s: {r.stdout.strip()}")
    # No operator left; the object is, without the finalizer.
    pods = cluster.kubectl("-n", SYSTEM_NS, "get", "pods", "-l",
                           "app.kubernetes.io/name=serflow-operator", "-o", "name").stdout  # fmt: skip
    assert not pods.strip(), pods
    o = _object(cluster, ns, name)
    assert o is not None, "helm uninstall deleted the user's object"
    assert FINALIZER not in (o["metadata"].get("finalizers") or []), o["metadata"]
    # The hook cleaned up after itself (its Job, ServiceAccount and roles).
    left = cluster.kubectl(
        "-n", SYSTEM_NS, "get", "jobs,serviceaccounts,roles", "-o", "name"
    ).stdout
    assert "serflow-release" not in left, left

    # Its namespace goes with no operator: the object, then its children by owner reference.
    t1 = time.monotonic()
    cluster.kubectl("delete", "namespace", ns, "--wait=false")

    def gone() -> bool:
        return cluster.kubectl("get", "namespace", ns, check=False).returncode != 0

    wait_for(f"namespace {ns} deleted", gone, 180, every=2)
    print(f"kind uninstall: namespace deleted {time.monotonic() - t1:.0f} s after the request")


def test_nothing_left_the_kind_network_after_the_uninstall(session: KindSession) -> None:
    """As the other modules' last test: the hook's Job spoke to the API server only."""
    drops = session.drops()
    print(f"kind: {drops.summary()}", flush=True)
    assert not drops.outside(), f"tried to leave the machine: {drops.outside()}"
