"""Fault run on kind: the digits example (hybrid) served by the operator on the kind cluster
under open-loop load through the routers' NodePort, while the API server is stopped for
60 s, Knative's webhook is down for 60 s, the pool's worker and the tail function's
container are frozen (SIGSTOP) for 60 s each, and the routers are restarted (a rolling
restart). The object keeps one pool pod (minInstances 1) whatever break-even rate its
profiling Jobs measure, so there is a worker to freeze; at this rate it takes every
request, and the late exits go on to the tail function.

    .venv/bin/python bench/faults_kind.py --out bench/results/faults-kind.md

Makes or reuses the kind cluster as the kind tests do (``hack/kind.sh``; the images by
digest from the cluster's registry). Every request is counted: each gets one answer or one
failure; the run exits 1 if any failed or a fault could not be made. The answers'
accuracy is reported beside the model's own. Packets go to this machine's loopback and
the kind nodes only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serflow import wire
from serflow_runtime import artefact
from serflow_runtime.cli import BUNDLED
from serflow_runtime.engine import decide
from serflow_runtime.runtimes import open_model
from serflow_testbed.decide import Record
from serflow_testbed.harness import RELEASE, REPO, SYSTEM_NS, Cluster, wait_for
from serflow_testbed.kind import (
    FUNCTION_POD,
    KindSession,
    install_operator,
    kind_env,
    pinned,
    router_url,
    wait_ready,
)
from serflow_testbed.loadgen import raw_bytes, replay
from serflow_testbed.reference import all_logits

NAME = "digits"
EXAMPLE = REPO / "examples" / "digits-kind.yaml"
CONTROL_PLANE, POOL_NODE = "serflow-control-plane", "serflow-worker"
"""The kind nodes' containers (``hack/kind.sh``'s cluster ``serflow``)."""
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
FAULTS = ("apiserver", "webhook", "worker", "function", "router")
"""The faults this run can make, in the default order."""
CLIENT_TIMEOUT_S = 180.0
"""A client's patience: longer than the route's own timeout, so that a request the router
gives up on counts as the router's answer (a 504), not as the client's."""


@dataclass(frozen=True)
class Event:
    """A fault, its start (seconds from the replay's start) and how long it lasts."""

    name: str
    at: float
    hold: float
    start: Callable[[], None]
    end: Callable[[], None]


def docker(*args: str, check: bool = True) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def container_pid(node: str, pod: str, container: str) -> str:
    """The host PID (in the node) of a pod's container, through the node's crictl."""
    pod_id = docker("exec", node, "crictl", "pods", "-q", "--name", pod, "--state", "Ready")
    cid = docker("exec", node, "crictl", "ps", "-q", "--pod", pod_id.split()[0], "--name", container)
    return docker("exec", node, "crictl", "inspect", "--output", "go-template",
                  "--template", "{{.info.pid}}", cid.split()[0])  # fmt: skip


def running_pod(c: Cluster, ns: str, selector: str) -> tuple[str, str]:
    """(name, node) of a Running pod the selector picks."""
    pods = json.loads(c.kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "json").stdout)
    for p in pods["items"]:
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"):
            return str(p["metadata"]["name"]), str(p["spec"]["nodeName"])
    raise RuntimeError(f"no Running pod for {selector} in {ns}")


def router_retries(c: Cluster, ns: str) -> float:
    """Envoy's upstream retries, summed over the router's pods (read through the API
    server's pod proxy)."""
    pods = json.loads(c.kubectl("-n", ns, "get", "pods", "-l",
                                "app.kubernetes.io/component=router", "-o", "json").stdout)  # fmt: skip
    total = 0.0
    for p in pods["items"]:
        raw = c.kubectl("get", "--raw", f"/api/v1/namespaces/{ns}/pods/"
                        f"{p['metadata']['name']}:{wire.STATS_PORT}/proxy/stats/prometheus",
                        check=False).stdout  # fmt: skip
        for line in raw.splitlines():
            if line.startswith("envoy_cluster_upstream_rq_retry{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


class Faults:
    """The faults, each a start and an end action on the running cluster."""

    def __init__(self, c: Cluster, ns: str) -> None:
        self.c, self.ns = c, ns
        self.frozen: tuple[str, str] | None = None
        self.notes: list[str] = []
        self.retries_gone = 0.0
        """Envoy's retries counted by the routers that the restart replaced."""

    def stop_apiserver(self) -> None:
        # The kubelet stops a static pod whose manifest leaves its directory.
        docker("exec", CONTROL_PLANE, "mv", APISERVER_MANIFEST, "/etc/kubernetes/")

    def start_apiserver(self) -> None:
        docker("exec", CONTROL_PLANE, "mv", "/etc/kubernetes/kube-apiserver.yaml",
               APISERVER_MANIFEST)  # fmt: skip
        t0 = time.monotonic()
        wait_for("the API server back", lambda: self.c.kubectl(
            "get", "--raw", "/readyz", check=False).returncode == 0, 180, every=1)  # fmt: skip
        self.notes.append(f"API server ready {time.monotonic() - t0:.0f} s after its manifest "
                          "came back")  # fmt: skip

    def webhook(self, replicas: int) -> Callable[[], None]:
        def scale() -> None:
            self.c.kubectl("-n", "knative-serving", "scale", "deployment", "webhook",
                           f"--replicas={replicas}")  # fmt: skip
            if replicas:
                self.c.kubectl("-n", "knative-serving", "rollout", "status", "deployment",
                               "webhook", "--timeout=120s")  # fmt: skip

        return scale

    def freeze(self, selector: str, container: str) -> Callable[[], None]:
        def stop() -> None:
            pod, node = running_pod(self.c, self.ns, selector)
            pid = container_pid(node, pod, container)
            docker("exec", node, "kill", "-STOP", pid)
            self.frozen = (node, pid)
            self.notes.append(f"froze {container} of {pod} on {node}")

        return stop

    def thaw(self) -> None:
        if self.frozen:
            node, pid = self.frozen
            docker("exec", node, "kill", "-CONT", pid, check=False)
            self.frozen = None

    def restart_routers(self) -> None:
        self.retries_gone = router_retries(self.c, self.ns)
        dep = f"deployment/{NAME}-envoy"
        self.c.kubectl("-n", self.ns, "rollout", "restart", dep)
        self.c.kubectl("-n", self.ns, "rollout", "status", dep, "--timeout=600s")


def run_events(
    events: list[Event], t0: float, log: list[str], stop: threading.Event, failed: list[str]
) -> None:
    """Each fault at its time; one that cannot be made is recorded in ``failed`` (the run
    then fails), and the next still runs."""
    for e in events:
        while time.monotonic() < t0 + e.at and not stop.is_set():
            time.sleep(0.2)
        if stop.is_set():
            return
        log.append(f"{time.monotonic() - t0:.0f} s: {e.name} begins")
        try:
            e.start()
            time.sleep(e.hold)
        except Exception as x:  # the fault could not be made: say so, go on
            failed.append(f"{e.name}: {x}")
        finally:
            try:
                e.end()
            except Exception as x:
                failed.append(f"{e.name} (ending it): {x}")
        log.append(f"{time.monotonic() - t0:.0f} s: {e.name} ends")


def phase_rows(records: list[Record], bounds: list[tuple[str, float, float]]) -> list[str]:
    rows = ["| phase | sent from (s) | requests | failed | pool | function | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, lo, hi in bounds:
        rs = [r for r in records if lo <= r.sent < hi]
        ok = sorted(r.latency for r in rs if r.status == 200)

        def q(p: float, xs: list[float] = ok) -> str:
            return f"{1e3 * xs[min(len(xs) - 1, int(p * len(xs)))]:.0f}" if xs else "-"

        rows.append(f"| {name} | {lo:.0f} | {len(rs)} | {sum(r.status != 200 for r in rs)} | "
                    f"{sum(r.where == 'pool' for r in rs)} | "
                    f"{sum(r.where == 'function' for r in rs)} | {q(0.5)} | {q(0.99)} |")  # fmt: skip
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=15.0, help="requests per second, open loop")
    ap.add_argument("--hold", type=float, default=60.0, help="seconds each fault lasts")
    ap.add_argument("--out", type=Path, help="write the Markdown report here")
    ap.add_argument("--faults", default=",".join(FAULTS),
                    help=f"which faults, in order, comma-separated (default: {','.join(FAULTS)})")  # fmt: skip
    a = ap.parse_args()
    a.faults = [k for k in a.faults.split(",") if k]
    unknown = [k for k in a.faults if k not in FAULTS]
    if unknown or not a.faults:
        print(f"error: --faults takes some of {','.join(FAULTS)}; got {unknown or 'none'}",
              file=sys.stderr)  # fmt: skip
        return 2
    if not 0 < a.rate <= 30 or a.hold <= 0:
        print("error: --rate must be in (0, 30] (what one machine running both kind nodes "
              "serves) and --hold positive", file=sys.stderr)  # fmt: skip
        return 2
    model = open_model(BUNDLED, "onnx", threads=1)
    x, y = artefact.held_out(model.root, model.manifest)
    session = KindSession(keep=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    c = session.up(print)
    os.environ["DOCKER_HOST"] = kind_env()["DOCKER_HOST"]  # the nodes' engine, for docker exec
    install_operator(c)
    ns = f"faults-{uuid.uuid4().hex[:6]}"
    c.kubectl("create", "namespace", ns)
    c.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["pools"] = ["hybrid"]
    doc["spec"]["traffic"]["expectedRate"] = a.rate
    # One pool pod whatever the break-even rate the Jobs measure: the worker to freeze.
    doc["spec"]["scaling"]["minInstances"] = 1
    c.apply(pinned([{**doc, "metadata": {**doc["metadata"], "namespace": ns}}]))
    st = wait_ready(c, ns, NAME)
    tau = float(st["plan"]["tau"])
    _, pred = decide(all_logits(model, x), tau)
    url = router_url(c, ns, NAME)
    f = Faults(c, ns)
    tail = f"{FUNCTION_POD}={NAME}-tail"
    h = a.hold
    faults = {
        "apiserver": ("API server stopped", h, f.stop_apiserver, f.start_apiserver),
        "webhook": ("Knative's webhook down", h, f.webhook(0), f.webhook(1)),
        "worker": ("a pool worker frozen (SIGSTOP)", h,
                   f.freeze(f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=pool", "worker"), f.thaw),
        "function": ("the tail function's container frozen (SIGSTOP)", h,
                     f.freeze(tail, "user-container"), f.thaw),
        "router": ("routers restarted (rollout)", 0, f.restart_routers, lambda: None),
    }  # fmt: skip
    events: list[Event] = []
    at = 60.0  # a minute of steady load first, and between faults
    for key in a.faults:
        name, hold, start, end = faults[key]
        events.append(Event(name, at, hold, start, end))
        at += hold + 60
    total_s = events[-1].at + events[-1].hold + 120
    epochs = int(total_s / 2)
    retries_before = router_retries(c, ns)
    log: list[str] = []
    not_made: list[str] = []
    stop = threading.Event()
    t0 = time.monotonic()
    runner = threading.Thread(target=run_events, args=(events, t0, log, stop, not_made),
                              daemon=True)  # fmt: skip
    runner.start()
    bodies = [raw_bytes(r) for r in x]
    try:
        records = asyncio.run(replay(url, [int(2 * a.rate)] * epochs, 2.0, bodies,
                                     [int(v) for v in y], seed=0, timeout_s=CLIENT_TIMEOUT_S))  # fmt: skip
    finally:
        stop.set()
        f.thaw()
        runner.join(600)
    retries = f.retries_gone + router_retries(c, ns)
    restarts = c.kubectl("-n", SYSTEM_NS, "get", "pods", "-l",
                         f"app.kubernetes.io/instance={RELEASE}", "-o",
                         "jsonpath={.items[*].status.containerStatuses[*].restartCount}").stdout  # fmt: skip
    # Its pods would hold the nodes' CPU from the next run on the cluster kept up.
    c.kubectl("delete", "namespace", ns, "--wait=false")
    failed = sum(r.status != 200 for r in records)
    codes: dict[str, int] = {}
    for r in records:
        if r.status != 200:
            error = r.error or "connection error or timeout"
            what = f"no answer ({error})" if r.status == -1 else str(r.status)
            codes[what] = codes.get(what, 0) + 1
    how = ", ".join(f"{n} x {what}" for what, n in sorted(codes.items()))
    lost = sorted(r.sent for r in records if r.status != 200)
    if lost:  # when, to set beside the timeline
        how += f"; sent at {', '.join(f'{t:.1f}' for t in lost[:20])}{' ...' if len(lost) > 20 else ''} s"
    bounds = [("steady", 0.0, events[0].at)]
    for i, e in enumerate(events):
        nxt = events[i + 1].at if i + 1 < len(events) else total_s
        bounds.append((e.name, e.at, nxt))
    answered = [r for r in records if r.status == 200]
    accuracy = sum(r.correct for r in answered) / max(1, len(answered))
    model_accuracy = float((pred == y).mean())
    text = "\n".join([
        "# Fault run on kind: the API server, Knative's webhook, frozen pods, a router restart",
        "",
        f"Command: `.venv/bin/python bench/faults_kind.py --rate {a.rate:g} --hold {h:g} "
        + ("" if a.faults == list(FAULTS) else f"--faults {','.join(a.faults)} ")
        + "--out bench/results/faults-kind.md`",
        "",
        f"Run {started} on {platform.machine()}, {os.cpu_count()} cores shared with other "
        f"work (load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}), on the kind "
        "cluster of `hack/kind.sh` (two nodes, Knative Serving, the operator from the chart, "
        "images pulled by digest from the cluster's registry).",
        "",
        f"Object: `examples/digits-kind.yaml` restricted to hybrid setups, expected rate "
        f"{a.rate:g} req/s, in a namespace that enforces Pod Security `restricted`; plan "
        f"{st['plan']['pool']} cut {st['plan']['cut']} on {st['plan']['function']}, tau "
        f"{tau:g}. Open-loop load of {a.rate:g} req/s (Poisson arrivals, 2 s epochs) of the "
        f"{len(x)} held-out digits images through a NodePort in front of the routers, each "
        f"request with a {CLIENT_TIMEOUT_S:g} s client timeout (beyond the route's). A phase "
        "holds the requests *sent* from its event until the next.",
        "",
        *phase_rows(records, bounds),
        "",
        f"**Failed: {failed}** of {len(records)} requests{f' ({how})' if how else ''}. "
        "Each request got exactly one "
        f"outcome (the client counts them). Accuracy of the answers {accuracy:.4f}; the "
        f"model's own at tau {tau:g} on these {len(x)} images, each sent about "
        f"{len(records) / len(x):.0f} times: {model_accuracy:.4f}. Envoy retried "
        f"{retries - retries_before:g} "
        "requests over the run (upstream retries counted by the routers before their "
        "restart, minus those at the start, plus the new routers'), an upper bound on the "
        "requests run twice. Operator container restarts: "
        f"{restarts or '0'}.",
        "",
        "Timeline: " + "; ".join([*log, *f.notes]) + ".",
        "",
        *([f"**Faults not made:** {'; '.join(not_made)}.", ""] if not_made else []),
    ])  # fmt: skip
    print(text)
    if a.out:
        a.out.write_text(text)
    session.down()
    return 1 if failed or not_made else 0


if __name__ == "__main__":
    sys.exit(main())
