"""The worker server (pool pods): batches requests, runs partitions 1..cut, offloads the rest.

* ``POST /infer``: one instance (the raw input, or a PNG for image models; see ``codec``).  Requests are batched
  (B requests, or the oldest has waited one epoch D).  The worker answers early exits
  itself and sends the survivors' activations, LZ4-compressed in a frame carrying the
  model fingerprint, to the tail: one call per batch per stage.  With a chained tail it
  calls each stage in turn with the previous stage's survivors, so no function waits
  on another.  A stage call that fails to connect or is reset is made once more; a
  stage that still fails answers its survivors 503, as does a request beyond the
  ``budget`` admitted per epoch: Envoy retries both on the functions.  A stage call
  has ``stage_timeout`` seconds (the operator sets it below the router's own timeout,
  so that a stuck tail becomes a 503 that Envoy retries on the functions rather than a
  504 that it does not).  The answer::

      {"class": 3, "exit": 2, "confidence": 0.97, "fingerprint": "...",
       "ran": [{"partitions": [1, 2], "on": "worker:NAME"},
               {"partitions": [3, 3], "on": "function:NAME"}]}

* The Open Inference Protocol (``oip_routes``): ``POST /v2/models/{name}/infer`` with n
  instances queues each like one ``/infer`` request (each may exit at another stage),
  and answers once all n have their answer; a shed or failed instance makes the whole
  request a 503, retried by Envoy on the functions.
* ``GET /healthz``, ``GET /readyz`` (503 while draining and, with ``warm_tail``, until
  each tail stage has answered once: calling a Knative function at zero makes Knative
  start a pod, so a pool pod takes traffic only once its tail can serve it), ``GET
  /metrics``.
* SIGTERM: stop admitting (503), flush the queue at once, finish in-flight batches, exit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from prometheus_client import Gauge

from serflow_runtime import DEFAULT_PORT, KNATIVE_ROUTING_HEADERS, REVISION_SCHEME, codec, oip
from serflow_runtime.engine import run_range
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

log = logging.getLogger("serflow_runtime.worker")


_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass
class Stage:
    first: int
    last: int
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    """Sent with every call: Knative's routing headers for a Revision."""

    @classmethod
    def parse(cls, spec: str, k: int) -> Stage:
        """``A-B=URL``: partitions A..B (B may be K, see ``codec.parse_partitions``) at the
        base URL; the worker posts to URL/run.  ``A-B=knative-revision://NAMESPACE/NAME``:
        a Knative Revision through its Kubernetes Service (Knative's activator while it is
        at zero), with the routing headers an ingress would add."""
        rng, sep, url = spec.partition("=")
        shape = f"A-B=http://HOST[:PORT] or A-B={REVISION_SCHEME}://NAMESPACE/REVISION"
        if not sep:
            raise ValueError(f"tail stage {spec!r} must look like {shape}")
        first, last = codec.parse_partitions(rng, k)
        if url.startswith(f"{REVISION_SCHEME}://"):
            ns, slash, rev = url.removeprefix(f"{REVISION_SCHEME}://").partition("/")
            if not (slash and _LABEL.match(ns) and _LABEL.match(rev)):
                raise ValueError(f"tail stage {spec!r} must look like {shape}")
            revision_header, namespace_header = KNATIVE_ROUTING_HEADERS
            return cls(first, last, f"http://{rev}.{ns}.svc.cluster.local",
                       {revision_header: rev, namespace_header: ns})  # fmt: skip
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"tail stage {spec!r} must look like {shape}")
        return cls(first, last, url.rstrip("/"))


@dataclass
class WorkerConfig:
    artefact: Path
    runtime: Runtime = Runtime.ONNX
    digest: str | None = None  # refuse an artefact without this digest
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    cut: int = 0  # last partition run here; 0: all of them
    tau: float | None = 0.85
    batch: int = 100
    epoch: float = 6.0
    budget: int = 0  # admitted per epoch; 0: one batch (B)
    tail: list[str] = field(default_factory=list)
    threads: int = 0
    name: str = "worker"
    drain_timeout: float = 30.0
    stage_timeout: float = 60.0
    warm_tail: bool = False  # not ready until each tail stage has answered once
    client_timeout: float = CLIENT_TIMEOUT
    model_name: str = ""  # the model's name under the Open Inference Protocol; "": the manifest's


@dataclass
class _Item:
    x: np.ndarray
    fut: asyncio.Future[dict[str, Any]]
    t: float


class WorkerApp:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.model = open_model(cfg.artefact, cfg.runtime, cfg.threads, cfg.digest)
        k = self.model.k
        self.k = k
        self.cut = cfg.cut or k
        self.stages = [Stage.parse(s, k) for s in cfg.tail]
        if not 1 <= self.cut <= k:
            raise ValueError(f"cut {cfg.cut} is outside 1..{k} (K={k}; 0 runs all of them)")
        nxt = self.cut + 1
        for s in self.stages:
            if s.first != nxt:
                raise ValueError(f"tail stages must cover {self.cut + 1}..{k} in order")
            nxt = s.last + 1
        if nxt != k + 1:
            raise ValueError(f"tail stages must cover {self.cut + 1}..{k} (end at {nxt - 1})")
        if cfg.batch < 1:
            raise ValueError(f"batch must be at least 1, got {cfg.batch}")
        self.token = self.model.token
        self.max_body = codec.input_body_limit(self.model.manifest.input)
        self.budget = cfg.budget or cfg.batch
        self.metrics = Metrics("worker")
        queued = Gauge("serflow_queued_requests", "Requests waiting for a batch.", registry=None)
        queued.set_function(lambda: len(self.queue))
        self.metrics.registry.register(queued)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-compute")
        self.queue: list[_Item] = []
        self.wake = asyncio.Event()
        self.draining = False
        self.inflight: set[asyncio.Task[None]] = set()
        self.epoch_start = -math.inf
        self.admitted = 0
        self.session: aiohttp.ClientSession | None = None
        self.batcher: asyncio.Task[None] | None = None
        self.warmer: asyncio.Task[None] | None = None
        self.tail_warm = not (cfg.warm_tail and self.stages)
        self.oip = OipRoutes(
            oip.ModelInput(
                cfg.model_name or self.model.manifest.name,
                self.model.manifest.input,
                cfg.batch,
            ),
            self._not_ready,
            self.classify,
            cfg.client_timeout,
        )

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[server_timing(self.metrics), error_middleware(self.metrics)],
            client_max_size=max(self.max_body, self.oip.max_body),
        )
        app.router.add_post("/infer", self.infer)
        self.oip.add_to(app)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", metrics_view(self.metrics))
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.stage_timeout)
        )
        self.batcher = asyncio.create_task(self._batch_loop())
        if not self.tail_warm:
            self.warmer = asyncio.create_task(self._warm_tail())

    async def _stop(self, app: web.Application) -> None:
        for task in (self.batcher, self.warmer):
            if task:
                task.cancel()
        if self.session:
            await self.session.close()
        self.pool.shutdown(wait=False)

    # admission ---------------------------------------------------------------
    def _admit(self, n: int = 1) -> bool:
        """Admit ``n`` requests (instances) into this epoch's budget, all or none."""
        # An epoch starts with the first request after the previous one ended.
        now = time.monotonic()
        if now >= self.epoch_start + self.cfg.epoch:
            self.epoch_start, self.admitted = now, 0
        if self.admitted + n > self.budget:
            return False
        self.admitted += n
        return True

    async def infer(self, request: web.Request) -> web.Response:
        if self.draining:
            return error(503, "draining")
        body = await read_body(request, self.max_body, self.cfg.client_timeout)
        x = codec.decode_input(body, request.content_type, self.model.manifest.input)
        out = await self.classify(x)
        return out if isinstance(out, web.Response) else web.json_response(out[0])

    async def classify(self, x: np.ndarray) -> list[dict[str, Any]] | web.Response:
        """Each of ``x``'s n rows joins the batcher as one request (``/infer``'s, or one
        instance of an Open Inference Protocol request): one answer per row, in order, or
        a 503 (draining, the epoch's budget, a failed tail) that Envoy retries, whole, on
        the functions."""
        if self.draining:
            return error(503, "draining")
        if not self._admit(x.shape[0]):
            self.metrics.inc("serflow_sheds_total")
            return error(503, "pool batch budget for this epoch is full")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futs: list[asyncio.Future[dict[str, Any]]] = []
        for i in range(x.shape[0]):
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            self.queue.append(_Item(x[i : i + 1], fut, now))
            futs.append(fut)
        self.wake.set()
        outs = list(await asyncio.gather(*futs))
        for out in outs:
            if "error" in out:
                return error(int(out.get("status", 502)), str(out["error"]))
        return outs

    # batching ----------------------------------------------------------------
    async def _batch_loop(self) -> None:
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            deadline = self.queue[0].t + self.cfg.epoch
            while len(self.queue) < self.cfg.batch and not self.draining:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), left)
                except TimeoutError:
                    break
            items, self.queue = self.queue[: self.cfg.batch], self.queue[self.cfg.batch :]
            task = asyncio.create_task(self._run_batch(items))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    async def _run_batch(self, items: list[_Item]) -> None:
        try:
            await self._process(items)
        except Exception as e:  # a failed stage fails its requests, not the server
            log.warning("batch failed: %s", e)
            # 503: Envoy retries these requests on the functions, which run the whole model.
            for it in items:
                if not it.fut.done():
                    it.fut.set_result({"error": f"offload failed: {e}", "status": 503})

    async def _process(self, items: list[_Item]) -> None:
        x = np.concatenate([it.x for it in items])
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        res = await loop.run_in_executor(
            self.pool, run_range, self.model, x, 1, self.cut, self.cfg.tau, None
        )
        self.metrics.observe("serflow_batch_seconds", time.perf_counter() - t0)
        self.metrics.observe("serflow_batch_size", float(len(items)))
        here = f"worker:{self.cfg.name}"
        for e in res.exits:
            self._answer(items[e.row], e.exit, e.cls, e.confidence, [([1, e.exit], here)])
        rows, hidden = res.survivor_rows, res.hidden
        ran: list[tuple[list[int], str]] = [([1, self.cut], here)]
        for stage in self.stages:
            if not rows or hidden is None:
                break
            self.metrics.inc("serflow_offloads_total", stage=stage.first)
            self.metrics.inc("serflow_offloaded_requests_total", len(rows))
            header, hidden = await self._call_stage(stage, rows, hidden)
            where = f"function:{header.get('ranOn', stage.url)}"
            for row, ex, cls, conf in header["exits"]:
                self._answer(items[row], ex, cls, conf, [*ran, ([stage.first, ex], where)])
            rows = header["rows"]
            ran = [*ran, ([stage.first, stage.last], where)]
        if rows:
            raise RuntimeError(f"{len(rows)} requests left unanswered after the last stage")

    async def _call_stage(
        self, stage: Stage, rows: list[int], hidden: np.ndarray
    ) -> tuple[dict[str, Any], np.ndarray]:
        assert self.session is not None
        body = codec.encode_frame(
            {"fingerprint": self.token, "partition": stage.first, "rows": rows}, hidden
        )
        for attempt in (1, 2):
            try:
                async with self.session.post(
                    f"{stage.url}/run",
                    data=body,
                    headers={**stage.headers, "Content-Type": codec.FRAME_CT},
                ) as r:
                    payload = await r.read()
                    status = r.status
                break
            except aiohttp.ClientConnectionError as e:
                # A stage is idempotent: after a connect failure or a reset (its pod died),
                # call once more; the Service routes the retry to a live pod.
                if attempt == 2:
                    raise RuntimeError(f"stage {stage.first}-{stage.last}: {e}") from e
                log.info("stage %d-%d: %s; calling once more", stage.first, stage.last, e)
        if status != 200:
            raise RuntimeError(
                f"stage {stage.first}-{stage.last} answered {status}: {payload[:200]!r}"
            )
        # The answer holds at most the rows sent, with the activations after stage.last.
        expect = None if stage.last == self.k else self.model.manifest.cut_shape(stage.last)
        max_raw = codec.frame_raw_limit(expect or (), len(rows))
        header, out = codec.decode_frame(payload, max_raw, expect, codec.header_limit(len(rows)))
        if header.get("fingerprint") != self.token:
            raise RuntimeError("stage answered with another model's fingerprint")
        return header, out

    def _answer(
        self, item: _Item, ex: int, cls: int, conf: float, ran: list[tuple[list[int], str]]
    ) -> None:
        self.metrics.inc("serflow_exits_total", exit=ex)
        if not item.fut.done():
            item.fut.set_result(
                {
                    "class": int(cls),
                    "exit": int(ex),
                    "confidence": float(conf),
                    "ran": [{"partitions": p, "on": on} for p, on in ran],
                    "fingerprint": self.token,
                }
            )

    async def _warm_tail(self, pause: float = 1.0) -> None:
        """Call each tail stage's ``/readyz`` until it answers 200, then report ready.

        A Knative function at zero is reached through Knative's activator, which holds
        the call and has Knative start a pod: the tail is then up before the router sends
        this pod any request, instead of a whole batch's survivors waiting for a cold
        start (or for room on a node) after it."""
        assert self.session is not None
        for stage in self.stages:
            while True:
                try:
                    async with self.session.get(
                        f"{stage.url}/readyz", headers=stage.headers
                    ) as r:
                        await r.read()
                        if r.status == 200:
                            break
                        problem = f"answered {r.status}"
                except (aiohttp.ClientError, TimeoutError) as e:
                    problem = str(e) or type(e).__name__
                log.info("warming stage %d-%d: %s", stage.first, stage.last, problem)
                await asyncio.sleep(pause)
            log.info("stage %d-%d answered: warm", stage.first, stage.last)
        self.tail_warm = True

    # probes ------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def _not_ready(self) -> str | None:
        if self.draining:
            return "draining"
        if not self.tail_warm:
            return "warming the tail"
        return None

    async def readyz(self, request: web.Request) -> web.Response:
        why = self._not_ready()
        if why is not None:
            return error(503, why)
        return web.json_response({"ready": True, "cut": self.cut})

    async def drain(self) -> None:
        self.draining = True
        self.wake.set()  # flush a partial batch now rather than after the epoch
        end = time.monotonic() + self.cfg.drain_timeout
        while (self.queue or self.inflight) and time.monotonic() < end:
            await asyncio.sleep(0.01)


def main(cfg: WorkerConfig) -> int:
    return run(lambda: WorkerApp(cfg), cfg.host, cfg.port, cfg.client_timeout)
