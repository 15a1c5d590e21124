"""Data-plane benchmarks of serflow_runtime (trained digits model, width 0.25).

    .venv/bin/python bench/runtime_bench.py --out bench/results/runtime.md

1. Worker throughput (images/s) through HTTP versus the same batches in-process.
2. LZ4 on real trained activations per cut: ratio, compress and decompress MB/s.
3. The offload hop per batch: frame + HTTP + decode around the function's compute.
4. Envoy's added latency (p50/p99) on the function server's /infer.

Everything runs on 127.0.0.1, bounded in count; processes are stopped at the end.
Every server and the in-process reference use one torch thread, so the ratios compare
like with like on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import torch

from serflow.k8s import envoy as render
from serflow_runtime import checkpoint, codec, data
from serflow_runtime.cli import BUNDLED
from serflow_runtime.engine import run_range
from serflow_runtime.model import build
from serflow_testbed.harness import envoy_argv, free_port, stop_process, wait_http

torch.set_num_threads(1)


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def runtime(self, *args: str, cpu: int | None = None, ckpt: Path = BUNDLED) -> int:
        port = free_port()
        log = (self.tmp / f"p{len(self.procs)}.log").open("wb")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.procs.append(
            subprocess.Popen(
                [
                    *(["taskset", "-c", str(cpu)] if cpu is not None else []),
                    sys.executable,
                    "-m",
                    "serflow_runtime.cli",
                    *args,
                    "--port",
                    str(port),
                    "--threads",
                    "1",
                    "--checkpoint",
                    str(ckpt),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        wait_http(f"http://127.0.0.1:{port}/readyz", 120, self.procs[-1])
        return port

    def envoy(self, pool: int, fn: int, weight: int) -> int:
        rd = self.tmp / f"routes{len(self.procs)}"
        render.write_route_file(rd, weight, "1")
        port, stats, admin = free_port(), free_port(), free_port()
        cfg = self.tmp / f"envoy{port}.yaml"
        cfg.write_text(
            render.to_yaml(
                render.bootstrap(
                    [("127.0.0.1", pool)],
                    [("127.0.0.1", fn)],
                    str(rd),
                    ("127.0.0.1", port),
                    ("127.0.0.1", stats),
                    admin,
                )
            )
        )
        self.procs.append(
            subprocess.Popen(
                envoy_argv(cfg, port, level="error"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_http(f"http://127.0.0.1:{stats}/stats/prometheus", 120, self.procs[-1])
        return port

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            stop_process(p, 20)


async def _blast(port: int, path: str, bodies: list[bytes], concurrency: int) -> None:
    """A lean keep-alive HTTP/1.1 client (prebuilt requests, Content-Length framing), so
    the client spends little CPU next to the worker on a 2-core machine."""
    reqs = [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {codec.RAW_CT}\r\n"
            f"Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]
    it = iter(reqs)

    async def conn() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            for req in it:
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head[:100])
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await r.readexactly(n)
        finally:
            w.close()

    await asyncio.gather(*(conn() for _ in range(concurrency)))


async def _post_all(url: str, bodies: list[bytes], concurrency: int) -> list[float]:
    """POST every body; returns per-request latencies; raises on any non-200."""
    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one(b: bytes) -> None:
            async with sem:
                t0 = time.perf_counter()
                async with s.post(url, data=b, headers={"Content-Type": codec.RAW_CT}) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}: {r.status}")
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(one(b) for b in bodies))
    return lat


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_throughput(
    p: Procs,
    ld: checkpoint.Loaded,
    ckpt: Path,
    x: torch.Tensor,
    batch: int,
    n: int,
    tau: float | None,
    pinned: bool,
) -> dict[str, float]:
    """Images/s of a worker (all partitions local) versus run_range on the same batches.

    pinned: the worker and the in-process reference on core 1, the HTTP client on core 0,
    so the client does not steal the worker's core (as it would not in a cluster).
    """
    label = ["--exits-off"] if tau is None else ["--tau", str(tau)]
    port = p.runtime(
        "worker",
        "--batch",
        str(batch),
        "--epoch",
        "0.5",
        "--budget",
        "100000000",
        *label,
        cpu=1 if pinned else None,
        ckpt=ckpt,
    )
    bodies = [codec_raw(x[i % x.shape[0]]) for i in range(n)]
    everything = os.sched_getaffinity(0)
    try:
        if pinned:
            os.sched_setaffinity(0, {0})
        asyncio.run(_blast(port, "/infer", bodies[: batch * 2], batch * 2))  # warm up
        t0 = time.perf_counter()
        asyncio.run(_blast(port, "/infer", bodies, batch * 2))  # two batches in flight
        http_s = time.perf_counter() - t0
        if pinned:
            os.sched_setaffinity(0, {1})
        xs = torch.cat([x[i % x.shape[0]].unsqueeze(0) for i in range(n)])
        run_range(ld.model, xs[:batch], 1, ld.arch.num_partitions, tau)  # warm up
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            run_range(ld.model, xs[s : s + batch], 1, ld.arch.num_partitions, tau)
        inproc_s = time.perf_counter() - t0
    finally:
        os.sched_setaffinity(0, everything)
    return {"http": n / http_s, "inproc": n / inproc_s, "ratio": (n / http_s) / (n / inproc_s)}


def codec_raw(t: torch.Tensor) -> bytes:
    return bytes(t.contiguous().numpy().astype("<f4").tobytes())


def bench_lz4(ld: checkpoint.Loaded, x: torch.Tensor, reps: int = 20) -> list[dict[str, float]]:
    rows = []
    with torch.inference_mode():
        h = x
        for i in range(1, ld.arch.num_partitions):
            h, _ = ld.model.part(i)(h)
            raw = h.numel() * 4
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
                    "raw_per_image": raw / h.shape[0],
                    "lz4_per_image": len(comp) / h.shape[0],
                    "ratio": len(comp) / raw,
                    "zeros": float((h == 0).float().mean()),
                    "comp_mbs": raw / ct / 1e6,
                    "decomp_mbs": raw / dt / 1e6,
                }
            )
    return rows


def bench_hop(
    p: Procs, ld: checkpoint.Loaded, x: torch.Tensor, cut: int, reps: int
) -> dict[str, float]:
    """Per batch: local compute of cut+1..K versus frame + POST + function compute + decode."""
    k = ld.arch.num_partitions
    fn = p.runtime(
        "function", "--partitions", f"{cut + 1}-K", "--exits-off", "--batch", str(x.shape[0])
    )
    head = run_range(ld.model, x, 1, cut, None)
    assert head.hidden is not None
    hidden, rows = head.hidden, head.survivor_rows
    token = ld.fingerprint.token()

    async def remote() -> list[float]:
        out = []
        async with aiohttp.ClientSession() as s:
            for _ in range(reps + 2):
                t0 = time.perf_counter()
                body = codec.encode_frame(
                    {"fingerprint": token, "partition": cut + 1, "rows": rows}, hidden
                )
                async with s.post(
                    f"http://127.0.0.1:{fn}/run",
                    data=body,
                    headers={"Content-Type": codec.FRAME_CT},
                ) as r:
                    payload = await r.read()
                    assert r.status == 200, payload[:200]
                codec.decode_frame(payload, 1 << 30, None)
                out.append(time.perf_counter() - t0)
        return out[2:]

    remote_s = asyncio.run(remote())
    local_s = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run_range(ld.model, hidden, cut + 1, k, None, rows)
        local_s.append(time.perf_counter() - t0)
    return {
        "batch": float(x.shape[0]),
        "local_p50": statistics.median(local_s),
        "remote_p50": statistics.median(remote_s),
        "added_p50": statistics.median(remote_s) - statistics.median(local_s),
        "frame_bytes": float(len(codec.encode_frame({"fingerprint": token}, hidden))),
    }


def bench_envoy(p: Procs, x: torch.Tensor, n: int) -> dict[str, float]:
    fn = p.runtime("function", "--partitions", "1-K", "--tau", "0.85")
    ev = p.envoy(fn, fn, 0)  # weight 0: everything to the function cluster
    bodies = [codec_raw(x[i % x.shape[0]]) for i in range(n)]
    direct, via = [], []
    for _ in range(2):  # warm, then interleave rounds so drift hits both alike
        direct = []
        via = []
        for s in range(0, n, 50):
            direct += asyncio.run(_post_all(f"http://127.0.0.1:{fn}/infer", bodies[s : s + 50], 1))
            via += asyncio.run(_post_all(f"http://127.0.0.1:{ev}/infer", bodies[s : s + 50], 1))
    return {
        "direct_p50": pct(direct, 0.5),
        "direct_p99": pct(direct, 0.99),
        "envoy_p50": pct(via, 0.5),
        "envoy_p99": pct(via, 0.99),
        "n": float(n),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/runtime.md")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--requests", type=int, default=2000)
    a = ap.parse_args()
    ld = checkpoint.load(BUNDLED)
    ds = data.digits(seed=int(ld.meta.get("seed", 0)))
    x = ds.x_val
    with tempfile.TemporaryDirectory() as tmp:
        p = Procs(Path(tmp))
        try:
            wide = Path(tmp) / "vgg16-w1-untrained.pt"
            checkpoint.save(wide, build(1.0), ld.mean, ld.std, {"note": "untrained"})
            ld_wide = checkpoint.load(wide)
            cases = [
                ("w0.25 digits, exits off", ld, BUNDLED, None, False),
                ("w0.25 digits, tau 0.85", ld, BUNDLED, 0.85, False),
                ("w0.25 digits, exits off, pinned", ld, BUNDLED, None, True),
                ("w0.25 digits, tau 0.85, pinned", ld, BUNDLED, 0.85, True),
                ("w1.0 (full VGG-16), exits off, pinned", ld_wide, wide, None, True),
            ]
            thr = {
                name: bench_throughput(
                    p, m, ck, x, a.batch, a.requests // (8 if m is ld_wide else 1), tau, pin
                )
                for name, m, ck, tau, pin in cases
            }
            lz = bench_lz4(ld, x[: a.batch])
            hop = {cut: bench_hop(p, ld, x[: a.batch], cut, 20) for cut in (1, 2, 4)}
            ev = bench_envoy(p, x, 1000)
        finally:
            p.stop()
    L = [
        "# serflow_runtime benchmarks",
        "",
        f"Command: `.venv/bin/python bench/runtime_bench.py --out {a.out}`"
        f" (B={a.batch}, {a.requests} requests per throughput run).",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
        f" torch {torch.__version__}; load average at the end {os.getloadavg()[0]:.2f}"
        " (the machine is shared). Every server and the in-process reference use 1 torch thread.",
        f"Model: the shipped digits checkpoint (VGG-16-BN, width {ld.arch.width:g},"
        f" exits {list(ld.arch.exits)}), sha256 {ld.sha256[:16]}...",
        "",
        "## 1. Worker throughput: HTTP versus in-process (target ratio >= 0.85)",
        "",
        "| model, exit rule, placement | HTTP images/s | in-process images/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, r in thr.items():
        L.append(f"| {name} | {r['http']:.0f} | {r['inproc']:.0f} | {r['ratio']:.2f} |")
    L += [
        "",
        "The client is a lean keep-alive HTTP/1.1 client (2B connections)."
        " Unpinned: it shares both cores with the worker. Pinned: worker"
        " and in-process reference on core 1, client on core 0. Exits off = every image runs"
        " all 7 partitions; the w1.0 row uses an untrained full-width network (timing only)"
        " and 1/8 of the requests."
        " Why the ratio falls at tau 0.85: most images leave after partition 1, so the model"
        " costs ~0.5 ms per image while each request also costs the server ~0.3 ms of HTTP"
        " work (aiohttp) and the client some more; on 2 cores that work either shares the"
        " cores with the compute (unpinned) or the worker has a single core (pinned). With a"
        " heavier model (w1.0) the same overhead is small.",
        "",
        "## 2. LZ4 on real trained activations (batch of held-out images)",
        "",
        "| cut after | fp32 bytes/image | LZ4 bytes/image | ratio | zeros | compress MB/s | decompress MB/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in lz:
        L.append(
            f"| {r['cut']} | {r['raw_per_image']:.0f} | {r['lz4_per_image']:.0f} | {r['ratio']:.2f} "
            f"| {r['zeros']:.2f} | {r['comp_mbs']:.0f} | {r['decomp_mbs']:.0f} |"
        )
    L += [
        "",
        "## 3. The offload hop, per batch (exits off: all rows survive)",
        "",
        "Remote = encode frame + HTTP POST to a function running cut+1..K + its compute +"
        " decode the answer; local = the same partitions in-process.",
        "",
        "| cut after | batch | frame bytes | local p50 ms | remote p50 ms | added ms per batch |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for cut, r in hop.items():
        L.append(
            f"| {cut} | {r['batch']:.0f} | {r['frame_bytes']:.0f} | {r['local_p50'] * 1e3:.1f} "
            f"| {r['remote_p50'] * 1e3:.1f} | {r['added_p50'] * 1e3:.1f} |"
        )
    L += [
        "",
        "## 4. Envoy's added latency (one request at a time, function server /infer)",
        "",
        "| path | p50 ms | p99 ms |",
        "|---|---:|---:|",
        f"| direct | {ev['direct_p50'] * 1e3:.2f} | {ev['direct_p99'] * 1e3:.2f} |",
        f"| through Envoy | {ev['envoy_p50'] * 1e3:.2f} | {ev['envoy_p99'] * 1e3:.2f} |",
        f"| added | {(ev['envoy_p50'] - ev['direct_p50']) * 1e3:.2f} "
        f"| {(ev['envoy_p99'] - ev['direct_p99']) * 1e3:.2f} |",
        "",
        f"{int(ev['n'])} requests on each path, interleaved in rounds of 50.",
        "",
    ]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(L))
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
