"""Pure builders of a SerflowInference's children from (spec, plan).

Pods run the images' entrypoints (Dockerfile.worker: the worker server, Dockerfile.fn: the
function server); the builders pass only arguments.

Every object carries an owner reference to the SerflowInference, so deleting it
garbage-collects them, and the labels that select them. Nothing here talks to a cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serflow import wire
from serflow.domain import Workload
from serflow.inference import FunctionAccess, InferenceSpec, ModelSpec
from serflow.k8s import envoy
from serflow.k8s.crd import GROUP, KIND, VERSION
from serflow.policy.configurator import Candidate, Granularity, PoolKind
from serflow.schemas import REVISION_HASH_CHARS
from serflow.wire import (
    ENVOY_PORT,
    FUNCTION_PORT,
    KNATIVE_ROUTING_HEADERS,
    SERVICE_PORT,
    WORKER_PORT,
)
from serflow.wire import STATS_PORT as STATS_PORT  # re-exported: the operator scrapes it

ENVOY_DIR = "/etc/envoy"

_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

COLD_START_BOUND_S = 30
"""How long a request may wait for a function's cold start from zero (Knative's activator
holds it meanwhile) before the router and Knative give up on it: Kubernetes' pod-startup
SLO is 5 s at the 99th percentile with the image present, and a model server's runtime
import and model load add seconds more on a busy node. Timeouts bound stuck requests; a
late answer is measured against the SLO, not dropped at it."""


def router_timeout_s(w: Workload) -> int:
    """Envoy's route timeout: a request may wait up to an epoch D for its batch, the pool's
    part (the head, the tail call) may take D + SLO, and a request the pool gives back
    (503) may meet a function's cold start on Envoy's retry."""
    return math.ceil(2 * w.objective.epoch + w.objective.slo_s) + COLD_START_BOUND_S


def tail_timeout_s(w: Workload) -> int:
    """How long a worker's call to its tail function may take before the worker answers
    that batch's survivors 503 (Envoy then retries them on the spill function): what the
    router's timeout leaves after the batch wait (D) and the retry's cold start. Longer,
    and a tail that cannot start (no room on a node for its pod) makes Envoy time out
    first and answer 504, which it never retries (measured on kind: 303 of 1,800)."""
    return max(1, router_timeout_s(w) - math.ceil(w.objective.epoch) - COLD_START_BOUND_S)


KNATIVE_TIMEOUT_MAX = 600
"""Knative's max-revision-timeout-seconds by default: it refuses a longer timeoutSeconds."""
FUNCTION_CPU_MILLI = 1000
"""CPU request of a function pod when the profile did not measure its size (one vCPU)."""
KNATIVE_NAMESPACES = ("knative-serving", "kourier-system")
"""Where Knative's activator and autoscaler, and its Kourier ingress gateway, run: requests
to a Knative Service reach the function pods from these, not from the caller's pod."""
QUEUE_PROXY_PORTS = (8012, 8013)
"""Knative's queue-proxy in each function pod: HTTP/1 and h2c, the ports requests reach."""
QUEUE_PROXY_METRICS_PORT = 9090
"""Knative's queue-proxy metrics, scraped by the autoscaler."""
POOL_TAINT_KEY = "serflow.io/pool"
"""Taint a node pool's nodes ``serflow.io/pool=<name>:NoSchedule`` to keep other pods off
them: pool pods and the instance profiler's Jobs tolerate it."""
POOL_TOLERATIONS = [{"key": POOL_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "serflow-operator"}
"""Labels of the operator's pods (the chart's Deployment): they scrape Envoy's stats."""


@dataclass(frozen=True)
class Owner:
    """The SerflowInference the children belong to."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Names:
    """Children's names, derived from the object's name."""

    base: str

    @property
    def pool(self) -> str:
        return f"{self.base}-pool"

    @property
    def envoy(self) -> str:
        return f"{self.base}-envoy"

    @property
    def spill(self) -> str:
        return f"{self.base}-spill"

    @property
    def fused_tail(self) -> str:
        return f"{self.base}-tail"

    def stage(self, partition: int) -> str:
        return f"{self.base}-p{partition}"


def owned_labels(owner: Owner) -> dict[str, str]:
    """The labels every child of the object carries: a selector of all of them."""
    return {
        "app.kubernetes.io/name": "serflow",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/managed-by": "serflow",
    }


COMPONENT_LABEL = "app.kubernetes.io/component"


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {**owned_labels(owner), COMPONENT_LABEL: component}


def meta(owner: Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner.reference()],
    }


def service_host(name: str, namespace: str) -> str:
    """The cluster DNS name of a Kubernetes Service."""
    return f"{name}.{namespace}.svc.cluster.local"


@dataclass(frozen=True)
class Stage:
    """One function role: a Knative Service running partitions first..last."""

    name: str
    first: int
    last: int
    role: str
    """spill, tail or stage."""


def threads_for(vcpu: float) -> list[str]:
    """The runtime's thread count for a config's vCPUs, as the profiler measured it: a
    runtime left to itself sizes its pools by the node's cores, not the pod's share."""
    return ["--threads", str(max(1, round(vcpu)))]


def artefact_args(m: ModelSpec) -> list[str]:
    """The servers' model arguments: the artefact folder and the digest it must have."""
    args = ["--artefact", m.artefact_path] if m.artefact_path else []
    return args + (["--digest", m.artefact_digest] if m.artefact_digest else [])


def partition_range(first: int, last: int, k: int) -> str:
    """``A-B`` with ``K`` for the last partition: the one format of the worker's
    ``--tail A-B=URL`` and the function's ``--partitions`` (the runtime's
    ``codec.parse_partitions`` reads it)."""
    return f"{first}-{'K' if last == k else last}"


def stages(owner: Owner, w: Workload, cand: Candidate) -> list[Stage]:
    """The Knative Services a plan needs: the whole-model spill, plus the hybrid tail."""
    k = w.profile.partitions
    n = Names(owner.name)
    out = [Stage(n.spill, 1, k, "spill")]
    s = cand.setup
    if s.pool is PoolKind.HYBRID:
        if s.granularity is Granularity.CHAINED:
            out += [Stage(n.stage(j), j, j, "stage") for j in range(s.cut + 1, k + 1)]
        else:
            out.append(Stage(n.fused_tail, s.cut + 1, k, "tail"))
    return out


def pool_deployment(
    owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate, replicas: int
) -> dict[str, Any]:
    """The node pool: one worker pod per instance, running partitions 1..cut."""
    s = cand.setup
    m = spec.model
    k = w.profile.partitions
    cut = s.cut if s.pool is PoolKind.HYBRID else 0  # 0: the whole model here
    args = [
        "--host", "0.0.0.0",
        "--port", str(WORKER_PORT),
        "--tau", f"{cand.tau:g}",
        "--cut", str(cut),
        "--batch", str(w.profile.batch),
        "--epoch", f"{w.objective.epoch:g}",
        "--budget", str(w.profile.batch * cand.economics.batches_per_instance),
    ]  # fmt: skip
    args += artefact_args(m)
    tails = [st for st in stages(owner, w, cand) if st.role != "spill"]
    for st in tails:
        target = function_target(owner, spec, knative_service(owner, spec, w, cand, st))
        args += ["--tail", f"{partition_range(st.first, st.last, k)}={target.tail}"]
    if tails:
        # Ready (so routed to, see decide) only once each tail function answers: calling
        # one at zero has Knative start it before any request depends on it.
        args += ["--stage-timeout", str(tail_timeout_s(w)), "--warm-tail"]
    selector = {}
    resources: dict[str, Any] = {}
    if s.instance:
        selector = dict(w.prices.instance(s.instance).node_selector)
        cfg = w.profile.config(s.instance)
        # One worker per node: ask for most of it, leave room for the node's own agents.
        cpu = max(100, int(cfg.vcpu * 1000 * 0.8))
        mem = max(128, int(cfg.memory_mib * 0.75))
        args += threads_for(cfg.vcpu)
        resources = {
            "requests": {"cpu": f"{cpu}m", "memory": f"{mem}Mi"},
            "limits": {"memory": f"{mem}Mi"},
        }
    # Scale-in must drop nothing: finish the open batch (up to D + SLO) before SIGKILL.
    drain = math.ceil(w.objective.epoch + w.objective.slo_s)
    pod_labels = labels(owner, "pool")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(owner, Names(owner.name).pool, "pool"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(m.pod_annotations)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "nodeSelector": selector,
                    "tolerations": POOL_TOLERATIONS,
                    "terminationGracePeriodSeconds": drain + 5,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                    "containers": [
                        {
                            "name": "worker",
                            "image": m.image,
                            "args": args,
                            "ports": [{"name": "http", "containerPort": WORKER_PORT}],
                            "resources": resources,
                            "securityContext": _SECURITY,
                            "readinessProbe": _probe("/readyz", 2),
                            "livenessProbe": _probe("/healthz", 10),
                            "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def _probe(path: str, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": 3,
    }


def pool_service(owner: Owner) -> dict[str, Any]:
    """Headless: its name resolves to every ready pool pod, so Envoy balances over the pods
    itself and ejects a dead one (a ClusterIP would hide them behind one address)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(owner, Names(owner.name).pool, "pool"),
        "spec": {
            "clusterIP": "None",
            "selector": labels(owner, "pool"),
            "ports": [{"name": "http", "port": WORKER_PORT, "targetPort": "http"}],
        },
    }


def knative_service(
    owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate, stage: Stage
) -> dict[str, Any]:
    """One function role as a Knative Service (scale to zero, one batch per pod)."""
    k = w.profile.partitions
    size = w.prices.function(cand.setup.function)
    rng = partition_range(stage.first, stage.last, k)
    args = ["--host", "0.0.0.0", "--partitions", rng, "--tau", f"{cand.tau:g}"]
    args += ["--batch", str(w.profile.batch)]  # bounds the frames it accepts
    args += artefact_args(spec.model)
    fn = spec.functions
    mem = int(size.memory_mib)
    try:  # the measured size's CPUs; an unprofiled size gets a stated default
        cpu = max(100, int(w.profile.config(size.name).vcpu * 1000))
    except KeyError:
        cpu = FUNCTION_CPU_MILLI
    args += threads_for(cpu / 1000)
    service: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            **meta(owner, stage.name, f"function-{stage.role}"),
            # Reached only from inside the cluster (the router and the pool), never exposed.
            "labels": {
                **labels(owner, f"function-{stage.role}"),
                "networking.knative.dev/visibility": "cluster-local",
            },
        },
        "spec": {
            "template": {
                "metadata": {
                    "labels": labels(owner, f"function-{stage.role}"),
                    "annotations": {
                        "autoscaling.knative.dev/min-scale": str(fn.min_scale),
                        "autoscaling.knative.dev/max-scale": str(fn.max_scale),
                        "autoscaling.knative.dev/target": str(fn.container_concurrency),
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,  # it never calls the API
                    "containerConcurrency": fn.container_concurrency,
                    "timeoutSeconds": min(
                        KNATIVE_TIMEOUT_MAX, math.ceil(w.objective.slo_s * 2) + COLD_START_BOUND_S
                    ),
                    "containers": [
                        {
                            # Knative's own defaults, written out: this list is applied
                            # whole, and Knative's webhook refuses a re-apply that drops
                            # a default under an unchanged Revision name (an operator
                            # restart or a re-plan re-applies every child).
                            "name": KNATIVE_CONTAINER,
                            "image": spec.model.function_image,
                            "args": args,
                            "ports": [{"containerPort": FUNCTION_PORT}],
                            "resources": {
                                "requests": {"cpu": f"{cpu}m", "memory": f"{mem}Mi"},
                                "limits": {"memory": f"{mem}Mi"},
                            },
                            "securityContext": _SECURITY,
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz"},
                                "successThreshold": 1,
                            },
                        }
                    ],
                },
            }
        },
    }
    service["spec"]["template"]["metadata"]["name"] = revision_name(
        stage.name, service["spec"]["template"]
    )
    return service


KNATIVE_CONTAINER = "user-container"
"""The name Knative gives a Revision's only container when none is set."""


def revision_name(service: str, template: dict[str, Any]) -> str:
    """The Revision a Knative Service's template pins: ``<service>-<hash of the template>``.

    Named by content, so the router and the pool know where a function is before Knative
    has made it, a changed template is a new Revision (Knative refuses a template change
    under the same name) and an unchanged one keeps its name.
    """
    body = {k: v for k, v in template.items() if k != "metadata"}
    body["metadata"] = {k: v for k, v in (template.get("metadata") or {}).items() if k != "name"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return f"{service}-{digest[:REVISION_HASH_CHARS]}"


@dataclass(frozen=True)
class FunctionTarget:
    """Where the router and the pool send a function's requests."""

    host: str
    """DNS name of the Kubernetes Service that answers (port ``SERVICE_PORT``)."""
    headers: tuple[tuple[str, str], ...]
    """Headers every request carries: Knative's routing headers for a Revision."""
    tail: str
    """The same target as the worker's ``--tail A-B=TARGET`` spells it."""
    readiness: tuple[str, str, str]
    """(apiVersion, kind, name) of the object whose Ready condition says it serves."""


def function_target(owner: Owner, spec: InferenceSpec, service: dict[str, Any]) -> FunctionTarget:
    """How a Knative Service built by ``knative_service`` is reached, per
    ``spec.functions.access``.

    ``revision``: its pinned Revision's Kubernetes Service, which Knative points at the
    activator while the Revision is at zero and at the pods once they serve; the activator
    finds the Revision by the headers an ingress would add, the queue-proxy ignores them.
    ``route``: the Knative Service's own cluster-local name, served by the networking layer.
    """
    ns, name = owner.namespace, service["metadata"]["name"]
    if spec.functions.access is FunctionAccess.ROUTE:
        host = service_host(name, ns)
        return FunctionTarget(host, (), f"http://{host}", (service["apiVersion"], "Service", name))
    rev = service["spec"]["template"]["metadata"]["name"]
    revision_header, namespace_header = KNATIVE_ROUTING_HEADERS
    return FunctionTarget(
        host=service_host(rev, ns),
        headers=((revision_header, rev), (namespace_header, ns)),
        tail=wire.revision_target(ns, rev),
        readiness=(service["apiVersion"], "Revision", rev),
    )


def function_targets(
    owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate
) -> list[FunctionTarget]:
    """Every function role's target, the spill first (``stages`` order)."""
    return [
        function_target(owner, spec, knative_service(owner, spec, w, cand, st))
        for st in stages(owner, w, cand)
    ]


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


def spill_target(owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate) -> FunctionTarget:
    spill = next(st for st in stages(owner, w, cand) if st.role == "spill")
    return function_target(owner, spec, knative_service(owner, spec, w, cand, spill))


def envoy_bootstrap(owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate) -> str:
    """Envoy's static bootstrap (listeners, the pool and functions clusters) as YAML."""
    return envoy.to_yaml(
        envoy.bootstrap(
            pool=[(service_host(Names(owner.name).pool, owner.namespace), WORKER_PORT)],
            functions=[(spill_target(owner, spec, w, cand).host, SERVICE_PORT)],
            route_dir=ENVOY_DIR,
            listen=("0.0.0.0", ENVOY_PORT),
            stats=("0.0.0.0", STATS_PORT),
            node_id=owner.name,
            stat_prefix=spec.routing.stat_prefix,
        )
    )


ROUTE_HASH_ANNOTATION = "serflow.io/route-sha256"
"""Set on the router's pods after each change of the route file: the kubelet refreshes a
mounted ConfigMap only on its periodic sync (measured on kind: 62 s), or at once when the
pod changes (0.9 s). A route a minute late sends a new pool nothing for a minute."""


def route_nudge(configmap: Mapping[str, Any]) -> dict[str, str] | None:
    """The annotation that makes the kubelet refresh the router's route file at once, when
    ``configmap`` is the router's (None for any other object)."""
    labels = configmap.get("metadata", {}).get("labels", {})
    if configmap.get("kind") != "ConfigMap" or labels.get(COMPONENT_LABEL) != "router":
        return None
    route = str(configmap.get("data", {}).get(envoy.ROUTE_FILE, ""))
    return {ROUTE_HASH_ANNOTATION: hashlib.sha256(route.encode()).hexdigest()[:16]}


BOOTSTRAP_HASH_ANNOTATION = "serflow.io/bootstrap-sha256"
"""On the router's pods: Envoy reads its bootstrap once, so a new one (a new Revision to
spill to) must roll the pods; the route file beside it is watched and needs no restart."""


def envoy_deployment(
    owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate
) -> dict[str, Any]:
    n = Names(owner.name)
    pod_labels = labels(owner, "router")
    boot_sha = hashlib.sha256(envoy_bootstrap(owner, spec, w, cand).encode()).hexdigest()
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
                    "containers": [
                        {
                            "name": "envoy",
                            "image": spec.routing.image,
                            "args": ["-c", f"{ENVOY_DIR}/envoy.yaml", "--log-level", "warn"],
                            "ports": [
                                {"name": "http", "containerPort": ENVOY_PORT},
                                {"name": "stats", "containerPort": STATS_PORT},
                            ],
                            "securityContext": _SECURITY,
                            "readinessProbe": {
                                "httpGet": {"path": "/stats", "port": "stats"},
                                "periodSeconds": 5,
                            },
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "64Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "volumeMounts": [
                                {"name": "config", "mountPath": ENVOY_DIR, "readOnly": True}
                            ],
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": n.envoy}}],
                },
            },
        },
    }


def envoy_service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(owner, Names(owner.name).envoy, "router"),
        "spec": {
            "selector": labels(owner, "router"),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}],
        },
    }


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
        *network_policies(owner),
    ]
    return objs
