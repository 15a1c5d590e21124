"""The real-cluster path (README, "On a real cluster"): kind + Knative + the two images.

Runs only where ``kind`` and a Docker engine are present; skipped (saying why) elsewhere.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from serflow_testbed.harness import wait_for

pytestmark = pytest.mark.kind

REPO = Path(__file__).resolve().parents[2]
KNATIVE = "knative-v1.20.0"


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def _run(*args: str, timeout: float = 900) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert r.returncode == 0, f"{' '.join(args)}:\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.skipif(shutil.which("kind") is None, reason="kind is not installed on this machine")
@pytest.mark.skipif(not _docker_ok(), reason="no Docker engine on this machine")
def test_kind_end_to_end() -> None:
    name = "serflow-e2e"
    _run("kind", "create", "cluster", "--name", name)
    try:
        base = f"https://github.com/knative/serving/releases/download/{KNATIVE}"
        _run("kubectl", "apply", "-f", f"{base}/serving-crds.yaml")
        _run("kubectl", "apply", "-f", f"{base}/serving-core.yaml")
        for tag, dockerfile in (("serflow/worker:e2e", "Dockerfile.worker"), ("serflow/fn:e2e", "Dockerfile.fn"),
                                ("serflow/operator:e2e", "Dockerfile.operator")):  # fmt: skip
            _run("docker", "build", "-t", tag, "-f", dockerfile, ".")
            _run("kind", "load", "docker-image", tag, "--name", name)
        _run("helm", "install", "serflow", "charts/serflow-operator", "-n", "serflow-system", "--create-namespace",
             "--set", "image.repository=serflow/operator", "--set", "image.tag=e2e")  # fmt: skip
        _run("kubectl", "apply", "-f", "examples/vgg16-cifar10.yaml")
        configured = "jsonpath={.status.conditions[?(@.type=='Configured')].status}"
        wait_for(
            "the SerflowInference to be Configured",
            lambda: _run("kubectl", "get", "sfi", "vgg16-cifar10", "-o", configured) == "True",
            600,
            every=5,
        )
    finally:
        subprocess.run(
            ["kind", "delete", "cluster", "--name", name], capture_output=True, timeout=300
        )
