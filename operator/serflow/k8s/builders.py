"""Every child of a SerflowInference from (spec, plan), in apply order.

The children are built by one module per child kind, each a pure function of its inputs
(as KServe's controller keeps one reconciler per child kind):

- ``naming``: the owner reference, the children's names, labels and metadata;
- ``pool``: the node pool's Deployment and its headless Service;
- ``functions``: the function stages' Knative Services and where each is reached;
- ``router``: Envoy's ConfigMap (bootstrap and route file), Deployment (with the
  route-sync sidecar) and Service;
- ``policies``: the NetworkPolicies;
- ``timeouts`` and ``pods``: the request-time budget and the pods' shared parts.

This module composes them (``children``) and re-exports the names the controller, the
profiler's Jobs, the test bed and the tests import from here, so they keep one import.
It sits above every builder and no builder imports it; nothing here talks to a cluster.
"""

from __future__ import annotations

from typing import Any

from serflow.domain import Workload
from serflow.inference import InferenceSpec
from serflow.k8s.functions import (
    FUNCTION_CPU_MILLI,
    KNATIVE_CONTAINER,
    KNATIVE_TIMEOUT_MAX,
    FunctionTarget,
    Stage,
    function_target,
    function_targets,
    knative_service,
    revision_name,
    spill_target,
    stages,
)
from serflow.k8s.naming import (
    COMPONENT_LABEL,
    Names,
    Owner,
    labels,
    meta,
    owned_labels,
    service_host,
)
from serflow.k8s.pods import partition_range, threads_for
from serflow.k8s.policies import (
    KNATIVE_NAMESPACES,
    OPERATOR_POD_LABELS,
    QUEUE_PROXY_METRICS_PORT,
    QUEUE_PROXY_PORTS,
    network_policies,
)
from serflow.k8s.pool import POOL_TAINT_KEY, POOL_TOLERATIONS, pool_deployment, pool_service
from serflow.k8s.router import (
    BOOTSTRAP_HASH_ANNOTATION,
    ENVOY_DIR,
    ROUTE_DIR,
    envoy_bootstrap,
    envoy_configmap,
    envoy_deployment,
    envoy_service,
    router_disruption_budget,
    router_route,
)
from serflow.k8s.storage import artefact_args
from serflow.k8s.timeouts import (
    COLD_START_BOUND_S,
    pool_attempt_timeout_s,
    router_timeout_s,
    tail_timeout_s,
)
from serflow.policy.configurator import Candidate
from serflow.wire import STATS_PORT

__all__ = [
    "BOOTSTRAP_HASH_ANNOTATION",
    "COLD_START_BOUND_S",
    "COMPONENT_LABEL",
    "ENVOY_DIR",
    "FUNCTION_CPU_MILLI",
    "KNATIVE_CONTAINER",
    "KNATIVE_NAMESPACES",
    "KNATIVE_TIMEOUT_MAX",
    "OPERATOR_POD_LABELS",
    "POOL_TAINT_KEY",
    "POOL_TOLERATIONS",
    "QUEUE_PROXY_METRICS_PORT",
    "QUEUE_PROXY_PORTS",
    "ROUTE_DIR",
    "STATS_PORT",
    "FunctionTarget",
    "Names",
    "Owner",
    "Stage",
    "artefact_args",
    "children",
    "envoy_bootstrap",
    "envoy_configmap",
    "envoy_deployment",
    "envoy_service",
    "function_target",
    "function_targets",
    "knative_service",
    "labels",
    "meta",
    "network_policies",
    "owned_labels",
    "partition_range",
    "pool_attempt_timeout_s",
    "pool_deployment",
    "pool_service",
    "revision_name",
    "router_disruption_budget",
    "router_route",
    "router_timeout_s",
    "service_host",
    "spill_target",
    "stages",
    "tail_timeout_s",
    "threads_for",
]
"""Every public name this module held before the split into one module per child kind
(``envoy``, the renderer, and ``STATS_PORT``, which the operator scrapes, among them), but
the route annotation on the router's pods, which is gone (``router_route`` instead)."""


def children(
    owner: Owner,
    spec: InferenceSpec,
    w: Workload,
    cand: Candidate,
    replicas: int,
    pool_weight: int,
) -> list[dict[str, Any]]:
    """Every child of a plan, in apply order (backends before the router)."""
    objs = [
        pool_deployment(owner, spec, w, cand, replicas),
        pool_service(owner),
        *(knative_service(owner, spec, w, cand, st) for st in stages(owner, w, cand)),
        envoy_configmap(owner, spec, w, cand, pool_weight),
        envoy_deployment(owner, spec, w, cand),
        envoy_service(owner),
        router_disruption_budget(owner),
        *network_policies(owner),
    ]
    return objs
