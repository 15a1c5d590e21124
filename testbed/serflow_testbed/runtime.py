"""The local runtime: gives one SerflowInference's children a body on this machine.

* Pool: it keeps as many local worker processes as the ``<name>-pool`` Deployment's
  ``spec.replicas`` (kwok's fake pods run nothing).  A worker joins the pool's endpoints
  when its process answers and the configured cold start has passed (a new VM).  A
  local proxy on one port stands for the pool's Service (round robin over the ready
  workers; 503 with none, which Envoy retries on the functions).
* Functions: for each Knative Service of the object, an activator on one port (like
  Knative's): each function process has ``containerConcurrency`` slots; a request takes
  a free slot on any ready process, else waits while the activator starts one more
  process (scale from zero or out, a real cold start, one start in flight per service)
  up to the service's ``autoscaling.knative.dev/max-scale``; each process stops after
  the keep-alive without a request (``min-scale`` stay).  It sets the Knative Services'
  status Ready, as Knative's controller would.
* Envoy: a real Envoy from the one renderer, pool -> the pool proxy, functions -> the
  spill activator; the route file is the operator's ConfigMap key, swapped by rename.
* Bill: every process's life and every function request's duration, in a state file.
  A function is billed for its own time (the ``Server-Timing`` it answers with), as a
  FaaS bills; the time the request held it, seen from here, is kept beside it.

Everything binds 127.0.0.1.  SIGTERM/SIGINT stop every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from serflow_runtime.server import server_timing_seconds
from serflow_testbed.decide import (
    Instance,
    Life,
    idle_expired,
    local_args,
    ready_now,
    scale_functions,
    scale_pool,
)
from serflow_testbed.harness import (
    REVISION_READY_STATUS,
    envoy_argv,
    free_port,
    knative_ready_status,
    pinned_revision,
)

log = logging.getLogger("serflow_testbed.runtime")

POLL_S = 0.5
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Proc:
    """A server process standing for a pod."""

    name: str
    kind: str  # instance or function
    port: int
    popen: subprocess.Popen[bytes]
    started: float  # time.time()
    ident: int = 0
    ready: bool = False
    ready_at: float | None = None
    busy: int = 0  # function slots taken
    cpu_at_ready: float | None = None
    last_use: float = 0.0  # time.time() a function request last ended

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Ledger:
    """What the bill needs: process lives and function requests."""

    lives: list[Life] = field(default_factory=list)
    fn_requests: int = 0
    fn_exec_s: float = 0.0  # billed: the functions' own time per request (Server-Timing)
    fn_wall_s: float = 0.0  # the time requests held a function, seen from the activator
    fn_untimed: int = 0  # answers without Server-Timing: billed at their wall time
    fn_cold_starts: list[float] = field(default_factory=list)
    worker_cold_starts: list[float] = field(default_factory=list)
    fn_serving_cpu_s: float = 0.0  # CPU seconds function processes used after their start


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux), None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Service:
    """One Knative Service's function processes, as its activator sees them."""

    name: str
    concurrency: int = 1  # containerConcurrency, as queue-proxy enforces
    min_scale: int = 0
    max_scale: int = 1
    procs: list[Proc] = field(default_factory=list)  # ready ones
    starting: set[asyncio.Task[Proc | None]] = field(default_factory=set)
    waiting: int = 0  # requests waiting for a slot
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def free(self) -> Proc | None:
        """The least busy ready process with a free slot."""
        ok = [p for p in self.procs if p.popen.poll() is None and p.busy < self.concurrency]
        return min(ok, key=lambda p: p.busy) if ok else None

    @property
    def busy(self) -> int:
        return sum(p.busy for p in self.procs)


class Runtime:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.work = Path(a.workdir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.name, self.ns = a.name, a.namespace
        self.ledger = Ledger()
        self.workers: list[Proc] = []
        self.services: dict[str, Service] = {}  # Knative Service name -> its processes
        self.activators: dict[str, int] = {}  # service name -> activator port
        self.fn_args: dict[str, list[str]] = {}
        self.ready_marked: set[tuple[str, str | None]] = set()
        """(Knative Service, pinned Revision) marked Ready, as Knative's controller would."""
        self.revisions: dict[str, str] = {}
        """Pinned Revision -> its Knative Service."""
        self.stopping: set[asyncio.Task[None]] = set()
        self.envoy_restarts = 0
        self.fn_ids = itertools.count(0)
        self.desired = 0
        self.worker_args: list[str] | None = None
        self.route_text = ""
        self.ids = itertools.count(0)
        self.rr = itertools.count(0)
        self.envoy: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.runners: list[web.AppRunner] = []
        self.stop = asyncio.Event()
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=a.kubeconfig)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    # -- processes ---------------------------------------------------------------
    def _spawn(self, kind: str, name: str, args: list[str], port: int) -> Proc:
        logf = (self.work / f"{name}.log").open("ab")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        popen = subprocess.Popen(
            [sys.executable, "-m", "serflow_runtime.cli", *args],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C at the terminal reaches us, not them
        )
        p = Proc(name, kind, port, popen, time.time())
        self.ledger.lives.append(Life(kind, name, p.started))
        log.info("started %s %s on %d", kind, name, port)
        return p

    def _ended(self, p: Proc) -> None:
        for i, life in enumerate(self.ledger.lives):
            if life.name == p.name and life.start == p.started and life.end is None:
                self.ledger.lives[i] = Life(life.kind, life.name, life.start, time.time())

    async def _stop_proc(self, p: Proc) -> None:
        cpu = cpu_seconds(p.popen.pid) if p.popen.poll() is None else None
        if cpu is not None and p.cpu_at_ready is not None:
            self.ledger.fn_serving_cpu_s += cpu - p.cpu_at_ready
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
            end = time.monotonic() + STOP_TIMEOUT_S
            while p.popen.poll() is None and time.monotonic() < end:
                await asyncio.sleep(0.05)
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
        self._ended(p)
        log.info("stopped %s %s", p.kind, p.name)

    async def _answers(self, p: Proc) -> bool:
        assert self.session is not None
        try:
            async with self.session.get(
                p.url + "/readyz", timeout=aiohttp.ClientTimeout(total=1)
            ) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    # -- the pool ----------------------------------------------------------------
    async def reconcile_pool(self) -> None:
        self.workers = [w for w in self.workers if w.popen.poll() is None or self._gone(w)]
        running = [Instance(w.ident, w.started, w.ready) for w in self.workers]
        start, stop = scale_pool(self.desired, running)
        for ident in stop:
            w = next(x for x in self.workers if x.ident == ident)
            self.workers.remove(w)
            task = asyncio.create_task(self._stop_proc(w))  # drains its batch, then exits
            self.stopping.add(task)
            task.add_done_callback(self.stopping.discard)
        if start and self.worker_args is not None:
            for _ in range(start):
                ident = next(self.ids)
                port = free_port()
                args = local_args(self.worker_args, port, f"pool-{ident}", self._urls())
                p = self._spawn("instance", f"pool-{ident}", ["worker", *args], port)
                p.ident = ident
                self.workers.append(p)
        now = time.time()
        for w in self.workers:
            if not w.ready and ready_now(w.started, now, self.a.cold_start, await self._answers(w)):
                w.ready, w.ready_at = True, now
                self.ledger.worker_cold_starts.append(now - w.started)
                log.info("worker %s ready after %.1f s", w.name, now - w.started)

    def _gone(self, w: Proc) -> bool:
        self._ended(w)  # a worker that died is not restarted here (kubelet would)
        return False

    def _urls(self) -> dict[str, str]:
        urls = {svc: f"http://127.0.0.1:{port}" for svc, port in self.activators.items()}
        # A tail that names a pinned Revision reaches its Service's activator.
        return urls | {rev: urls[svc] for rev, svc in self.revisions.items() if svc in urls}

    async def pool_proxy(self, request: web.Request) -> web.StreamResponse:
        ready = [w for w in self.workers if w.ready]
        if not ready:
            return web.json_response({"error": "no ready pool instance"}, status=503)
        w = ready[next(self.rr) % len(ready)]
        return await self._forward(w.url, request)

    async def _forward(self, base: str, request: web.Request) -> web.Response:
        assert self.session is not None
        body = await request.read()
        ct = request.headers.get("Content-Type", "application/octet-stream")
        try:
            async with self.session.request(
                request.method, base + request.path, data=body or None,
                headers={"Content-Type": ct},
            ) as r:  # fmt: skip
                payload = await r.read()
                keep = {k: r.headers[k] for k in ("Server-Timing",) if k in r.headers}
                return web.Response(
                    body=payload, status=r.status, content_type=r.content_type or None,
                    headers=keep,
                )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return web.json_response({"error": f"upstream: {e!r}"}, status=503)

    # -- functions ---------------------------------------------------------------
    def _svc(self, svc: str) -> Service:
        if svc not in self.services:
            self.services[svc] = Service(svc)
        return self.services[svc]

    def _scale(self, s: Service) -> tuple[int, int]:
        """Start what ``scale_functions`` asks for (call with ``s.changed`` held)."""
        s.procs = [p for p in s.procs if p.popen.poll() is None or self._died(p)]
        start, stop = scale_functions(
            s.busy + s.waiting, len(s.procs), len(s.starting), s.concurrency,
            s.min_scale, s.max_scale,
        )  # fmt: skip
        if s.name not in self.fn_args:  # not read from the cluster yet
            return 0, stop
        for _ in range(start):
            task = asyncio.create_task(self._start_function(s))
            s.starting.add(task)
            task.add_done_callback(s.starting.discard)
        return start, stop

    def _died(self, p: Proc) -> bool:
        self._ended(p)
        log.warning("function %s exited with %s", p.name, p.popen.returncode)
        return False

    async def activate(self, request: web.Request) -> web.StreamResponse:
        s = self._svc(request.match_info.get("svc") or request.app["svc"])
        async with s.changed:
            s.waiting += 1
            try:
                while (p := s.free()) is None:
                    self._scale(s)
                    try:
                        await s.changed.wait()
                    except asyncio.CancelledError:
                        s.changed.notify()  # a slot handed to us goes to the next waiter
                        raise
            finally:
                s.waiting -= 1
            p.busy += 1
        try:
            t0 = time.perf_counter()
            resp = await self._forward(p.url, request)
            if request.method != "POST":  # a worker warming its tail: not a billed request
                return resp
            wall = time.perf_counter() - t0
            # Billed like a FaaS: the function's own duration, not this process's queueing.
            own = server_timing_seconds(resp.headers.get("Server-Timing"))
            self.ledger.fn_requests += 1
            self.ledger.fn_wall_s += wall
            self.ledger.fn_exec_s += wall if own is None else min(own, wall)
            self.ledger.fn_untimed += int(own is None)
            return resp
        finally:
            async with s.changed:
                p.busy -= 1
                p.last_use = time.time()
                s.changed.notify()

    async def _start_function(self, s: Service) -> Proc | None:
        name = f"{s.name}-{next(self.fn_ids)}"  # a pod of the service's revision
        port = free_port()
        args = local_args(self.fn_args[s.name], port, name)
        p = self._spawn("function", name, ["function", *args], port)
        ok = False
        try:
            end = time.monotonic() + START_TIMEOUT_S
            while not await self._answers(p):
                if p.popen.poll() is not None or time.monotonic() > end:
                    log.error("function %s did not start", name)
                    return None
                await asyncio.sleep(0.05)
            p.ready, p.ready_at = True, time.time()
            p.last_use = p.ready_at
            p.cpu_at_ready = cpu_seconds(p.popen.pid)
            self.ledger.fn_cold_starts.append(p.ready_at - p.started)
            log.info("function %s ready after %.2f s", name, p.ready_at - p.started)
            ok = True
            return p
        finally:
            if not ok:
                await asyncio.shield(self._stop_proc(p))
            async with s.changed:
                s.starting.discard(asyncio.current_task())
                if ok:
                    s.procs.append(p)
                s.changed.notify_all()  # waiters take its slots (or ask for another start)

    async def reap_functions(self) -> None:
        now = time.time()
        for s in list(self.services.values()):
            async with s.changed:
                _, stop = self._scale(s)
                idle = [
                    p for p in s.procs
                    if idle_expired(p.last_use, now, self.a.keep_alive, p.busy)
                ]  # fmt: skip
                idle.sort(key=lambda p: p.last_use)
                gone = idle[:stop]
                for p in gone:
                    s.procs.remove(p)
            for p in gone:
                await self._stop_proc(p)

    @property
    def functions(self) -> list[str]:
        return sorted(p.name for s in self.services.values() for p in s.procs)

    async def _activator(self, svc: str) -> int:
        app = web.Application(client_max_size=64 << 20)
        app["svc"] = svc
        # GET too: a pool worker warms its tail with GET /readyz (--warm-tail), which
        # starts a function at zero as Knative's activator does.
        app.router.add_route("*", "/{path:.*}", self.activate)
        return await self._serve(app, free_port() if svc != self._spill else self.a.spill_port)

    @property
    def _spill(self) -> str:
        return f"{self.name}-spill"

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.runners.append(runner)
        return port

    # -- the cluster -------------------------------------------------------------
    def _read(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
        """The pool Deployment, the Knative Services and the route, as plain JSON: the
        client's model classes cost milliseconds of CPU per object, and this thread
        holds the GIL the activator's event loop needs."""
        from kubernetes.client import ApiException

        def raw(call: Any, *args: Any, **kw: Any) -> dict[str, Any] | None:
            try:
                r = call(*args, _preload_content=False, **kw)
            except ApiException:
                return None
            return dict(json.loads(r.data))

        dep = raw(self.apps.read_namespaced_deployment, f"{self.name}-pool", self.ns)
        ks = raw(
            self.custom.list_namespaced_custom_object,
            "serving.knative.dev", "v1", self.ns, "services",
            label_selector=f"app.kubernetes.io/instance={self.name}",
        ) or {}  # fmt: skip
        cm = raw(self.core.read_namespaced_config_map, f"{self.name}-envoy", self.ns)
        route = ((cm or {}).get("data") or {}).get("route.yaml")
        return dep, list(ks.get("items") or []), route

    def _mark_ready(self, ksvc: dict[str, Any]) -> None:
        svc = ksvc["metadata"]["name"]
        self.custom.patch_namespaced_custom_object_status(
            "serving.knative.dev", "v1", self.ns, "services", svc, knative_ready_status(svc, self.ns)
        )
        rev = pinned_revision(ksvc)
        if rev is None:
            return
        from kubernetes.client import ApiException

        try:
            self.custom.create_namespaced_custom_object(
                "serving.knative.dev", "v1", self.ns, "revisions", rev
            )
        except ApiException as e:
            if e.status != 409:  # already made for this template
                raise
        self.custom.patch_namespaced_custom_object_status(
            "serving.knative.dev", "v1", self.ns, "revisions", rev["metadata"]["name"],
            REVISION_READY_STATUS,
        )  # fmt: skip

    async def sync(self) -> None:
        loop = asyncio.get_running_loop()
        dep, ksvcs, route = await loop.run_in_executor(None, self._read)
        for k in ksvcs:
            svc = k["metadata"]["name"]
            self.fn_args[svc] = list(
                k["spec"]["template"]["spec"]["containers"][0].get("args") or []
            )
            if svc not in self.activators:
                self.activators[svc] = await self._activator(svc)
            tmpl = k["spec"]["template"]
            notes = (tmpl.get("metadata") or {}).get("annotations") or {}
            s = self._svc(svc)
            s.concurrency = int(tmpl["spec"].get("containerConcurrency") or 1)
            s.min_scale = int(notes.get("autoscaling.knative.dev/min-scale") or 0)
            s.max_scale = int(notes.get("autoscaling.knative.dev/max-scale") or 1)
            rev = (tmpl.get("metadata") or {}).get("name")
            if rev:
                self.revisions[rev] = svc
            if (svc, rev) not in self.ready_marked:
                # Knative starts a new revision at its initial scale (1) and marks the
                # service Ready when that pod is; the pod scales to zero when idle.
                async with s.changed:
                    while not s.procs:
                        if not s.starting:
                            task = asyncio.create_task(self._start_function(s))
                            s.starting.add(task)
                            task.add_done_callback(s.starting.discard)
                        await s.changed.wait()
                await loop.run_in_executor(None, self._mark_ready, k)
                self.ready_marked.add((svc, rev))
            else:
                async with s.changed:
                    self._scale(s)  # min-scale
        if dep is not None:
            self.desired = int(dep["spec"].get("replicas") or 0)
            self.worker_args = list(
                dep["spec"]["template"]["spec"]["containers"][0].get("args") or []
            )
        if route and route != self.route_text:
            self._write_route(route)
            self.route_text = route

    def _write_route(self, text: str) -> None:
        d = self.work / "route"
        d.mkdir(exist_ok=True)
        tmp = d / ".route.tmp"
        tmp.write_text(text)
        os.replace(tmp, d / "route.yaml")  # Envoy's watched directory sees the rename

    def start_envoy(self, pool_port: int, keep_route: bool = False) -> None:
        from serflow.k8s import envoy as render

        d = self.work / "route"
        if not keep_route:
            render.write_route_file(d, 0, "local-0")
        boot = render.bootstrap(
            [("127.0.0.1", pool_port)],
            [("127.0.0.1", self.a.spill_port)],
            str(d),
            listen=("127.0.0.1", self.a.envoy_port),
            stats=("127.0.0.1", self.a.stats_port),
            admin_port=self.a.admin_port,
        )
        # On a cluster Envoy health-checks each pod of the pool's headless Service; here
        # one address stands for every pod (the stand-in answers 503 while none is ready),
        # so there is no pod to check: the check is left out of this bootstrap only.
        for c in boot["static_resources"]["clusters"]:
            if c["name"] == render.CLUSTER_POOL:
                c.pop("health_checks", None)
        cfg = self.work / "envoy.yaml"
        cfg.write_text(render.to_yaml(boot))
        self.envoy = subprocess.Popen(
            envoy_argv(cfg, self.a.envoy_port),
            stdout=(self.work / "envoy.log").open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    # -- state -------------------------------------------------------------------
    def write_state(self, final: bool = False) -> None:
        st = {
            "time": time.time(),
            "final": final,
            "desired": self.desired,
            "workers": len(self.workers),
            "ready": sum(1 for w in self.workers if w.ready),
            "functions": self.functions,
            "lives": [asdict(x) for x in self.ledger.lives],
            "fnRequests": self.ledger.fn_requests,
            "fnExecSeconds": self.ledger.fn_exec_s,
            "fnWallSeconds": self.ledger.fn_wall_s,
            "fnUntimed": self.ledger.fn_untimed,
            "fnColdStarts": self.ledger.fn_cold_starts,
            "fnServingCpuSeconds": self.ledger.fn_serving_cpu_s,
            "workerColdStarts": self.ledger.worker_cold_starts,
            "envoyRestarts": self.envoy_restarts,
        }
        tmp = Path(self.a.state).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(st))
        os.replace(tmp, self.a.state)

    async def run(self) -> None:
        # No connection cap: pool requests wait up to an epoch for their batch, and a cap
        # (aiohttp's default is 100) would queue function requests behind them, inside
        # the time billed to the function.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=self.a.timeout),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            pool = web.Application(client_max_size=1 << 20)
            pool.router.add_post("/{path:.*}", self.pool_proxy)
            pool_port = await self._serve(pool, free_port())
            self.activators[self._spill] = await self._activator(self._spill)
            self.start_envoy(pool_port)
            end = time.monotonic() + self.a.max_seconds
            while not self.stop.is_set() and time.monotonic() < end:
                if self.envoy is not None and self.envoy.poll() is not None:
                    # Like a kubelet: a router that died (a signal from outside) restarts.
                    log.warning("envoy exited with %s: restarting it", self.envoy.returncode)
                    self.envoy_restarts += 1
                    self.start_envoy(pool_port, keep_route=True)
                try:
                    await self.sync()
                    await self.reconcile_pool()
                    await self.reap_functions()
                except Exception:  # the next poll retries; the API server may be slow
                    log.exception("sync failed")
                self.write_state()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), POLL_S)
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        procs = [*self.workers, *(p for s in self.services.values() for p in s.procs)]
        for s in self.services.values():
            for t in list(s.starting):
                t.cancel()
        await asyncio.gather(
            *(self._stop_proc(p) for p in procs), *self.stopping, return_exceptions=True
        )
        # A function started but not yet registered (cancelled start) is reaped here.
        for life in self.ledger.lives:
            if life.end is None:
                log.warning("process %s had no recorded end", life.name)
        if self.envoy and self.envoy.poll() is None:
            self.envoy.terminate()
            try:
                self.envoy.wait(10)
            except subprocess.TimeoutExpired:
                self.envoy.kill()
        for r in self.runners:
            await r.cleanup()
        if self.session:
            await self.session.close()
        self.write_state(final=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serflow_testbed.runtime", description=__doc__)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--name", required=True, help="the SerflowInference")
    p.add_argument("--workdir", required=True)
    p.add_argument("--state", required=True, help="JSON state file, rewritten every poll")
    p.add_argument("--envoy-port", type=int, required=True)
    p.add_argument("--stats-port", type=int, required=True)
    p.add_argument("--admin-port", type=int, default=0)
    p.add_argument("--spill-port", type=int, default=0)
    p.add_argument("--cold-start", type=float, default=10.0, help="worker cold start, seconds")
    p.add_argument("--keep-alive", type=float, default=20.0, help="function idle stop, seconds")
    p.add_argument("--timeout", type=float, default=30.0, help="upstream request timeout")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long")
    return p


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    a = parser().parse_args()
    a.admin_port = a.admin_port or free_port()
    a.spill_port = a.spill_port or free_port()
    asyncio.run(Runtime(a).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
