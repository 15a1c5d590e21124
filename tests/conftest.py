"""Shared pytest fixtures.

The cluster fixtures talk to a real Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok) run as local processes by
``hack/cluster.sh``. Nothing is started unless a test asks for ``cluster`` (or a fixture
built on it):

- ``SERFLOW_KUBECONFIG=path``: use that cluster; it must answer ``/readyz``.
- otherwise reuse the cluster of ``hack/cluster.sh`` if it is up,
- otherwise run ``hack/cluster.sh up`` (building the binaries the first time) and
  ``hack/cluster.sh down`` when the last session using it ends
  (``SERFLOW_CLUSTER_KEEP=1`` keeps it running).

All of it is ``serflow_testbed.harness``; this file only adapts it to pytest.

The tests skip only when the binaries cannot be built on this machine.

Every process of the session, and every Python process it starts, carries the connection
guard (``serflow_testbed.netguard``): a connection outside loopback and the kind network
is refused, and the test during which it was tried fails naming the process and address.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from serflow_testbed import netguard
from serflow_testbed.harness import BuildUnavailable, Cluster, ControlPlane, bin_dir

REPO = Path(__file__).resolve().parent.parent
VERSIONS_ENV = REPO / "hack" / "versions.env"


GUARD_LOG = Path(tempfile.mkdtemp(prefix="serflow-netguard-")) / "refusals.log"
"""The session's guard log (the guard is on from ``pytest_configure``)."""


def pytest_configure(config: pytest.Config) -> None:
    netguard.activate(GUARD_LOG)


def _refused(start: int) -> tuple[list[str], int]:
    return netguard.refusals(GUARD_LOG, start)


_guard_offset = 0


@pytest.fixture(autouse=True)
def _nothing_leaves_the_machine() -> Iterator[None]:
    """Fail the test during which any guarded process tried to leave the machine."""
    global _guard_offset
    yield
    lines, _guard_offset = _refused(_guard_offset)
    if lines:
        pytest.fail("connections outside loopback and the kind network:\n" + "\n".join(lines))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Refusals after the last test (a session fixture's teardown) fail the run too."""
    lines, _ = _refused(_guard_offset)
    if lines:
        print("\nconnections outside loopback and the kind network:", *lines, sep="\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pinned_versions() -> dict[str, str]:
    """The KEY=VALUE pins of hack/versions.env."""
    pins: dict[str, str] = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The session's control plane (reused if one is up, else started and stopped).

    A cluster started by a harness (a pytest session, the demo) is stopped by the last
    session using it; one started by hand (``hack/cluster.sh up``) is left running.
    """
    try:
        tools = bin_dir()
    except BuildUnavailable as e:
        pytest.skip(f"cluster binaries cannot be built here: {e}")
    except RuntimeError as e:
        pytest.fail(str(e))
    external = os.environ.get("SERFLOW_KUBECONFIG")
    if external:
        found = Cluster(Path(external), tools)
        if not found.ready():
            pytest.fail(f"SERFLOW_KUBECONFIG={external}: the API server does not answer /readyz")
        yield found
        return
    shared = ControlPlane(keep=os.environ.get("SERFLOW_CLUSTER_KEEP") == "1")
    try:
        running = shared.up()
    except BuildUnavailable as e:
        pytest.skip(f"cluster binaries cannot be built here: {e}")
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield running
    finally:
        shared.down(lambda msg: print(msg, file=sys.stderr))


@pytest.fixture(scope="module")
def crd_cluster(cluster: Cluster) -> Cluster:
    """The session's control plane with this tree's CRD applied and Established (helm
    never upgrades a chart's CRDs, and a test may have applied an older one)."""
    crd = Path(__file__).resolve().parent.parent / "crds" / "serflowinference.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    from serflow.k8s.crd import GROUP, PLURAL

    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    f"crd/{PLURAL}.{GROUP}")  # fmt: skip
    return cluster


@pytest.fixture(scope="session")
def versions() -> dict[str, str]:
    """The pinned versions of hack/versions.env (KUBERNETES_VERSION, HELM_VERSION, ...)."""
    return pinned_versions()


@pytest.fixture(scope="session")
def kubeconfig(cluster: Cluster) -> Path:
    """Path of the admin kubeconfig of the session's cluster."""
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` (admin) for the session's cluster."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


def _namespace_name(nodeid: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", nodeid.rsplit("::", 1)[-1].lower()).strip("-")
    return f"t-{base[:40].rstrip('-')}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(api_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (in the background) afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    name = _namespace_name(request.node.nodeid)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except client.ApiException as err:
            if err.status != 404:
                raise


def pytest_collection_modifyitems(config: pytest.Config, items: Sequence[pytest.Item]) -> None:
    """Tests under tests/cluster/ need the cluster: mark them so `-m "not cluster"` works."""
    cluster_dir = REPO / "tests" / "cluster"
    for item in items:
        if cluster_dir in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)
