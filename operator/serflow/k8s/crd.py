"""The SerflowInference CustomResourceDefinition, generated from the documents' schema.

``python -m serflow.k8s.crd`` prints it; ``crds/serflowinference.yaml`` and the chart's
copy are that output (a test keeps them current). The spec is ``serflow.schemas``'s, the
one the CLI and the operator validate with; CEL rules add the cross-field checks the
parsers make (DESIGN.md section 2 and issue 5).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from serflow import status
from serflow.schemas import DNS_LABEL, NAME_MAX, inference_spec_schema
from serflow.schemas import GROUP as GROUP  # re-exported: the resource's coordinates
from serflow.schemas import VERSION as VERSION
from serflow.schemas import obj as _obj

KIND = "SerflowInference"
PLURAL = "serflowinferences"
SHORT = "sfi"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
"""The finalizer the operator (kopf, for its epoch daemons) puts on each object: kopf's
own default, kept so that objects finalized by earlier versions are released too."""


NAME_LIMIT = 63
"""Kubernetes' limit on a Service name or label value, which every child name must meet."""
PROFILE_JOB_INFIX = "-profile-"
"""A profiling Job is named <name>-profile-<config> (``jobs.job_name``); the CEL rule
below bounds that length, so the infix lives here where both read it."""


def _unique(key: str, what: str) -> dict[str, str]:
    """A CEL rule refusing two list items with the same ``key`` (the parsers refuse it too)."""
    return {
        "rule": f"self.all(a, self.exists_one(b, b.{key} == a.{key}))",
        "message": f"two {what} have the same {key}",
    }


_QUALIFIED_NAME = (
    "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QUALIFIED_KEYS = {
    "rule": f"self.all(k, size(k) <= 317 && k.matches('{_QUALIFIED_NAME}'))",
    "message": "keys must be label or annotation keys ([prefix/]name, name at most 63 "
    "characters of letters, digits, '-', '_', '.')",
}
"""Pod annotation and node-selector keys: the Deployment would be refused otherwise (JSON
Schema's propertyNames is not in the structural subset, so only the API server checks)."""

INCREASING = {
    "rule": "self.isSorted() && self.all(a, self.exists_one(b, b == a))",
    "message": "expected strictly increasing block indices",
}
"""Exits: the parsers split the network at them in order."""


def _metadata_rules() -> list[dict[str, Any]]:
    """Child names are metadata.name plus a suffix: the name must leave room for it."""
    job_prefix = len(PROFILE_JOB_INFIX)
    return [
        {
            "rule": f"self.metadata.name.matches('{DNS_LABEL}') "
            f"&& size(self.metadata.name) <= {NAME_MAX}",
            "message": f"metadata.name must be a DNS-1035 label of at most {NAME_MAX} "
            "characters (lower case letters, digits and '-', starting with a letter): "
            "children such as <name>-spill are named after it",
        },
        {
            "rule": "!has(self.spec.profile.fromJob) || ("
            "(!has(self.spec.prices.instances) || self.spec.prices.instances.all(i, "
            f"size(self.metadata.name) + {job_prefix} + size(i.name) <= {NAME_LIMIT})) && "
            "self.spec.prices.functions.sizes.all(f, "
            f"size(self.metadata.name) + {job_prefix} + size(f.name) <= {NAME_LIMIT}))",
            "message": f"metadata.name plus '{PROFILE_JOB_INFIX}' plus each instance or size "
            f"name must fit in {NAME_LIMIT} characters: profiling Jobs are named so",
        },
    ]


def _spec_schema() -> dict[str, Any]:
    """The spec's JSON Schema plus the cross-field rules as CEL (the parsers make the same)."""
    spec = copy.deepcopy(inference_spec_schema())
    profile = spec["properties"]["profile"]
    p = profile["properties"]["inline"]
    fp = "self.fingerprint"
    k = f"(has({fp}.stages) ? {fp}.stages : has({fp}.exits) ? size({fp}.exits) + 1 : 0)"
    p["x-kubernetes-validations"] = [
        {
            "rule": f"has({fp}.stages) || has({fp}.exits)",
            "message": "fingerprint needs stages (K), or exits (K - 1 of them)",
        },
        {
            "rule": f"!has({fp}.stages) || !has({fp}.exits) || size({fp}.exits) + 1 == {fp}.stages",
            "message": "fingerprint.exits must describe stages - 1 exits",
        },
        {
            "rule": f"self.configs.all(c, size(c.secondsPerRequest) == {k})",
            "message": "every config needs one secondsPerRequest per partition (K)",
        },
        {
            "rule": f"self.thresholds.all(t, size(t.exitShares) == {k})",
            "message": "every threshold needs one exit share per exit (K)",
        },
        {
            "rule": f"!has(self.cuts) || self.cuts.all(c, c.after < {k})",
            "message": "a cut must lie between partitions (after < K)",
        },
    ]
    p["properties"]["configs"]["x-kubernetes-validations"] = [_unique("name", "configs")]
    p["properties"]["cuts"]["x-kubernetes-validations"] = [_unique("after", "cuts")]
    p["properties"]["thresholds"]["x-kubernetes-validations"] = [_unique("tau", "thresholds")]
    p["properties"]["fingerprint"]["properties"]["exits"]["x-kubernetes-validations"] = [INCREASING]
    spec["properties"]["model"]["properties"]["exits"]["x-kubernetes-validations"] = [INCREASING]
    spec["properties"]["model"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.checkpoint)",
            "message": "model.checkpoint is no longer served: export the checkpoint with "
            "serflow-runtime export and set model.artefact",
        },
        {
            "rule": "!has(self.storageUri) || (has(self.artefact) && has(self.artefact.digest))",
            "message": "model.storageUri needs model.artefact.digest (what the fetch verifies)",
        },
        {
            "rule": "!has(self.storageUri) || !has(self.artefact) || !has(self.artefact.path)",
            "message": "model.artefact.path names an artefact inside the images: not with "
            "model.storageUri",
        },
    ]
    prices = spec["properties"]["prices"]["properties"]
    prices["instances"]["x-kubernetes-validations"] = [_unique("name", "instances")]
    prices["functions"]["properties"]["sizes"]["x-kubernetes-validations"] = [
        _unique("name", "sizes")
    ]
    prices["instances"]["items"]["properties"]["nodeSelector"]["x-kubernetes-validations"] = [
        QUALIFIED_KEYS
    ]
    spec["properties"]["model"]["properties"]["podAnnotations"]["x-kubernetes-validations"] = [
        QUALIFIED_KEYS
    ]
    th = p["properties"]["thresholds"]["items"]
    th["x-kubernetes-validations"] = [
        {
            "rule": "self.exitShares.sum() >= 0.999 && self.exitShares.sum() <= 1.001",
            "message": "exitShares must sum to 1 (within 0.001)",
        }
    ]
    profile["x-kubernetes-validations"] = [
        {
            "rule": "[has(self.inline), has(self.configMapRef), has(self.fromJob)]"
            ".filter(x, x).size() == 1",
            "message": "set exactly one of inline, configMapRef or fromJob",
        }
    ]
    spec["properties"]["scaling"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.minInstances) || !has(self.maxInstances) || "
            "self.maxInstances >= self.minInstances",
            "message": "maxInstances must be >= minInstances",
        }
    ]
    spec["properties"]["functions"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.minScale) || !has(self.maxScale) || self.maxScale >= self.minScale",
            "message": "maxScale must be >= minScale",
        }
    ]
    profile["properties"]["fromJob"]["properties"]["taus"]["x-kubernetes-validations"] = [
        {"rule": "self.all(a, self.exists_one(b, b == a))", "message": "two taus are the same"}
    ]
    spec["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.profile.inline) || self.profile.inline.batch == self.model.batch",
            "message": "profile.inline.batch must equal model.batch",
        },
        {
            "rule": "!has(self.profile.inline) || !has(self.model.exits) || "
            "(has(self.profile.inline.fingerprint.exits) && "
            "self.profile.inline.fingerprint.exits == self.model.exits)",
            "message": "profile.inline.fingerprint.exits must equal model.exits",
        },
        {
            "rule": "!has(self.profile.inline) || !has(self.model.artefact) || "
            "!has(self.model.artefact.digest) || "
            "(has(self.profile.inline.fingerprint.artefactDigest) && "
            "self.profile.inline.fingerprint.artefactDigest == self.model.artefact.digest)",
            "message": "profile.inline.fingerprint.artefactDigest must equal model.artefact.digest",
        },
        {
            "rule": "!has(self.profile.inline) || ((!has(self.prices.instances) || "
            "self.prices.instances.all(i, self.profile.inline.configs.exists("
            "c, c.name == i.name && c.kind == 'instance'))) && "
            "self.prices.functions.sizes.all(f, self.profile.inline.configs.exists("
            "c, c.name == f.name && c.kind == 'function')))",
            "message": "every priced instance and function size needs a profile.inline config "
            "of that name and kind",
        },
    ]
    return spec


def crd() -> dict[str, Any]:
    cond = '.status.conditions[?(@.type=="Ready")].status'
    cols = [
        ("Pool", "string", ".status.plan.pool"),
        ("Cut", "integer", ".status.plan.cut"),
        ("Ranked", "string", ".status.plan.rankedBy"),
        ("Ready", "integer", ".status.instances.ready"),
        ("Desired", "integer", ".status.instances.desired"),
        ("Share", "number", ".status.split.poolShare"),
        ("$/h", "number", ".status.costPerHour"),
        ("Status", "string", cond),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    schema = _obj(
        "A model served by serflow on a node pool plus Knative functions.",
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _spec_schema(),
            "status": status.schema(),
        },
        ["spec"],
        **{"x-kubernetes-validations": _metadata_rules()},
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT],
                "categories": ["serflow"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": n, "type": t, "jsonPath": p} for n, t, p in cols
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `python -m serflow.k8s.crd`; do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    print(crd_yaml(), end="")
