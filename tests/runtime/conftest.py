"""Fixtures of the data-plane tests: the shipped digits artefact, its held-out calibration
set, and worker, function and Envoy processes on 127.0.0.1 (started with the test bed's
harness).  The serving path needs no torch; tests that do import it themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serflow_runtime import artefact
from serflow_runtime.cli import BUNDLED
from serflow_runtime.engine import decide
from serflow_runtime.runtimes import ServedModel, open_model
from serflow_testbed.harness import envoy_argv, free_port, stop_process, wait_http

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def artefact_path() -> Path:
    assert (BUNDLED / artefact.MANIFEST).is_file(), "the digits artefact ships in the package"
    return BUNDLED


@pytest.fixture(scope="session")
def served(artefact_path: Path) -> ServedModel:
    # One thread: tests share 2 cores with server subprocesses.
    return open_model(artefact_path, "onnx", threads=1)


@dataclass
class Split:
    """The artefact's held-out calibration set, preprocessed as the servers do."""

    x_val: np.ndarray
    y_val: np.ndarray


@pytest.fixture(scope="session")
def digits(served: ServedModel) -> Split:
    return Split(*artefact.held_out(served.root, served.manifest))


def all_logits(model: ServedModel, x: np.ndarray) -> list[np.ndarray]:
    """Every exit's logits for every row (no row leaves early)."""
    out = []
    for i in range(1, model.k + 1):
        x, lg = model.run_stage(i, x)
        out.append(lg)
    return out


def reference(model: ServedModel, x: np.ndarray, tau: float | None) -> list[tuple[int, int]]:
    """(exit, class) per row from the whole network and the exit rule."""
    ex, pred = decide(all_logits(model, x), tau)
    return list(zip(ex.tolist(), pred.tolist(), strict=True))


@dataclass
class Proc:
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
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(method: str, url: str, body: bytes | None = None, **kw: Any) -> tuple[int, Any]:
    code, raw = http(method, url, body, **kw)
    return code, json.loads(raw) if raw else None


def wait_ready(p: Proc, path: str = "/readyz", timeout: float = 120.0) -> None:
    wait_http(p.url + path, timeout, p.proc, p.log)


def spawn(
    args: list[str],
    tmp: Path,
    name: str,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    port = port or free_port()
    log = tmp / f"{name}.log"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serflow_runtime.cli", *args, "--port", str(port), "--threads", "1"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=full_env,
    )
    return Proc(proc, port, log)


class Servers:
    """Server processes started by one test (or the session); ``stop`` ends them all."""

    def __init__(self, tmp: Path, artefact_path: Path) -> None:
        self.tmp, self.artefact = tmp, artefact_path
        self.procs: list[Proc] = []

    def function(self, name: str, parts: str, tau: float = 0.85) -> Proc:
        p = spawn(
            [
                "function",
                "--artefact",
                str(self.artefact),
                "--partitions",
                parts,
                "--tau",
                str(tau),
                "--name",
                name,
            ],
            self.tmp,
            name,
        )
        self.procs.append(p)
        return p

    def worker(
        self,
        name: str,
        cut: int,
        tail: list[str],
        tau: float = 0.85,
        batch: int = 16,
        epoch: float = 0.02,
        budget: int = 1_000_000,
        extra: tuple[str, ...] = (),
    ) -> Proc:
        args = [
            "worker",
            "--artefact",
            str(self.artefact),
            "--cut",
            str(cut),
            "--tau",
            str(tau),
            "--batch",
            str(batch),
            "--epoch",
            str(epoch),
            "--budget",
            str(budget),
            "--name",
            name,
        ]
        for t in tail:
            args += ["--tail", t]
        p = spawn([*args, *extra], self.tmp, name)
        self.procs.append(p)
        return p

    def envoy(self, pool: list[int], functions: list[int], pool_weight: int) -> Envoy:
        from serflow.k8s import envoy as render

        route_dir = self.tmp / f"routes-{len(self.procs)}"
        render.write_route_file(route_dir, pool_weight, "1")
        e = Envoy(route_dir, free_port(), free_port(), free_port())
        boot = render.bootstrap(
            [("127.0.0.1", p) for p in pool],
            [("127.0.0.1", p) for p in functions],
            str(route_dir),
            listen=("127.0.0.1", e.port),
            stats=("127.0.0.1", e.stats_port),
            admin_port=e.admin_port,
        )
        cfg = self.tmp / f"envoy-{e.port}.yaml"
        cfg.write_text(render.to_yaml(boot))
        log = self.tmp / f"envoy-{e.port}.log"
        proc = subprocess.Popen(
            envoy_argv(cfg, e.port), stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        e.proc = Proc(proc, e.port, log)
        self.procs.append(e.proc)
        stats = Proc(proc, e.stats_port, log)
        wait_ready(stats, "/stats/prometheus")
        return e

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in self.procs:
            stop_process(p.proc, 15)


@dataclass
class Envoy:
    route_dir: Path
    port: int
    stats_port: int
    admin_port: int
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_pool_weight(self, w: int, version: str) -> None:
        from serflow.k8s import envoy as render

        render.write_route_file(self.route_dir, w, version)

    def stat(self, name: str) -> float:
        """Sum of a Prometheus series (all label sets) from the stats listener."""
        code, raw = http("GET", f"http://127.0.0.1:{self.stats_port}/stats/prometheus")
        assert code == 200
        total = 0.0
        for line in raw.decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


def raw_bytes(x: np.ndarray) -> bytes:
    """One (3, 32, 32) normalised input as the worker's raw wire format."""
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


@dataclass
class Stack:
    """Function and worker processes shared by the server and Envoy tests."""

    whole: Proc  # partitions 1..K: the spill target, serves /infer
    stage_a: Proc  # 3..4
    stage_b: Proc  # 5..7
    fused: Proc  # 3..7
    chained_worker: Proc  # cut 2, tail 3-4 then 5-7
    fused_worker: Proc  # cut 2, tail 3-7
    tau: float
    cut: int


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, artefact_path: Path) -> Iterator[Stack]:
    c = Servers(tmp_path_factory.mktemp("stack"), artefact_path)
    tau = 0.85
    try:
        whole = c.function("fn-whole", "1-K", tau)
        a = c.function("fn-3-4", "3-4", tau)
        b = c.function("fn-5-7", "5-7", tau)
        fused = c.function("fn-3-7", "3-7", tau)
        chained = c.worker("w-chained", 2, [f"3-4={a.url}", f"5-7={b.url}"], tau)
        fw = c.worker("w-fused", 2, [f"3-7={fused.url}"], tau)
        for p in (whole, a, b, fused, chained, fw):
            wait_ready(p)
        yield Stack(whole, a, b, fused, chained, fw, tau, 2)
    finally:
        c.stop()


def post_many(
    url: str, bodies: list[bytes], concurrency: int = 16, ctype: str = "application/octet-stream"
) -> list[tuple[int, Any]]:
    """POST each body (bounded concurrency); returns (status, parsed JSON) in order."""
    from concurrent.futures import ThreadPoolExecutor

    def one(b: bytes) -> tuple[int, Any]:
        try:
            code, raw = http("POST", url, b, ctype=ctype)
        except OSError as e:
            return -1, {"error": repr(e)}
        try:
            return code, json.loads(raw)
        except ValueError:
            return code, {"raw": raw[:200].decode(errors="replace")}

    with ThreadPoolExecutor(concurrency) as ex:
        return list(ex.map(one, bodies))
