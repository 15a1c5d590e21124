"""What ran on a real cluster, as a bill: pod lives from a watch, function seconds from
the function pods' own metrics.

An instance is billed from its pod's creation to its removal (cold start and drain
included), as a VM is from boot to shutdown. A function is billed per use (the seconds
each answer took inside it, ``serflow_request_seconds``, and one invocation per answer)
or, in ``per-pod`` pricing, per second its pod was alive, as Knative keeps it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from serflow_testbed.decide import Life

POOL = "instance"
FUNCTION = "function"
COMPONENT = "app.kubernetes.io/component"


def role_of(labels: dict[str, str] | None) -> str | None:
    """A pod's role from the builders' component label: the pool's workers are instances,
    the Knative Services' pods functions; the router and the profiler's Jobs are not
    billed (the demo's own overhead, as in ``serflow simulate``)."""
    component = (labels or {}).get(COMPONENT, "")
    if component == "pool":
        return POOL
    if component.startswith("function-"):
        return FUNCTION
    return None


@dataclass
class PodLife:
    """One pod as the watch saw it (seconds since the epoch, this machine's clock)."""

    name: str
    """The pod's name."""
    role: str
    """``instance`` or ``function``."""
    created: float
    """When it was created: when the watch first saw it, or its creationTimestamp if it
    existed before the watch began."""
    ready: float | None = None
    """When the watch first saw it Ready (None: never)."""
    end: float | None = None
    """When it was removed (None: still there)."""

    @property
    def cold_start(self) -> float | None:
        """Seconds from creation to Ready: scheduling, container start and model load."""
        return None if self.ready is None else self.ready - self.created

    def life(self) -> Life:
        return Life(self.role, self.name, self.created, self.end)


@dataclass
class FunctionUse:
    """The last reading of one function pod's ``serflow_request_seconds``."""

    seconds: float = 0.0
    """Seconds its answers took inside it."""
    answers: int = 0
    """Answers it gave (invocations)."""


def _timestamp(t: datetime | None) -> float | None:
    return None if t is None else t.timestamp()


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def request_seconds(text: str) -> FunctionUse:
    """``serflow_request_seconds`` (sum and count) from a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    use = FunctionUse()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "serflow_request_seconds_sum":
                use.seconds += s.value
            elif s.name == "serflow_request_seconds_count":
                use.answers += int(s.value)
    return use


@dataclass
class PodBill:
    """Watches one namespace's pods and reads its function pods' metrics, in threads, so
    that a replay's event loop never waits on the API server."""

    kubeconfig: Path
    namespace: str
    function_port: int
    """The port the function containers listen on (read through the API server's proxy)."""
    every: float = 1.0
    """Seconds between two readings of the functions' metrics: a function pod is idle for
    Knative's stable window before it is removed, so the last reading holds its total."""
    pods: dict[str, PodLife] = field(default_factory=dict)
    uses: dict[str, FunctionUse] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        self.api = client.CoreV1Api(api)
        self.threads = [threading.Thread(target=t, daemon=True) for t in (self._watch, self._meter)]

    def start(self) -> PodBill:
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        """Stop both threads after one last reading of every function pod still there."""
        self.read_functions()
        self.stop.set()
        for t in self.threads:
            t.join(30)

    # -- the watch ------------------------------------------------------------------

    def _see(self, kind: str, pod: Any, now: float) -> None:
        role = role_of(pod.metadata.labels)
        if role is None:
            return
        name = pod.metadata.name
        with self.lock:
            life = self.pods.get(name)
            if life is None:
                # A pod the watch saw appear was created now (to the event's delay); one
                # older than that carries its creation time (in whole seconds).
                born = _timestamp(pod.metadata.creation_timestamp)
                created = born if born is not None and born < now - 2 else now
                life = self.pods[name] = PodLife(name, role, created)
            if life.ready is None and _ready(pod):
                life.ready = now
            if kind == "DELETED" and life.end is None:
                life.end = now

    def _watch(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        version: str | None = None
        while not self.stop.is_set():
            w = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                kw: dict[str, Any] = {"timeout_seconds": 10, "_request_timeout": 20}
                if version:
                    kw["resource_version"] = version
                events = w.stream(self.api.list_namespaced_pod, self.namespace, **kw)  # type: ignore[no-untyped-call]
                for ev in events:
                    pod = ev["object"]
                    version = pod.metadata.resource_version
                    self._see(ev["type"], pod, time.time())
                    if self.stop.is_set():
                        break
            except ApiException as e:
                if e.status == 410:  # too old: list afresh (lives already seen are kept)
                    version = None
                else:
                    self._error(f"watch: {e.status} {e.reason}")
                    self.stop.wait(1.0)
            except Exception as e:  # a slow or restarting API server: watch again
                self._error(f"watch: {type(e).__name__}: {e}")
                self.stop.wait(1.0)
            finally:
                w.stop()  # type: ignore[no-untyped-call]

    # -- the functions' metrics -----------------------------------------------------

    def read_functions(self) -> None:
        """Read every live function pod's ``serflow_request_seconds`` once."""
        with self.lock:
            names = [p.name for p in self.pods.values() if p.role == FUNCTION and p.end is None]
        for name in names:
            try:
                text = self.api.connect_get_namespaced_pod_proxy_with_path(
                    f"{name}:{self.function_port}", self.namespace, "metrics", _request_timeout=5
                )
            except Exception:  # not listening yet, or gone: the last reading stands
                continue
            use = request_seconds(str(text))
            with self.lock:  # counters only grow while the process lives
                if use.answers >= self.uses.get(name, FunctionUse()).answers:
                    self.uses[name] = use

    def _meter(self) -> None:
        while not self.stop.wait(self.every):
            self.read_functions()

    def _error(self, msg: str) -> None:
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(msg)

    # -- what it saw ----------------------------------------------------------------

    def lives(self) -> list[Life]:
        with self.lock:
            return [p.life() for p in self.pods.values()]

    def cold_starts(self, role: str) -> list[float]:
        with self.lock:
            return [
                c for p in self.pods.values() if p.role == role and (c := p.cold_start) is not None
            ]

    def alive(self, role: str) -> bool:
        """Whether a pod of ``role`` is still there (Ready or not)."""
        with self.lock:
            return any(p.role == role and p.end is None for p in self.pods.values())

    def ready_at(self, role: str, t: float) -> int:
        """How many pods of ``role`` were Ready at time ``t``."""
        with self.lock:
            return sum(
                1
                for p in self.pods.values()
                if p.role == role and p.ready is not None and p.ready <= t
                and (p.end is None or p.end > t)
            )

    def ready_count(self, role: str) -> int:
        """How many pods of ``role`` are Ready now."""
        return self.ready_at(role, math.inf)

    def function_use(self) -> FunctionUse:
        with self.lock:
            return FunctionUse(
                sum(u.seconds for u in self.uses.values()),
                sum(u.answers for u in self.uses.values()),
            )
