"""The NetworkPolicies of a SerflowInference: who may reach each kind of its pods.

They select pods by the labels ``naming`` gives them and depend on no plan: the same four
policies cover every pool kind and granularity (one whose pods a plan does not run, the
tail functions' under a plan without a tail, has no effect).
"""

from __future__ import annotations

from typing import Any

from serflow.k8s.naming import COMPONENT_LABEL, Names, Owner, meta
from serflow.wire import ENVOY_PORT, STATS_PORT, WORKER_PORT

KNATIVE_NAMESPACES = ("knative-serving", "kourier-system")
"""Where Knative's activator and autoscaler, and its Kourier ingress gateway, run: requests
to a Knative Service reach the function pods from these, not from the caller's pod."""
QUEUE_PROXY_PORTS = (8012, 8013)
"""Knative's queue-proxy in each function pod: HTTP/1 and h2c, the ports requests reach."""
QUEUE_PROXY_METRICS_PORT = 9090
"""Knative's queue-proxy metrics, scraped by the autoscaler."""
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "serflow-operator"}
"""Labels of the operator's pods (the chart's Deployment): they scrape Envoy's stats."""


def _ports(*ports: int) -> list[dict[str, Any]]:
    # The protocol is spelled out: the API server defaults it, and drift compares what we set.
    return [{"protocol": "TCP", "port": p} for p in ports]


def _pods(owner: Owner, *components: str) -> dict[str, Any]:
    """A selector of this object's pods of the given components."""
    return {
        "matchLabels": {"app.kubernetes.io/instance": owner.name},
        "matchExpressions": [
            {"key": COMPONENT_LABEL, "operator": "In", "values": list(components)}
        ],
    }


def _ingress_policy(
    owner: Owner, name: str, component: str, pods: dict[str, Any], rules: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(owner, name, component),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": rules},
    }


def network_policies(owner: Owner) -> list[dict[str, Any]]:
    """Who may reach each kind of pod (ingress only; enforced by a CNI that enforces policy).

    The router's pods reach the pool and the spill functions; of this object's pods only
    the pool's reach the tail functions; Knative's own pods (activator, autoscaler, ingress
    gateway) reach every function; anyone reaches the router's ingress, and only the
    operator its stats listener.
    """
    n = Names(owner.name)
    router = {"podSelector": _pods(owner, "router")}
    pool = {"podSelector": _pods(owner, "pool")}
    knative = {
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": list(KNATIVE_NAMESPACES),
                }
            ]
        }
    }
    # Only the queue-proxy: a request straight to the function's port would bypass
    # Knative's concurrency limit and its request accounting.
    queue = _ports(*QUEUE_PROXY_PORTS)
    from_knative = {"from": [knative], "ports": [*queue, *_ports(QUEUE_PROXY_METRICS_PORT)]}
    operator = {"namespaceSelector": {}, "podSelector": {"matchLabels": OPERATOR_POD_LABELS}}
    return [
        _ingress_policy(owner, n.pool, "pool", _pods(owner, "pool"),
                        [{"from": [router], "ports": _ports(WORKER_PORT)}]),
        _ingress_policy(owner, n.spill, "function-spill", _pods(owner, "function-spill"),
                        [{"from": [router], "ports": queue}, from_knative]),
        _ingress_policy(owner, n.fused_tail, "function-tail",
                        _pods(owner, "function-tail", "function-stage"),
                        [{"from": [pool], "ports": queue}, from_knative]),
        _ingress_policy(owner, n.envoy, "router", _pods(owner, "router"), [
            {"ports": _ports(ENVOY_PORT)},
            {"from": [operator], "ports": _ports(STATS_PORT)},
        ]),
    ]  # fmt: skip
