"""Pure decisions of the local runtime, the load generator and the demo's report.

No I/O, no clock: callers pass the time in.  Everything here is unit tested.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from serflow import wire

# -- the trace ------------------------------------------------------------------------


def transform_trace(counts: Sequence[int], start: int, epochs: int, scale: float) -> list[int]:
    """``epochs`` lines from ``start``, each multiplied by ``scale`` (half to even)."""
    if start < 0 or epochs < 1 or not (math.isfinite(scale) and scale >= 0):
        raise ValueError("start >= 0, epochs >= 1 and a finite scale >= 0 are required")
    part = list(counts[start : start + epochs])
    if len(part) < epochs:
        raise ValueError(f"trace has {len(counts)} lines; need {start + epochs}")
    return [round(c * scale) for c in part]


def arrivals(counts: Sequence[int], epoch_s: float, seed: int) -> list[tuple[float, int]]:
    """Open-loop send times (seconds from the start) and epochs: each epoch's requests
    at uniform random moments inside it, sorted."""
    rng = random.Random(seed)
    out: list[tuple[float, int]] = []
    for t, n in enumerate(counts):
        out += sorted(((t + rng.random()) * epoch_s, t) for _ in range(n))
    return out


# -- processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """A local process standing for a pod: when it was started and when it serves."""

    ident: int
    started: float
    ready: bool = False


def scale_pool(desired: int, running: Sequence[Instance]) -> tuple[int, list[int]]:
    """(how many to start, which to stop): the newest (least ready) go first, as in sim."""
    desired = max(0, desired)
    if desired >= len(running):
        return desired - len(running), []
    by_age = sorted(running, key=lambda i: (i.ready, -i.started))  # not ready, newest first
    return 0, [i.ident for i in by_age[: len(running) - desired]]


def ready_now(started: float, now: float, cold_start_s: float, answers: bool) -> bool:
    """A worker serves once its process answers and the configured cold start has passed."""
    return answers and now - started >= cold_start_s


def idle_expired(last_use: float, now: float, keep_alive_s: float, inflight: int) -> bool:
    """A function process stops after ``keep_alive_s`` without a request (none in flight)."""
    return inflight == 0 and now - last_use >= keep_alive_s


def scale_functions(
    demand: int,
    processes: int,
    starting: int,
    concurrency: int,
    min_scale: int,
    max_scale: int,
    max_starting: int = 1,
) -> tuple[int, int]:
    """(how many function processes to start, how many idle ones may stop) for one
    Knative Service, as its activator and autoscaler would.

    ``demand``: requests holding or waiting for a slot; ``processes``: ready ones;
    ``starting``: cold starts in flight.  The wanted scale is ``ceil(demand /
    concurrency)`` clamped to [min_scale, max_scale]; starts fill the gap between it and
    the processes that exist or are starting, at most ``max_starting`` in flight; the
    ready processes above the wanted scale may stop (the caller stops only those idle
    for the keep-alive).
    """
    concurrency, min_scale = max(1, concurrency), max(0, min_scale)
    max_scale = max(1, max_scale, min_scale)
    want = min(max_scale, max(min_scale, -(-max(0, demand) // concurrency)))
    start = max(0, min(want - processes - starting, max_starting - starting))
    stop = max(0, processes - max(want, min_scale))
    return start, stop


# -- arguments of the pods, made local -----------------------------------------------


def local_args(
    args: Sequence[str], port: int, name: str, urls: Mapping[str, str] | None = None
) -> list[str]:
    """A pod's container args for a process on 127.0.0.1: host, port, one thread, our name,
    the artefact (a shipped one by name as given; a path inside an image becomes the
    default), and ``--tail A-B=URL`` pointed at the local activator of the
    Knative Service or pinned Revision the target names (``urls``: name -> local base
    URL)."""
    drop = {"--host", "--port", "--threads", "--name"}
    out: list[str] = []
    it = iter(args)
    for a in it:
        if a == "--artefact":
            ref = next(it, "")
            if not ref.startswith("/"):
                out += [a, ref]
            continue
        if a in drop:
            next(it, None)
            continue
        if a == "--tail":
            spec = next(it)
            rng, _, url = spec.partition("=")
            if url.startswith(f"{wire.REVISION_SCHEME}://"):  # .../NAMESPACE/REVISION
                svc = url.rsplit("/", 1)[-1]
            else:
                host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
                svc = host.split(".", 1)[0]
            if urls is None or svc not in urls:
                raise KeyError(f"no local function for tail {spec!r}")
            out += ["--tail", f"{rng}={urls[svc]}"]
            continue
        out.append(a)
    return [*out, "--host", "127.0.0.1", "--port", str(port), "--threads", "1", "--name", name]


# -- billing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Life:
    """One process's life: [start, end) in seconds (end None: still running)."""

    kind: str  # "instance" or "function"
    name: str
    start: float
    end: float | None = None


def alive_seconds(lives: Iterable[Life], kind: str, t0: float, t1: float) -> float:
    """Seconds of life of ``kind`` processes inside [t0, t1] (open lives end at t1)."""
    total = 0.0
    for life in lives:
        if life.kind != kind:
            continue
        end = t1 if life.end is None else min(life.end, t1)
        total += max(0.0, end - max(life.start, t0))
    return total


def peak_alive(lives: Iterable[Life], kind: str) -> int:
    """Most ``kind`` processes alive at once."""
    edges = sorted(
        (t, d)
        for life in lives
        if life.kind == kind
        for t, d in ((life.start, 1), (math.inf if life.end is None else life.end, -1))
    )  # at equal times an end (-1) sorts before a start
    peak = now = 0
    for _, d in edges:
        now += d
        peak = max(peak, now)
    return peak


@dataclass(frozen=True)
class Prices:
    instance_per_s: float
    function_per_s: float  # one function of the chosen size, per second of execution
    per_invocation: float
    per_pod: bool


@dataclass(frozen=True)
class Bill:
    instance_seconds: float
    function_seconds: float
    invocations: int
    instance_cost: float
    function_cost: float

    @property
    def total(self) -> float:
        return self.instance_cost + self.function_cost


def bill(
    instance_s: float, fn_exec_s: float, fn_alive_s: float, invocations: int, p: Prices
) -> Bill:
    """Instances per second alive (cold start included); functions per use (execution
    seconds and invocations) or per pod (seconds alive), as the workload's pricing mode."""
    fn_s = fn_alive_s if p.per_pod else fn_exec_s
    fn_cost = fn_s * p.function_per_s + (0.0 if p.per_pod else invocations * p.per_invocation)
    return Bill(instance_s, fn_s, invocations, instance_s * p.instance_per_s, fn_cost)


# -- the report ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One request as the load generator saw it."""

    epoch: int
    sent: float  # seconds from the replay's start
    latency: float  # seconds; meaningless when status != 200
    status: int  # HTTP status; -1 when no answer
    where: str = ""  # "pool" or "function" (where its first part ran)
    exit: int = 0
    correct: bool = False
    error: str = ""  # when no answer: the client's exception, by class name


@dataclass(frozen=True)
class Summary:
    requests: int
    failures: int
    slo_met: int
    correct: int
    pool: int
    function: int
    exits: dict[int, int] = field(default_factory=dict)
    p50: float = 0.0
    p99: float = 0.0

    @property
    def answered(self) -> int:
        return self.requests - self.failures

    @property
    def slo_attainment(self) -> float:
        return self.slo_met / self.requests if self.requests else 1.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else 0.0

    @property
    def pool_share(self) -> float:
        return self.pool / self.answered if self.answered else 0.0


def where_from(ran: Sequence[Mapping[str, Any]]) -> str:
    """The server's ``ran`` list -> where the request entered: pool or function."""
    on = str(ran[0].get("on", "")) if ran else ""
    return "pool" if on.startswith("worker:") else "function"


def quantile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def summarise(records: Sequence[Record], bound_s: float) -> Summary:
    """Failures are answers other than 200; a request meets the SLO when it was answered
    within ``bound_s`` (D + SLO: its wait for the batch plus the batch's processing)."""
    ok = [r for r in records if r.status == 200]
    exits: dict[int, int] = {}
    for r in ok:
        exits[r.exit] = exits.get(r.exit, 0) + 1
    lat = [r.latency for r in ok]
    return Summary(
        requests=len(records),
        failures=len(records) - len(ok),
        slo_met=sum(1 for r in ok if r.latency <= bound_s),
        correct=sum(1 for r in ok if r.correct),
        pool=sum(1 for r in ok if r.where == "pool"),
        function=sum(1 for r in ok if r.where == "function"),
        exits=dict(sorted(exits.items())),
        p50=quantile(lat, 0.5),
        p99=quantile(lat, 0.99),
    )


def per_epoch(records: Sequence[Record], epochs: int) -> dict[str, list[float]]:
    """Per-epoch pool and function answers, failures and p99 latency (for the timeline)."""
    pool, fn, fail = [0.0] * epochs, [0.0] * epochs, [0.0] * epochs
    lat: list[list[float]] = [[] for _ in range(epochs)]
    for r in records:
        if not 0 <= r.epoch < epochs:
            continue
        if r.status != 200:
            fail[r.epoch] += 1
            continue
        (pool if r.where == "pool" else fn)[r.epoch] += 1
        lat[r.epoch].append(r.latency)
    return {"pool": pool, "function": fn, "failures": fail, "p99": [quantile(x, 0.99) for x in lat]}


def relative_gap(measured: float, predicted: float) -> float:
    """(measured - predicted) / predicted; 0 when both are 0."""
    if predicted == 0:
        return 0.0 if measured == 0 else math.inf
    return (measured - predicted) / predicted


def band_gap(measured: float, cheapest: float, dearest: float) -> float:
    """How far ``measured`` lies outside [cheapest, dearest], relative to the nearer end;
    0 inside.  The band is simulate's cost over every scaling-tick phase."""
    if measured < cheapest:
        return relative_gap(measured, cheapest)
    if measured > dearest:
        return relative_gap(measured, dearest)
    return 0.0


def request_seconds(seconds_per_request: Sequence[float], survival: Sequence[float]) -> float:
    """Seconds of one whole-model request at a tau: sum_i s_i u_i."""
    return sum(s * u for s, u in zip(survival, seconds_per_request, strict=True))


def calibrate_function(
    seconds_per_request: Sequence[float], survival: Sequence[float], measured_s: float
) -> list[float]:
    """Scale a function config's per-partition seconds so a whole-model request at this
    tau (sum_i s_i u_i) costs ``measured_s``: what one spilled image really takes."""
    now = request_seconds(seconds_per_request, survival)
    if now <= 0 or measured_s <= 0:
        raise ValueError("need positive seconds")
    f = measured_s / now
    return [float(f"{u * f:.4g}") for u in seconds_per_request]


def survival(exit_shares: Sequence[float]) -> list[float]:
    """s_i = e_i + ... + e_K."""
    out, acc = [], 0.0
    for e in reversed(exit_shares):
        acc += e
        out.append(acc)
    return list(reversed(out))
