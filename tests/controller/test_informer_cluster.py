"""The children's caches (``serflow.controller.informer``) on the real API server: a list,
then a watch, keep them current; a write shows at once; only the selected objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from serflow.controller.informer import Caches, Informer, Watched
from serflow.controller.kube import Kube
from serflow_testbed.harness import wait_for

pytestmark = pytest.mark.cluster

OURS = {"app.kubernetes.io/managed-by": "serflow"}
CONFIGMAPS = Watched("v1", "ConfigMap", "app.kubernetes.io/managed-by=serflow")


def _cm(ns: str, name: str, labels: dict[str, str], value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "data": {"v": value}}  # fmt: skip


def _value(inf: Informer, ns: str, name: str) -> Callable[[], str | None]:
    def read() -> str | None:
        got = inf.get(ns, name)
        return None if got is None else str(got["data"]["v"])

    return read


def test_a_cache_lists_then_follows_the_watch(api_client: Any, namespace: str) -> None:
    kube = Kube(api_client)
    kube.apply(_cm(namespace, "before", OURS, "1"))
    kube.apply(_cm(namespace, "foreign", {"app": "other"}, "1"))
    inf = Informer(DynamicClient(api_client), CONFIGMAPS, namespace).start()
    try:
        assert inf.wait_synced(30)
        # The list: ours, not another's, and no managedFields kept.
        assert _value(inf, namespace, "before")() == "1"
        assert inf.get(namespace, "foreign") is None
        assert "managedFields" not in inf.get(namespace, "before")["metadata"]  # type: ignore[index]
        # The watch: an object made, changed and deleted after the list.
        kube.apply(_cm(namespace, "after", OURS, "a"))
        wait_for("the new object in the cache", lambda: _value(inf, namespace, "after")() == "a",
                 30, every=0.1)  # fmt: skip
        kube.apply(_cm(namespace, "before", OURS, "2"))
        wait_for("the change in the cache", lambda: _value(inf, namespace, "before")() == "2",
                 30, every=0.1)  # fmt: skip
        client.CoreV1Api(api_client).delete_namespaced_config_map("after", namespace)
        wait_for("the deletion in the cache", lambda: inf.get(namespace, "after") is None,
                 30, every=0.1)  # fmt: skip
        assert [o["metadata"]["name"] for o in inf.list(namespace, OURS)] == ["before"]
        assert inf.list(namespace, {**OURS, "x": "y"}) == []
    finally:
        inf.stop()


def test_a_write_shows_at_once_and_an_older_one_never_wins(
    api_client: Any, namespace: str
) -> None:
    kube = Kube(api_client)
    first = kube.apply(_cm(namespace, "cm", OURS, "1"))
    inf = Informer(DynamicClient(api_client), CONFIGMAPS, namespace).start()
    try:
        assert inf.wait_synced(30)
        second = kube.apply(_cm(namespace, "cm", OURS, "2"))
        inf.put(second)  # as Kube does with what an apply returns
        assert _value(inf, namespace, "cm")() == "2"
        inf.put(first)  # a late, older answer
        assert _value(inf, namespace, "cm")() == "2"
    finally:
        inf.stop()


def test_caches_answer_only_for_what_they_watch_once_synced(
    api_client: Any, namespace: str
) -> None:
    inf = Informer(DynamicClient(api_client), CONFIGMAPS, namespace)
    caches = Caches([inf])
    assert caches.for_("v1", "ConfigMap", namespace) is None  # not synced yet
    inf.start()
    try:
        assert inf.wait_synced(30)
        assert caches.for_("v1", "ConfigMap", namespace) is inf
        assert caches.for_("v1", "ConfigMap", "elsewhere") is None
        assert caches.for_("v1", "Secret", namespace) is None
    finally:
        caches.stop()


def test_the_epochs_reads_come_from_the_caches_once_started(
    api_client: Any, namespace: str
) -> None:
    """``Kube.child``, ``names`` and ``pod_ips`` answer from the caches, which see the
    operator's own writes at once (no epoch reads its write as missing)."""
    kube = Kube(api_client)
    kube.start_caches([namespace])
    try:
        assert all(i.wait_synced(30) for i in kube.caches.all())
        cm = _cm(namespace, "child", OURS, "1")
        kube.apply(cm)
        assert kube.child("v1", "ConfigMap", namespace, "child")["data"] == {"v": "1"}  # type: ignore[index]
        assert kube.names("v1", "ConfigMap", namespace, OURS) == ["child"]
        # A delete shows at once too (of a kind the operator deletes).
        svc = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "child", "namespace": namespace, "labels": OURS},
               "spec": {"ports": [{"port": 80}]}}  # fmt: skip
        kube.apply(svc)
        assert kube.child("v1", "Service", namespace, "child") is not None
        kube.delete("v1", "Service", namespace, "child")
        assert kube.child("v1", "Service", namespace, "child") is None
        # Not a cached kind: read from the API server.
        assert kube.child("v1", "Secret", namespace, "nothing") is None
        # The routers' pods: kwok makes them Running, with an address.
        router = {**OURS, "app.kubernetes.io/component": "router"}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "router", "namespace": namespace, "labels": router},
               "spec": {"containers": [{"name": "c", "image": "x"}],
                        "tolerations": [{"operator": "Exists"}]}}  # fmt: skip
        kube.apply(pod)
        wait_for("the router pod Running in the cache",
                 lambda: list(kube.pod_ips(namespace, router)) == ["router"], 60, every=0.2)  # fmt: skip
    finally:
        kube.caches.stop()
