"""The operator's side effects on the API server and on Envoy's stats listeners."""

from __future__ import annotations

import asyncio
import datetime
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import aiohttp
from kubernetes import client, config
from kubernetes.client import ApiException
from kubernetes.dynamic import DynamicClient

from serflow.controller.decide import CounterReading, parse_counter
from serflow.controller.informer import Caches, Watched, start_caches
from serflow.k8s import storage
from serflow.k8s.crd import GROUP, PLURAL, VERSION
from serflow.k8s.naming import controller_uid

FIELD_MANAGER = "serflow"
IMMUTABLE = ("field is immutable", "may not change once set")
"""What the API server says when a change touches a field it never updates in place (a
Deployment's selector; a Service's clusterIP)."""
FETCH_PODS_READ = 100
"""Pods whose storage initializers one reading looks at: one failure says why; a hundred
is every pool pod of a large pool, and bounds the answer."""
STATS_LIMIT = 256 * 1024
"""Bytes read from one stats endpoint at most."""


def load_config() -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


API_TIMEOUT = (5.0, 30.0)
"""Seconds to connect to the API server, and to wait for each read of its answer: the
Kubernetes client waits for ever unless told, and a call that never returns would hold
one of the threads every object's epochs share."""


MANAGED = "app.kubernetes.io/managed-by=serflow"
"""The label every child carries (``builders.labels``), Knative's Revisions too (from
their Service's template)."""
CACHED = (
    Watched("apps/v1", "Deployment", MANAGED),
    Watched("v1", "Service", MANAGED),
    Watched("v1", "ConfigMap", MANAGED),
    Watched("networking.k8s.io/v1", "NetworkPolicy", MANAGED),
    Watched("policy/v1", "PodDisruptionBudget", MANAGED),
    Watched("serving.knative.dev/v1", "Service", MANAGED),
    Watched("serving.knative.dev/v1", "Revision", MANAGED),
    Watched("v1", "Pod", f"{MANAGED},app.kubernetes.io/component=router"),
)
"""What the epochs read, from watch-fed caches (``Kube.start_caches``): every child they
compare, the functions' Revisions, and the routers' pods whose stats they scrape."""


REPLACEABLE = (("apps/v1", "Deployment"), ("v1", "Service"))
"""Kinds of child recreated when a change touches a field the API server keeps immutable
(a Deployment's selector, a Service's clusterIP)."""
DELETABLE = (
    *REPLACEABLE,
    ("serving.knative.dev/v1", "Service"),  # a function a new plan no longer has
    ("serving.knative.dev/v1", "Revision"),  # one Knative gave up on, made again by it
)
"""Every kind the operator ever deletes (``Kube.delete`` refuses others): its RBAC grants
delete on these and no other, as the can-i tests check from this list."""


SHARED_CONNECTIONS = 32
"""Kept-alive connections to the API server the shared client holds: one per thread that
may call at once (the epochs' and kopf's own handlers'), so none is opened per call."""
_shared: Kube | None = None
_shared_lock = threading.Lock()


def shared_kube() -> Kube:
    """The one client every object's epochs use: one connection pool and one API discovery
    for all of them, not one per object (at 1,000 objects, a thousand pools and discovery
    caches in memory, and new TLS connections whenever a small pool ran out)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            cfg = client.Configuration.get_default_copy()
            cfg.connection_pool_maxsize = SHARED_CONNECTIONS
            _shared = Kube(client.ApiClient(cfg))
        return _shared


class Kube:
    """Thin wrapper: server-side apply, reads and status patches, each call bounded by
    ``timeout`` (connect, read) seconds unless it gives its own."""

    def __init__(
        self, api: client.ApiClient | None = None, timeout: tuple[float, float] = API_TIMEOUT
    ) -> None:
        self.api = api or client.ApiClient()
        rest = self.api.rest_client
        request: Any = rest.request

        def bounded(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
            kwargs["_request_timeout"] = _request_timeout or timeout
            return request(*args, **kwargs)

        rest.request = bounded  # type: ignore[method-assign]
        self.caches = Caches()
        """Watch-fed copies of the children (none until ``start_caches``)."""

    def start_caches(self, namespaces: list[str] | None) -> None:
        """Keep the epochs' reads (``CACHED``) in caches fed by one watch per kind, over
        the whole cluster (``namespaces`` None) or in each of ``namespaces``."""
        self.caches = start_caches(self.dynamic, CACHED, namespaces)

    @cached_property
    def dynamic(self) -> DynamicClient:
        return DynamicClient(self.api)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as the ``serflow`` field manager (forcing our own fields)."""
        res = self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        meta = obj["metadata"]
        out = res.server_side_apply(
            body=dict(obj),
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        applied = dict(out.to_dict())
        cache = self.caches.for_(obj["apiVersion"], obj["kind"], meta.get("namespace") or "")
        if cache is not None:
            cache.put(applied)
        return applied

    def apply_or_replace(self, obj: Mapping[str, Any]) -> bool:
        """Server-side apply; a child whose change touches a field the API server keeps
        immutable (a Service's clusterIP, as when the pool Service became headless; a
        Deployment's selector) is deleted and created anew. True when it was replaced."""
        try:
            self.apply(obj)
            return False
        except ApiException as e:
            if e.status != 422 or not any(m in str(e.body) for m in IMMUTABLE):
                raise
            if (obj["apiVersion"], obj["kind"]) not in REPLACEABLE:
                raise
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        live = self.get(obj["apiVersion"], obj["kind"], ns, meta["name"]) or {}
        owner = controller_uid(obj)
        if owner is None or controller_uid(live) != owner:  # only the same object's child
            raise RuntimeError(f"{obj['kind']} {meta['name']}: an immutable field differs "
                               "and it is not this object's to recreate")  # fmt: skip
        self.delete(obj["apiVersion"], obj["kind"], ns, meta["name"])
        self.apply(obj)
        return True

    def names(
        self, api_version: str, kind: str, namespace: str, selector: Mapping[str, str]
    ) -> list[str]:
        """Names of the objects of a kind in the namespace that carry these labels."""
        cache = self.caches.for_(api_version, kind, namespace)
        if cache is not None:
            return [str(o["metadata"]["name"]) for o in cache.list(namespace, selector)]
        res = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return [
            i.metadata.name
            for i in res.get(namespace=namespace, label_selector=label_selector(selector)).items
        ]

    def delete(
        self, api_version: str, kind: str, namespace: str, name: str, foreground: bool = False
    ) -> None:
        """Delete an object, its dependents in the background (``foreground``: the object
        stays until they are gone, so that one made again under its name does not meet
        them); gone already is fine. Only the ``DELETABLE`` kinds."""
        if (api_version, kind) not in DELETABLE:
            raise ValueError(f"serflow never deletes a {api_version} {kind}")
        res = self.dynamic.resources.get(api_version=api_version, kind=kind)
        propagation = "Foreground" if foreground else "Background"
        try:
            res.delete(name=name, namespace=namespace, body={"propagationPolicy": propagation})
        except ApiException as e:
            if e.status != 404:
                raise
        cache = self.caches.for_(api_version, kind, namespace)
        if cache is not None:
            cache.forget(namespace, name)

    def child(
        self, api_version: str, kind: str, namespace: str, name: str, confirm_missing: bool = False
    ) -> dict[str, Any] | None:
        """A child as its cache holds it (``CACHED``), else as the API server has it.
        ``confirm_missing``: the caches hold only what serflow labels, so a name the cache
        lacks is read from the API server (for what the epochs apply: an object of someone
        else's under that name must be seen, never applied over)."""
        cache = self.caches.for_(api_version, kind, namespace)
        if cache is None:
            return self.get(api_version, kind, namespace, name)
        cached = cache.get(namespace, name)
        if cached is None and confirm_missing:
            return self.get(api_version, kind, namespace, name)
        return cached

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        res = self.dynamic.resources.get(api_version=api_version, kind=kind)
        try:
            return dict(res.get(name=name, namespace=namespace).to_dict())
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        cm = self.get("v1", "ConfigMap", namespace, name)
        return None if cm is None else dict(cm.get("data") or {})

    def patch_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> bool:
        """Merge ``status`` into the object's status; False when ``resource_version`` is
        given and the object has changed since (the API server's 409: nothing written).

        A merge patch replaces lists whole, conditions included: a writer that computed
        them from an older view would undo a newer writer's condition unless it says
        which version it saw."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            client.CustomObjectsApi(self.api).patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body
            )
        except ApiException as e:
            if e.status == 409 and resource_version is not None:
                return False
            raise
        return True

    def job_state(self, namespace: str, name: str) -> str:
        """'succeeded', 'failed', 'running' or 'missing'."""
        job = self.get("batch/v1", "Job", namespace, name)
        if job is None:
            return "missing"
        st = job.get("status") or {}
        for c in st.get("conditions") or []:
            if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
                return "succeeded" if c["type"] == "Complete" else "failed"
        return "running"

    def job_failure(self, namespace: str, name: str) -> str:
        """Why a failed Job failed: its Failed condition (BackoffLimitExceeded,
        DeadlineExceeded) and how its last pod's container ended (OOMKilled, an exit code)."""
        job = self.get("batch/v1", "Job", namespace, name) or {}
        said = [
            ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
            for c in (job.get("status") or {}).get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        ]
        pods = client.CoreV1Api(self.api).list_namespaced_pod(
            namespace, label_selector=f"job-name={name}"
        )
        for p in pods.items[-1:]:
            st = p.status
            for cs in [
                *((st and st.init_container_statuses) or []),
                *((st and st.container_statuses) or []),
            ]:
                ended = cs.state and cs.state.terminated
                if ended and (ended.exit_code or cs.name != storage.FETCH_CONTAINER):
                    said.append(
                        f"container {cs.name} {ended.reason or 'ended'}, exit code {ended.exit_code}"
                        + (f" ({ended.message.strip()[:512]})" if ended.message else "")
                    )
        return "; ".join(x for x in said if x) or "no reason given"

    def fetch_failures(self, namespace: str, selector: Mapping[str, str]) -> list[str]:
        """The termination messages of the storage initializers that failed in the pods
        these labels select (one per pod: the last failure it reports), bounded."""
        pods = client.CoreV1Api(self.api).list_namespaced_pod(
            namespace, label_selector=label_selector(selector), limit=FETCH_PODS_READ
        )
        out = []
        for p in pods.items:
            for cs in (p.status and p.status.init_container_statuses) or []:
                if cs.name != storage.FETCH_CONTAINER:
                    continue
                for state in (cs.state, cs.last_state):
                    ended = state and state.terminated
                    if ended and ended.exit_code:
                        said = (ended.message or "").strip() or f"exit code {ended.exit_code}"
                        out.append(said.splitlines()[-1][:1024])
                        break
        return out

    def job_log(self, namespace: str, name: str, limit: int = 1 << 20) -> str:
        """The log of a finished Job's pod (bounded)."""
        core = client.CoreV1Api(self.api)
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
        for p in pods.items:
            if p.status and p.status.phase == "Succeeded" and p.metadata:
                text = core.read_namespaced_pod_log(
                    str(p.metadata.name), namespace, limit_bytes=limit
                )
                return str(text)
        return ""

    def post_event(self, involved: Mapping[str, Any], reason: str, message: str, at: str) -> None:
        """A Normal core/v1 Event on ``involved`` (apiVersion, kind, name, namespace, uid)."""
        namespace = str(involved["namespace"])
        when = datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{involved['name']}.", namespace=namespace),
            involved_object=client.V1ObjectReference(**dict(involved)),
            reason=reason,
            message=message[:1024],
            type="Normal",
            source=client.V1EventSource(component=FIELD_MANAGER),
            first_timestamp=when,
            last_timestamp=when,
            count=1,
        )
        client.CoreV1Api(self.api).create_namespaced_event(namespace, event)

    def pod_ips(self, namespace: str, selector: Mapping[str, str]) -> dict[str, str]:
        """Running pods' addresses by name: the routers' from their cache."""
        cache = self.caches.for_("v1", "Pod", namespace)
        if cache is not None and selector.get("app.kubernetes.io/component") == "router":
            running = [(p, p.get("status") or {}) for p in cache.list(namespace, selector)]
            return {
                str(p["metadata"]["name"]): str(st["podIP"])
                for p, st in running
                if st.get("phase") == "Running" and st.get("podIP")
            }
        pods = client.CoreV1Api(self.api).list_namespaced_pod(
            namespace, label_selector=label_selector(selector)
        )
        return {
            str(p.metadata.name): str(p.status.pod_ip)
            for p in pods.items
            if p.metadata and p.status and p.status.pod_ip and p.status.phase == "Running"
        }


def label_selector(labels: Mapping[str, str]) -> str:
    """The API server's equality selector for these labels (``a=1,b=2``)."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


SCRAPE_DEADLINE = 2.0
"""Seconds one epoch's scrape of every stats endpoint may take in all, connection to last
byte: an endpoint that answers slowly, or drips its body, reads as missing (the epoch
keeps its baseline) instead of holding the epoch, and with it one of the threads every
object's epochs share."""


def read_counters(
    urls: Mapping[str, str], counter: str, deadline: float = SCRAPE_DEADLINE
) -> tuple[CounterReading, ...]:
    """downstream_rq_total per endpoint, all read at once within ``deadline`` seconds; an
    endpoint that does not answer in time, or not at all, reads None."""
    if not urls:
        return ()
    return asyncio.run(_read_all(urls, counter, deadline))


async def _read_all(
    urls: Mapping[str, str], counter: str, deadline: float
) -> tuple[CounterReading, ...]:
    query = urllib.parse.urlencode({"filter": f"^{counter.replace('.', '[.]')}$"})
    timeout = aiohttp.ClientTimeout(total=deadline)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:

        async def one(key: str, url: str) -> CounterReading:
            full = f"{url}{'&' if '?' in url else '?'}{query}"
            try:
                async with session.get(full, allow_redirects=False) as r:
                    if r.status != 200:
                        return CounterReading(key, None)
                    body = await _read_at_most(r.content, STATS_LIMIT)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                return CounterReading(key, None)
            return CounterReading(key, parse_counter(body.decode("utf-8", "replace"), counter))

        return tuple(await asyncio.gather(*(one(k, u) for k, u in urls.items())))


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body, cut at ``limit`` bytes (a stats page is a few KB; more is not ours)."""
    body = bytearray()
    while len(body) < limit and (chunk := await stream.read(limit - len(body))):
        body += chunk
    return bytes(body)


def stats_urls(explicit: Sequence[str], pod_ips: Mapping[str, str], port: int) -> dict[str, str]:
    if explicit:
        return {u: u for u in explicit}
    return {name: f"http://{ip}:{port}/stats" for name, ip in pod_ips.items()}
