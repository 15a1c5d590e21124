"""Data-plane benchmarks of serflow_runtime: ONNX Runtime versus torch, side by side.

    .venv/bin/python bench/runtime_bench.py

writes ``bench/results/runtime.md`` (``--out``; ``--json`` also writes the raw numbers).
The machine is shared and noisy, so only ratios measured in the same run mean much: the
two runtimes are interleaved pass by pass (their order rotating), each with the same
thread count (1, then 2), never one runtime's whole series after the other's.  Each pass
starts once this process is idle, so one runtime's spinning threads do not slow the next.

1. Per stage and whole model at batch B=100, exits off (every row runs every stage), for
   the shipped digits artefact (VGG-16-BN SDN, width 0.25) and an untrained full-width
   VGG-16 (width 1.0) exported to a temporary artefact: seconds per request, torch/onnx.
   At 2 threads also ONNX Runtime with its idle threads spinning, its default, which the
   servers turn off (a diagnostic).
2. The worker server (a subprocess: 1 thread, exits off) through HTTP versus the same
   artefact in-process, per runtime, on the digits and the width-1.0 artefacts: throughput
   and latency.
3. Each worker's resident memory at readiness and its peak (VmHWM) after the load, for
   the digits and the width-1.0 artefact, and its time from spawn to ready.
4. LZ4 on the digits model's activations at each cut: size, compress/decompress speed.
5. The offload hop per batch (ONNX Runtime): frame + HTTP + a function server's compute +
   decode, versus the same stages in-process.

Everything runs on 127.0.0.1, bounded in count and time; every server started here is
stopped at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from serflow_runtime import artefact, checkpoint, codec, export
from serflow_runtime.cli import BUNDLED
from serflow_runtime.engine import run_all, run_range
from serflow_runtime.model import build
from serflow_runtime.runtimes import Runtime, ServedModel, open_model
from serflow_testbed.harness import free_port

Array = npt.NDArray[np.float32]

B = 100
"""Requests per batch, everywhere in this bench."""
THREADS = (1, 2)
RUNTIMES = (Runtime.ONNX, Runtime.TORCH)
HTTP_TIMEOUT = 120.0
"""Seconds one burst of HTTP requests may take before the bench gives up."""
READY_TIMEOUT = 120.0
REPO = Path(__file__).resolve().parent.parent


# -- the machine -----------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its reaped children (the servers, once stopped)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@dataclass
class Sections:
    """Per section of the bench: its seconds and the CPU other processes took meanwhile
    (the machine's busy time minus this process's and its reaped servers')."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        print(f"{name} ...", file=sys.stderr)
        t0, busy0, own0 = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
        yield
        dt = time.perf_counter() - t0
        other = max(0.0, busy_cpu_seconds() - busy0 - (own_cpu_seconds() - own0))
        self.rows.append(
            {"name": name, "s": dt, "other_cores": other / dt, "load1": os.getloadavg()[0]}
        )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def shown(path: Path) -> str:
    """A path as the report may show it: relative to the repository, else its name only
    (the report never names this machine's folders)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


# -- in-process timing -----------------------------------------------------------------


@dataclass
class Timed:
    """A served model whose stage calls are timed; ``threads`` is applied before each
    pass if it is not already set (torch's thread count is process-wide; an ONNX session
    keeps its own)."""

    model: ServedModel
    threads: int
    stage_s: list[float] = field(default_factory=list)
    wrapped: ServedModel = field(init=False)

    def __post_init__(self) -> None:
        inner = self.model.run_stage

        def run(i: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            t0 = time.perf_counter()
            out = inner(i, x)
            self.stage_s.append(time.perf_counter() - t0)
            return out

        self.wrapped = dataclasses.replace(self.model, run_stage=run)

    def run(self, x: Array) -> tuple[float, list[float]]:
        """One pass of every stage on ``x`` with exits off: (whole seconds, per stage)."""
        if self.model.runtime is Runtime.TORCH and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        self.stage_s = []
        t0 = time.perf_counter()
        res = run_all(self.wrapped, x, None)
        whole = time.perf_counter() - t0
        if len(res.exits) != x.shape[0] or any(e.exit != self.model.k for e in res.exits):
            raise RuntimeError("exits off, yet a row did not leave at the final classifier")
        return whole, list(self.stage_s)


@dataclass
class Series:
    """Seconds per batch of B over the repetitions: the whole model and each stage."""

    whole: list[float] = field(default_factory=list)
    stages: list[list[float]] = field(default_factory=list)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def agreement(a: ServedModel, b: ServedModel, x: Array) -> dict[str, float]:
    """How far two runtimes' logits are apart on ``x``, over every exit."""
    ha: np.ndarray = x
    hb: np.ndarray = x
    diff, scale, same = 0.0, 0.0, 1.0
    for i in range(1, a.k + 1):
        ha, la = a.run_stage(i, ha)
        hb, lb = b.run_stage(i, hb)
        diff = max(diff, float(np.abs(la - lb).max()))
        scale = max(scale, float(np.abs(la).max()))
        same = min(same, float((la.argmax(axis=1) == lb.argmax(axis=1)).mean()))
    return {"max_abs_diff": diff, "max_abs_logit": scale, "min_argmax_agreement": same}


SPIN = "onnx-spin"
"""A diagnostic variant at 2 threads: the served ONNX sessions, but with ONNX Runtime's
default of idle pool threads spinning (``session.intra_op.allow_spinning`` = 1), which
the servers turn off."""


def process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def quiesce(limit: float = 1.0) -> None:
    """Sleep until this process is idle (< 10% of a core over 20 ms), at most ``limit``
    seconds: a runtime's pool threads may spin on after its pass, and must not run into
    the next runtime's pass."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        c0 = process_cpu()
        time.sleep(0.02)
        if process_cpu() - c0 < 0.002:
            return


def idle_cpu_after(t: Timed, x: Array, window: float = 0.3, n: int = 3) -> float:
    """CPU seconds this process burns in the ``window`` after a pass (median of n)."""
    got = []
    for _ in range(n):
        quiesce()
        t.run(x)
        c0 = process_cpu()
        time.sleep(window)
        got.append(process_cpu() - c0)
    return median(got)


def onnx_spinning(root: Path, threads: int) -> ServedModel:
    """The served ONNX model with sessions built as ``runtimes`` builds them, plus
    ``session.intra_op.allow_spinning`` = 1 (ONNX Runtime's default; the servers set 0)."""
    import onnxruntime as ort

    served = open_model(root, Runtime.ONNX, threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    sessions = [
        ort.InferenceSession(str(root / st.file.file), opts, providers=["CPUExecutionProvider"])
        for st in served.manifest.stages
    ]

    def run(i: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = sessions[i - 1]
        h, lg = s.run(None, {s.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})
        return h, lg

    return dataclasses.replace(served, run_stage=run)


def bench_stages(root: Path, x: Array, reps: int, warm: int = 2) -> dict[str, Any]:
    """Both runtimes at 1 and 2 threads, interleaved pass by pass, order rotating; at 2
    threads also ONNX Runtime with spinning."""
    torch_model = open_model(root, Runtime.TORCH, 1)
    timed: dict[tuple[int, str], Timed] = {}
    for t in THREADS:
        timed[(t, "onnx")] = Timed(open_model(root, Runtime.ONNX, t), t)
        timed[(t, "torch")] = Timed(torch_model, t)
    timed[(2, SPIN)] = Timed(onnx_spinning(root, 2), 2)
    torch.set_num_threads(1)
    agree = agreement(timed[(1, "onnx")].model, torch_model, x)
    series = {key: Series() for key in timed}
    idle: dict[str, float] = {}
    # One thread count at a time: switching torch's thread count between passes costs it
    # (its thread pool and kernels adapt), which would charge torch for this bench's order.
    for t in THREADS:
        names = [n for (tt, n) in timed if tt == t]
        for rep in range(-warm, reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                quiesce()
                whole, stages = timed[(t, name)].run(x)
                if rep >= 0:
                    series[(t, name)].whole.append(whole)
                    series[(t, name)].stages.append(stages)
        for name in names:
            idle[f"{name} {t}t"] = idle_cpu_after(timed[(t, name)], x)
    torch.set_num_threads(1)
    k = torch_model.k
    out: dict[str, Any] = {
        "k": k,
        "reps": reps,
        "agreement": agree,
        "idle_cpu_s": idle,
        "threads": {},
    }
    for t in THREADS:
        o, p = series[(t, "onnx")], series[(t, "torch")]
        ratios = [pt / ot for pt, ot in zip(p.whole, o.whole, strict=True)]
        row: dict[str, Any] = {
            "onnx_whole_s": median(o.whole) / B,
            "torch_whole_s": median(p.whole) / B,
            "ratio": median(ratios),
            "ratio_iqr": quartiles(ratios),
            "stages": [],
        }
        ns = series.get((t, SPIN))
        if ns is not None:
            row["spin_whole_s"] = median(ns.whole) / B
            row["spin_ratio"] = median(
                [pt / nt for pt, nt in zip(p.whole, ns.whole, strict=True)]
            )
        for i in range(k):
            oi = [s[i] for s in o.stages]
            pi = [s[i] for s in p.stages]
            st: dict[str, float] = {
                "onnx_s": median(oi) / B,
                "torch_s": median(pi) / B,
                "ratio": median([b / a for a, b in zip(oi, pi, strict=True)]),
            }
            if ns is not None:
                st["spin_s"] = median([s[i] for s in ns.stages]) / B
            row["stages"].append(st)
        out["threads"][t] = row
    return out


def wide_artefact(tmp: Path, like: artefact.Manifest) -> Path:
    """An untrained full-width VGG-16 (width 1.0), saved and exported like the digits one."""
    torch.manual_seed(0)
    model = build(1.0)
    model.eval()
    ckpt = tmp / "vgg16-w1-untrained.pt"
    assert like.input.image is not None
    checkpoint.save(ckpt, model, like.input.image.mean, like.input.image.std, {"note": "untrained"})
    root = tmp / "vgg16-w1-untrained"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export.export_network(
            list(model.partitions),
            root,
            name="vgg16-w1-untrained",
            example=torch.zeros((2, *like.input.shape)),
            image=like.input.image,
            classes=like.classes,
            calibration=None,
            source=ckpt,
            describes={**model.arch.to_dict(), "note": "untrained"},
        )
    return root


# -- servers ---------------------------------------------------------------------------


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), b""
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    ready_s: float = 0.0
    """Seconds from spawn to the first 200 on /readyz."""

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM of the process, in kB."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0])
        return out

    def maps(self, needle: str) -> bool:
        """Whether a mapped file of the process has ``needle`` in its name."""
        return needle in Path(f"/proc/{self.proc.pid}/maps").read_text()

    def batch_seconds(self) -> tuple[float, float]:
        """(sum, count) of the server's ``serflow_batch_seconds`` histogram."""
        code, body = http_get(self.port, "/metrics")
        if code != 200:
            raise RuntimeError(f"{self.name}: /metrics answered {code}")
        got = dict(
            re.findall(r"^serflow_batch_seconds_(sum|count) ([0-9.e+-]+)$", body.decode(), re.M)
        )
        return float(got["sum"]), float(got["count"])


class Servers:
    """Worker and function servers started by this bench (and only those)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[Server] = []

    def start(self, name: str, *args: str) -> Server:
        port = free_port()
        log = self.tmp / f"{name}.log"
        t0 = time.perf_counter()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "serflow_runtime.cli", *args, *self.listen(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        srv = Server(name, proc, port, log)
        self.running.append(srv)
        deadline = time.monotonic() + READY_TIMEOUT
        while http_get(port, "/readyz", 1.0)[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not become ready (exit {proc.poll()}): {tail}")
            time.sleep(0.02)
        srv.ready_s = time.perf_counter() - t0
        return srv

    @staticmethod
    def listen(port: int) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(port)]

    def stop(self, which: Sequence[Server] | None = None) -> None:
        """SIGTERM (the servers drain), SIGKILL after 20 s; then reaped."""
        chosen = list(self.running if which is None else which)
        for s in chosen:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in chosen:
            try:
                s.proc.wait(20)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
            self.running.remove(s)


async def blast(port: int, bodies: Sequence[bytes], concurrency: int, k: int) -> list[float]:
    """POST every body to /infer over ``concurrency`` keep-alive connections; returns each
    request's latency.  A lean HTTP/1.1 client (prebuilt requests, Content-Length framing),
    so the client costs little CPU next to the server on a 2-core machine.  Raises unless
    every answer is a 200 that left at exit ``k``."""
    reqs = [
        (
            f"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {codec.RAW_CT}\r\n"
            f"Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]
    it = iter(reqs)
    lat: list[float] = []

    async def conn() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            for req in it:
                t0 = time.perf_counter()
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await r.readexactly(n)
                lat.append(time.perf_counter() - t0)
                if not head.startswith(b"HTTP/1.1 200") or json.loads(body)["exit"] != k:
                    raise RuntimeError(f"unexpected answer: {head[:60]!r} {body[:200]!r}")
        finally:
            w.close()

    jobs = asyncio.gather(*(conn() for _ in range(min(concurrency, len(reqs)))))
    await asyncio.wait_for(jobs, HTTP_TIMEOUT)
    return lat


def pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def bodies_of(x: Array, n: int) -> tuple[list[bytes], Array]:
    """n raw float32 request bodies cycling over the rows of ``x``, and the same rows."""
    xs = np.ascontiguousarray(x[np.arange(n) % x.shape[0]], dtype="<f4")
    return [xs[i].tobytes() for i in range(n)], xs


def worker_args(root: Path, rt: Runtime) -> list[str]:
    return [
        "worker", "--artefact", str(root), "--runtime", rt.value, "--threads", "1",
        "--batch", str(B), "--epoch", "0.05", "--budget", "1000000", "--exits-off",
    ]  # fmt: skip


def bench_http(
    servers: Servers, root: Path, x: Array, rounds: int, n: int, concurrency: int,
    label: str = "digits",
) -> dict[str, Any]:
    """Per round and runtime (order alternating): n requests through the worker's HTTP,
    then the same n rows in batches of B in-process (1 thread)."""
    workers: dict[Runtime, Server] = {}
    ready: dict[Runtime, dict[str, int]] = {}
    for rt in RUNTIMES:  # one at a time, so each start is timed alone
        workers[rt] = servers.start(f"worker-{label}-{rt.value}", *worker_args(root, rt))
        ready[rt] = workers[rt].status()
    k = artefact.load(root).num_stages
    inproc = {rt: Timed(open_model(root, rt, 1), 1) for rt in RUNTIMES}
    bodies, xs = bodies_of(x, n)
    batches = [xs[s : s + B] for s in range(0, n, B)]
    for rt in RUNTIMES:  # warm up both paths
        asyncio.run(blast(workers[rt].port, bodies[: 2 * B], concurrency, k))
        inproc[rt].run(batches[0])
    before = {rt: workers[rt].batch_seconds() for rt in RUNTIMES}
    http_rps: dict[Runtime, list[float]] = {rt: [] for rt in RUNTIMES}
    lat: dict[Runtime, list[float]] = {rt: [] for rt in RUNTIMES}
    in_rps: dict[Runtime, list[float]] = {rt: [] for rt in RUNTIMES}
    in_batch: dict[Runtime, list[float]] = {rt: [] for rt in RUNTIMES}
    for r in range(rounds):
        for rt in RUNTIMES if r % 2 == 0 else RUNTIMES[::-1]:
            t0 = time.perf_counter()
            lat[rt] += asyncio.run(blast(workers[rt].port, bodies, concurrency, k))
            http_rps[rt].append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for xb in batches:
                in_batch[rt].append(inproc[rt].run(xb)[0])
            in_rps[rt].append(n / (time.perf_counter() - t0))
    torch.set_num_threads(1)
    out: dict[str, Any] = {"requests": n, "rounds": rounds, "concurrency": concurrency}
    for rt in RUNTIMES:
        s1, c1 = workers[rt].batch_seconds()
        s0, c0 = before[rt]
        out[rt.value] = {
            "http_rps": median(http_rps[rt]),
            "inproc_rps": median(in_rps[rt]),
            "ratio": median([h / i for h, i in zip(http_rps[rt], in_rps[rt], strict=True)]),
            "lat_p50_s": pct(lat[rt], 0.5),
            "lat_p99_s": pct(lat[rt], 0.99),
            "inproc_batch_s": median(in_batch[rt]),
            "worker_batch_s": (s1 - s0) / max(1.0, c1 - c0),
            "worker_batches": c1 - c0,
            "memory": memory_of(workers[rt], ready[rt]),
        }
    servers.stop(list(workers.values()))
    out["onnx_over_torch_http"] = median(
        [o / p for o, p in zip(http_rps[Runtime.ONNX], http_rps[Runtime.TORCH], strict=True)]
    )
    return out


def memory_of(srv: Server, ready: dict[str, int]) -> dict[str, Any]:
    return {
        "ready_s": srv.ready_s,
        "rss_ready_kb": ready["VmRSS"],
        "hwm_kb": srv.status()["VmHWM"],
        "torch_mapped": srv.maps("libtorch"),
        "ort_mapped": srv.maps("onnxruntime"),
    }


def bench_memory_wide(servers: Servers, root: Path, x: Array) -> dict[str, Any]:
    """The width-1.0 artefact's workers: start alone, serve 2 batches, read VmHWM."""
    k = artefact.load(root).num_stages
    bodies, _ = bodies_of(x, 2 * B)
    out: dict[str, Any] = {}
    for rt in RUNTIMES:
        srv = servers.start(f"worker-wide-{rt.value}", *worker_args(root, rt))
        ready = srv.status()
        asyncio.run(blast(srv.port, bodies, 2 * B, k))
        out[rt.value] = memory_of(srv, ready)
        servers.stop([srv])
    return out


# -- LZ4 and the offload hop -----------------------------------------------------------


def bench_lz4(model: ServedModel, x: Array, reps: int = 20) -> list[dict[str, float]]:
    rows = []
    h: np.ndarray = x
    for i in range(1, model.k):
        h, _ = model.run_stage(i, h)
        raw = h.size * 4
        t0 = time.perf_counter()
        for _ in range(reps):
            comp = codec.compress(h)
        ct = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        for _ in range(reps):
            codec.decompress(comp, raw)
        dt = (time.perf_counter() - t0) / reps
        rows.append(
            {
                "cut": i,
                "raw_per_request": raw / h.shape[0],
                "lz4_per_request": len(comp) / h.shape[0],
                "ratio": len(comp) / raw,
                "zeros": float((h == 0).mean()),
                "comp_mbs": raw / ct / 1e6,
                "decomp_mbs": raw / dt / 1e6,
            }
        )
    return rows


def bench_hop(
    servers: Servers, root: Path, x: Array, cuts: Sequence[int], reps: int
) -> dict[int, dict[str, float]]:
    """Per batch: stages cut+1..K in-process versus frame + POST /run to a function server
    running them + its compute + decoding the answer (ONNX Runtime, 1 thread, exits off)."""
    model = open_model(root, Runtime.ONNX, 1)
    fns = {cut: servers.start(f"function-{cut + 1}-K", *function_args(root, cut)) for cut in cuts}
    try:
        return {cut: hop_one(model, srv.port, x, cut, reps) for cut, srv in fns.items()}
    finally:
        servers.stop(list(fns.values()))


def function_args(root: Path, cut: int) -> list[str]:
    return [
        "function", "--artefact", str(root), "--runtime", "onnx", "--threads", "1",
        "--batch", str(B), "--partitions", f"{cut + 1}-K", "--exits-off",
    ]  # fmt: skip


def hop_one(model: ServedModel, port: int, x: Array, cut: int, reps: int) -> dict[str, float]:
    head = run_range(model, x, 1, cut, None)
    assert head.hidden is not None
    hidden, rows = head.hidden, head.survivor_rows
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    frame_bytes = 0

    def remote() -> tuple[float, float]:
        nonlocal frame_bytes
        t0 = time.perf_counter()
        body = codec.encode_frame(
            {"fingerprint": model.token, "partition": cut + 1, "rows": rows}, hidden
        )
        conn.request("POST", "/run", body, {"Content-Type": codec.FRAME_CT})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"function answered {resp.status}: {payload[:200]!r}")
        header, _ = codec.decode_frame(payload, 1 << 30, None)
        wall = time.perf_counter() - t0
        if len(header["exits"]) != len(rows):
            raise RuntimeError("the function did not answer every row")
        frame_bytes = len(body)
        timing = resp.getheader("Server-Timing") or "app;dur=nan"
        return wall, float(timing.split("dur=")[1]) / 1e3

    def local() -> float:
        t0 = time.perf_counter()
        run_range(model, hidden, cut + 1, model.k, None, rows)
        return time.perf_counter() - t0

    remote_s: list[float] = []
    server_s: list[float] = []
    local_s: list[float] = []
    try:
        for rep in range(-2, reps):
            for step in ("remote", "local") if rep % 2 == 0 else ("local", "remote"):
                if step == "remote":
                    w, srv_t = remote()
                    if rep >= 0:
                        remote_s.append(w)
                        server_s.append(srv_t)
                else:
                    lt = local()
                    if rep >= 0:
                        local_s.append(lt)
    finally:
        conn.close()
    return {
        "frame_bytes": float(frame_bytes),
        "local_s": median(local_s),
        "remote_s": median(remote_s),
        "server_s": median(server_s),
        "added_s": median(remote_s) - median(local_s),
    }


# -- the report ------------------------------------------------------------------------


def ms(seconds: float) -> str:
    v = seconds * 1e3
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def mib(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def stage_table(name: str, r: dict[str, Any]) -> list[str]:
    t1, t2 = r["threads"][1], r["threads"][2]
    lines = [
        f"### {name}",
        "",
        "ms per request (the batch's time / 100), median of the repetitions; ratio ="
        " torch / onnx, the median of the ratios paired within a repetition (> 1: ONNX"
        " Runtime is faster). `onnx` runs as the servers do, idle threads not spinning"
        " (`session.intra_op.allow_spinning` = 0); `onnx 2t spin`: a diagnostic, ONNX"
        " Runtime's default of spinning idle threads, at 2 threads.",
        "",
        "| stage | onnx 1t | torch 1t | ratio 1t | onnx 2t | torch 2t | ratio 2t"
        " | onnx 2t spin |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i in range(r["k"]):
        a, b = t1["stages"][i], t2["stages"][i]
        lines.append(
            f"| {i + 1} | {ms(a['onnx_s'])} | {ms(a['torch_s'])} | {a['ratio']:.2f} "
            f"| {ms(b['onnx_s'])} | {ms(b['torch_s'])} | {b['ratio']:.2f} "
            f"| {ms(b['spin_s'])} |"
        )
    lines.append(
        f"| **whole model** | **{ms(t1['onnx_whole_s'])}** | **{ms(t1['torch_whole_s'])}** "
        f"| **{t1['ratio']:.2f}** | **{ms(t2['onnx_whole_s'])}** "
        f"| **{ms(t2['torch_whole_s'])}** | **{t2['ratio']:.2f}** "
        f"| **{ms(t2['spin_whole_s'])}** |"
    )
    ag = r["agreement"]
    idle = ", ".join(f"{k_} {v * 1e3:.0f}" for k_, v in r["idle_cpu_s"].items())
    lines += [
        "",
        f"{r['reps']} repetitions per variant (after 2 warm-up passes), each pass started"
        " once this process is idle. Whole-model ratio torch / onnx, interquartile range:"
        f" 1 thread {t1['ratio_iqr'][0]:.2f}-{t1['ratio_iqr'][1]:.2f}, 2 threads"
        f" {t2['ratio_iqr'][0]:.2f}-{t2['ratio_iqr'][1]:.2f}; at 2 threads torch /"
        f" onnx-spin {t2['spin_ratio']:.2f}. 2 threads / 1 thread, whole model: onnx"
        f" {t2['onnx_whole_s'] / t1['onnx_whole_s']:.2f}, onnx spin"
        f" {t2['spin_whole_s'] / t1['onnx_whole_s']:.2f}, torch"
        f" {t2['torch_whole_s'] / t1['torch_whole_s']:.2f} (1.0 = no gain, 0.5 = twice as"
        " fast). CPU ms this process burns in the 300 ms after a pass (idle threads"
        f" spinning): {idle}. The runtimes agree: largest logit difference"
        f" {ag['max_abs_diff']:.1e} (largest logit {ag['max_abs_logit']:.2g}), argmax"
        f" agreement at every exit >= {ag['min_argmax_agreement']:.3f}.",
        "",
    ]
    return lines


def report(a: argparse.Namespace, argv: Sequence[str], r: dict[str, Any]) -> str:
    hp, mem = r["http"], r["memory"]
    lines = [
        "# serflow_runtime benchmarks: ONNX Runtime versus torch",
        "",
        f"Command: `{shlex.join(['.venv/bin/python', 'bench/runtime_bench.py', *argv])}`",
        "",
        f"Date: {r['date']}; the bench took {r['elapsed_s']:.0f} s.",
        "",
        f"Machine: {os.cpu_count()} cores ({r['cpu']}), {platform.machine()}, shared with"
        " other jobs. Load average (1, 5, 15 min) at the start"
        f" {', '.join(f'{v:.2f}' for v in r['load_start'])}, at the end"
        f" {', '.join(f'{v:.2f}' for v in r['load_end'])}. Over the run the machine was busy"
        f" {r['busy_s']:.0f} CPU-s of {r['avail_s']:.0f} available; this bench and its"
        f" servers used {r['own_s']:.0f}, other processes ~{r['other_s']:.0f}"
        f" (~{r['other_s'] / r['elapsed_s']:.2f} cores on average).",
        "",
        "| section | seconds | other processes' CPU, cores on average | load average (1 min)"
        " at its end |",
        "|---|---:|---:|---:|",
        *(
            f"| {x['name']} | {x['s']:.0f} | {x['other_cores']:.2f} | {x['load1']:.2f} |"
            for x in r["sections"]
        ),
        "",
        f"Software: Python {platform.python_version()}, onnxruntime {r['versions']['onnxruntime']},"
        f" torch {r['versions']['torch']}, numpy {r['versions']['numpy']}.",
        "",
        f"Models: the shipped artefact `{r['digits']['name']}` (`{r['digits']['path']}`,"
        f" VGG-16-BN SDN width {r['digits']['width']}, {r['digits']['k']} stages), and an"
        " untrained full-width VGG-16 (width 1.0, same 7 stages) built with"
        " `model.build(1.0)` and exported to a temporary artefact (timing only). Input: the"
        " digits calibration images, B = 100 per batch. Exits off everywhere (every row"
        " runs every stage: the worst case).",
        "",
        "Thread counts are the same for both runtimes: ONNX Runtime sessions with"
        " `intra_op_num_threads` = 1 or 2, torch with `torch.set_num_threads(1 or 2)`."
        " Passes alternate between the runtimes (order rotating every repetition), so"
        " drifting load hits both alike; the 1-thread series runs first, then the"
        " 2-thread series (switching torch's thread count between passes slows torch's"
        " next pass, so thread counts are not interleaved).",
        "",
        "## 1. Per stage and whole model, in-process",
        "",
        *stage_table(
            f"Digits artefact (width {r['digits']['width']}, trained)", r["stages_digits"]
        ),
        *stage_table("Full-width VGG-16 (width 1.0, untrained)", r["stages_wide"]),
        "## 2. Worker over HTTP versus in-process (1 thread): digits, then width 1.0",
        "",
        "The worker (`serflow-runtime worker --runtime R --threads 1 --batch 100 --epoch"
        " 0.05 --budget 1000000 --exits-off`, a subprocess on 127.0.0.1) receives"
        f" {hp['requests']} raw float32 requests per round over {hp['concurrency']}"
        f" keep-alive connections (two batches in flight); {hp['rounds']} rounds per"
        " runtime, interleaved with the same rows run in-process in batches of 100 (1"
        " thread), runtime order alternating. The client runs in the bench process, on"
        " the same 2 cores.",
        "",
        *http_table(hp),
        "",
        f"The same for the width-1.0 VGG-16 ({r['http_wide']['rounds']} rounds of"
        f" {r['http_wide']['requests']}; over HTTP onnx / torch"
        f" {r['http_wide']['onnx_over_torch_http']:.2f}):",
        "",
        *http_table(r["http_wide"]),
    ]
    lines += [
        "",
        f"Over HTTP, onnx / torch throughput (paired per round): {hp['onnx_over_torch_http']:.2f}."
        " Latency is per request at the client, from sending it to its whole answer; with"
        " two batches in flight a request typically waits for the batch ahead of it and"
        " then its own. The worker's own ms per batch is its `serflow_batch_seconds` over"
        f" the measured rounds ({hp['onnx']['worker_batches']:.0f} and"
        f" {hp['torch']['worker_batches']:.0f} batches): the stage compute inside the"
        " server, without HTTP.",
        "",
        "## 3. Worker memory and start-up",
        "",
        "Resident memory of the worker process (`/proc/PID/status`): VmRSS once `/readyz`"
        " answers, VmHWM (peak) after the load (the HTTP rounds above for the digits"
        " artefact; 2 batches of 100 for width 1.0). Start-up: spawn to the first 200 on"
        " `/readyz`, one sample each, started one at a time. `torch loaded` = libtorch"
        " mapped into the process.",
        "",
        "| artefact | runtime | start-up s | RSS at ready MiB | peak RSS MiB | torch loaded |",
        "|---|---|---:|---:|---:|---|",
    ]
    for label, rows in (
        ("digits w0.25", {rt.value: hp[rt.value]["memory"] for rt in RUNTIMES}),
        ("VGG-16 w1.0", mem),
    ):
        for rt in RUNTIMES:
            m = rows[rt.value]
            lines.append(
                f"| {label} | {rt.value} | {m['ready_s']:.1f} | {mib(m['rss_ready_kb'])} "
                f"| {mib(m['hwm_kb'])} | {'yes' if m['torch_mapped'] else 'no'} |"
            )
    lines += [
        "",
        "## 4. LZ4 on the digits model's activations (a batch of 100 calibration images)",
        "",
        "| cut after stage | fp32 bytes/request | LZ4 bytes/request | ratio | zeros"
        " | compress MB/s | decompress MB/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for z in r["lz4"]:
        lines.append(
            f"| {z['cut']} | {z['raw_per_request']:.0f} | {z['lz4_per_request']:.0f} "
            f"| {z['ratio']:.2f} | {z['zeros']:.2f} | {z['comp_mbs']:.0f} | {z['decomp_mbs']:.0f} |"
        )
    lines += [
        "",
        "## 5. The offload hop, per batch of 100 (ONNX Runtime, 1 thread, exits off)",
        "",
        "Remote = encode the frame + POST to a function server running stages cut+1..K"
        " + its compute + decode its answer; local = the same stages in-process; the"
        " server's time is its `Server-Timing` (decode, compute, encode). Median of"
        f" {a.hop_reps} alternating repetitions.",
        "",
        "| cut after stage | frame bytes | local ms | remote ms | function's own ms"
        " | added ms per batch |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for cut, h in r["hop"].items():
        lines.append(
            f"| {cut} | {h['frame_bytes']:.0f} | {ms(h['local_s'])} | {ms(h['remote_s'])} "
            f"| {ms(h['server_s'])} | {ms(h['added_s'])} |"
        )
    lines += [
        "",
        "Not measured any more: Envoy's added latency (it does not depend on the runtime;"
        " the previous bench measured 0.85 ms at p50, 2 ms at p99) and the early-exit"
        " (tau 0.85) throughput rows; this bench measures the worst case.",
        "",
        "## Reading",
        "",
        *r["reading"],
        "",
    ]
    return "\n".join(lines)


def http_table(hp: dict[str, Any]) -> list[str]:
    lines = [
        "| runtime | HTTP req/s | in-process req/s | HTTP / in-process | HTTP p50 ms | HTTP p99 ms"
        " | in-process ms per batch | worker's own ms per batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rt in RUNTIMES:
        h = hp[rt.value]
        lines.append(
            f"| {rt.value} | {h['http_rps']:.0f} | {h['inproc_rps']:.0f} | {h['ratio']:.2f} "
            f"| {ms(h['lat_p50_s'])} | {ms(h['lat_p99_s'])} | {ms(h['inproc_batch_s'])} "
            f"| {ms(h['worker_batch_s'])} |"
        )
    return lines


def key_facts(r: dict[str, Any]) -> list[str]:
    """The headline ratios, one line each (the report's reading starts from them)."""
    d, w, hp = r["stages_digits"]["threads"], r["stages_wide"]["threads"], r["http"]
    return [
        f"- torch / onnx, whole model: digits {d[1]['ratio']:.2f} (1 thread),"
        f" {d[2]['ratio']:.2f} (2 threads); width 1.0 {w[1]['ratio']:.2f} (1 thread),"
        f" {w[2]['ratio']:.2f} (2 threads).",
        f"- HTTP / in-process throughput: onnx {hp['onnx']['ratio']:.2f}, torch"
        f" {hp['torch']['ratio']:.2f}; over HTTP onnx serves {hp['onnx_over_torch_http']:.2f}x"
        " torch's requests per second.",
        f"- Width 1.0, HTTP / in-process throughput: onnx {r['http_wide']['onnx']['ratio']:.2f},"
        f" torch {r['http_wide']['torch']['ratio']:.2f}; over HTTP onnx serves"
        f" {r['http_wide']['onnx_over_torch_http']:.2f}x torch's requests per second.",
        f"- Peak worker memory (digits): onnx {mib(hp['onnx']['memory']['hwm_kb'])} MiB,"
        f" torch {mib(hp['torch']['memory']['hwm_kb'])} MiB; width 1.0: onnx"
        f" {mib(r['memory']['onnx']['hwm_kb'])} MiB, torch {mib(r['memory']['torch']['hwm_kb'])} MiB.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description="ONNX Runtime versus torch, side by side.")
    ap.add_argument("--out", default="bench/results/runtime.md")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    ap.add_argument("--reps-digits", type=int, default=40, help="passes per runtime and threads")
    ap.add_argument("--reps-wide", type=int, default=10, help="passes per runtime and threads")
    ap.add_argument("--rounds", type=int, default=6, help="HTTP rounds per runtime")
    ap.add_argument("--requests", type=int, default=400, help="requests per HTTP round")
    ap.add_argument("--concurrency", type=int, default=2 * B, help="client connections")
    ap.add_argument("--hop-reps", type=int, default=15)
    a = ap.parse_args(argv)

    t_start = time.perf_counter()
    busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
    r: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": os.getloadavg(),
        "cpu": cpu_model(),
        "versions": {p: version(p) for p in ("onnxruntime", "torch", "numpy")},
    }
    man = artefact.load(BUNDLED)
    x_all, _ = artefact.held_out(BUNDLED, man)
    x = x_all[:B]
    r["digits"] = {
        "name": man.name,
        "path": shown(BUNDLED),
        "width": man.describes.get("width"),
        "k": man.num_stages,
    }
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="serflow-bench-") as tmp_name:
        tmp = Path(tmp_name)
        servers = Servers(tmp)
        section = Sections()
        try:
            with section("export the width-1.0 VGG-16"):
                wide = wide_artefact(tmp, man)
            with section("1. stages, digits"):
                r["stages_digits"] = bench_stages(BUNDLED, x, a.reps_digits)
            with section("1. stages, width 1.0"):
                r["stages_wide"] = bench_stages(wide, x, a.reps_wide)
            with section("2. HTTP versus in-process"):
                r["http"] = bench_http(servers, BUNDLED, x_all, a.rounds, a.requests, a.concurrency)
            with section("2. HTTP versus in-process, width 1.0"):
                r["http_wide"] = bench_http(servers, wide, x_all, max(2, a.rounds // 2),
                                            a.requests, a.concurrency, "wide")  # fmt: skip
            with section("3. memory, width 1.0"):
                r["memory"] = bench_memory_wide(servers, wide, x_all)
            with section("4. LZ4"):
                r["lz4"] = bench_lz4(open_model(BUNDLED, Runtime.ONNX, 1), x)
            with section("5. offload hop"):
                r["hop"] = bench_hop(servers, BUNDLED, x, (1, 2, 4), a.hop_reps)
        finally:
            servers.stop()
        r["sections"] = section.rows
    r["load_end"] = os.getloadavg()
    r["elapsed_s"] = time.perf_counter() - t_start
    r["busy_s"] = busy_cpu_seconds() - busy0
    r["own_s"] = own_cpu_seconds() - own0
    r["other_s"] = max(0.0, r["busy_s"] - r["own_s"])
    r["avail_s"] = r["elapsed_s"] * (os.cpu_count() or 1)
    r["reading"] = key_facts(r)
    text = report(a, argv, r)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
