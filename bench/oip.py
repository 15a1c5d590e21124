"""The Open Inference Protocol (REST and gRPC) against ``/infer``, through the same local router.

    .venv/bin/python bench/oip.py --out bench/results/oip.md

One hybrid plan (fused tail after cut 2) served by local worker, function and Envoy
processes started from the operator's builders (pool weight 700 of 1000, D = 0.01 s so
that batches close on time rather than on B, one thread each), and held-out digits images
sent, closed loop, by ``--clients`` clients in four ways, interleaved round by round so
that drift on the shared machine falls on all alike:

* ``/infer``: the raw float32 image, one per request (keep-alive ``http.client``);
* OIP, JSON: ``/v2/models/digits/infer`` with the tensor as JSON numbers (the same client);
* OIP, binary: tritonclient (``InferenceServerClient``, binary tensor extension), from
  ``--clients`` greenlets of one client with as many connections;
* OIP, binary, 8 instances a request: the same, 8 images per request;
* OIP, gRPC: tritonclient's gRPC client (``raw_input_contents``) over HTTP/2 to the same
  listener, from ``--clients`` threads sharing one channel.

Every answer is checked against the whole model's (exit, class) for its image; the run
exits 1 on any failed or wrong answer.  Everything runs on 127.0.0.1; every process
started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from serflow.policy.configurator import Granularity, PoolKind
from serflow_runtime import artefact
from serflow_runtime.cli import BUNDLED
from serflow_runtime.engine import decide
from serflow_runtime.runtimes import open_model
from serflow_testbed.loadgen import raw_bytes
from serflow_testbed.plans import OWNER, Shape, plan, serve
from serflow_testbed.reference import all_logits

SHAPE = Shape(PoolKind.HYBRID, Granularity.FUSED, 2)
POOL_WEIGHT = 700
EPOCH_S = 0.01
MULTI = 8
MODES = (
    "/infer",
    "OIP, JSON",
    "OIP, binary (tritonclient)",
    f"OIP, binary, {MULTI} a request",
    "OIP, gRPC (tritonclient)",
)


@dataclass
class Tally:
    """One mode's requests: their seconds, instances, failures and wrong answers."""

    seconds: list[float] = field(default_factory=list)
    wall: float = 0.0
    instances: int = 0
    failed: int = 0
    wrong: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, images: int, failed: bool, wrong: int) -> None:
        """One request's outcome (from any client thread); ``images`` counts when
        answered."""
        with self.lock:
            self.seconds.append(seconds)
            self.instances += 0 if failed else images
            self.failed += failed
            self.wrong += wrong


Check = Callable[[list[int], list[tuple[int, int]]], None]


def _keepalive_poster(
    port: int, opened: list[http.client.HTTPConnection]
) -> Callable[[str, bytes, str], tuple[int, bytes]]:
    """POST over one kept-alive connection per thread (as tritonclient keeps its own);
    ``opened`` collects them for the caller to close."""
    local = threading.local()

    def post(path: str, body: bytes, ctype: str) -> tuple[int, bytes]:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            opened.append(conn)
        try:
            conn.request("POST", path, body, {"Content-Type": ctype})
            r = conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            local.conn = None
            return -1, b""

    return post


def run_http(
    port: int, requests: list[tuple[str, bytes, str, list[int]]], clients: int, tally: Tally,
    want: list[tuple[int, int]],
) -> None:  # fmt: skip
    """Closed loop over ``requests`` (path, body, content type, images) with threads."""
    opened: list[http.client.HTTPConnection] = []
    post = _keepalive_poster(port, opened)

    def one(req: tuple[str, bytes, str, list[int]]) -> None:
        path, body, ctype, imgs = req
        t0 = time.perf_counter()
        code, raw = post(path, body, ctype)
        took = time.perf_counter() - t0
        if code != 200:
            tally.add(took, len(imgs), True, 0)
            return
        doc = json.loads(raw)
        if "outputs" in doc:
            out = {o["name"]: o["data"] for o in doc["outputs"]}
            got = list(zip(out["exit"], out["class"], strict=True))
        else:
            got = [(doc["exit"], doc["class"])]
        tally.add(took, len(imgs), False, sum(g != want[i] for g, i in zip(got, imgs, strict=True)))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(one, requests))
    tally.wall += time.perf_counter() - t0
    for conn in opened:
        conn.close()


def _timed(
    tally: Tally, imgs: list[int], want: list[tuple[int, int]], call: Callable[[], Any]
) -> None:
    """One tritonclient call (REST or gRPC) timed, its answers checked, into ``tally``."""
    t0 = time.perf_counter()
    try:
        res = call()
    except Exception:  # the client's own errors and the server's refusals alike
        tally.add(time.perf_counter() - t0, len(imgs), True, 0)
        return
    took = time.perf_counter() - t0
    got = zip(res.as_numpy("exit").tolist(), res.as_numpy("class").tolist(), strict=True)
    tally.add(took, len(imgs), False, sum(g != want[i] for g, i in zip(got, imgs, strict=True)))


def run_triton(
    port: int, x: np.ndarray, batches: list[list[int]], clients: int, tally: Tally,
    want: list[tuple[int, int]],
) -> None:  # fmt: skip
    """Closed loop with tritonclient: ``clients`` greenlets share one client."""
    import gevent
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(
        f"127.0.0.1:{port}", concurrency=clients, network_timeout=120
    )
    todo = iter(batches)

    def loop() -> None:
        for imgs in todo:
            inp = httpclient.InferInput("input", [len(imgs), *x.shape[1:]], "FP32")
            inp.set_data_from_numpy(x[imgs], binary_data=True)
            _timed(tally, imgs, want, partial(client.infer, OWNER.name, [inp]))

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(loop) for _ in range(clients)])
    tally.wall += time.perf_counter() - t0
    client.close()


def run_grpc(
    port: int, x: np.ndarray, batches: list[list[int]], clients: int, tally: Tally,
    want: list[tuple[int, int]],
) -> None:  # fmt: skip
    """Closed loop with tritonclient's gRPC client: ``clients`` threads share one channel."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    todo = iter(batches)
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                imgs = next(todo, None)
            if imgs is None:
                return
            inp = grpcclient.InferInput("input", [len(imgs), *x.shape[1:]], "FP32")
            inp.set_data_from_numpy(x[imgs])
            _timed(tally, imgs, want, partial(client.infer, OWNER.name, [inp], client_timeout=120))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.wall += time.perf_counter() - t0
    client.close()


def oip_json(x: np.ndarray, imgs: list[int]) -> bytes:
    t = {"name": "input", "datatype": "FP32", "shape": [len(imgs), *x.shape[1:]],
         "data": x[imgs].ravel().tolist()}  # fmt: skip
    return json.dumps({"inputs": [t]}).encode()


def pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a), q)) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300, help="requests per mode per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    ap.add_argument("--out", type=Path, help="write the Markdown report here")
    ap.add_argument("--note", default="", help="a sentence on the run's conditions, reported")
    a = ap.parse_args()
    if min(a.requests, a.rounds, a.clients) < 1:
        print("error: --requests, --rounds and --clients must be at least 1", file=sys.stderr)
        return 2
    model = open_model(BUNDLED, "onnx", threads=1)
    x, _ = artefact.held_out(model.root, model.manifest)
    _, _, cand = plan(SHAPE, EPOCH_S)
    ex, pred = decide(all_logits(model, x), cand.tau)
    want = list(zip(ex.tolist(), pred.tolist(), strict=True))
    n_img = len(x)
    singles = [[i % n_img] for i in range(a.requests)]
    multis = [[(j * MULTI + k) % n_img for k in range(MULTI)] for j in range(a.requests)]
    path = f"/v2/models/{OWNER.name}/infer"
    tallies = {m: Tally() for m in MODES}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="serflow-oip-") as tmp:
        local = serve(SHAPE, Path(tmp), POOL_WEIGHT, epoch_s=EPOCH_S)
        try:
            port = local.envoy.port
            infer = [("/infer", raw_bytes(x[i[0]]), "application/octet-stream", i) for i in singles]
            as_json = [(path, oip_json(x, i), "application/json", i) for i in singles]
            # warm every path once (connections, the tail's first call)
            run_http(port, infer[:a.clients], a.clients, Tally(), want)
            run_http(port, as_json[:a.clients], a.clients, Tally(), want)
            run_triton(port, x, singles[:a.clients], a.clients, Tally(), want)
            run_grpc(port, x, singles[:a.clients], a.clients, Tally(), want)
            for _ in range(a.rounds):
                run_http(port, infer, a.clients, tallies[MODES[0]], want)
                run_http(port, as_json, a.clients, tallies[MODES[1]], want)
                run_triton(port, x, singles, a.clients, tallies[MODES[2]], want)
                run_triton(port, x, multis, a.clients, tallies[MODES[3]], want)
                run_grpc(port, x, singles, a.clients, tallies[MODES[4]], want)
        finally:
            local.stop()
    load.append(os.getloadavg()[0])
    rows = []
    for m, t in tallies.items():
        rows.append(
            f"| {m} | {len(t.seconds) / t.wall:.1f} | {t.instances / t.wall:.1f} "
            f"| {pct(t.seconds, 50):.1f} | {pct(t.seconds, 99):.1f} "
            f"| {statistics.fmean(t.seconds) * 1e3:.1f} | {t.failed} | {t.wrong} |"
        )
    text = "\n".join(
        [
            "# The Open Inference Protocol (REST and gRPC) beside /infer, through one router",
            "",
            f"Command: `.venv/bin/python bench/oip.py --requests {a.requests} --rounds "
            f"{a.rounds} --clients {a.clients} --out bench/results/oip.md"
            + (f" --note '{a.note}'`" if a.note else "`"),
            "",
            f"Run {started} on {platform.machine()}, {os.cpu_count()} cores shared by the "
            "clients, Envoy, the pool worker and the functions (one thread each). A hybrid "
            f"plan of the digits example (fused tail after cut 2, B = 100, D = {EPOCH_S:g} s, "
            f"tau {cand.tau:g}) from the operator's builders; Envoy sends {POOL_WEIGHT} of "
            "1000 to the pool, the rest to the spill function. "
            f"{a.clients} closed-loop clients; {a.requests} requests per way per round, "
            f"{a.rounds} rounds, the five ways interleaved. Seconds are the client's, from "
            "sending a request to its whole answer. The machine's 1-minute load average was "
            f"{load[0]:.2f} at the start and {load[1]:.2f} at the end.{' ' + a.note if a.note else ''}",
            "",
            "| way | requests/s | images/s | p50 ms | p99 ms | mean ms | failed | wrong |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "`/infer` and OIP, JSON share one client (Python's `http.client`, one kept-alive "
            "connection per client thread), so their difference is the protocol's: the "
            "image as 12,288 raw bytes, or as about 63 KB of JSON numbers that the server "
            "parses. tritonclient sends the binary tensor extension from gevent greenlets; "
            "its rows hold the client's own costs too. A request of 8 images is answered "
            "when its last image is: each joins the pool's batcher on its own. gRPC reaches "
            "the same listener over HTTP/2; Envoy hands each call to the pool or a function "
            "as an HTTP/1.1 POST of its protobuf message (its gRPC-HTTP/1.1 reverse bridge), "
            "so its row holds that conversion as well as the client's own costs.",
            "",
        ]
    )
    print(text)
    if a.out:
        a.out.write_text(text)
    bad = sum(t.failed + t.wrong for t in tallies.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
