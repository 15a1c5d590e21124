"""The schema guards what the code assumes: each value that would break a builder, the
operator or the runtime is refused by the CLI in one line and by the real API server,
both naming the field."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from serflow.errors import InputError
from serflow.inference import parse_inference
from serflow.k8s.builders import Names, revision_name
from serflow.k8s.crd import NAME_LIMIT
from serflow.k8s.jobs import job_name
from serflow.schemas import (
    MAX_EXITS,
    MAX_STAGES,
    NAME_MAX,
    REVISION_HASH_CHARS,
)
from tests.controller.manifests import REPO, manifest

LONGEST_NAME = "a" * NAME_MAX
"""The longest SerflowInference name the CRD accepts."""


def _manifest(**changes: Any) -> dict[str, Any]:
    """The test manifest with ``a__b__c=value`` changes (``None`` deletes)."""
    doc = copy.deepcopy(manifest())
    for path, value in changes.items():
        node = doc
        *parents, last = path.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


_SIZES = "spec__prices__functions__sizes"
_INLINE = "spec__profile__inline"

# (changes, the CLI's one-line error, the field the API server's refusal names)
GUARDS: list[tuple[dict[str, Any], str, str]] = [
    (
        {"metadata__name": LONGEST_NAME + "a"},
        f"metadata.name: expected at most {NAME_MAX} characters, got {NAME_MAX + 1}",
        "metadata.name",
    ),
    (
        {"metadata__name": "1vgg"},
        "metadata.name: expected a DNS-1035 label (lower case letters, digits, '-', "
        "starting with a letter), got '1vgg'",
        "metadata.name",
    ),
    (
        {"spec__model__image": ""},
        "spec.model.image: expected an image reference (no blanks), got ''",
        "spec.model.image",
    ),
    (
        {"spec__model__image": "serflow/worker:1 --privileged"},
        "spec.model.image: expected an image reference (no blanks), got "
        "'serflow/worker:1 --privileged'",
        "spec.model.image",
    ),
    (
        {"spec__routing__image": "envoy proxy"},
        "spec.routing.image: expected an image reference (no blanks), got 'envoy proxy'",
        "spec.routing.image",
    ),
    (
        {"spec__model__artefact__digest": "ABC"},
        "spec.model.artefact.digest: expected a SHA-256 digest (64 lower-case hex digits), "
        "got 'ABC'",
        "spec.model.artefact.digest",
    ),
    (
        {"spec__model__artefact__path": "models/digits"},
        "spec.model.artefact.path: expected an absolute path or the name of an artefact the "
        "image ships, got 'models/digits'",
        "spec.model.artefact.path",
    ),
    (
        {"spec__model__architecture": "vgg 16"},
        "spec.model.architecture: expected a non-empty string matching ^[A-Za-z0-9_.-]+$, got 'vgg 16'",
        "spec.model.architecture",
    ),
    (
        {"spec__model__batch": 100000},
        "spec.model.batch: expected an integer >= 1 and <= 4096, got 100000",
        "spec.model.batch",
    ),
    (
        {"spec__model__exits": list(range(1, MAX_EXITS + 2))},
        f"spec.model.exits: expected at most {MAX_EXITS} items, got {MAX_EXITS + 1}",
        "spec.model.exits",
    ),
    (
        {"spec__model__width": 0},
        "spec.model.width: expected a number > 0, got 0",
        "spec.model.width",
    ),
    (
        {"spec__scaling__epochSeconds": 7200},
        "spec.scaling.epochSeconds: expected a number >= 0 and <= 3600, got 7200",
        "spec.scaling.epochSeconds",
    ),
    (
        {f"{_INLINE}__configs__0__vcpu": 1e9},
        "spec.profile.inline.configs[0].vcpu: expected a number > 0 and <= 1024, got 1000000000.0",
        "spec.profile.inline.configs[0].vcpu",
    ),
    (
        {f"{_SIZES}__0__memoryMiB": 1e12},
        "spec.prices.functions.sizes[0].memoryMiB: expected a number > 0 and <= 4194304, "
        "got 1000000000000.0",
        "spec.prices.functions.sizes[0].memoryMiB",
    ),
    (
        {"spec__slo__latencySeconds": 301},
        "spec.slo.latencySeconds: expected a number > 0 and <= 300, got 301",
        "spec.slo.latencySeconds",
    ),
    (
        {f"{_INLINE}__fingerprint__exits": list(range(1, MAX_EXITS + 2))},
        f"spec.profile.inline.fingerprint.exits: expected at most {MAX_EXITS} items, "
        f"got {MAX_EXITS + 1}",
        "spec.profile.inline.fingerprint.exits",
    ),
    (
        {f"{_INLINE}__fingerprint__checkpointSha256": "abc"},
        "spec.profile.inline.fingerprint.checkpointSha256: expected a string matching "
        "^([0-9a-f]{64})?$, got 'abc'",
        "spec.profile.inline.fingerprint.checkpointSha256",
    ),
    (
        {"spec__prices__instances__0__name": "c6i large"},
        "spec.prices.instances[0].name: expected a label value (letters, digits, '-', '_', "
        "'.'), got 'c6i large'",
        "spec.prices.instances[0].name",
    ),
    (
        {"spec__prices__instances__0__nodeSelector": {"pool": "a b"}},
        "spec.prices.instances[0].nodeSelector.pool: expected a label value (letters, "
        "digits, '-', '_', '.'), got 'a b'",
        "spec.prices.instances[0].nodeSelector.pool",
    ),
    (
        {f"{_SIZES}__0__name": "f" * 64},
        "spec.prices.functions.sizes[0].name: expected at most 63 characters, got 64",
        "spec.prices.functions.sizes[0].name",
    ),
    (
        {"spec__functions__containerConcurrency": 5000},
        "spec.functions.containerConcurrency: expected an integer >= 1 and <= 1000, got 5000",
        "spec.functions.containerConcurrency",
    ),
    (
        {"spec__functions__access": "ingress"},
        "spec.functions.access: expected one of revision, route, got 'ingress'",
        "spec.functions.access",
    ),
    (
        {"spec__pools": ["lambda"]},
        "spec.pools[0]: expected one of faas, iaas, hybrid, got 'lambda'",
        "spec.pools[0]",
    ),
    (
        {"spec__routing__replicas": 0},
        "spec.routing.replicas: expected an integer >= 1 and <= 100, got 0",
        "spec.routing.replicas",
    ),
    (
        {"spec__routing__statsUrls": ["http://envoy:99999/stats"]},
        "spec.routing.statsUrls[0]: expected an http(s) URL with a host and a port in "
        "1..65535, got 'http://envoy:99999/stats'",
        "spec.routing.statsUrls[0]",
    ),
    (
        {"spec__routing__statsUrls": ["http://"]},
        "spec.routing.statsUrls[0]: expected an http(s) URL with a host and a port in "
        "1..65535, got 'http://'",
        "spec.routing.statsUrls[0]",
    ),
    (
        {"spec__routing__statsUrls": [f"http://envoy-{i}:9901/stats" for i in range(17)]},
        "spec.routing.statsUrls: expected at most 16 items, got 17",
        "spec.routing.statsUrls",
    ),
    (
        {"spec__scaling__maxInstances": 10**6},
        "spec.scaling.maxInstances: expected an integer >= 0 and <= 10000, got 1000000",
        "spec.scaling.maxInstances",
    ),
    (
        {"spec__profile": {"configMapRef": {"name": "My_Profile"}}},
        "spec.profile.configMapRef.name: expected a DNS subdomain name, got 'My_Profile'",
        "spec.profile.configMapRef.name",
    ),
    (
        {"spec__profile": {"configMapRef": {"name": "p", "key": "a/b"}}},
        "spec.profile.configMapRef.key: expected a ConfigMap key, got 'a/b'",
        "spec.profile.configMapRef.key",
    ),
]

# Cross-item rules the parsers make in code and the CRD as CEL: (changes, the parser's
# one-line error, the field the API server's refusal names).
CROSS = [
    (
        {f"{_INLINE}__fingerprint": {"architecture": "any"}},
        "spec.profile.inline.fingerprint.stages: set stages (K), or exits (K - 1 of them)",
        "spec.profile.inline",
    ),
    (
        {"spec__model__exits": None, f"{_INLINE}__fingerprint": {"stages": 5, "exits": [2, 4, 7]}},
        "spec.profile.inline.fingerprint.exits: 3 exits describe 4 stages, not 5",
        "spec.profile.inline",
    ),
    (
        {"spec__model__exits": [4, 2, 7], f"{_INLINE}__fingerprint__exits": [4, 2, 7]},
        "spec.profile.inline.fingerprint.exits: expected strictly increasing block indices",
        "spec.model.exits",
    ),
    (
        {"spec__model__exits": [2, 2, 7], f"{_INLINE}__fingerprint__exits": [2, 2, 7]},
        "spec.profile.inline.fingerprint.exits: expected strictly increasing block indices",
        "spec.profile.inline.fingerprint.exits",
    ),
    (
        {f"{_SIZES}": [{"name": "fn-2048", "memoryMiB": 2048}] * 2},
        "spec.prices.functions.sizes[1].name: duplicate 'fn-2048'",
        "spec.prices.functions.sizes",
    ),
    (
        {f"{_INLINE}__cuts__1__after": 1},
        "spec.profile.inline.cuts[1].after: duplicate 1",
        "spec.profile.inline.cuts",
    ),
    (
        {"spec__prices__instances__0__name": "c6i.metal"},
        "spec.prices.instances[0].name: 'c6i.metal' has no instance config in the profile",
        "profile.inline config of that name and kind",
    ),
    (
        {f"{_SIZES}__0__name": "c6i.large"},
        "spec.prices.functions.sizes[0].name: 'c6i.large' has no function config in the profile",
        "profile.inline config of that name and kind",
    ),
]

# Rules on what only the operator reads (the CLI plans without it): its parser's error.
SERVED = [
    (
        {"spec__model__checkpoint": "/models/m.pt"},
        "spec.model.checkpoint: no longer served: export the checkpoint with "
        "`serflow-runtime export` and set spec.model.artefact",
        "spec.model",
    ),
    (
        {"spec__functions__minScale": 3, "spec__functions__maxScale": 2},
        "spec.functions.maxScale: expected >= minScale (3), got 2",
        "spec.functions",
    ),
    (
        {"spec__profile": {"fromJob": {"taus": [0.5, 0.9, 0.5]}}},
        "spec.profile.fromJob.taus: expected distinct taus",
        "spec.profile.fromJob.taus",
    ),
    (
        {"spec__model__storageUri": "pvc://models/digits"},
        "spec.model.artefact.digest: required with storageUri (what the fetch verifies)",
        "model.storageUri needs model.artefact.digest",
    ),
    (
        {
            "spec__model__storageUri": "s3://models/digits",
            "spec__model__artefact": {"path": "/models/digits", "digest": "a" * 64},
        },
        "spec.model.artefact.path: names an artefact inside the images: not with storageUri",
        "model.artefact.path names an artefact inside the images",
    ),
]

# Map keys: JSON Schema's propertyNames is outside the structural subset the CRD embeds, so
# only the API server checks them (the Deployment would refuse them later otherwise).
KEYS = [
    ({"spec__model__podAnnotations": {"bad key": "x"}}, "spec.model.podAnnotations"),
    ({"spec__model__podAnnotations": {"a" * 64: "x"}}, "spec.model.podAnnotations"),
    (
        {"spec__prices__instances__0__nodeSelector": {"Example.com/pool": "a"}},
        "spec.prices.instances[0].nodeSelector",
    ),
]

DIGEST_RULE = "profile.inline.fingerprint.artefactDigest must equal model.artefact.digest"
CEL_MESSAGES = {"label or annotation keys", "profiling Jobs are named so", DIGEST_RULE}
"""API-server-only refusals whose message the test checks too."""


def _cli(tmp_path: Path, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "sfi.yaml"
    f.write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [sys.executable, "-m", "serflow.cli", "plan", "-f", str(f), "--rate", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_longest_name_leaves_room_for_every_child_suffix() -> None:
    n = Names(LONGEST_NAME)
    children = [n.pool, n.envoy, n.spill, n.fused_tail, n.stage(MAX_EXITS + 1)]
    assert max(len(c) for c in children) == NAME_LIMIT - len("-") - REVISION_HASH_CHARS
    # Each function's pinned Revision (a Kubernetes Service name too) still fits.
    revisions = [revision_name(f, {}) for f in (n.spill, n.fused_tail, n.stage(MAX_EXITS + 1))]
    assert max(len(r) for r in revisions) == NAME_LIMIT
    assert len(job_name(LONGEST_NAME, "xyz")) == NAME_LIMIT  # the CEL rule bounds the config name


def test_the_cli_plans_the_longest_name(tmp_path: Path) -> None:
    r = _cli(tmp_path, _manifest(metadata__name=LONGEST_NAME))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("changes", "message", "field"), GUARDS + CROSS, ids=[g[2] for g in GUARDS + CROSS]
)
def test_the_cli_refuses_in_one_line(
    tmp_path: Path, changes: dict[str, Any], message: str, field: str
) -> None:
    r = _cli(tmp_path, _manifest(**changes))
    assert (r.returncode, r.stderr) == (2, f"serflow: error: {tmp_path / 'sfi.yaml'}: {message}\n")


@pytest.mark.parametrize(("changes", "message", "field"), SERVED, ids=[g[2] for g in SERVED])
def test_the_operators_parser_refuses_in_one_line(
    changes: dict[str, Any], message: str, field: str
) -> None:
    with pytest.raises(InputError) as e:
        parse_inference(_manifest(**changes)["spec"], "vgg")
    assert str(e.value) == message




def _dry_run(cluster: Any, namespace: str, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    doc = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
    r: subprocess.CompletedProcess[str] = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(doc), check=False
    )
    return r


@pytest.mark.cluster
@pytest.mark.parametrize(
    "changes",
    [
        {"metadata__name": LONGEST_NAME},
        {"metadata__name": "vgg", "spec__profile": {"fromJob": {}}},
        {
            "spec__model__artefact": {"path": "/models/digits", "digest": "a" * 64},
            f"{_INLINE}__fingerprint__artefactDigest": "a" * 64,
        },
        {"spec__routing__statsUrls": ["https://10.0.0.1:65535/stats?usedonly", "http://e"]},
        {
            "spec__model__podAnnotations": {"prometheus.io/scrape": "true", "a" * 63: ""},
            "spec__prices__instances__0__nodeSelector": {"node.kubernetes.io/instance-type": "x"},
        },
        # K from the profile alone: no family, no exit numbering, no width.
        {
            "spec__model": {"image": "w:1", "batch": 10},
            f"{_INLINE}__fingerprint": {"stages": 4},
        },
    ],
    ids=[
        "longest-name",
        "profiling-jobs",
        "pinned-artefact",
        "stats-urls",
        "qualified-keys",
        "any-family",
    ],
)
def test_the_api_server_accepts_the_edges(
    crd_cluster: Any, namespace: str, changes: dict[str, Any]
) -> None:
    r = _dry_run(crd_cluster, namespace, _manifest(**changes))
    assert r.returncode == 0, r.stderr


@pytest.mark.cluster
@pytest.mark.parametrize(
    "example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_the_api_server_accepts_the_examples(
    crd_cluster: Any, namespace: str, example: Path
) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    served = [d for d in docs if d.get("kind") == "SerflowInference"]
    assert served, f"{example} holds no SerflowInference"
    for doc in served:
        r = _dry_run(crd_cluster, namespace, doc)
        assert r.returncode == 0, r.stderr


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("changes", "message", "field"),
    [
        *GUARDS,
        *CROSS,
        *SERVED,
        *((changes, "label or annotation keys", field) for changes, field in KEYS),
        (
            {"metadata__name": "a" * 50, "spec__profile": {"fromJob": {}}},
            "profiling Jobs are named so",
            "metadata.name",
        ),
        # The operator makes the same check on every profile source (fingerprint_mismatch).
        ({"spec__model__artefact": {"digest": "a" * 64}}, DIGEST_RULE, "spec"),
    ],
    ids=[g[2] for g in GUARDS + CROSS + SERVED]
    + [f"{f}-{i}" for i, (_, f) in enumerate(KEYS)]
    + ["metadata.name-jobs", "artefact-digest"],
)
def test_the_api_server_refuses_naming_the_field(
    crd_cluster: Any, namespace: str, changes: dict[str, Any], message: str, field: str
) -> None:
    r = _dry_run(crd_cluster, namespace, _manifest(**changes))
    assert r.returncode != 0, f"the API server accepted {changes}"
    assert field in r.stderr, r.stderr
    if message in CEL_MESSAGES:
        assert message in r.stderr, r.stderr


def test_the_schema_bounds_k_as_the_runtime_does() -> None:
    """The schema restates the runtime's bound on stages (the control plane never imports
    the data plane)."""
    artefact = pytest.importorskip("serflow_runtime.artefact")
    assert artefact.MAX_STAGES == MAX_STAGES == MAX_EXITS + 1

