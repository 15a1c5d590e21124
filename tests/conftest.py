"""Shared pytest fixtures.

The cluster fixtures talk to a real Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok) run as local processes by
``hack/cluster.sh``. Nothing is started unless a test asks for ``cluster`` (or a fixture
built on it):

- ``SERFLOW_KUBECONFIG=path``: use that cluster; it must answer ``/readyz``.
- otherwise reuse the cluster of ``hack/cluster.sh`` if it is up,
- otherwise run ``hack/cluster.sh up`` (building the binaries the first time) and
  ``hack/cluster.sh down`` when the last pytest session using it ends
  (``SERFLOW_CLUSTER_KEEP=1`` keeps it running).

The tests skip only when the binaries cannot be built on this machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO / "hack" / "cluster.sh"
VERSIONS_ENV = REPO / "hack" / "versions.env"
BUILD_FAILED = 3  # exit status of hack/cluster.sh when the binaries cannot be built


def pinned_versions() -> dict[str, str]:
    """The KEY=VALUE pins of hack/versions.env."""
    pins: dict[str, str] = {}
    for line in VERSIONS_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pins[key.strip()] = value.strip()
    return pins


@dataclass(frozen=True)
class Cluster:
    """A running control plane: its admin kubeconfig and the directory of its tools."""

    kubeconfig: Path
    bin_dir: Path
    started_here: bool

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl or helm (from the pinned build) against this cluster."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run(
            [str(self.bin_dir / tool), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=env,
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, check=check)

    def ready(self) -> bool:
        try:
            out = self.kubectl("get", "--raw", "/readyz", "--request-timeout=5s", check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.returncode == 0 and out.stdout.strip() == "ok"


def _script(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _build_failure_reason(stderr: str) -> str:
    """The one line of hack/cluster.sh's output that names the failed build step."""
    for line in stderr.splitlines():
        if re.search(r"build step '[^']+' failed", line):
            return line.removeprefix("cluster.sh: ").strip()
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "build failed"


def _bin_dir() -> Path:
    """Build the binaries if needed and return their directory; skip if they cannot be."""
    built = _script("build")
    if built.returncode == BUILD_FAILED:
        pytest.skip(f"cluster binaries cannot be built here: {_build_failure_reason(built.stderr)}")
    if built.returncode != 0:
        pytest.fail(f"hack/cluster.sh build failed:\n{built.stderr[-4000:]}")
    return Path(_script("bin").stdout.strip())


def _state_env() -> dict[str, str]:
    """KEY=VALUE pairs of the running cluster's cluster.env (empty if none)."""
    env_out = _script("env")
    if env_out.returncode != 0:
        return {}
    pairs: dict[str, str] = {}
    for line in env_out.stdout.splitlines():
        m = re.match(r"export (\w+)=(.*)$", line)
        if m:
            pairs[m.group(1)] = m.group(2)
    return pairs


def _state_dir() -> Path:
    return Path(_script("state").stdout.strip())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _register(state: Path) -> Path:
    """Record this pytest process as a user of the cluster (several sessions may share it)."""
    users = state / "users"
    users.mkdir(parents=True, exist_ok=True)
    me = users / str(os.getpid())
    me.touch()
    return me


def _other_live_users(state: Path) -> list[int]:
    users = state / "users"
    pids = [int(p.name) for p in users.glob("*") if p.name.isdigit()] if users.is_dir() else []
    return [pid for pid in pids if pid != os.getpid() and _pid_alive(pid)]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The session's control plane (reused if one is up, else started and stopped).

    A cluster started by a pytest session is stopped by the last session using it; one
    started by hand (``hack/cluster.sh up``) is left running.
    """
    bin_dir = _bin_dir()
    external = os.environ.get("SERFLOW_KUBECONFIG")
    if external:
        found = Cluster(Path(external), bin_dir, started_here=False)
        if not found.ready():
            pytest.fail(f"SERFLOW_KUBECONFIG={external}: the API server does not answer /readyz")
        yield found
        return

    state = _state_dir()
    started = False
    if _script("status").returncode != 0:
        up = _script("up")
        if up.returncode == BUILD_FAILED:
            pytest.skip(
                f"cluster binaries cannot be built here: {_build_failure_reason(up.stderr)}"
            )
        if up.returncode != 0:
            pytest.fail(f"hack/cluster.sh up failed:\n{up.stderr[-4000:]}")
        started = True
        (state / "started-by-pytest").touch()
    me = _register(state)
    try:
        yield Cluster(Path(_state_env()["KUBECONFIG"]), bin_dir, started_here=started)
    finally:
        me.unlink(missing_ok=True)
        last_out = not _other_live_users(state)
        by_pytest = (state / "started-by-pytest").exists()
        if last_out and by_pytest and os.environ.get("SERFLOW_CLUSTER_KEEP") != "1":
            down = _script("down", timeout=300)
            if down.returncode != 0:
                print(f"hack/cluster.sh down failed:\n{down.stderr}", file=sys.stderr)


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
