"""Profiling on the target hardware: one runtime-profiler Job per instance type and function size."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from serflow.domain import PriceSheet
from serflow.inference import InferenceSpec
from serflow.k8s.builders import POOL_TOLERATIONS, Owner, meta
from serflow.k8s.crd import NAME_LIMIT, PROFILE_JOB_INFIX
from serflow.k8s.pods import CONTAINER_SECURITY
from serflow.k8s.storage import artefact_folder, artefact_source


def profiler_jobs(owner: Owner, spec: InferenceSpec, prices: PriceSheet) -> list[dict[str, Any]]:
    """Jobs that measure the model on each config; each prints a Profile document to its log."""
    out = []
    taus = ",".join(f"{t:g}" for t in spec.job_taus)
    for inst in prices.instances:
        out.append(_job(owner, spec, inst.name, "instance", dict(inst.node_selector), taus))
    for size in prices.functions:
        out.append(_job(owner, spec, size.name, "function", {}, taus))
    return out


PROFILE_DEADLINE_S = 1800
"""Seconds a profiling Job may run, retries included: a hung profiler ends the Job (the
object then says ProfileFailed) instead of leaving it ProfilePending for ever."""

MARKER = "--- serflow profile ---"
"""The profiler Job prints this line, then the Profile YAML, to its log."""


def _job(owner: Owner, spec: InferenceSpec, config: str, kind: str,
         selector: dict[str, str], taus: str) -> dict[str, Any]:  # fmt: skip
    name = job_name(owner.name, config)
    profile = [
        "serflow-runtime", "profile", "--config", config, "--batch", str(spec.model.batch),
        "--taus", taus, "--name", config, "--out", "/tmp/profile.yaml",
    ]  # fmt: skip
    if folder := artefact_folder(spec.model):
        profile += ["--artefact", folder]
    # The profile goes to the log after a marker; the operator reads it when the Job is done.
    script = f"{shlex.join(profile)} >&2 && echo {shlex.quote(MARKER)} && cat /tmp/profile.yaml"
    md = meta(owner, name, "profiler")
    source = artefact_source(spec.model)
    md["labels"]["serflow.io/config"] = _dns(config)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": md,
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": PROFILE_DEADLINE_S,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": md["labels"]},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "nodeSelector": selector,
                    "tolerations": POOL_TOLERATIONS if kind == "instance" else [],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    **({"initContainers": source.init_containers} if source.init_containers else {}),
                    "containers": [
                        {
                            "name": "profiler",
                            "image": spec.job_image or spec.model.image,
                            "command": ["sh", "-c", script],
                            "securityContext": CONTAINER_SECURITY,
                            "volumeMounts": [
                                {"name": "tmp", "mountPath": "/tmp"},
                                *source.mounts,
                            ],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}, *source.volumes],
                },
            },
        },
    }


def job_name(base: str, config: str) -> str:
    return f"{base}{PROFILE_JOB_INFIX}{_dns(config)}"[:NAME_LIMIT].rstrip("-")


def profile_from_log(log: str) -> dict[str, Any] | None:
    """The Profile document a profiler Job printed after the marker (None if absent)."""
    _, sep, rest = log.partition(MARKER)
    if not sep:
        return None
    doc = yaml.safe_load(rest)
    return doc if isinstance(doc, dict) else None


def merge_profiles(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One Profile from one per config: every job's configs, the rest from the first.

    The exit shares, accuracy and cut sizes depend on the model and the data, not on
    where it ran, so any job's are the same; the runtimes are per config.
    """
    if not docs:
        raise ValueError("no profile to merge")
    first = dict(docs[0]["profile"])
    configs: dict[str, Any] = {}
    for d in docs:
        for c in d["profile"]["configs"]:
            configs.setdefault(c["name"], c)
    return {"apiVersion": "serflow.io/v1alpha1", "kind": "Profile",
            "profile": {**first, "configs": list(configs.values())}}  # fmt: skip


def _dns(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-")
