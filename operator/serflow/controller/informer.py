"""Watch-fed caches of the operator's children: one list and then one watch per kind (and
per watched namespace) for every object, instead of a GET per child per epoch.

At 1,000 objects the epochs' GETs (about ten per object every epoch) bound the API
server before the operator did (``bench/results/operator-scale.md``). A cache answers
only once its first list has arrived; until then, and for what it does not hold (another
kind, a namespace it does not watch), the caller reads the API server as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiException

log = logging.getLogger(__name__)

WATCH_S = 25
"""Seconds the API server keeps one watch open (its ``timeoutSeconds``) before the cache
opens the next from the last resourceVersion it saw: below the shared client's read
timeout (``kube.API_TIMEOUT``, 30 s), which a quiet watch would otherwise run into."""
RETRY_S = (1.0, 30.0)
"""Backoff after a failed list or watch: first and largest pause, in seconds."""
DROPPED_FIELDS = ("managedFields",)
"""Metadata the epochs never read, dropped from what the cache holds (most of a child's
bytes: at 1,000 objects, tens of MiB)."""


@dataclass(frozen=True)
class Watched:
    """What one cache holds."""

    api_version: str
    """The kind's apiVersion."""
    kind: str
    """The kind."""
    selector: str
    """A label selector: the cache holds only the objects it matches."""


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in DROPPED_FIELDS}
    return {**obj, "metadata": meta}


def _newer(a: Mapping[str, Any], b: Mapping[str, Any] | None) -> bool:
    """Whether ``a`` is at least as new as ``b`` by resourceVersion (opaque to clients,
    but etcd's revision in practice: compared as integers when both are)."""
    if b is None:
        return True
    ra = str((a.get("metadata") or {}).get("resourceVersion") or "")
    rb = str((b.get("metadata") or {}).get("resourceVersion") or "")
    return not (ra.isdigit() and rb.isdigit()) or int(ra) >= int(rb)


class Informer:
    """One kind's objects matching a selector, in one namespace or all, kept current by a
    list and a watch in a daemon thread; reads are safe from any thread."""

    def __init__(
        self,
        dynamic: Any,
        watched: Watched,
        namespace: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.dynamic, self.watched, self.namespace, self._sleep = dynamic, watched, namespace, sleep
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"informer-{watched.kind}-{namespace or 'all'}"
        )

    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def covers(self, namespace: str) -> bool:
        return self.namespace is None or self.namespace == namespace

    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def list(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The objects in the namespace that carry every one of these labels."""
        with self._lock:
            objs = [o for (ns, _), o in self._objects.items() if ns == namespace]
        return [
            o
            for o in objs
            if all(((o.get("metadata") or {}).get("labels") or {}).get(k) == v
                   for k, v in labels.items())
        ]  # fmt: skip

    def put(self, obj: Mapping[str, Any]) -> None:
        """What a write returned: the cache shows it before its watch event arrives (the
        next epoch must not read its own write as missing or as drift)."""
        key, slim = _key(obj), _slim(obj)
        with self._lock:
            if _newer(slim, self._objects.get(key)):
                self._objects[key] = slim

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._objects.pop((namespace, name), None)

    def _resource(self) -> Any:
        return self.dynamic.resources.get(
            api_version=self.watched.api_version, kind=self.watched.kind
        )

    def _list(self, res: Any) -> str:
        got = res.get(namespace=self.namespace, label_selector=self.watched.selector)
        raw = got.to_dict()
        fresh = {_key(o): _slim(o) for o in raw.get("items") or []}
        with self._lock:
            self._objects = fresh
        self._synced.set()
        return str((raw.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, res: Any, version: str) -> str:
        """Follow one watch from ``version``; the last version seen ('' : list again)."""
        for event in self.dynamic.watch(
            res,
            namespace=self.namespace,
            label_selector=self.watched.selector,
            resource_version=version,
            timeout=WATCH_S,
            allow_watch_bookmarks=True,
        ):
            if self._stop.is_set():
                return version
            kind, obj = event.get("type"), event.get("raw_object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:  # too old: the history it needs is compacted
                    return ""
                raise RuntimeError(f"watch error: {obj.get('message') or obj}")
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            key = _key(obj)
            with self._lock:
                if kind == "DELETED":
                    self._objects.pop(key, None)
                elif _newer(obj, self._objects.get(key)):
                    self._objects[key] = _slim(obj)
        return version

    def _run(self) -> None:
        pause, version = RETRY_S[0], ""
        while not self._stop.is_set():
            try:
                res = self._resource()
                if not version:
                    version = self._list(res)
                version = self._watch(res, version)
                pause = RETRY_S[0]
            except ApiException as e:
                if e.status == 410:  # too old: list again
                    version = ""
                    continue
                log.warning("cache of %s: %s; again in %.0f s", self.watched.kind, e.reason, pause)
                self._sleep(pause)
                pause = min(RETRY_S[1], 2 * pause)
            except Exception as e:  # a cache outlives any one failure (a dropped stream, say)
                log.warning("cache of %s: %s; again in %.0f s", self.watched.kind, e, pause)
                self._sleep(pause)
                pause = min(RETRY_S[1], 2 * pause)


class Caches:
    """The informers of every cached kind, looked up by (apiVersion, kind, namespace)."""

    def __init__(self, informers: Iterable[Informer] = ()) -> None:
        self._by_kind: dict[tuple[str, str], list[Informer]] = {}
        for i in informers:
            self._by_kind.setdefault((i.watched.api_version, i.watched.kind), []).append(i)

    def for_(self, api_version: str, kind: str, namespace: str) -> Informer | None:
        """The synced informer that holds this kind in this namespace, if any."""
        for i in self._by_kind.get((api_version, kind), []):
            if i.covers(namespace) and i.synced():
                return i
        return None

    def all(self) -> list[Informer]:
        return [i for group in self._by_kind.values() for i in group]

    def stop(self) -> None:
        for i in self.all():
            i.stop()


def start_caches(
    dynamic: Any, watched: Sequence[Watched], namespaces: Sequence[str] | None
) -> Caches:
    """An informer per kind, cluster-wide (``namespaces`` None) or per namespace, started."""
    scopes: Sequence[str | None] = [None] if namespaces is None else list(namespaces)
    return Caches(Informer(dynamic, w, ns).start() for w in watched for ns in scopes)
