"""The CRD change is backward compatible on the real API server: an object stored before
``model.artefact`` existed, with the now refused ``model.checkpoint``, survives the new
CRD (the API server ratchets validation: unchanged fields are not re-checked), can still
be updated elsewhere, and cannot be given a new checkpoint."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from serflow.k8s.crd import PLURAL
from serflow.schemas import GROUP
from tests.controller.manifests import REPO, manifest

pytestmark = pytest.mark.cluster

NEW_CRD = REPO / "crds" / "serflowinference.yaml"


def _old_crd() -> dict[str, Any]:
    """The CRD as it was before: no refusal of model.checkpoint."""
    crd = yaml.safe_load(NEW_CRD.read_text())
    version = crd["spec"]["versions"][0]
    model = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"]
    rules = model["x-kubernetes-validations"]
    refusal = [r for r in rules if r["rule"] == "!has(self.checkpoint)"]
    assert len(refusal) == 1
    model["x-kubernetes-validations"] = [r for r in rules if r not in refusal]
    return dict(crd)


def _apply(cluster: Any, doc: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(doc))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")


def test_an_object_with_a_checkpoint_survives_the_new_crd(cluster: Any, namespace: str) -> None:
    _apply(cluster, _old_crd())
    obj = copy.deepcopy(manifest("old-model"))
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["model"]["checkpoint"] = "/models/m.pt"
    cluster.kubectl("create", "-f", "-", input=json.dumps(obj))
    try:
        _apply(cluster, yaml.safe_load(NEW_CRD.read_text()))
        kind = f"{PLURAL}.{GROUP}"
        # An update elsewhere is accepted: the stored checkpoint is not re-checked ...
        r = cluster.kubectl("patch", kind, "old-model", "-n", namespace, "--type=merge",
                            "-p", json.dumps({"spec": {"traffic": {"expectedRate": 7}}}),
                            check=False)  # fmt: skip
        assert r.returncode == 0, r.stderr
        # ... a new checkpoint is refused, naming what to do instead ...
        r = cluster.kubectl("patch", kind, "old-model", "-n", namespace, "--type=merge",
                            "-p", json.dumps({"spec": {"model": {"checkpoint": "/models/n.pt"}}}),
                            check=False)  # fmt: skip
        assert r.returncode != 0 and "serflow-runtime export" in r.stderr, r.stderr
        # ... and the fix is accepted: drop the checkpoint, name the artefact.
        r = cluster.kubectl("patch", kind, "old-model", "-n", namespace, "--type=merge", "-p",
                            json.dumps({"spec": {"model": {"checkpoint": None,
                                                           "artefact": {"path": "/models/m"}}}}),
                            check=False)  # fmt: skip
        assert r.returncode == 0, r.stderr
        # a new object with a checkpoint is refused outright
        fresh = copy.deepcopy(obj)
        fresh["metadata"]["name"] = "new-model"
        r = cluster.kubectl("create", "-f", "-", input=json.dumps(fresh), check=False)
        assert r.returncode != 0 and "model.checkpoint is no longer served" in r.stderr, r.stderr
    finally:
        cluster.kubectl("delete", "sfi", "--all", "-n", namespace, "--wait=false", check=False)
        _apply(cluster, yaml.safe_load(NEW_CRD.read_text()))
