"""Every pod the operator makes passes Pod Security "restricted" on the real API server.

The pods' templates (the pool's and the router's Deployments, the profiling Jobs) are
created as Pods with a server-side dry run in a namespace that enforces "restricted":
the API server's admission says yes or names what it refuses. The functions' pods are
Knative's (its queue-proxy beside our container) and are checked on kind.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from serflow.domain import PriceSheet
from serflow.inference import parse_inference
from serflow.k8s import builders, jobs
from serflow.policy.configurator import PoolKind, configure
from serflow.profile import parse_prices
from serflow.spec import parse_workload
from tests.controller.manifests import manifest

pytestmark = pytest.mark.cluster


@pytest.fixture
def restricted(cluster: Any, namespace: str) -> str:
    cluster.kubectl("label", "namespace", namespace, "--overwrite",
                    "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")  # fmt: skip
    return namespace


def _dry_run_pod(cluster: Any, namespace: str, name: str, spec: dict[str, Any]) -> Any:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip
    return cluster.kubectl("create", "--dry-run=server", "-f", "-",
                           input=json.dumps(pod), check=False)  # fmt: skip


def _templates(fetched: bool = False) -> dict[str, dict[str, Any]]:
    m = manifest("vgg")
    if fetched:  # the storage initializer in every pod
        m["spec"]["model"]["storageUri"] = "pvc://models/digits"
        m["spec"]["model"]["artefact"] = {"digest": "a" * 64}
    w = parse_workload(m)
    inf = parse_inference(m["spec"], "vgg")
    owner = builders.Owner("vgg", "default", "uid-1")
    out = {}
    for pool in (PoolKind.IAAS, PoolKind.HYBRID):
        cand = next(c for c in configure(w, 30.0).candidates if c.setup.pool is pool and c.feasible)
        for obj in builders.children(owner, inf, w, cand, 1, 500):
            if obj["kind"] == "Deployment":
                out[f"{pool.value}-{obj['metadata']['name']}"] = obj["spec"]["template"]["spec"]
    prices: PriceSheet = parse_prices(m["spec"]["prices"], "spec.prices")
    for job in jobs.profiler_jobs(owner, inf, prices):
        out[job["metadata"]["name"]] = job["spec"]["template"]["spec"]
    return out


def test_every_pod_template_passes_restricted(cluster: Any, restricted: str) -> None:
    templates = _templates()
    assert {"iaas-vgg-pool", "iaas-vgg-envoy", "vgg-profile-fn-2048"} <= set(templates)
    fetched = {f"fetched-{k}": v for k, v in _templates(fetched=True).items()}
    assert all("initContainers" in fetched[f"fetched-{k}"] for k in ("iaas-vgg-pool", "vgg-profile-fn-2048"))
    for name, spec in {**templates, **fetched}.items():
        r = _dry_run_pod(cluster, restricted, name, spec)
        assert r.returncode == 0, (name, r.stderr)
    # The namespace does enforce it: the same pod without its seccomp profile is refused.
    spec = json.loads(json.dumps(templates["vgg-profile-fn-2048"]))
    spec["securityContext"].pop("seccompProfile")
    for c in spec["containers"]:
        c["securityContext"].pop("seccompProfile")
    r = _dry_run_pod(cluster, restricted, "unconfined", spec)
    assert r.returncode != 0 and "restricted" in r.stderr and "seccompProfile" in r.stderr
