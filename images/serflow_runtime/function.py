"""The function server (one Knative Service per stage, or one fused service).

* ``POST /run``: a frame (see ``codec``) of activations entering partition ``first``;
  runs partitions first..last and answers a frame with the exits and the survivors'
  activations after ``last`` (none when ``last`` is K).  A frame whose fingerprint is
  not this server's model is refused with 409.
* ``POST /infer``: one instance (the raw input, or a PNG for image models; see ``codec``); only on a function
  that starts at partition 1, which then runs the whole model (the spill path).
* The Open Inference Protocol (``oip_routes``): ``POST /v2/models/{name}/infer`` with n
  instances runs them through the whole model in one batch, like ``/infer``; only on a
  function that starts at partition 1 (404 elsewhere).
* ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (Prometheus text).

Knative passes the port in ``$PORT``.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from serflow_runtime import DEFAULT_PORT, codec, oip
from serflow_runtime.engine import StageResult, run_range
from serflow_runtime.metrics import Metrics
from serflow_runtime.oip_routes import OipRoutes
from serflow_runtime.runtimes import Runtime, open_model
from serflow_runtime.server import (
    CLIENT_TIMEOUT,
    error,
    error_middleware,
    metrics_view,
    read_body,
    run,
    server_timing,
)


@dataclass
class FunctionConfig:
    artefact: Path
    runtime: Runtime = Runtime.ONNX
    digest: str | None = None  # refuse an artefact without this digest
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    partitions: str = "1-K"  # A-B, see codec.parse_partitions
    batch: int = 100  # B: the most rows a frame carries
    client_timeout: float = CLIENT_TIMEOUT
    tau: float | None = 0.85
    threads: int = 0
    name: str = "function"
    model_name: str = ""  # the model's name under the Open Inference Protocol; "": the manifest's


def result_header(
    res: StageResult, fingerprint: str, next_partition: int, name: str
) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "partition": next_partition,
        "rows": res.survivor_rows,
        "exits": [[e.row, e.exit, e.cls, round(e.confidence, 6)] for e in res.exits],
        "ranOn": name,
    }


class FunctionApp:
    def __init__(self, cfg: FunctionConfig) -> None:
        self.cfg = cfg
        self.model = open_model(cfg.artefact, cfg.runtime, cfg.threads, cfg.digest)
        k = self.model.k
        man = self.model.manifest
        self.first, self.last = codec.parse_partitions(cfg.partitions, k)
        if cfg.batch < 1:
            raise ValueError(f"batch must be at least 1, got {cfg.batch}")
        # A frame never expands past B rows of the activations entering `first` (stage 1:
        # the model's input, of its own dtype).
        row = man.input_shape_of(self.first)
        self.frame_dtype = man.input.dtype if self.first == 1 else "float32"
        size = man.input.numpy_dtype.itemsize if self.first == 1 else 4
        self.max_frame_raw = codec.frame_raw_limit(row, cfg.batch, size)
        self.max_frame_body = codec.frame_body_limit(row, cfg.batch, size)
        self.max_header = codec.header_limit(cfg.batch)
        self.max_input_body = codec.input_body_limit(man.input)
        self.token = self.model.token
        self.metrics = Metrics("function")
        # One compute thread: the runtime parallelises inside an op; two batches would contend.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fn-compute")
        self.ready = True
        spec = oip.ModelInput(cfg.model_name or man.name, man.input, cfg.batch)
        self.oip = OipRoutes(spec, self._not_ready, self.classify, cfg.client_timeout)

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[server_timing(self.metrics), error_middleware(self.metrics)],
            client_max_size=max(self.max_frame_body, self.max_input_body, self.oip.max_body),
        )
        app.router.add_post("/run", self.run)
        app.router.add_post("/infer", self.infer)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", metrics_view(self.metrics))
        self.oip.add_to(app)
        return app

    async def _compute(self, x: np.ndarray, first: int, rows: list[int] | None) -> StageResult:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        res = await loop.run_in_executor(
            self.pool, run_range, self.model, x, first, self.last, self.cfg.tau, rows
        )
        self.metrics.observe("serflow_batch_seconds", time.perf_counter() - t0)
        self.metrics.observe("serflow_batch_size", float(x.shape[0]))
        for e in res.exits:
            self.metrics.inc("serflow_exits_total", exit=e.exit)
        return res

    async def run(self, request: web.Request) -> web.Response:
        body = await read_body(request, self.max_frame_body, self.cfg.client_timeout)
        header, _ = codec.frame_header(body, self.max_header)
        if header.get("fingerprint") != self.token:
            return error(
                409,
                "fingerprint mismatch: frame is for another model",
                expected=self.token,
                got=header.get("fingerprint"),
            )
        if header.get("partition") != self.first:
            raise codec.BadRequest(
                f"frame enters partition {header.get('partition')!r}, "
                f"this function runs {self.first}..{self.last}",
                status=409,
            )
        _, x = codec.decode_frame(
            body,
            self.max_frame_raw,
            self.model.manifest.input_shape_of(self.first),
            self.max_header,
            self.frame_dtype,
        )
        rows = header.get("rows")
        if (
            not isinstance(rows, list)
            or len(rows) != x.shape[0]
            or not all(isinstance(r, int) for r in rows)
        ):
            raise codec.BadRequest("frame rows must list one integer id per tensor row")
        res = await self._compute(x, self.first, rows)
        hdr = result_header(res, self.token, self.last + 1, self.cfg.name)
        return web.Response(body=codec.encode_frame(hdr, res.hidden), content_type=codec.FRAME_CT)

    async def infer(self, request: web.Request) -> web.Response:
        if self.first != 1:
            raise codec.BadRequest(
                f"this function runs partitions {self.first}..{self.last}; requests need 1..K",
                status=404,
            )
        body = await read_body(request, self.max_input_body, self.cfg.client_timeout)
        x = codec.decode_input(body, request.content_type, self.model.manifest.input)
        return web.json_response((await self.classify(x))[0])

    async def classify(self, x: np.ndarray) -> list[dict[str, Any]]:
        """The whole model on ``x``'s n rows in one run (the spill path): one ``/infer``
        answer per row, in order; each row may exit at another stage."""
        if self.first != 1:
            raise codec.BadRequest(
                f"this function runs partitions {self.first}..{self.last}; requests need 1..K",
                status=404,
            )
        res = await self._compute(x, 1, None)
        if len(res.exits) != x.shape[0]:  # a function ending before K has no answer
            raise codec.BadRequest("this function does not end at the final classifier", 404)
        on = f"function:{self.cfg.name}"
        return [
            {
                "class": e.cls,
                "exit": e.exit,
                "confidence": e.confidence,
                "ran": [{"partitions": [1, e.exit], "on": on}],
                "fingerprint": self.token,
            }
            for e in sorted(res.exits, key=lambda e: e.row)
        ]

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def _not_ready(self) -> str | None:
        return None if self.ready else "draining"

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return error(503, "draining")
        return web.json_response({"ready": True, "partitions": [self.first, self.last]})

    async def drain(self) -> None:
        self.ready = False
        self.pool.shutdown(wait=True)


def main(cfg: FunctionConfig) -> int:
    return run(lambda: FunctionApp(cfg), cfg.host, cfg.port, cfg.client_timeout)
