"""Where a model's artefact comes from when ``spec.model.storageUri`` names it: an init
container (the storage initializer, Dockerfile.storage) fetches it into an emptyDir that
the server then reads, in pool pods, Knative functions and profiling Jobs alike.

The initializer verifies the manifest's digest and every file's SHA-256 before the server
starts; it ends with exit 2 (refused), 3 (unavailable) or 4 (mismatch) and one line,
``KIND: REASON``, as its termination message, which the operator quotes in the object's
Ready condition (``fetch_problem``). A pure function of the model spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from serflow.inference import ModelSpec
from serflow.k8s.pods import CONTAINER_SECURITY

FETCH_CONTAINER = "fetch-artefact"
"""The init container's name: the operator finds its termination message by it."""
ARTEFACT_VOLUME = "artefact"
ARTEFACT_MOUNT = "/artefact"
ARTEFACT_DIR = f"{ARTEFACT_MOUNT}/model"
"""Where the fetched artefact lies (a new folder inside the emptyDir, as the initializer
writes it atomically beside its temporary one)."""
PVC_ROOT = "/mnt/pvc"
"""Where a ``pvc://CLAIM/PATH`` claim is mounted, read-only: the initializer's
``--pvc-root`` default (serflow_runtime.storage.PVC_ROOT; a test checks they agree)."""
PVC_VOLUME = "artefact-source"
FETCH_TIMEOUT_S = 600
"""Seconds one fetch may take: the initializer's own default (4 GiB at about 7 MiB/s)."""


def artefact_folder(m: ModelSpec) -> str:
    """Where the servers and the profiler open the artefact ('' for the images' default):
    the fetched folder, or the path inside the images."""
    return ARTEFACT_DIR if m.storage_uri else m.artefact_path


def artefact_args(m: ModelSpec) -> list[str]:
    """The servers' model arguments: the artefact folder and the digest it must have."""
    folder = artefact_folder(m)
    args = ["--artefact", folder] if folder else []
    return args + (["--digest", m.artefact_digest] if m.artefact_digest else [])


@dataclass(frozen=True)
class ArtefactSource:
    """What a pod needs to serve a fetched artefact (all empty without a storage URI)."""

    init_containers: list[dict[str, Any]] = field(default_factory=list)
    """The storage initializer, first in the pod."""
    volumes: list[dict[str, Any]] = field(default_factory=list)
    """The emptyDir it fills and, for ``pvc://``, the claim it reads."""
    mounts: list[dict[str, Any]] = field(default_factory=list)
    """The server container's read-only mount of the fetched artefact."""


def artefact_source(m: ModelSpec) -> ArtefactSource:
    """The init container, volumes and mount that fetch ``m.storage_uri``."""
    if not m.storage_uri:
        return ArtefactSource()
    limit = m.artefact_max_mib << 20
    volumes: list[dict[str, Any]] = [
        {"name": ARTEFACT_VOLUME, "emptyDir": {"sizeLimit": f"{m.artefact_max_mib}Mi"}}
    ]
    mounts: list[dict[str, Any]] = [{"name": ARTEFACT_VOLUME, "mountPath": ARTEFACT_MOUNT}]
    if m.storage_uri.startswith("pvc://"):
        claim = m.storage_uri.removeprefix("pvc://").split("/", 1)[0]
        volumes.append(
            {"name": PVC_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append(
            {"name": PVC_VOLUME, "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True}
        )
    args = [
        m.storage_uri, ARTEFACT_DIR,
        "--digest", m.artefact_digest,
        "--max-bytes", str(limit),
        "--timeout", str(FETCH_TIMEOUT_S),
    ]  # fmt: skip
    fetch: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": m.storage_image,
        "args": args,
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if m.storage_secret:
        # S3's endpoint, region and keys as AWS_* variables from the user's Secret.
        fetch["envFrom"] = [{"secretRef": {"name": m.storage_secret}}]
    return ArtefactSource(
        init_containers=[fetch],
        volumes=volumes,
        mounts=[{"name": ARTEFACT_VOLUME, "mountPath": ARTEFACT_MOUNT, "readOnly": True}],
    )


class FetchProblem(StrEnum):
    """Reasons of a Ready=False whose cause is the artefact's fetch."""

    MISMATCH = "ArtefactMismatch"
    """A digest or a file's SHA-256 differs from what the spec pins."""
    UNAVAILABLE = "ArtefactUnavailable"
    """Not found, refused, too big or too slow (or the request itself was refused)."""


def fetch_problem(messages: list[str]) -> tuple[str, str] | None:
    """(reason, message) from the failed initializers' termination messages (``KIND:
    REASON``, one per pod that failed), or None when none failed."""
    if not messages:
        return None
    mismatch = [x for x in messages if x.startswith("mismatch:")]
    first = (mismatch or messages)[0]
    reason = FetchProblem.MISMATCH if mismatch else FetchProblem.UNAVAILABLE
    more = f" ({len(messages)} pods)" if len(messages) > 1 else ""
    return reason, f"the artefact's fetch failed{more}: {first[:512]}"
