"""The function stages of a plan as Knative Services, and where each is reached.

A plan runs a whole-model spill function and, when hybrid, the tail past the pool's cut:
one fused function or a chain of one function per partition (``stages``). Each becomes a
Knative Service whose template pins a Revision named by its content (``revision_name``),
so the router and the pool know where a function is (``function_target``) before Knative
has made it. The pool's ``--tail`` arguments and the router's spill cluster both read the
targets from here; this module reads neither of them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from serflow import wire
from serflow.domain import Workload
from serflow.inference import FunctionAccess, InferenceSpec
from serflow.k8s.naming import Names, Owner, labels, meta, service_host
from serflow.k8s.pods import (
    CONTAINER_SECURITY,
    model_name_args,
    partition_range,
    threads_for,
)
from serflow.k8s.storage import artefact_args, artefact_source
from serflow.k8s.timeouts import COLD_START_BOUND_S
from serflow.policy.configurator import Candidate, Granularity, PoolKind
from serflow.schemas import REVISION_HASH_CHARS
from serflow.wire import FUNCTION_PORT, KNATIVE_ROUTING_HEADERS

KNATIVE_TIMEOUT_MAX = 600
"""Knative's max-revision-timeout-seconds by default: it refuses a longer timeoutSeconds."""
FUNCTION_CPU_MILLI = 1000
"""CPU request of a function pod when the profile did not measure its size (one vCPU)."""
KNATIVE_CONTAINER = "user-container"
"""The name Knative gives a Revision's only container when none is set."""


@dataclass(frozen=True)
class Stage:
    """One function role: a Knative Service running partitions first..last."""

    name: str
    first: int
    last: int
    role: str
    """spill, tail or stage."""


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


def knative_service(
    owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate, stage: Stage
) -> dict[str, Any]:
    """One function role as a Knative Service (scale to zero, one batch per pod)."""
    k = w.profile.partitions
    size = w.prices.function(cand.setup.function)
    rng = partition_range(stage.first, stage.last, k)
    args = ["--host", "0.0.0.0", "--partitions", rng, "--tau", f"{cand.tau:g}"]
    args += ["--batch", str(w.profile.batch)]  # bounds the frames it accepts
    args += artefact_args(spec.model) + model_name_args(owner.name)
    fn = spec.functions
    mem = int(size.memory_mib)
    try:  # the measured size's CPUs; an unprofiled size gets a stated default
        cpu = max(100, int(w.profile.config(size.name).vcpu * 1000))
    except KeyError:
        cpu = FUNCTION_CPU_MILLI
    args += threads_for(cpu / 1000)
    source = artefact_source(spec.model)
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
                            "securityContext": CONTAINER_SECURITY,
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz"},
                                "successThreshold": 1,
                            },
                            **({"volumeMounts": source.mounts} if source.mounts else {}),
                        }
                    ],
                    # Knative takes these with its features kubernetes.podspec-init-containers
                    # (and -persistent-volume-claim for pvc://) enabled.
                    **({"initContainers": source.init_containers} if source.init_containers else {}),
                    **({"volumes": source.volumes} if source.volumes else {}),
                },
            }
        },
    }
    service["spec"]["template"]["metadata"]["name"] = revision_name(
        stage.name, service["spec"]["template"]
    )
    return service


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


def spill_target(owner: Owner, spec: InferenceSpec, w: Workload, cand: Candidate) -> FunctionTarget:
    """The whole-model spill function's target: where the router sends what the pool does
    not take."""
    spill = next(st for st in stages(owner, w, cand) if st.role == "spill")
    return function_target(owner, spec, knative_service(owner, spec, w, cand, spill))
