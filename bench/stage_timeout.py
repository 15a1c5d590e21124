"""A stuck tail: how long a pool worker holds its survivors before answering them 503
(which Envoy retries on the functions), per ``--stage-timeout``.

    .venv/bin/python bench/stage_timeout.py --out bench/results/stage-timeout.md

A local socket accepts the worker's stage calls and never answers (a Knative function
that cannot start: its activator holds the call). For each timeout, a worker (the
shipped digits artefact, cut 2, B = 16, D = 0.02 s, tau 0.85, one thread, a budget
that sheds nothing) answers the same held-out images, 16 at a time; reported are the
seconds from sending each request to its answer, for the images that exit in the
worker's head (answered 200 without the tail) and for the survivors (503 once the stage
call times out). The tests check that the timeout applies
(tests/runtime/test_servers.py); this measures what it costs.
Everything runs on 127.0.0.1; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from serflow_runtime import artefact
from serflow_runtime.cli import BUNDLED
from serflow_testbed.harness import Processes, free_port, stuck_server, wait_http

TAU = 0.85
CUT = 2
BATCH = 16
CLIENTS = 16
HTTP_TIMEOUT = 120.0
"""Seconds one request may take before the bench gives up (above every timeout run)."""


def post(url: str, body: bytes) -> tuple[int, float]:
    """(status, seconds to the answer) of one image; a 503 other than the stage's failure
    (say, shedding) is reported as 0."""
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/octet-stream"}
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code if b"offload failed" in e.read() else 0
    return code, time.perf_counter() - t0


def run(tmp: Path, tail: str, timeout: float, bodies: Sequence[bytes]) -> list[tuple[int, float]]:
    """Start a worker with ``--stage-timeout timeout``, send ``bodies``, stop it."""
    procs = Processes()
    port = free_port()
    log = tmp / f"worker-{timeout:g}.log"
    args = [
        sys.executable, "-m", "serflow_runtime.cli", "worker", "--artefact", str(BUNDLED),
        "--cut", str(CUT), "--tau", str(TAU), "--batch", str(BATCH), "--epoch", "0.02",
        "--budget", "1000000", "--tail", f"3-7={tail}", "--stage-timeout", f"{timeout:g}", "--name", "w-bench",
        "--host", "127.0.0.1", "--port", str(port), "--threads", "1",
    ]  # fmt: skip
    try:
        p = procs.start("worker", args, log, {"OMP_NUM_THREADS": "1"})
        wait_http(f"http://127.0.0.1:{port}/readyz", 120.0, p, log)
        url = f"http://127.0.0.1:{port}/infer"
        with ThreadPoolExecutor(CLIENTS) as ex:
            return list(ex.map(lambda b: post(url, b), bodies))
    finally:
        procs.stop()


def row(label: str, timeout: float, xs: Sequence[float], beyond: bool) -> str:
    """One table row; ``beyond``: with the median's excess over the timeout."""
    if not xs:
        return f"| {timeout:g} | {label} | 0 | | | | |"
    med = statistics.median(xs)
    excess = f"{med - timeout:+.2f}" if beyond else ""
    return (
        f"| {timeout:g} | {label} | {len(xs)} | {min(xs):.2f} | {med:.2f} | {max(xs):.2f} "
        f"| {excess} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeouts", default="1,2,4", help="comma-separated --stage-timeout values, s")
    ap.add_argument("--images", type=int, default=128, help="held-out images sent per timeout")
    ap.add_argument("--out", type=Path, help="write the Markdown report here")
    a = ap.parse_args()
    timeouts = [float(t) for t in a.timeouts.split(",")]
    if a.images < 1 or any(t <= 0 or t >= HTTP_TIMEOUT for t in timeouts):
        print(f"error: --images >= 1 and timeouts in (0, {HTTP_TIMEOUT:g}) s", file=sys.stderr)
        return 2
    x, _ = artefact.held_out(BUNDLED, artefact.load(BUNDLED))
    bodies = [
        np.ascontiguousarray(x[i % x.shape[0]], dtype="<f4").tobytes() for i in range(a.images)
    ]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="serflow-stage-timeout-") as tmp, stuck_server() as tail:
        for timeout in timeouts:
            got = run(Path(tmp), tail.url, timeout, bodies)
            other = sorted({c for c, _ in got} - {200, 503})
            if other:
                print(
                    f"error: answers {other} at {timeout:g} s (0: a 503 not the stage's)",
                    file=sys.stderr,
                )
                return 1
            rows.append(row("head exits (200)", timeout, [s for c, s in got if c == 200], False))
            rows.append(row("survivors (503)", timeout, [s for c, s in got if c == 503], True))
            print(rows[-2], rows[-1], sep="\n")
    cmd = f".venv/bin/python bench/stage_timeout.py --timeouts {a.timeouts} --images {a.images}"
    if a.out:
        cmd += f" --out {a.out}"
    text = "\n".join(
        [
            "# A stuck tail: seconds to answer, per --stage-timeout",
            "",
            f"Command: `{cmd}`",
            "",
            f"Date: {started}; the bench took {time.monotonic() - t0:.0f} s. Machine: "
            f"{os.cpu_count()} cores, load average (1, 5, 15 min) at the end "
            + ", ".join(f"{v:.2f}" for v in os.getloadavg())
            + ".",
            "",
            f"A worker (digits artefact, cut {CUT}, B = {BATCH}, tau {TAU}, shedding nothing) "
            f"whose tail accepts and never answers; {a.images} held-out images, {CLIENTS} at a "
            "time. Seconds from "
            "sending a request to its answer; `median - timeout` is what a survivor waits "
            "beyond the timeout (batching, the head, the 503).",
            "",
            "| --stage-timeout, s | answers | n | min | median | max | median - timeout |",
            "|---:|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    if a.out:
        a.out.write_text(text)
        print(f"wrote {a.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
