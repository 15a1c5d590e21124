"""The kind path, as a user runs it: a real cluster in Docker (``hack/kind.sh``), Knative
Serving, serflow's images built from its Dockerfiles and pushed to the cluster's own OCI
registry, which the nodes pull them from by digest, the chart installed with ``helm``.

Everything is made by the repository's scripts from pinned sources; nothing is pulled
from outside this machine.
``KindUnavailable`` says why the path cannot run on this machine (no engine can start, or
the binaries cannot be built here); any other failure is an error.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serflow_testbed import netguard
from serflow_testbed.harness import (
    BUILD_UNAVAILABLE,
    CHART,
    RELEASE,
    REPO,
    SYSTEM_NS,
    Cluster,
    build_failure_reason,
    cluster_sh,
    exports,
    run_script,
    stop_process,
    tcp_open,
    wait_for,
)

KIND_SH = REPO / "hack" / "kind.sh"
DOCKER_SH = REPO / "hack" / "docker.sh"
IMAGES = ("operator", "worker", "fn", "envoy")
"""The Dockerfiles built and pushed: ``Dockerfile.<name>``."""
REGISTRY = "localhost:5001"
"""The kind cluster's registry as images name it (``hack/kind.sh``: 127.0.0.1:5001 here,
the registry's container for the nodes)."""
POOL_IMAGE = f"{REGISTRY}/serflow/worker:local"
"""Images by the tags ``hack/kind.sh load`` pushes, as the examples name them; ``pinned``
names them by digest, as the tests apply them."""
FUNCTION_IMAGE = f"{REGISTRY}/serflow/fn:local"
ENVOY_IMAGE = f"{REGISTRY}/serflow/envoy:local"
OPERATOR_REPOSITORY = f"{REGISTRY}/serflow/operator"
IMAGE_FIELDS = frozenset({"image", "functionImage", "storageImage"})
"""Keys whose values are image references, in a SerflowInference and in a pod spec."""


def reference(name: str, tag: str = "local") -> str:
    """``localhost:5001/serflow/NAME@sha256:...``: the registry's image for the tag, by
    digest (``hack/kind.sh ref``)."""
    r = run_script(KIND_SH, "ref", name, tag, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"hack/kind.sh ref {name} {tag}: {_last_line(r.stderr)}")
    return r.stdout.strip()


def pinned(doc: Any) -> Any:
    """``doc`` (a manifest, any nesting) with each image of the cluster's registry named by
    digest instead of by tag: the nodes pull exactly what ``hack/kind.sh load`` built, and
    Knative has no tag to resolve."""
    prefix = f"{REGISTRY}/serflow/"
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k in IMAGE_FIELDS and isinstance(v, str) and v.startswith(prefix) and "@" not in v:
                name, _, tag = v.removeprefix(prefix).partition(":")
                out[k] = reference(name, tag or "latest")
            else:
                out[k] = pinned(v)
        return out
    if isinstance(doc, list):
        return [pinned(v) for v in doc]
    return doc


class KindUnavailable(RuntimeError):
    """The kind path cannot run on this machine (the message says why)."""


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


class KindSession:
    """The kind cluster with Knative Serving and serflow's images in its registry, made or
    reused by ``hack/kind.sh``; ``down`` removes only what ``up`` started (the cluster, the
    Docker engine)."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep or os.environ.get("SERFLOW_KIND_KEEP") == "1"
        """Leave everything up (``SERFLOW_KIND_KEEP=1``, the demo's ``--keep-cluster``)."""
        self.started_engine = False
        self.started_cluster = False
        self.cluster_ranges: tuple[str, ...] = ()
        """The cluster's pod and Service ranges (known once ``up`` has run)."""
        self.running: Cluster | None = None
        """The cluster ``up`` returned."""

    def up(self, say: Callable[[str], None] = lambda _: None) -> Cluster:
        """A ``Cluster`` whose kubectl and helm are the pinned ones."""
        t0 = time.monotonic()
        self.started_engine = run_script(DOCKER_SH, "status", timeout=60).returncode != 0
        r = run_script(DOCKER_SH, "up", timeout=900)
        if r.returncode != 0:
            raise KindUnavailable(f"no Docker engine can run here: {_last_line(r.stderr)}")
        self.started_cluster = run_script(KIND_SH, "status", timeout=120).returncode != 0
        for step in (("up",), ("knative",), ("load", *IMAGES)):
            r = run_script(KIND_SH, *step, timeout=5400)
            if r.returncode == BUILD_UNAVAILABLE:
                raise KindUnavailable(build_failure_reason(r.stderr))
            if r.returncode != 0:
                raise RuntimeError(f"hack/kind.sh {' '.join(step)} failed:\n{r.stderr[-3000:]}")
            say(f"hack/kind.sh {step[0]}: done at {time.monotonic() - t0:.0f} s")
        env = exports(run_script(KIND_SH, "env", timeout=60).stdout)
        # The nodes' network is this machine's: the guard lets tests and demos reach it.
        netguard.allow(env["SERFLOW_KIND_SUBNET"])
        self.cluster_ranges = (env["SERFLOW_KIND_POD_SUBNET"], env["SERFLOW_KIND_SERVICE_SUBNET"])
        self.running = Cluster(Path(env["KUBECONFIG"]), Path(cluster_sh("bin").stdout.strip()))
        return self.running

    def drops(self) -> Drops:
        """What the kind network's drop rule stopped since the network was made."""
        r = run_script(KIND_SH, "drops", timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"hack/kind.sh drops failed: {_last_line(r.stderr)}")
        return Drops.parse(r.stdout, self.cluster_ranges, host_resolvers())

    def down(self) -> None:
        """Remove what ``up`` started, unless kept (to look at it after)."""
        if self.keep:
            return
        if self.started_cluster:
            run_script(KIND_SH, "down", timeout=600)
        if self.started_engine:
            run_script(DOCKER_SH, "down", timeout=300)


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, ...]:
    """The name servers this machine itself uses."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return ()
    return tuple(f[1] for f in (ln.split() for ln in lines) if len(f) >= 2 and f[0] == "nameserver")


@dataclass(frozen=True)
class Drop:
    """Packets the drop rule stopped toward one destination."""

    address: str
    """The destination address."""
    protocol: str
    """``tcp``, ``udp``, ``icmp`` or the protocol's number."""
    port: int
    """The destination port (0 where the protocol has none)."""
    packets: int
    """How many packets."""

    def __str__(self) -> str:
        return f"{self.address} {self.protocol}/{self.port}: {self.packets} packets"


@dataclass(frozen=True)
class Drops:
    """What ``hack/kind.sh drops`` reports: packets from the kind network that would have
    been forwarded off it. Toward the cluster's own pod and Service ranges they are
    expected and harmless once dropped (a Service address before kube-proxy has programmed
    it, a connection to a pod that has gone); toward any other address they are a
    component trying to reach outside this machine. One exception is told apart: DNS
    toward this machine's own resolver, which Docker's DNS server inside a node forwards a
    name it does not know to (``hack/kind.sh`` rejects that in the nodes once they are up;
    CoreDNS's first loop probe can come before)."""

    by_destination: tuple[Drop, ...]
    """One entry per destination, protocol and port."""
    total: int
    """Packets dropped in all (the rule's own counters)."""
    cluster_ranges: tuple[str, ...]
    """The cluster's pod and Service ranges."""
    resolvers: tuple[str, ...] = ()
    """This machine's own name servers."""

    @classmethod
    def parse(cls, text: str, cluster_ranges: tuple[str, ...],
              resolvers: tuple[str, ...] = ()) -> Drops:  # fmt: skip
        """``ADDRESS PROTOCOL PORT PACKETS`` lines, then ``total - - PACKETS``."""
        drops, total = [], 0
        for line in text.splitlines():
            f = line.split()
            if len(f) != 4:
                continue
            if f[0] == "total":
                total = int(f[3])
            else:
                drops.append(Drop(f[0], f[1], int(f[2]), int(f[3])))
        return cls(tuple(drops), total, cluster_ranges, resolvers)

    def inside(self) -> list[Drop]:
        """Drops toward the cluster's own pod and Service ranges."""
        nets = [ipaddress.ip_network(r) for r in self.cluster_ranges]
        return [d for d in self.by_destination if any(
            ipaddress.ip_address(d.address) in n for n in nets)]  # fmt: skip

    def dns(self) -> list[Drop]:
        """DNS toward this machine's own resolver."""
        return [d for d in self.by_destination if d.address in self.resolvers and d.port == 53]

    def outside(self) -> list[Drop]:
        """Drops toward any other address: a component trying to leave the machine."""
        told = {*self.inside(), *self.dns()}
        return [d for d in self.by_destination if d not in told]

    def summary(self) -> str:
        """One line a person reads: how many, where to, and whether any went outside."""
        if not self.by_destination and not self.total:
            return "the kind network's drop rule stopped nothing"
        inside = sum(d.packets for d in self.inside())
        dns = sum(d.packets for d in self.dns())
        top = sorted(self.by_destination, key=lambda d: -d.packets)[:8]
        return (f"the kind network's drop rule stopped {self.total} packets: {inside} toward the "
                f"cluster's own ranges ({', '.join(self.cluster_ranges)}), {dns} DNS toward "
                f"this machine's resolver, {len(self.outside())} destinations elsewhere; "
                "by destination: "
                + "; ".join(map(str, top))
                + (f"; and {len(self.by_destination) - len(top)} more" if len(
                    self.by_destination) > len(top) else ""))  # fmt: skip


def install_operator(cluster: Cluster) -> None:
    """``helm upgrade --install`` of the chart with the operator image ``hack/kind.sh load``
    pushed, by digest, its CPU request lowered to fit the kind nodes, and wait for it to
    run."""
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART), "-n", SYSTEM_NS, "--create-namespace",
        "--set", f"image.repository={OPERATOR_REPOSITORY}",
        "--set", f"image.digest={reference('operator').partition('@')[2]}",
        "--set", "resources.requests.cpu=20m",
        "--wait", "--timeout", "180s",
    )  # fmt: skip


REFUSALS = {"InvalidSpec", "ProfileMismatch", "NoFeasibleSetup"}
"""Condition reasons that end an object's progress until its spec changes."""
FUNCTION_POD = "serving.knative.dev/service"
"""Label Knative puts on a function's pods: the Knative Service's name."""


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """A SerflowInference's status ({} while it has none or cannot be read)."""
    r = cluster.kubectl("-n", namespace, "get", "sfi", name, "-o", "json", check=False)
    return dict(json.loads(r.stdout).get("status") or {}) if r.returncode == 0 else {}


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float = 600) -> dict[str, Any]:
    """Wait for the object's Ready condition, as ``kubectl wait`` would, but fail at once on
    a condition that says the spec cannot be served; its status then."""

    def ready_or_refused() -> dict[str, Any] | None:
        st = status_of(cluster, namespace, name)
        conds = {c["type"]: c for c in st.get("conditions") or []}
        refused = [c for c in conds.values() if c.get("reason") in REFUSALS]
        if refused:
            raise RuntimeError(f"{namespace}/{name} refused: {refused}")
        return st if conds.get("Ready", {}).get("status") == "True" else None

    try:
        return dict(wait_for("Ready", ready_or_refused, timeout, every=2))
    except TimeoutError:
        # Say where it stopped: the conditions, and the object's pods and Jobs.
        conds = [(c.get("type"), c.get("status"), c.get("reason"), (c.get("message") or "")[:300])
                 for c in status_of(cluster, namespace, name).get("conditions") or []]  # fmt: skip
        pods = cluster.kubectl("-n", namespace, "get", "pods,jobs", "-o", "wide", "-l",
                               f"app.kubernetes.io/instance={name}", check=False).stdout  # fmt: skip
        raise TimeoutError(f"{namespace}/{name} not Ready after {timeout:.0f} s; "
                           f"conditions {conds}; its pods and Jobs:\n{pods}") from None  # fmt: skip


def router_url(cluster: Cluster, namespace: str, name: str) -> str:
    """A NodePort Service of its own in front of the object's Envoy pods (the builders'
    Service is ClusterIP, reached only inside the cluster), at a node's address: how a
    client outside the cluster reaches the router on kind."""
    svc = f"{name}-nodeport"
    cluster.apply([{
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": svc, "namespace": namespace},
        "spec": {
            "type": "NodePort",
            "selector": {"app.kubernetes.io/instance": name,
                         "app.kubernetes.io/component": "router"},
            "ports": [{"port": 80, "targetPort": "http"}],
        },
    }])  # fmt: skip
    got = json.loads(cluster.kubectl("-n", namespace, "get", "service", svc, "-o", "json").stdout)
    port = got["spec"]["ports"][0]["nodePort"]
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    addr = next(a["address"] for a in nodes[0]["status"]["addresses"] if a["type"] == "InternalIP")
    # Refused until kube-proxy has programmed the new port: a client starting at once would
    # count its first requests as lost.
    wait_for(f"the NodePort {addr}:{port}", lambda: tcp_open(addr, port), 60, every=0.5)
    return f"http://{addr}:{port}/infer"


# -- fetched artefacts (spec.model.storageUri) on kind --------------------------------

STORAGE_IMAGES = ("storage", "versitygw")
"""Pushed on demand (``load_images``): the storage initializer (Dockerfile.storage) and
Versity's S3 gateway (``hack/gotool.sh versitygw``'s binary on the local Debian base)."""
STORAGE_IMAGE = f"{REGISTRY}/serflow/storage:local"
"""The storage initializer as ``spec.model.storageImage`` names it."""
VERSITYGW_IMAGE = f"{REGISTRY}/serflow/versitygw:local"


def load_images(*names: str) -> None:
    """``hack/kind.sh load NAMES``: build images and push them to the running cluster's
    registry (``KindUnavailable`` when one cannot be built here)."""
    r = run_script(KIND_SH, "load", *names, timeout=5400)
    if r.returncode == BUILD_UNAVAILABLE:
        raise KindUnavailable(build_failure_reason(r.stderr))
    if r.returncode != 0:
        raise RuntimeError(f"hack/kind.sh load {' '.join(names)} failed:\n{r.stderr[-3000:]}")


def kind_env() -> dict[str, str]:
    """What ``hack/kind.sh env`` exports (``SERFLOW_KIND_SHARED``: the directory every
    node mounts from this machine, where a hostPath PersistentVolume is the same files on
    either node)."""
    r = run_script(KIND_SH, "env", timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"hack/kind.sh env failed: {_last_line(r.stderr)}")
    return exports(r.stdout)


@contextmanager
def port_forward(cluster: Cluster, namespace: str, target: str, port: int,
                 timeout: float = 60) -> Iterator[int]:  # fmt: skip
    """``kubectl port-forward TARGET :PORT`` on 127.0.0.1 (through the API server, never
    another address): the local port while it runs."""
    argv = [str(cluster.bin_dir / "kubectl"), "-n", namespace, "port-forward",
            "--address", "127.0.0.1", target, f":{port}"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)})  # fmt: skip
    found: list[int] = []
    said: list[str] = []

    def read() -> None:  # drained to the end, so that kubectl never blocks on the pipe
        assert proc.stdout is not None
        for line in proc.stdout:  # "Forwarding from 127.0.0.1:PORT -> REMOTE"
            m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) ->", line)
            if m:
                found.append(int(m.group(1)))
            said[:] = [*said[-9:], line.rstrip()]

    def listening() -> int | None:
        if proc.poll() is not None:
            raise RuntimeError(f"kubectl port-forward {target} exited: {' / '.join(said)}")
        return found[0] if found else None

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield int(wait_for(f"port-forward to {target}", listening, timeout, every=0.1))
    finally:
        stop_process(proc, 10)  # type: ignore[arg-type]
        reader.join(5)
