"""Fixtures of the data-plane tests: the shipped digits artefact, its held-out calibration
set, and worker, function and Envoy processes on 127.0.0.1 (started with the test bed's
harness).  The serving path needs no torch; tests that do import it themselves.

The helpers ``bench/`` shares (server processes, Envoy, the model's reference answers,
the raw wire format) live in the test bed; the tests import them from here."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serflow_runtime import artefact
from serflow_runtime.cli import BUNDLED
from serflow_runtime.runtimes import ServedModel, open_model
from serflow_testbed.harness import envoy_argv, free_port, stop_process
from serflow_testbed.loadgen import raw_bytes
from serflow_testbed.reference import all_logits, reference
from serflow_testbed.servers import Envoy, Proc, http, spawn, wait_ready

__all__ = [
    "Envoy",
    "Proc",
    "Servers",
    "Split",
    "Stack",
    "all_logits",
    "http",
    "http_json",
    "post_many",
    "raw_bytes",
    "reference",
    "spawn",
    "wait_ready",
]


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


def http_json(method: str, url: str, body: bytes | None = None, **kw: Any) -> tuple[int, Any]:
    code, raw = http(method, url, body, **kw)
    return code, json.loads(raw) if raw else None


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
