"""The artefact fetched from a storage URI: the storage initializer in every pod that
opens the model, the servers pointed at what it fetched, and why a failed fetch is said."""

from __future__ import annotations

from typing import Any

import pytest

from serflow.errors import InputError
from serflow.inference import parse_inference
from serflow.k8s import builders, storage
from serflow.k8s.jobs import profiler_jobs
from serflow.policy.configurator import Granularity, PoolKind, configure
from serflow.profile import parse_prices
from serflow.spec import parse_workload
from tests.controller.manifests import manifest

DIGEST = "d" * 64


def _spec(uri: str, **model: Any) -> dict[str, Any]:
    m = manifest("vgg")
    m["spec"]["model"].update(storageUri=uri, artefact={"digest": DIGEST}, **model)
    return m


def _pods(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every pod template the plan and the profiling Jobs make, by child name."""
    w = parse_workload(m)
    inf = parse_inference(m["spec"], "vgg")
    owner = builders.Owner("vgg", "default", "uid-1")
    cand = next(
        c for c in configure(w, 30.0).candidates
        if c.setup.pool is PoolKind.HYBRID and c.setup.granularity is Granularity.FUSED
    )  # fmt: skip
    out = {}
    for obj in builders.children(owner, inf, w, cand, 1, 500):
        if obj["kind"] in ("Deployment", "Service") and "template" in obj["spec"]:
            out[obj["metadata"]["name"]] = obj["spec"]["template"]["spec"]
    for job in profiler_jobs(owner, inf, parse_prices(m["spec"]["prices"], "spec.prices")):
        out[job["metadata"]["name"]] = job["spec"]["template"]["spec"]
    return out


def test_every_pod_that_opens_the_model_fetches_it_first() -> None:
    pods = _pods(_spec("pvc://models/digits/v1", storageImage="reg/storage:1"))
    served = {n: p for n, p in pods.items() if n != "vgg-envoy"}
    assert set(served) == {"vgg-pool", "vgg-tail", "vgg-spill", "vgg-profile-c6i-xlarge",
                           "vgg-profile-c6i-large", "vgg-profile-fn-2048"}  # fmt: skip
    # The router opens no model: its one init container copies its route.
    router_init = [c["name"] for c in pods["vgg-envoy"].get("initContainers", [])]
    assert storage.FETCH_CONTAINER not in router_init and len(router_init) == 1
    for name, pod in served.items():
        (fetch,) = pod["initContainers"]
        assert fetch["name"] == storage.FETCH_CONTAINER and fetch["image"] == "reg/storage:1"
        assert fetch["args"][:4] == ["pvc://models/digits/v1", storage.ARTEFACT_DIR, "--digest", DIGEST]
        assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols[storage.ARTEFACT_VOLUME]["emptyDir"] == {"sizeLimit": "4096Mi"}
        assert vols[storage.PVC_VOLUME]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
        assert {"name": storage.PVC_VOLUME, "mountPath": "/mnt/pvc/models", "readOnly": True} in fetch["volumeMounts"]
        (server,) = pod["containers"]
        mount = {"name": storage.ARTEFACT_VOLUME, "mountPath": storage.ARTEFACT_MOUNT, "readOnly": True}
        assert mount in server["volumeMounts"], name
        # the server opens what was fetched, and checks the digest once more
        words = server.get("args") or server["command"][-1].split()
        at = words.index("--artefact")
        assert words[at + 1] == storage.ARTEFACT_DIR, name
        if "--digest" in words:
            assert words[words.index("--digest") + 1] == DIGEST


def test_s3_keys_come_from_the_users_secret_and_the_bound_from_the_spec() -> None:
    m = _spec("s3://models/digits", storageSecret="s3-keys")
    m["spec"]["model"]["artefact"]["maxMiB"] = 64
    pod = _pods(m)["vgg-pool"]
    (fetch,) = pod["initContainers"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-keys"}}]
    assert fetch["args"][fetch["args"].index("--max-bytes") + 1] == str(64 << 20)
    assert [v["name"] for v in pod["volumes"]] == ["tmp", storage.ARTEFACT_VOLUME]


def test_the_initializer_arguments_parse_with_the_runtime_cli() -> None:
    """The builder and the initializer agree on the command line and the claim's root
    (the control plane never imports the data plane: this test holds the two together)."""
    runtime_storage = pytest.importorskip("serflow_runtime.storage")
    from serflow_runtime.cli import parser

    (fetch,) = _pods(_spec("pvc://models/digits"))["vgg-pool"]["initContainers"]
    a = parser().parse_args(["fetch", *fetch["args"]])
    assert (a.uri, str(a.dest), a.digest) == ("pvc://models/digits", storage.ARTEFACT_DIR, DIGEST)
    assert a.timeout == storage.FETCH_TIMEOUT_S == runtime_storage.DEFAULT_TIMEOUT_S
    assert str(runtime_storage.PVC_ROOT) == storage.PVC_ROOT


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ({"storageUri": "pvc://models/d"}, "spec.model.artefact.digest: required with storageUri"),
        (
            {"storageUri": "pvc://models/d", "artefact": {"digest": DIGEST, "path": "/m"}},
            "spec.model.artefact.path: names an artefact inside the images",
        ),
        ({"storageUri": "ftp://host/m", "artefact": {"digest": DIGEST}}, "spec.model.storageUri"),
    ],
)
def test_a_fetch_that_could_not_be_verified_is_refused(model: dict[str, Any], problem: str) -> None:
    m = manifest("vgg")
    m["spec"]["model"].update(model)
    with pytest.raises(InputError, match=problem.replace(".", r"\.")):
        parse_inference(m["spec"], "vgg")


def test_a_failed_fetch_says_why_mismatch_first() -> None:
    assert storage.fetch_problem([]) is None
    reason, said = storage.fetch_problem(["unavailable: GET http://m/manifest.json: 404"])  # type: ignore[misc]
    assert reason == "ArtefactUnavailable" and said.endswith("404")
    reason, said = storage.fetch_problem(
        ["unavailable: timed out", "mismatch: stage-3.onnx has sha256 0842..., the manifest says 6386..."]
    )  # type: ignore[misc]
    assert reason == "ArtefactMismatch"
    assert said == (
        "the artefact's fetch failed (2 pods): mismatch: stage-3.onnx has sha256 0842..., "
        "the manifest says 6386..."
    )
