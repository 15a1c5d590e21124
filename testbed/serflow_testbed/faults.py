"""A fault run: a hybrid plan served by local processes from the builders' arguments (two
pool workers, a fused tail, four spill hosts, two Envoy routers the clients spread over)
under closed-loop load, while one worker, then the tail function, then a spill host are
SIGKILLed, the other worker and then a spill host freeze (SIGSTOP: a hang, not a crash)
and are resumed, the route is swapped and one router is drained and restarted.  Every
server logs the id of each request it answers (``serflow_testbed.traced``), so requests
executed more than once are counted.  Shared by the fault test and ``bench/faults.py``:
here in the test bed because ``bench/`` imports nothing from ``tests/``."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

from serflow.k8s.timeouts import function_attempt_timeout_s, router_timeout_s
from serflow.policy.configurator import Granularity, PoolKind
from serflow.wire import ENVOY_DRAIN_PATH
from serflow_testbed.plans import Served, Shape, plan, serve
from serflow_testbed.servers import Envoy, Proc, http
from serflow_testbed.traced import answered

SHAPE = Shape(PoolKind.HYBRID, Granularity.FUSED, 2)
POOL_WEIGHT = 700


@dataclass(frozen=True)
class Answer:
    """One client request's outcome."""

    image: int
    """Index of the image sent."""
    done: float
    """Monotonic time the answer (or error) arrived."""
    seconds: float
    """Latency seen by the client."""
    code: int
    """HTTP status; -1 when the connection failed."""
    body: dict[str, Any]
    """The JSON answer (or the error)."""
    rid: str = ""
    """The ``x-request-id`` the client sent."""


class Load:
    """``clients`` threads posting images back to back until stopped, each request through
    the next of the routers' URLs in turn (a Service's endpoints: ``remove`` and ``add``
    one as the endpoints controller would). Each request carries an id of its own."""

    def __init__(self, url: str | list[str], bodies: list[bytes], clients: int) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        self.bodies, self.clients = bodies, clients
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def remove(self, url: str) -> None:
        with self._lock:
            self.urls.remove(url)

    def add(self, url: str) -> None:
        with self._lock:
            self.urls.append(url)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                n, self._next = self._next, self._next + 1
                url = self.urls[n % len(self.urls)]
            i, rid = n % len(self.bodies), f"fault-{n}"
            t0 = time.monotonic()
            try:
                code, raw = http(
                    "POST", url + "/infer", self.bodies[i], timeout=120,
                    headers={"x-request-id": rid},
                )  # fmt: skip
                body = json.loads(raw) if raw else {}
            except (OSError, ValueError) as e:
                code, body = -1, {"error": repr(e)}
            t1 = time.monotonic()
            with self._lock:
                self.answers.append(Answer(i, t1, t1 - t0, code, body, rid))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_more(self, n: int, timeout: float = 300.0) -> None:
        """Wait (bounded) until ``n`` more answers have arrived."""
        goal, end = self.count() + n, time.monotonic() + timeout
        while self.count() < goal:
            if time.monotonic() > end:
                raise TimeoutError(f"load stalled: {self.count()} of {goal} answers")
            time.sleep(0.05)


@dataclass(frozen=True)
class Phase:
    """The answers that arrived between one event and the next."""

    name: str
    answers: tuple[Answer, ...]

    @property
    def failed(self) -> int:
        return sum(a.code != 200 for a in self.answers)

    def latency_ms(self, q: float) -> float:
        xs = sorted(a.seconds for a in self.answers)
        return 1e3 * xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    def rate(self) -> float:
        ts = [a.done for a in self.answers]
        return (len(ts) - 1) / (max(ts) - min(ts)) if len(ts) > 1 else float("nan")

    def where(self) -> dict[str, int]:
        """Answers by where partition 1 ran."""
        out: dict[str, int] = {}
        for a in self.answers:
            if a.code == 200:
                on = str(a.body["ran"][0]["on"])
                out[on] = out.get(on, 0) + 1
        return out


@dataclass(frozen=True)
class FaultRun:
    """A fault run's phases and Envoy's counters at its end."""

    phases: tuple[Phase, ...]
    retries: float
    """envoy_cluster_upstream_rq_retry, all clusters."""
    ejections: float
    """envoy_cluster_outlier_detection_ejections_enforced_total, all clusters."""
    clients: int
    executions: Counter[str] = field(default_factory=Counter)
    """Request id -> how many times a server answered it 200 (``traced``)."""
    late: Counter[str] = field(default_factory=Counter)
    """Request id -> of those, answers written to a connection Envoy had already closed
    (the attempt was cut: the answer reached nobody)."""
    envoy: dict[str, float] = field(default_factory=dict)
    """Envoy's counters (``ENVOY_COUNTERS``), summed over the routers and their restarts."""
    function_bound_added: bool = False
    """The builders' route lacked the per-try bound for a hung function host; added."""

    def duplicates(self, phase: Phase | None = None) -> int:
        """Requests (of ``phase``, else all) that servers answered 200 more than once."""
        answers = phase.answers if phase else self.answers
        return sum(self.executions[a.rid] > 1 for a in answers)

    def late_duplicates(self) -> int:
        """Requests answered 200 more than once where all but one answer reached nobody."""
        return sum(
            self.executions[a.rid] > 1 and self.executions[a.rid] - self.late[a.rid] <= 1
            for a in self.answers
        )

    def unexecuted(self) -> int:
        """Requests answered 200 to their client with no server line for their id (Envoy
        replaced the id, or a server did not log it)."""
        return sum(a.code == 200 and self.executions[a.rid] == 0 for a in self.answers)

    @property
    def answers(self) -> list[Answer]:
        return [a for p in self.phases for a in p.answers]

    def table(self) -> str:
        rows = [
            "| phase | answers | failed | executed twice | answers/s | p50 ms | p99 ms | max ms "
            "| partition 1 ran on |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for p in self.phases:
            where = ", ".join(f"{k} {v}" for k, v in sorted(p.where().items()))
            rows.append(
                f"| {p.name} | {len(p.answers)} | {p.failed} | {self.duplicates(p)} | "
                f"{p.rate():.1f} | {p.latency_ms(0.5):.0f} | {p.latency_ms(0.99):.0f} | "
                f"{p.latency_ms(1.0):.0f} | {where} |"
            )
        return "\n".join(rows)


def fault_run(tmp: Path, bodies: list[bytes], per_phase: int = 200, clients: int = 8) -> FaultRun:
    """Serve the plan, then steady load, kill worker 0, the tail and spill host 0, freeze
    worker 1 and spill host 1, resume both, swap the route, drain and restart router 0;
    ``per_phase`` answers after each event (and spill host 1 frozen for at least the
    function attempt bound and 10 s)."""
    served = serve(
        SHAPE, tmp, POOL_WEIGHT, workers=2, spills=4, routers=2, traced=True,
        bound_functions=True,
    )  # fmt: skip
    _, w, _ = plan(SHAPE)
    tail = next(p for n, p in served.functions.items() if n.endswith("-tail"))
    load = Load([r.url for r in served.routers], bodies, clients)
    frozen = [served.workers[1], served.spills[1]]
    counters: dict[str, float] = {}
    events: list[tuple[str, Callable[[], None]]] = [
        ("steady", lambda: None),
        ("worker 0 SIGKILL", lambda: _kill(served.workers[0])),
        ("tail function SIGKILL", lambda: _kill(tail)),
        ("spill host 0 SIGKILL", lambda: _kill(served.spills[0])),
        ("worker 1 SIGSTOP", lambda: frozen[0].proc.send_signal(signal.SIGSTOP)),
        ("spill host 1 SIGSTOP", lambda: frozen[1].proc.send_signal(signal.SIGSTOP)),
        ("both resumed (SIGCONT)", lambda: _resume(frozen)),
        (
            "route swap 700 -> 300",
            lambda: served.envoy.set_pool_weight(
                300,
                "2",
                timeout_seconds=router_timeout_s(w),
                attempt_timeout_s=function_attempt_timeout_s(w),
            ),
        ),
        ("router 0 drained and restarted", lambda: _add(counters, restart_router(served, load, 0))),
    ]
    # A frozen function host stays frozen until every attempt on it has been cut at the
    # route's per-try bound and retried (and the host ejected), however fast the other
    # hosts answer the phase's share.
    hold = {"spill host 1 SIGSTOP": function_attempt_timeout_s(w) + 10.0}
    marks: list[tuple[str, float]] = []
    try:
        load.start()
        for name, act in events:
            act()
            t0 = time.monotonic()
            marks.append((name, t0))
            load.wait_more(per_phase, 900.0)
            time.sleep(max(0.0, t0 + hold.get(name, 0.0) - time.monotonic()))
        load.stop()
        for r in served.routers:
            _add(counters, envoy_counters(r))
    finally:
        load.stop()
        for p in served.procs:  # a frozen process cannot take its SIGTERM
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGCONT)
        served.stop()
    phases = []
    for i, (name, t0) in enumerate(marks):
        t1 = marks[i + 1][1] if i + 1 < len(marks) else float("inf")
        phases.append(Phase(name, tuple(a for a in load.answers if t0 <= a.done < t1)))
    logs = [p.log for p in served.workers + served.spills]
    return FaultRun(
        tuple(phases),
        counters.get("retries", 0.0),
        counters.get("ejections", 0.0),
        clients,
        executions=answered(logs),
        function_bound_added=served.function_bound_added,
        late=answered(logs, state="gone"),
        envoy=counters,
    )


ENVOY_COUNTERS = {
    "retries": ("envoy_cluster_upstream_rq_retry", None),
    "ejections": ("envoy_cluster_outlier_detection_ejections_enforced_total", None),
    "pool ejections": ("envoy_cluster_outlier_detection_ejections_enforced_total", "pool"),
    "functions ejections": (
        "envoy_cluster_outlier_detection_ejections_enforced_total",
        "functions",
    ),
    "pool attempts cut (max_stream_duration)": (
        "envoy_cluster_upstream_rq_max_duration_reached",
        "pool",
    ),
    # counted under the route's cluster (pool_spill too); only a function's attempt
    # lasts that long (the pool's end at their own bound)
    "function attempts cut (per-try timeout)": ("envoy_cluster_upstream_rq_per_try_timeout", None),
}
"""Envoy's counters the run reports: name -> (series, cluster or None for all)."""


def envoy_counters(e: Envoy) -> dict[str, float]:
    """``ENVOY_COUNTERS`` of one router, from its stats listener."""
    code, raw = http("GET", f"http://127.0.0.1:{e.stats_port}/stats/prometheus")
    if code != 200:
        raise RuntimeError(f"Envoy's stats listener answered {code}")
    out = dict.fromkeys(ENVOY_COUNTERS, 0.0)
    for line in raw.decode().splitlines():
        for key, (series, cl) in ENVOY_COUNTERS.items():
            if not line.startswith((series + "{", series + " ")):
                continue
            if cl is None or f'envoy_cluster_name="{cl}"' in line:
                out[key] += float(line.rsplit(" ", 1)[1])
    return out


def _add(total: dict[str, float], more: dict[str, float]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0.0) + v


ENDPOINT_LAG_S = 1.0
"""How long a router that started draining still receives new requests: the time the
Service's endpoints take to drop a terminating pod (kube-proxy's rules on every node)."""


def restart_router(served: Served, load: Load, i: int, timeout: float = 120.0) -> dict[str, float]:
    """Restart router ``i`` as a drained pod would be: Envoy drains its listeners
    (``/drain_listeners?graceful``: it still accepts during the drain), the endpoints drop
    it ``ENDPOINT_LAG_S`` later, it is sent SIGTERM once it has no request in flight, and
    it comes back on the same ports and bootstrap and rejoins the endpoints. Returns the
    router's counters before it stopped (a new process starts them at zero)."""
    e = served.routers[i]
    assert e.proc is not None
    code, raw = http("POST", f"http://127.0.0.1:{e.admin_port}{ENVOY_DRAIN_PATH}")
    if code != 200:
        raise RuntimeError(f"drain_listeners answered {code}: {raw[:200]!r}")
    closing = _connection_header(e.url)
    if closing != "close":  # the drain missed the ingress listener: clients would be cut
        raise RuntimeError(f"router {i} drains but answers with Connection: {closing!r}")
    time.sleep(ENDPOINT_LAG_S)
    load.remove(e.url)
    end = time.monotonic() + timeout
    while _active(e) > 0:
        if time.monotonic() > end:
            raise TimeoutError(f"router {i} still has requests in flight after {timeout:g} s")
        time.sleep(0.05)
    before = envoy_counters(e)
    e.proc.proc.send_signal(signal.SIGTERM)
    e.proc.proc.wait(30)
    served.restart_router(i)
    load.add(e.url)
    return before


def _connection_header(url: str) -> str:
    """The Connection header of the router's answer to a GET of a path it does not route
    (Envoy's own 404, never sent upstream)."""
    u = urllib.parse.urlsplit(url)
    conn = HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=10)
    try:
        conn.request("GET", "/not-routed")
        r = conn.getresponse()
        r.read()
        return (r.getheader("connection") or "").lower()
    finally:
        conn.close()


def _active(e: Envoy) -> int:
    """Requests in flight on the router's ingress listener (from its admin interface)."""
    code, raw = http("GET", f"http://127.0.0.1:{e.admin_port}/stats?filter=downstream_rq_active$")
    if code != 200:
        raise RuntimeError(f"Envoy's admin answered {code}")
    n = 0
    for line in raw.decode().splitlines():
        name, _, v = line.partition(":")
        if name.startswith("http.") and not name.startswith(("http.admin.", "http.stats.")):
            n += int(v)
    return n


def _resume(procs: list[Proc]) -> None:
    for p in procs:
        p.proc.send_signal(signal.SIGCONT)


def _kill(p: Proc) -> None:
    p.proc.kill()  # SIGKILL: no drain, the open batch and connections are lost
    p.proc.wait()
