"""A fault run: a hybrid plan served by local processes from the builders' arguments (two
pool workers, a fused tail, two spill hosts) under closed-loop load through Envoy, while
one worker, then the tail function, then a spill host are SIGKILLed, the other worker
freezes (SIGSTOP: a hang, not a crash) and the route is swapped.  Shared by the fault test and ``bench/faults.py``: here in the test bed because
``bench/`` imports nothing from ``tests/``."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serflow.policy.configurator import Granularity, PoolKind
from serflow_testbed.plans import Shape, serve
from serflow_testbed.servers import Proc, http

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


class Load:
    """``clients`` threads posting images through Envoy back to back until stopped."""

    def __init__(self, url: str, bodies: list[bytes], clients: int) -> None:
        self.url, self.bodies, self.clients = url, bodies, clients
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                i, self._next = self._next % len(self.bodies), self._next + 1
            t0 = time.monotonic()
            try:
                code, raw = http("POST", self.url + "/infer", self.bodies[i], timeout=60)
                body = json.loads(raw) if raw else {}
            except (OSError, ValueError) as e:
                code, body = -1, {"error": repr(e)}
            t1 = time.monotonic()
            with self._lock:
                self.answers.append(Answer(i, t1, t1 - t0, code, body))

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

    @property
    def answers(self) -> list[Answer]:
        return [a for p in self.phases for a in p.answers]

    def table(self) -> str:
        rows = [
            "| phase | answers | failed | answers/s | p50 ms | p99 ms | partition 1 ran on |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in self.phases:
            where = ", ".join(f"{k} {v}" for k, v in sorted(p.where().items()))
            rows.append(
                f"| {p.name} | {len(p.answers)} | {p.failed} | {p.rate():.1f} | "
                f"{p.latency_ms(0.5):.0f} | {p.latency_ms(0.99):.0f} | {where} |"
            )
        return "\n".join(rows)


def fault_run(tmp: Path, bodies: list[bytes], per_phase: int = 200, clients: int = 8) -> FaultRun:
    """Serve the plan, then steady load, kill worker 0, kill the tail, kill spill host 0,
    swap the route; ``per_phase`` answers after each event."""
    served = serve(SHAPE, tmp, POOL_WEIGHT, workers=2, spills=2)
    tail = next(p for n, p in served.functions.items() if n.endswith("-tail"))
    events: list[tuple[str, Callable[[], None]]] = [
        ("steady", lambda: None),
        ("worker 0 SIGKILL", lambda: _kill(served.workers[0])),
        ("tail function SIGKILL", lambda: _kill(tail)),
        ("spill host 0 SIGKILL", lambda: _kill(served.spills[0])),
        ("worker 1 SIGSTOP", lambda: served.workers[1].proc.send_signal(signal.SIGSTOP)),
        ("route swap 700 -> 300", lambda: served.envoy.set_pool_weight(300, "2")),
    ]
    load = Load(served.envoy.url, bodies, clients)
    marks: list[tuple[str, float]] = []
    try:
        load.start()
        for name, act in events:
            act()
            marks.append((name, time.monotonic()))
            load.wait_more(per_phase)
        load.stop()
        retries = served.envoy.stat("envoy_cluster_upstream_rq_retry")
        ejections = served.envoy.stat("envoy_cluster_outlier_detection_ejections_enforced_total")
    finally:
        load.stop()
        for w in served.workers:  # a frozen process cannot take its SIGTERM
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
        served.stop()
    phases = []
    for i, (name, t0) in enumerate(marks):
        t1 = marks[i + 1][1] if i + 1 < len(marks) else float("inf")
        phases.append(Phase(name, tuple(a for a in load.answers if t0 <= a.done < t1)))
    return FaultRun(tuple(phases), retries, ejections, clients)


def _kill(p: Proc) -> None:
    p.proc.kill()  # SIGKILL: no drain, the open batch and connections are lost
    p.proc.wait()
