"""Pieces shared by the worker and function servers (aiohttp)."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from serflow_runtime.codec import BadRequest
from serflow_runtime.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("serflow_runtime")

CLIENT_TIMEOUT = 30.0
"""Seconds a client may stay idle between requests, or take to send a request's headers
or its body; then its connection is closed (slow or stalled clients hold no slot)."""
DISCONNECTED = 499
"""The status counted for a request whose client went away before its answer."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, problem: str, **extra: Any) -> web.Response:
    return web.json_response({"error": problem, **extra}, status=status)


def metrics_view(metrics: Metrics) -> Handler:
    """``GET /metrics``: the server's metrics in the Prometheus text format."""

    async def view(request: web.Request) -> web.StreamResponse:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    return view


def error_middleware(metrics: Metrics) -> Any:
    """Client errors become JSON 4xx answers; they are counted, never logged as crashes."""

    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except BadRequest as e:
            metrics.inc("serflow_bad_requests_total")
            resp = error(e.status, e.problem)
            if e.status == 408:  # a stalled body: close rather than linger over its rest
                resp.force_close()
        except web.HTTPException as e:
            if e.status >= 400:
                if e.status < 500:
                    metrics.inc("serflow_bad_requests_total")
                resp = error(e.status, e.reason)
            else:
                raise
        except asyncio.CancelledError:
            raise
        except (ConnectionError, HttpProcessingError) as e:
            if not _gone(request):
                raise
            log.info("client disconnected during %s %s: %s", request.method, request.path, e)
            resp = error(DISCONNECTED, "client disconnected")
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            resp = error(500, "internal error")
        if served(request.path):
            gone = resp.status == DISCONNECTED or _gone(request)
            if gone and resp.status != DISCONNECTED:
                log.info(
                    "client disconnected before the answer to %s %s", request.method, request.path
                )
            metrics.inc("serflow_requests_total", code=DISCONNECTED if gone else resp.status)
        return resp

    return mw


def _gone(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()


SERVED_PATHS = ("/infer", "/run")
"""The serving paths of fixed name; ``served`` adds the Open Inference Protocol's."""


def served(path: str) -> bool:
    """A serving request: ``/infer``, ``/run`` or the Open Inference Protocol's
    ``/v2/models/{name}/infer``, which is billed (Server-Timing) and counted alike."""
    return path in SERVED_PATHS or (path.startswith("/v2/models/") and path.endswith("/infer"))


def server_timing(metrics: Metrics) -> Any:
    """Adds ``Server-Timing: app;dur=<ms>`` to answers of the serving paths: the time this
    process spent on the request, from its headers to its answer.  It is what a FaaS
    bills (the code's own duration), as opposed to the time a caller waited, which
    includes the network and the caller's own queueing.  The same seconds go to
    ``serflow_request_seconds``, so a pod's billed time can be read from its metrics
    where no caller saw its answer (a pool worker's tail call)."""

    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        resp = await handler(request)
        if served(request.path):
            took = time.perf_counter() - t0
            resp.headers["Server-Timing"] = f"app;dur={took * 1e3:.3f}"
            metrics.observe("serflow_request_seconds", took)
        return resp

    return mw


def server_timing_seconds(header: str | None, metric: str = "app") -> float | None:
    """Seconds of ``metric`` in a ``Server-Timing`` header (``app;dur=3.1, db;dur=1``:
    milliseconds), None when absent or malformed."""
    for entry in (header or "").split(","):
        name, *params = (x.strip() for x in entry.split(";"))
        if name != metric:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "dur":
                try:
                    ms = float(value.strip().strip('"'))
                except ValueError:
                    return None
                return ms / 1e3 if math.isfinite(ms) and ms >= 0 else None
    return None


async def read_body(
    request: web.Request, limit: int, timeout: float = CLIENT_TIMEOUT, empty: bool = False
) -> bytes:
    """Read at most ``limit`` bytes within ``timeout`` seconds; refuse a larger body without
    buffering it, and a slower one with 408 (the connection is closed). ``empty``: an
    empty body is a value (a gRPC message with no field set), not a refusal."""
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(f"body of {request.content_length} bytes exceeds {limit}", status=413)
    # StreamReader.read(n) returns what has arrived so far, not n bytes: loop to EOF.
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(min(1 << 20, limit + 1 - len(body))):
                body += chunk
                if len(body) > limit:
                    raise BadRequest(f"body exceeds {limit} bytes", status=413)
    except TimeoutError:
        raise BadRequest(f"body not received within {timeout:g} s", status=408) from None
    if not body and not empty:
        raise BadRequest("empty body")
    return bytes(body)


async def serve(
    app: web.Application,
    host: str,
    port: int,
    on_term: Callable[[], Awaitable[None]] | None = None,
    client_timeout: float = CLIENT_TIMEOUT,
) -> None:
    """Run until SIGTERM/SIGINT; ``on_term`` drains before the listener closes.

    aiohttp closes a connection that has not completed a request's headers within
    ``client_timeout`` of its start or of its previous answer (its keep-alive timeout
    runs from the connection's start); ``read_body`` bounds the body the same way."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=client_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("listening on %s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("terminating: draining")
    if on_term is not None:
        await on_term()
    await runner.cleanup()
    log.info("stopped")


class Served(Protocol):
    """A worker or function application: its routes and its drain on SIGTERM."""

    def app(self) -> web.Application: ...

    async def drain(self) -> None: ...


def run(build: Callable[[], Served], host: str, port: int, client_timeout: float) -> int:
    """Build a server and serve it until SIGTERM; bad arguments end in one line, exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        served = build()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    asyncio.run(serve(served.app(), host, port, served.drain, client_timeout))
    return 0
