"""The CRD on the real API server agrees with the parsers: it fills in the same defaults,
and it refuses the same bad fields, naming the same path."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from serflow import wire
from serflow.inference import parse_inference
from serflow.schemas import API_VERSION
from serflow.spec import parse_workload
from tests.controller.manifests import manifest
from tests.schema.test_inference import BAD, _spec

pytestmark = pytest.mark.cluster




def _dry_run(cluster: Any, namespace: str, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The object as the API server would store it (defaulted), or its refusal."""
    obj = {
        "apiVersion": API_VERSION,
        "kind": "SerflowInference",
        "metadata": {"name": "vgg", "namespace": namespace},
        "spec": spec,
    }
    r: subprocess.CompletedProcess[str] = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj), check=False
    )
    return r


def test_api_server_fills_in_the_parsers_defaults(crd_cluster: Any, namespace: str) -> None:
    # Empty objects: the API server defaults the fields of objects that are present.
    spec = _spec(routing={}, functions={}, scaling={"ewma": {}})
    spec["model"] = {"image": "serflow/worker:dev", "exits": [2, 4, 7], "batch": 10}
    r = _dry_run(crd_cluster, namespace, spec)
    assert r.returncode == 0, r.stderr
    served = json.loads(r.stdout)["spec"]
    assert served["routing"]["image"] == wire.ENVOY_IMAGE
    assert served["routing"]["statPrefix"] == wire.STAT_PREFIX
    assert served["scaling"]["maxInstances"] == 1000 and served["scaling"]["ewma"]["a"] == 0.2
    assert served["profile"]["inline"]["fingerprint"]["width"] == 0.25  # given, not defaulted
    assert parse_inference(served, "vgg") == parse_inference(spec, "vgg")
    doc = {**manifest(), "spec": spec}
    assert parse_workload({**doc, "spec": served}) == parse_workload(doc)


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_api_server_refuses_what_the_parser_refuses_at_the_same_field(
    crd_cluster: Any, namespace: str, changes: dict[str, Any], message: str
) -> None:
    field = message.split(":", 1)[0]
    r = _dry_run(crd_cluster, namespace, _spec(**changes))
    assert r.returncode != 0, f"the API server accepted {changes}"
    assert field in r.stderr, r.stderr
