"""Profiling on the target hardware: one runtime-profiler Job per instance type and function size."""

from __future__ import annotations

from typing import Any

from serflow.inference import InferenceSpec
from serflow.k8s.builders import Owner, _meta
from serflow.profile import PriceSheet

PROFILE_CPUS_PER_FUNCTION_GB = 0.6
"""Function sizes get CPU in proportion to memory, as cloud functions do (approx.)."""


def profiler_jobs(owner: Owner, spec: InferenceSpec, prices: PriceSheet) -> list[dict[str, Any]]:
    """Jobs that measure the model on each config; each prints a Profile document to its log."""
    out = []
    taus = ",".join(f"{t:g}" for t in spec.job_taus)
    for inst in prices.instances:
        out.append(_job(owner, spec, inst.name, "instance", dict(inst.node_selector), taus))
    for size in prices.functions:
        out.append(_job(owner, spec, size.name, "function", {}, taus))
    return out


def _job(owner: Owner, spec: InferenceSpec, config: str, kind: str,
         selector: dict[str, str], taus: str) -> dict[str, Any]:  # fmt: skip
    name = f"{owner.name}-profile-{_dns(config)}"[:63].rstrip("-")
    args = [
        "profile", "--batch", str(spec.model.batch), "--taus", taus,
        "--name", config, "--kind", kind, "--out", "-",
    ]  # fmt: skip
    if spec.model.checkpoint:
        args += ["--checkpoint", spec.model.checkpoint]
    meta = _meta(owner, name, "profiler")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": meta["labels"]},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "nodeSelector": selector,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "profiler",
                            "image": spec.job_image or spec.model.image,
                            "command": ["serflow-runtime"],
                            "args": args,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def _dns(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-")
