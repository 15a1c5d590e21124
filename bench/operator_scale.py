"""Operator at scale: N SerflowInference objects with 6 s epochs on the local control plane.

One real Envoy serves every object: one listener per object, each with its own HTTP stat
prefix, so each object's counter is its own. The operator runs as a local process with the
chart's ServiceAccount. Measured: the operator's CPU and peak RSS over a steady window, the
epochs' lateness against their schedule (the operator's ``serflow_epoch_lateness_seconds``,
read every 2 s) and their duration, and for a few objects, the delay from a counter change
(load starts) to the patched replicas. With ``--stalled``, one more object whose stats
endpoint drips a byte every 1.5 s and never ends is added after the steady window, and a
second window measures the others' lateness beside it, in the same run.

Usage (reuses the local control plane if it is up, else starts it and stops it after):
    python bench/operator_scale.py [--objects 100] [--window 60] [--probes 5] [--stalled]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from serflow.policy.configurator import configure
from serflow.spec import parse_workload
from serflow_testbed.harness import (
    Cluster,
    ControlPlane,
    envoy_argv,
    free_port,
    install_chart,
    kwok_node,
    operator_argv,
    operator_env,
    sa_kubeconfig,
    stop_process,
    wait_for,
)
from serflow_testbed.manifests import manifest

APPLY_CHUNK = 50
"""Objects per ``kubectl apply``."""


def envoy_bootstrap(n: int, base_port: int, stats_port: int, admin_port: int) -> dict[str, Any]:
    """N ingress listeners answering 200 directly, each counting under its own stat prefix."""
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

    def listener(name: str, port: int, routes: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": hcm, "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": router}}]}}]}],
        }  # fmt: skip

    ok = [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]
    stats = [{"match": {"path": "/stats"}, "route": {"cluster": "admin"}}]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [listener(f"sfi{i}", base_port + i, ok) for i in range(n)]
            + [listener("stats", stats_port, stats)],
            "clusters": [{"name": "admin", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
                "cluster_name": "admin", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}}]}]}}],
        },
    }  # fmt: skip


def proc_cpu_rss(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of a process and its children so far."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    rss = int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--window", type=float, default=60.0, help="seconds of steady state measured")
    ap.add_argument("--probes", type=int, default=5, help="objects whose load is stepped")
    ap.add_argument("--stalled", action="store_true", help="then add an object whose stats drip")
    args = ap.parse_args()
    control_plane = ControlPlane()
    c = control_plane.up(print)
    try:
        run(c, args)
    finally:
        control_plane.down(print)


def run(c: Cluster, args: argparse.Namespace) -> None:
    install_chart(c)
    c.apply(kwok_node(f"pool-c6i-xlarge-{i}", "c6i.xlarge", "4", "8Gi", pool="default")
            for i in range(1, 4))  # fmt: skip
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    c.kubectl("create", "namespace", ns)
    tmp = Path(tempfile.mkdtemp(prefix=f"{ns}-"))
    stats_port, admin = free_port(), free_port()
    # Below the kernel's ephemeral range (32768 and up), where no outgoing connection
    # takes one of them between this check and Envoy's bind.
    base = next(b for b in range(20000, 32768 - args.objects, 1000)
                if all(_free(b + i) for i in range(args.objects)))  # fmt: skip
    (tmp / "envoy.yaml").write_text(
        yaml.safe_dump(envoy_bootstrap(args.objects, base, stats_port, admin))
    )
    envoy = subprocess.Popen(envoy_argv(tmp / "envoy.yaml", stats_port))
    wait_for("Envoy's stats listener", lambda: _answers(f"http://127.0.0.1:{stats_port}/stats"), 60)
    if envoy.poll() is not None:
        raise SystemExit(f"error: Envoy exited ({envoy.returncode}); its listeners cannot serve")
    kc = sa_kubeconfig(c, tmp / "sa.kubeconfig", duration_s=7200)
    env = {**os.environ, **operator_env(kc)}
    metrics_url = f"http://127.0.0.1:{env['SERFLOW_METRICS_PORT']}/metrics"
    op = subprocess.Popen(operator_argv(ns), env=env,
                          stdout=(tmp / "operator.log").open("wb"), stderr=subprocess.STDOUT)  # fmt: skip
    drip = Drip() if args.stalled else None
    try:
        docs = [_object(ns, f"sfi{i}", f"http://127.0.0.1:{stats_port}/stats", f"sfi{i}")
                for i in range(args.objects)]  # fmt: skip
        plan = configure(parse_workload(json.loads(docs[0])), 5.0).chosen
        assert plan is not None and plan.economics.has_pool, "the benchmark needs a pooled plan"
        print(f"plan per object: {plan.setup.describe()}, mu {plan.economics.mu:.3g} req/s")
        t0 = time.monotonic()
        # In chunks: one apply of a thousand objects outlasts kubectl's timeout on a
        # loaded API server (measured: 180 s, not done).
        for start in range(0, len(docs), APPLY_CHUNK):
            c.kubectl("apply", "-f", "-", input="\n".join(docs[start : start + APPLY_CHUNK]))
        print(f"{args.objects} objects applied in {time.monotonic() - t0:.1f} s", flush=True)
        configured = _wait_configured(c, ns, args.objects, max(600.0, 1.5 * args.objects))
        print(f"{args.objects} objects configured in {configured - t0:.1f} s")
        time.sleep(15)  # let every daemon take its baseline reading
        steady = _window(c, op.pid, metrics_url, args.window)
        print(f"steady state over {args.window:.0f} s: {steady}", flush=True)
        if drip is not None:
            stalled = _object(ns, "stalled", f"http://127.0.0.1:{drip.port}/stats", "stalled")
            c.kubectl("apply", "-f", "-", input=stalled)
            time.sleep(15)
            beside = _window(c, op.pid, metrics_url, args.window, skip="stalled")
            print(f"beside one object whose stats drip, over {args.window:.0f} s: {beside}")
            own = _lateness(metrics_url, only="stalled")
            print(f"the stalled object's own last lateness: {own[0] if own else 'none'} s")
        delays = [_probe(c, ns, i, base + i) for i in range(args.probes)]
        print(f"counter change -> patched replicas (6 s epochs, S = 1): "
              f"median {statistics.median(delays):.1f} s, max {max(delays):.1f} s over {len(delays)} objects")  # fmt: skip
    finally:
        stop_process(op)
        stop_process(envoy)
        if drip is not None:
            drip.close()
        c.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _object(ns: str, name: str, stats_url: str, prefix: str) -> str:
    m = manifest(name, traffic={"expectedRate": 5})
    m["metadata"]["namespace"] = ns
    m["spec"]["scaling"] = {"epochSeconds": 6, "intervalEpochs": 1, "maxInstances": 4}
    # Dear functions, so that the pool is chosen and scales (mu = 10 / 6 req/s).
    m["spec"]["prices"]["functions"]["perGBSecond"] = 0.001
    m["spec"]["routing"] = {"statsUrls": [stats_url], "statPrefix": prefix}
    return json.dumps(m)


class Drip:
    """A stats endpoint on 127.0.0.1 that answers headers, then a byte every 1.5 s, never
    ending (each connection held for at most 10 minutes)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                for _ in range(400):
                    if self._stop.wait(1.5):
                        return
                    conn.sendall(b"#")
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def _samples(url: str) -> list[Any]:
    """Every sample of the operator's metrics at ``url``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return [smp for fam in text_string_to_metric_families(text) for smp in fam.samples]


def _lateness(url: str, only: str | None = None, skip: str | None = None) -> list[float]:
    """Every object's last epoch lateness from the operator's metrics."""
    out = []
    for smp in _samples(url):
        if smp.name != "serflow_epoch_lateness_seconds":
            continue
        name = smp.labels.get("name")
        if (only is None or name == only) and name != skip:
            out.append(float(smp.value))
    return out


def _epoch_seconds(url: str) -> tuple[float, float]:
    """(sum, count) of the operator's epoch duration histogram."""
    got = {smp.name: float(smp.value) for smp in _samples(url)}
    return (
        got.get("serflow_epoch_duration_seconds_sum", 0.0),
        got.get("serflow_epoch_duration_seconds_count", 0.0),
    )


def _api_requests(c: Cluster) -> dict[str, float]:
    """The API server's requests so far by verb (``apiserver_request_total``): every
    client's, the operator's the most by far while it runs alone."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    text = c.kubectl("get", "--raw", "/metrics").stdout
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == "apiserver_request_total":
                verb = smp.labels.get("verb", "?")
                out[verb] = out.get(verb, 0.0) + float(smp.value)
    return out


def _window(c: Cluster, pid: int, url: str, seconds: float, skip: str | None = None) -> str:
    """The operator's CPU and RSS over ``seconds``, the objects' epoch lateness (read every
    2 s, ``skip`` left out), the mean epoch duration and the API server's request rate by
    verb: one line."""
    cpu0, _ = proc_cpu_rss(pid)
    s0, n0 = _epoch_seconds(url)
    api0 = _api_requests(c)
    peak, late = 0, []
    w0 = time.monotonic()
    while time.monotonic() - w0 < seconds:
        peak = max(peak, proc_cpu_rss(pid)[1])
        late += _lateness(url, skip=skip)
        time.sleep(2)
    cpu1, rss = proc_cpu_rss(pid)
    s1, n1 = _epoch_seconds(url)
    api1 = _api_requests(c)
    took = time.monotonic() - w0
    share = (cpu1 - cpu0) / took
    api = {v: (api1[v] - api0.get(v, 0.0)) / took for v in api1}
    busy = ", ".join(f"{v} {r:.1f}" for v, r in sorted(api.items(), key=lambda x: -x[1]) if r >= 0.05)
    late.sort()
    q = (
        (lambda f: late[min(len(late) - 1, int(f * len(late)))])
        if late
        else (lambda f: float("nan"))
    )
    mean = (s1 - s0) / (n1 - n0) if n1 > n0 else float("nan")
    return (f"operator CPU {100 * share:.1f}% of one core, RSS {rss / 2**20:.0f} MiB "
            f"(peak {max(peak, rss) / 2**20:.0f} MiB); epoch lateness p50 {q(0.5):.2f} s, "
            f"p99 {q(0.99):.2f} s, max {late[-1] if late else float('nan'):.2f} s "
            f"({len(late)} readings); {n1 - n0:.0f} epochs, mean {mean:.3f} s; API server "
            f"{sum(api.values()):.1f} requests/s ({busy})")  # fmt: skip


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _wait_configured(c: Cluster, ns: str, n: int, timeout: float) -> float:
    def configured() -> bool:
        items = json.loads(c.kubectl("get", "sfi", "-n", ns, "-o", "json").stdout)["items"]
        done = sum(
            any(x["type"] == "Configured" and x["status"] == "True" for x in (i.get("status") or {}).get("conditions") or [])
            for i in items
        )  # fmt: skip
        return done == n

    wait_for(f"{n} objects to be Configured", configured, timeout, every=2)
    return time.monotonic()


def _probe(c: Cluster, ns: str, i: int, port: int) -> float:
    """Start ~40 req/s on object i; seconds until its pool Deployment's replicas change."""

    def replicas() -> int:
        out = c.kubectl(
            "get", "deployment", f"sfi{i}-pool", "-n", ns, "-o", "jsonpath={.spec.replicas}"
        ).stdout
        return int(out or 0)

    before = replicas()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            for _ in range(4):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            time.sleep(0.1)

    th = threading.Thread(target=load, daemon=True)
    t0 = time.monotonic()
    th.start()
    try:
        try:
            wait_for(f"sfi{i}'s replicas to change", lambda: replicas() != before, 120, every=0.2)
        except TimeoutError:
            return float("inf")  # reported as such: no change within 120 s
        return time.monotonic() - t0
    finally:
        stop.set()
        th.join()


if __name__ == "__main__":
    main()
