"""The route server: each router's route as the operator last applied it to the router's
ConfigMap, for the route-sync sidecar in the router's pods (``serflow.routesync``).

The kubelet refreshes a mounted ConfigMap only on its periodic sync (about a minute), so
the sidecar asks here instead: ``GET /routes/NAMESPACE/NAME`` answers the route file's
text with its version as ETag; with ``If-None-Match`` and ``?wait=S`` it holds the request
until the route changes or ``S`` seconds pass (a long poll: a new route reaches Envoy at
once, and a thousand routers cost no thread each). 404: no route known here (another
replica works, or the object's epochs do not run here); the sidecar then keeps its route
and follows the mounted ConfigMap.

It serves what this process wrote, and only while the object's epochs run here: the
object's daemon opens its entry when it starts and forgets it when it stops (the object
deleted, or this replica paused by peering: a replica that does not work serves nothing
stale, not even from an epoch still under way when it stopped); in between, the epochs
publish the route they apply (``epoch.apply_children``) and the one they read back from
the ConfigMap (after a restart or a take-over). Its own asyncio loop in its own thread: kopf's loop is never held by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, replace

from aiohttp import web

from serflow import wire
from serflow.inference import InferenceSpec

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name) of a SerflowInference."""

MAX_WAIT_S = 30.0
"""Seconds one request may be held at most, whatever it asks."""
MAX_WAITING = 20_000
"""Requests held at once at most (two router pods of 10,000 objects); beyond, a request is
answered at once."""
STOP_S = 1.0
"""Seconds a stopping server lets held requests finish before it cuts them."""
_NAME = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"


def etag_of(text: str) -> str:
    """The version of a route's text."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class RouteStore:
    """The routes by object, written from the epochs' threads, read by the server's loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[Key, tuple[str, str]] = {}
        self._open: set[Key] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[Key, set[asyncio.Future[None]]] = {}
        self.held = 0
        """Requests held now (the server's loop only)."""

    def open(self, namespace: str, name: str) -> None:
        """The object's epochs run here: its routes are published from now on."""
        with self._lock:
            self._open.add((namespace, name))

    def publish(self, namespace: str, name: str, text: str) -> None:
        """``text`` is the object's route now; held requests for it are answered. Nothing
        happens unless the object is open."""
        key, tag = (namespace, name), etag_of(text)
        with self._lock:
            if key not in self._open or self._routes.get(key, ("", ""))[0] == tag:
                return
            self._routes[key] = (tag, text)
            loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._wake, key)

    def forget(self, namespace: str, name: str) -> None:
        """No route is served for the object any more (held requests get 404)."""
        key = (namespace, name)
        with self._lock:
            self._open.discard(key)
            gone = self._routes.pop(key, None)
            loop = self._loop
        if gone is not None and loop is not None:
            loop.call_soon_threadsafe(self._wake, key)

    def get(self, namespace: str, name: str) -> tuple[str, str] | None:
        """(etag, text) of the object's route, None when none is known."""
        with self._lock:
            return self._routes.get((namespace, name))

    def _wake(self, key: Key) -> None:
        for fut in self._waiting.pop(key, set()):
            if not fut.done():
                fut.set_result(None)

    async def changed(self, key: Key, tag: str, timeout: float) -> tuple[str, str] | None:
        """Wait (on the server's loop) until the route of ``key`` is no longer ``tag`` or
        ``timeout`` seconds pass; then the route as it is."""
        now = self.get(*key)
        if now is None or now[0] != tag or timeout <= 0:
            return now
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, set()).add(fut)
        self.held += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout)
        finally:
            self.held -= 1
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.discard(fut)
                if not waiting:
                    del self._waiting[key]
        return self.get(*key)


ROUTES = RouteStore()
"""The operator's routes (one process, one store)."""


def _answer(route: tuple[str, str] | None, tag: str) -> web.Response:
    if route is None:
        return web.Response(status=404, text="no route known here\n")
    headers = {"ETag": f'"{route[0]}"', "Cache-Control": "no-store"}
    if route[0] == tag:
        return web.Response(status=304, headers=headers)
    return web.Response(text=route[1], content_type="application/json", headers=headers)


def make_app(store: RouteStore) -> web.Application:
    async def one(request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        try:
            wait = min(max(float(request.query.get("wait", "0")), 0.0), MAX_WAIT_S)
        except ValueError:
            return web.Response(status=400, text="wait: expected seconds\n")
        tag = request.headers.get("If-None-Match", "").removeprefix("W/").strip('"')
        route = store.get(*key)
        if route is not None and route[0] == tag and wait > 0 and store.held < MAX_WAITING:
            route = await store.changed(key, tag, wait)
        return _answer(route, tag)

    app = web.Application(client_max_size=1024)
    app.router.add_get(
        f"{wire.ROUTES_PATH}/{{namespace:{_NAME}}}/{{name:{_NAME}}}", one, allow_head=False
    )
    return app


@dataclass
class RouteServer:
    """The server running in its thread; ``port`` is the one bound (0 asks for any)."""

    store: RouteStore
    host: str
    port: int
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> RouteServer:
        started = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            # Stopping ends the held requests within a second (their clients ask again).
            runner = web.AppRunner(make_app(self.store), access_log=None, handle_signals=False,
                                   shutdown_timeout=STOP_S)  # fmt: skip
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, self.host, self.port, backlog=1024)
                loop.run_until_complete(site.start())
                self.port = int(runner.addresses[0][1])
            except BaseException as e:  # a port in use: say so to the starter
                failed.append(e)
                started.set()
                loop.close()
                return
            self._loop = loop
            with self.store._lock:
                self.store._loop = loop
            started.set()
            try:
                loop.run_forever()
            finally:
                with self.store._lock:
                    if self.store._loop is loop:
                        self.store._loop = None
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="route-server", daemon=True)
        self._thread.start()
        started.wait()
        if failed:
            raise failed[0]
        log.info("route server on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving (a second call does nothing)."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def serve() -> RouteServer | None:
    """Serve ``ROUTES`` on SERFLOW_ROUTES_ADDR:SERFLOW_ROUTES_PORT (default 127.0.0.1; no
    port, or 0: not served, and the routers follow their ConfigMap alone)."""
    port = int(os.environ.get("SERFLOW_ROUTES_PORT") or "0")
    if not port:
        return None
    host = os.environ.get("SERFLOW_ROUTES_ADDR", "127.0.0.1")
    return RouteServer(ROUTES, host, port).start()


def with_route_sync(inf: InferenceSpec) -> InferenceSpec:
    """The spec with what the router's route-sync sidecar needs from the operator's own
    installation: its image (SERFLOW_OPERATOR_IMAGE: the chart passes the operator's) and
    where the route server is reached from the routers (SERFLOW_ROUTES_URL; unset: the
    sidecar follows the ConfigMap alone)."""
    image = os.environ.get("SERFLOW_OPERATOR_IMAGE") or inf.routing.sync_image
    url = os.environ.get("SERFLOW_ROUTES_URL", inf.routing.routes_url)
    return replace(inf, routing=replace(inf.routing, sync_image=image, routes_url=url))
