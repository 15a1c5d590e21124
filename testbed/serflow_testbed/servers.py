"""The data plane's servers as local processes on 127.0.0.1: a worker or function started
from ``serflow_runtime.cli`` (``spawn``), waited for (``wait_ready``), called
(``http``), and Envoy's route file and counters (``Envoy``).

Here and not in the tests' conftest because the plan and fault runs that use them are
shared by the tests and by ``bench/`` (which imports nothing from ``tests/``)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serflow_testbed.harness import free_port, stop_process, wait_http


@dataclass
class Proc:
    """One server process, the port it listens on and its log."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc, 15)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    ctype: str = "application/octet-stream",
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """(status, body) of one request; an HTTP error status is an answer, not an
    exception (the tests and the fault run count them)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(p: Proc, path: str = "/readyz", timeout: float = 120.0) -> None:
    """Wait until ``p`` answers ``path``; fail at once, with its log, if it exits first."""
    wait_http(p.url + path, timeout, p.proc, p.log)


def spawn(
    args: list[str],
    tmp: Path,
    name: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
    module: str = "serflow_runtime.cli",
) -> Proc:
    """``serflow_runtime.cli ARGS`` (or ``module``, which takes the same arguments) on
    ``port`` (a free one by default) with one thread (tests and benches share two cores
    with these processes), its log in ``tmp``."""
    port = port or free_port()
    log = tmp / f"{name}.log"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args, "--port", str(port), "--threads", "1"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=full_env,
    )
    return Proc(proc, port, log)


@dataclass
class Envoy:
    """A local Envoy: its watched route directory, its ports and (once started) its
    process."""

    route_dir: Path
    port: int
    stats_port: int
    admin_port: int
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_pool_weight(self, w: int, version: str, **kw: Any) -> None:
        """Swap the route (a rename in the watched directory, as the operator's); ``kw``
        as ``envoy.route_config``'s."""
        from serflow.k8s import envoy as render

        render.write_route_file(self.route_dir, w, version, **kw)

    def stat(self, name: str) -> float:
        """Sum of a Prometheus series (all label sets) from the stats listener."""
        code, raw = http("GET", f"http://127.0.0.1:{self.stats_port}/stats/prometheus")
        if code != 200:
            raise RuntimeError(f"Envoy's stats listener answered {code}")
        total = 0.0
        for line in raw.decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total
