"""The router: Envoy's ConfigMap (bootstrap and route file), its Deployment (Envoy and the
route-sync sidecar that hands it a new route at once) and Service.

Envoy splits each request between the pool and the spill function; the spill's target
comes from ``functions``, the bounds from ``timeouts``, the Envoy documents themselves
from the renderer ``envoy``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from serflow.domain import Workload
from serflow.inference import InferenceSpec
from serflow.k8s import envoy
from serflow.k8s.functions import spill_target
from serflow.k8s.naming import COMPONENT_LABEL, Names, Owner, labels, meta, service_host
from serflow.k8s.pods import CONTAINER_SECURITY
from serflow.k8s.timeouts import (
    function_attempt_timeout_s,
    pool_attempt_timeout_s,
    router_timeout_s,
)
from serflow.policy.configurator import Candidate
from serflow.wire import (
    ENVOY_ADMIN_PORT,
    ENVOY_DRAIN_PATH,
    ENVOY_PORT,
    ROUTES_PATH,
    SERVICE_PORT,
    STATS_PORT,
    WORKER_PORT,
)

ENVOY_DIR = "/etc/envoy"
"""Where the router's ConfigMap is mounted: Envoy reads its bootstrap there, and the
route-sync sidecar the route file."""
ROUTE_DIR = "/var/run/serflow-route"
"""The directory Envoy watches for its route file (an emptyDir of the pod): the route-sync
sidecar (``serflow.routesync``) writes it from the ConfigMap at start, then from the
operator's route server as soon as the operator applies a new route. The kubelet
refreshes a mounted ConfigMap only on its periodic sync (measured on kind: 62 s): a
route a minute late sends a new pool nothing for a minute."""
SYNC_CONTAINER = "route-sync"
"""The sidecar's name (and, with ``-init``, its init container's)."""
SYNC_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "100m", "memory": "64Mi"},
}
"""One Python process with the standard library, idle in a long poll (about 20 MiB)."""

BOOTSTRAP_HASH_ANNOTATION = "serflow.io/bootstrap-sha256"
"""On the router's pods: Envoy reads its bootstrap once, so a new one (a new Revision to
spill to) must roll the pods; the route file beside it is watched and needs no restart."""


def envoy_configmap(
    owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate, pool_weight: int
) -> dict[str, Any]:
    """Bootstrap (counting under the spec's stat prefix) and route file; the operator
    rewrites route.yaml to move the split."""
    n = Names(owner.name)
    spill = spill_target(owner, spec, w, cand)
    route = envoy.route_discovery(
        envoy.route_config(
            pool_weight,
            timeout_seconds=router_timeout_s(w),
            functions_host=spill.host,
            functions_headers=spill.headers,
            attempt_timeout_s=function_attempt_timeout_s(w),
        ),
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(owner, n.envoy, "router"),
        "data": {
            "envoy.yaml": envoy_bootstrap(owner, spec, w, cand),
            envoy.ROUTE_FILE: json.dumps(route, indent=1),
        },
    }


@functools.lru_cache(maxsize=4096)
def envoy_bootstrap(owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate) -> str:
    """Envoy's static bootstrap (listeners, the pool and functions clusters) as YAML.
    Cached (a few KB each, one per object's plan): every epoch builds the children, and
    writing this YAML was a fifth of the operator's CPU at 1,000 objects (py-spy)."""
    return envoy.to_yaml(
        envoy.bootstrap(
            pool=[(service_host(Names(owner.name).pool, owner.namespace), WORKER_PORT)],
            functions=[(spill_target(owner, spec, w, cand).host, SERVICE_PORT)],
            route_dir=ROUTE_DIR,
            listen=("0.0.0.0", ENVOY_PORT),
            stats=("0.0.0.0", STATS_PORT),
            node_id=owner.name,
            stat_prefix=spec.routing.stat_prefix,
            stream_idle_s=router_timeout_s(w) + 10,
            pool_attempt_s=pool_attempt_timeout_s(w),
        )
    )


def router_route(configmap: Mapping[str, Any]) -> str | None:
    """The route file's text when ``configmap`` is a router's ConfigMap (None for any other
    object): what the operator's route server hands the router's pods."""
    tags = (configmap.get("metadata") or {}).get("labels") or {}
    if configmap.get("kind") != "ConfigMap" or tags.get(COMPONENT_LABEL) != "router":
        return None
    route = (configmap.get("data") or {}).get(envoy.ROUTE_FILE)
    return None if route is None else str(route)


def routes_url(owner: Owner, spec: InferenceSpec) -> str:
    """Where the router's sidecar asks for the object's route ('' : nowhere)."""
    base = spec.routing.routes_url.rstrip("/")
    return f"{base}{ROUTES_PATH}/{owner.namespace}/{owner.name}" if base else ""


def route_sync_containers(owner: Owner, spec: InferenceSpec) -> list[dict[str, Any]]:
    """The init container that copies the ConfigMap's route file where Envoy watches
    (before Envoy starts), then the sidecar that keeps it current."""
    args = ["--from", f"{ENVOY_DIR}/{envoy.ROUTE_FILE}", "--to", ROUTE_DIR]
    url = routes_url(owner, spec)
    mounts = [
        {"name": "config", "mountPath": ENVOY_DIR, "readOnly": True},
        {"name": "route", "mountPath": ROUTE_DIR},
    ]
    common = {
        "image": spec.routing.sync_image,
        "command": ["python", "-m", "serflow.routesync"],
        "securityContext": CONTAINER_SECURITY,
        "resources": SYNC_RESOURCES,
        "volumeMounts": mounts,
    }
    return [
        {"name": f"{SYNC_CONTAINER}-init", **common, "args": [*args, "--once"]},
        {"name": SYNC_CONTAINER, **common, "args": [*args, *(["--url", url] if url else [])]},
    ]


DRAIN = (
    "import urllib.request as u; u.urlopen(u.Request("
    f"'http://127.0.0.1:{ENVOY_ADMIN_PORT}{ENVOY_DRAIN_PATH}', "
    "method='POST'), timeout=5)"
)
"""What the route-sync sidecar runs as its pod stops: Envoy's admin (loopback only, in the
pod) starts draining, telling each client connection to close after its request, while the
Envoy container's own stop waits (``router_drain_s``)."""


ENVOY_DRAIN_ARGS = ("--drain-strategy", "immediate")
"""Envoy's flags for a drain: every answer from its start says ``Connection: close`` (the
default, gradual, closes a growing share over the drain time: clients would keep their
connections to a router about to go)."""


def router_drain_s(w: Workload) -> int:
    """How long a stopping router keeps serving before Envoy gets its SIGTERM (on which it
    exits at once, cutting what is in flight): the longest request it may hold, its route's
    timeout, and two seconds for the pod's address to leave the Service's endpoints."""
    return router_timeout_s(w) + 2


def envoy_deployment(
    owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate
) -> dict[str, Any]:
    """Envoy's pods, rolled (by the bootstrap's hash on the template) whenever the
    bootstrap changes; the route changes in place (``route_sync_containers``)."""
    n = Names(owner.name)
    pod_labels = labels(owner, "router")
    boot_sha = hashlib.sha256(envoy_bootstrap(owner, spec, w, cand).encode()).hexdigest()
    init, sync = route_sync_containers(owner, spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(owner, n.envoy, "router"),
        "spec": {
            "replicas": spec.routing.replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {BOOTSTRAP_HASH_ANNOTATION: boot_sha},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10101},
                    "terminationGracePeriodSeconds": router_drain_s(w) + 5,
                    # Replicas on different nodes where there is room: a node lost takes one.
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": pod_labels},
                        }
                    ],
                    "initContainers": [init],
                    "containers": [
                        {
                            "name": "envoy",
                            "image": spec.routing.image,
                            "args": ["-c", f"{ENVOY_DIR}/envoy.yaml", "--log-level", "warn",
                                     *ENVOY_DRAIN_ARGS, "--drain-time-s", str(router_drain_s(w))],
                            # A restart loses nothing: the pod leaves the endpoints, the
                            # sidecar starts Envoy's drain, and Envoy serves what it holds
                            # until this ends (a native sleep: no shell in Envoy's image).
                            "lifecycle": {"preStop": {"sleep": {"seconds": router_drain_s(w)}}},
                            "ports": [
                                {"name": "http", "containerPort": ENVOY_PORT},
                                {"name": "stats", "containerPort": STATS_PORT},
                            ],
                            "securityContext": CONTAINER_SECURITY,
                            "readinessProbe": {
                                "httpGet": {"path": "/stats", "port": "stats"},
                                "periodSeconds": 5,
                            },
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "64Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "volumeMounts": [
                                {"name": "config", "mountPath": ENVOY_DIR, "readOnly": True},
                                {"name": "route", "mountPath": ROUTE_DIR, "readOnly": True},
                            ],
                        },
                        {**sync, "lifecycle": {"preStop": {"exec": {
                            "command": ["python", "-c", DRAIN]}}}},
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": n.envoy}},
                        {"name": "route", "emptyDir": {"sizeLimit": "4Mi"}},
                    ],
                },
            },
        },
    }


def router_disruption_budget(owner: Owner) -> dict[str, Any]:
    """At most one router pod evicted at a time (a node drained): with two or more, one
    keeps answering; with one, nothing is held back (its eviction is allowed)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(owner, Names(owner.name).envoy, "router"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(owner, "router")}},
    }


def envoy_service(owner: Owner) -> dict[str, Any]:
    """The router's ClusterIP Service: the one address clients send requests to."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(owner, Names(owner.name).envoy, "router"),
        "spec": {
            "selector": labels(owner, "router"),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}],
        },
    }
