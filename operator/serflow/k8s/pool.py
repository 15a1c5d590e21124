"""The node pool: the worker Deployment (one pod per instance, partitions 1..cut) and the
headless Service the router balances over.

The pool's worker calls the plan's tail functions itself, so its arguments name their
targets: this module reads them from ``functions`` (never the other way round).
"""

from __future__ import annotations

import math
from typing import Any

from serflow.domain import Workload
from serflow.inference import InferenceSpec
from serflow.k8s.functions import function_target, knative_service, stages
from serflow.k8s.naming import Names, Owner, labels, meta
from serflow.k8s.pods import (
    CONTAINER_SECURITY,
    model_name_args,
    partition_range,
    threads_for,
)
from serflow.k8s.storage import artefact_args, artefact_source
from serflow.k8s.timeouts import tail_timeout_s
from serflow.policy.configurator import Candidate, PoolKind
from serflow.wire import WORKER_PORT

POOL_TAINT_KEY = "serflow.io/pool"
"""Taint a node pool's nodes ``serflow.io/pool=<name>:NoSchedule`` to keep other pods off
them: pool pods and the instance profiler's Jobs tolerate it."""
POOL_TOLERATIONS = [{"key": POOL_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]


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
    args += artefact_args(m) + model_name_args(owner.name)
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
    source = artefact_source(m)
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
                    **({"initContainers": source.init_containers} if source.init_containers else {}),
                    "containers": [
                        {
                            "name": "worker",
                            "image": m.image,
                            "args": args,
                            "ports": [{"name": "http", "containerPort": WORKER_PORT}],
                            "resources": resources,
                            "securityContext": CONTAINER_SECURITY,
                            "readinessProbe": _probe("/readyz", 2),
                            "livenessProbe": _probe("/healthz", 10),
                            "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
                            "volumeMounts": [
                                {"name": "tmp", "mountPath": "/tmp"},
                                *source.mounts,
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        *source.volumes,
                    ],
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
