"""What the pods of the model servers and the router share: the restricted container
security context and the model servers' command-line arguments.

Pods run the images' entrypoints (Dockerfile.worker: the worker server, Dockerfile.fn: the
function server); the builders pass only arguments, and the pool's worker and the
functions spell the shared ones here so the two servers read them alike.
"""

from __future__ import annotations

from typing import Any

CONTAINER_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""Every container serflow runs: the Pod Security Standards' restricted profile."""


def threads_for(vcpu: float) -> list[str]:
    """The runtime's thread count for a config's vCPUs, as the profiler measured it: a
    runtime left to itself sizes its pools by the node's cores, not the pod's share."""
    return ["--threads", str(max(1, round(vcpu)))]


def model_name_args(name: str) -> list[str]:
    """The model's name under the Open Inference Protocol (``/v2/models/NAME``): the
    SerflowInference's name, so a client calls the router by the object it applied."""
    return ["--model-name", name]


def partition_range(first: int, last: int, k: int) -> str:
    """``A-B`` with ``K`` for the last partition: the one format of the worker's
    ``--tail A-B=URL`` and the function's ``--partitions`` (the runtime's
    ``codec.parse_partitions`` reads it)."""
    return f"{first}-{'K' if last == k else last}"
