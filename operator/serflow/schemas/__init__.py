"""The documents' schemas, as JSON Schema: the one validator of every field.

Written in the structural subset that Kubernetes' OpenAPI v3 accepts (no $ref, no
oneOf), so the CRD embeds the same dicts. ``validate`` checks a document with the
``jsonschema`` library and raises the first problem as a one-line ``InputError`` naming
the field; the parsers (``serflow.profile``, ``serflow.spec``, ``serflow.inference``) then
only build dataclasses, take defaults from here, and enforce the cross-field rules (one
runtime per partition, shares summing to 1, ...) that the CRD adds as CEL rules.

``python -m serflow.schemas`` prints the JSON Schema of a Profile document;
``profile.schema.json`` beside this file is that output.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from serflow import wire
from serflow.errors import InputError

Schema = dict[str, Any]

GROUP = "serflow.io"
"""API group of the SerflowInference resource."""
VERSION = "v1alpha1"
"""Its version."""
API_VERSION = f"{GROUP}/{VERSION}"
"""apiVersion of both documents."""


def string(desc: str, **kw: Any) -> Schema:
    return {"type": "string", "description": desc, "maxLength": 1024, **kw}


def integer(desc: str, minimum: int = 0, **kw: Any) -> Schema:
    return {"type": "integer", "description": desc, "minimum": minimum, **kw}


def number(desc: str, **kw: Any) -> Schema:
    return {"type": "number", "description": desc, **kw}


def obj(desc: str, props: Schema, required: list[str] | None = None, **kw: Any) -> Schema:
    out: Schema = {"type": "object", "description": desc, "properties": props, **kw}
    if required:
        out["required"] = required
    return out


def array(desc: str, items: Schema, min_items: int = 1, **kw: Any) -> Schema:
    return {"type": "array", "description": desc, "items": items, "minItems": min_items, **kw}


def _positive(desc: str, **kw: Any) -> Schema:
    return number(desc, minimum=0, exclusiveMinimum=True, **kw)


def _non_negative(desc: str, **kw: Any) -> Schema:
    return number(desc, minimum=0, **kw)


TAU: Schema = {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1}
"""A confidence threshold: 0 < tau <= 1."""

MAX_EXITS = 63
"""At most this many exits, so at most MAX_EXITS + 1 partitions (and stage children).
The runtime's artefacts have the same bound (serflow_runtime.artefact.MAX_STAGES; a
runtime test checks they agree)."""
MAX_STAGES = MAX_EXITS + 1
"""K at most."""
MAX_PLAN_COMBINATIONS = 13 * 32 * 16 * 16
"""Stages x taus x instance types x function sizes a workload may ask the configurator
to cost: the product at K = 13 and the lists' own maximums, about 205,000 candidates,
6 s of CPU and 370 MiB in one process. Each list is bounded alone; a model of more
stages takes fewer taus or sizes, so one object cannot take the operator down."""

MAX_VCPU = 1024
"""CPUs of one config: the pool's CPU request is derived from it (no node has more)."""
MAX_MEMORY_MIB = 4 * 1024 * 1024
"""4 TiB: memory requests are derived from it (no node has more)."""
MAX_EPOCH_SECONDS = 3600
"""D: the pool's termination grace period and Envoy's route timeout grow with it."""
MAX_SLO_SECONDS = 300
"""Functions time out after 2 x SLO, and Knative refuses a timeout past its default
max-revision-timeout-seconds (600)."""

# Patterns for strings that end up in Kubernetes objects (anchored: JSON Schema and the
# API server both search, not match). Names of our own children come from metadata.name,
# which the CRD checks with a CEL rule (serflow.k8s.crd).
DNS_LABEL = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1035 label: what a Service (and a Knative Service) name must be."""
REVISION_HASH_CHARS = 5
"""Hex digits of the template hash that names a function's pinned Revision."""
NAME_MAX = 63 - len("-spill") - len("-") - REVISION_HASH_CHARS
"""Longest SerflowInference name: its children are named <name>-spill, -envoy, -pool,
-tail, -p<i> (serflow.k8s.builders.Names), and each function's Revision
<function>-<hash> must still be a DNS-1035 label (a test checks the room for each)."""
LABEL_VALUE = "^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
"""A label value (63 characters at most): instance names become node-selector values."""
DNS_SUBDOMAIN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""An object name such as a ConfigMap's (253 characters at most)."""
CONFIG_KEY = "^[-._a-zA-Z0-9]+$"
"""A ConfigMap data key."""
IMAGE = "^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"
"""A container image reference: no blanks or shell characters, as a pod's image must be."""
_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
STATS_URL = f"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:{_PORT})?(/[^\\s]*)?$"
"""An http(s) URL with a host name or IPv4 address and, if any, a port in 1..65535."""
SHA256 = "^[0-9a-f]{64}$"
"""A SHA-256 digest in lower-case hex."""
STORAGE_URI = (
    "^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[^\\s]*"
    "|https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[^\\s]*)?"
    "|s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/[^\\s]*)?)$"
)
"""pvc://CLAIM/PATH, http(s)://HOST[:PORT]/PATH or s3://BUCKET/PATH, without blanks."""
ARTEFACT_REF = "^(/[^\\x00]*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$"
"""An absolute path (an artefact inside an image or a volume), or a shipped artefact's name."""
PATTERN_WORDS = {
    STORAGE_URI: "pvc://CLAIM/PATH, https://HOST/PATH, http://HOST/PATH or s3://BUCKET/PATH",
    SHA256: "a SHA-256 digest (64 lower-case hex digits)",
    ARTEFACT_REF: "an absolute path or the name of an artefact the image ships",
    DNS_LABEL: "a DNS-1035 label (lower case letters, digits, '-', starting with a letter)",
    LABEL_VALUE: "a label value (letters, digits, '-', '_', '.')",
    DNS_SUBDOMAIN: "a DNS subdomain name",
    CONFIG_KEY: "a ConfigMap key",
    IMAGE: "an image reference (no blanks)",
    STATS_URL: "an http(s) URL with a host and a port in 1..65535",
}
"""The patterns in words, for the one-line errors."""

# ---------------------------------------------------------------------------------------
# The profile and the price sheet (DESIGN.md section 4)

FINGERPRINT = obj(
    "What identifies the model; a profile whose fingerprint differs from the spec's is refused.",
    {
        "stages": integer(
            "K: the model's stages (partitions), an exit after each, the last the final "
            "classifier; default: len(exits) + 1.",
            1,
            maximum=MAX_STAGES,
        ),
        "architecture": string(
            "Network family, e.g. vgg16_bn.", minLength=1, maxLength=64, pattern="^[A-Za-z0-9_.-]+$"
        ),
        "width": _positive("Channel width multiplier (1.0 is the full network).", default=1.0),
        "exits": array(
            "IC placement in the family's own numbering (VGG: the conv blocks an internal "
            "classifier follows), increasing; a description when stages is given.",
            {"type": "integer", "minimum": 1},
        ),
        "numClasses": {
            "type": "integer",
            "minimum": 2,
            "description": "Number of classes.",
            "default": 10,
        },
        "checkpointSha256": {
            "type": "string",
            "description": "SHA-256 of the profiled checkpoint (hex; empty: not recorded).",
            "default": "",
            "maxLength": 64,
            "pattern": "^([0-9a-f]{64})?$",
        },
        "artefactDigest": {
            "type": "string",
            "description": "Digest of the profiled model artefact (its manifest's digest, hex; "
            "empty: not recorded). The operator refuses a profile whose digest is not the "
            "spec's model.artefact.digest.",
            "default": "",
            "maxLength": 64,
            "pattern": "^([0-9a-f]{64})?$",
        },
    },
)

CONFIG = obj(
    "Measurements of one instance type or function size.",
    {
        "name": string("As in the price sheet.", minLength=1, maxLength=63, pattern=LABEL_VALUE),
        "kind": {
            "type": "string",
            "enum": ["instance", "function"],
            "description": "Where it runs.",
        },
        "vcpu": _positive("CPUs the measurement was taken with.", maximum=MAX_VCPU),
        "memoryMiB": _positive(
            "Memory in MiB (for functions, the billed size).", maximum=MAX_MEMORY_MIB
        ),
        "coldStartSeconds": _non_negative("Seconds from launch until it serves."),
        "secondsPerRequest": array(
            "u_i: mean seconds per request of each partition in batches of B (one per partition).",
            _non_negative("Seconds per request."),
        ),
        "requestOverheadSeconds": _non_negative(
            "Functions: the seconds a lone image is billed beyond its partitions' batched "
            "compute (the server's HTTP handling, decoding and answer, and running one image "
            "where the partitions were timed in batches of B). Added to each spilled "
            "request's execution seconds.",
            default=0,
        ),
    },
    ["name", "kind", "vcpu", "memoryMiB", "coldStartSeconds", "secondsPerRequest"],
)

CUT = obj(
    "The activation crossing the cut after one partition.",
    {
        "after": {
            "type": "integer",
            "minimum": 1,
            "description": "Cut after partition i (1..K-1).",
        },
        "activationBytes": _non_negative("Compressed bytes per request."),
        "transferSeconds": _non_negative(
            "x_cut: function-side seconds per request to receive and decompress."
        ),
    },
    ["after", "activationBytes", "transferSeconds"],
)

THRESHOLD = obj(
    "Exit distribution and accuracy at one confidence threshold.",
    {
        "tau": {**TAU, "description": "Leave at the first exit whose max softmax >= tau."},
        "accuracy": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "Accuracy at tau.",
        },
        "exitShares": array(
            "e_i: share of all requests leaving at exit i; one per exit, summing to 1.",
            {"type": "number", "minimum": 0, "maximum": 1},
        ),
    },
    ["tau", "accuracy", "exitShares"],
)

PROFILE = obj(
    "What was measured about one model (DESIGN.md section 4).",
    {
        "fingerprint": FINGERPRINT,
        "batch": {"type": "integer", "minimum": 1, "description": "B: the measured batch size."},
        "configs": array("One per instance type or function size.", CONFIG),
        "cuts": array("One per cut position.", CUT, 0),
        "thresholds": array("One per profiled tau.", THRESHOLD),
    },
    ["fingerprint", "batch", "configs", "thresholds"],
)

PRICES = obj(
    "What each config costs.",
    {
        "mode": {
            "type": "string",
            "enum": ["per-use", "per-pod"],
            "default": "per-use",
            "description": "per-use: execution GB-s plus invocations; per-pod: pods billed while alive.",
        },
        "instances": array(
            "Node-pool instance types.",
            obj(
                "One instance type.",
                {
                    "name": string(
                        "Instance type (the default node-selector value, so a label value).",
                        minLength=1,
                        maxLength=63,
                        pattern=LABEL_VALUE,
                    ),
                    "perHour": _non_negative("Dollars per hour for one instance."),
                    "nodeSelector": {
                        "type": "object",
                        "additionalProperties": string(
                            "A label value.", maxLength=63, pattern=LABEL_VALUE
                        ),
                        "maxProperties": 16,
                        "description": "Labels selecting its nodes (default: the instance-type label).",
                    },
                },
                ["name", "perHour"],
            ),
            0,
        ),
        "functions": obj(
            "Function (Knative Service) prices and sizes.",
            {
                "perGBSecond": _non_negative("Dollars per GB-second."),
                "perInvocation": _non_negative("Dollars per invocation (per-use).", default=0),
                "keepAliveSeconds": _non_negative(
                    "Seconds an idle function stays warm.", default=300
                ),
                "sizes": array(
                    "Function sizes.",
                    obj(
                        "One size.",
                        {
                            "name": string(
                                "As in the profile.",
                                minLength=1,
                                maxLength=63,
                                pattern=LABEL_VALUE,
                            ),
                            "memoryMiB": _positive("Billed memory in MiB.", maximum=MAX_MEMORY_MIB),
                        },
                        ["name", "memoryMiB"],
                    ),
                ),
            },
            ["perGBSecond", "sizes"],
        ),
    },
    ["functions"],
)

# ---------------------------------------------------------------------------------------
# What is asked for: SLO, thresholds, traffic, scaling (a Profile document and a spec)

SLO = obj(
    "The latency SLO and accuracy target.",
    {
        "latencySeconds": _positive("SLO: a worst-case warm batch must finish within it."),
        "targetAccuracy": number(
            "Only taus at least this accurate.", minimum=0, maximum=1, default=0
        ),
        "coldStartInFeasibility": {
            "type": "boolean",
            "description": "Also charge function cold starts to the worst-case batch.",
            "default": False,
        },
    },
    ["latencySeconds"],
)

THRESHOLDS: Schema = {
    "type": "array",
    "description": "Exit thresholds tau allowed (default: every profiled tau); 0 < tau <= 1.",
    "items": {**TAU, "description": "A confidence threshold."},
    "maxItems": 32,
}

POOLS: Schema = {
    "type": "array",
    "description": "Pool kinds the configurator may choose (default: all three). faas: functions"
    " only; iaas: a node pool runs the whole model, functions take the excess; hybrid: the"
    " pool runs the head, functions the tail and the excess.",
    "items": {"type": "string", "enum": ["faas", "iaas", "hybrid"]},
    "minItems": 1,
    "maxItems": 3,
}

TRAFFIC = obj(
    "What traffic to plan for.",
    {"expectedRate": _non_negative("Long-term rate in req/s for the offline plan.", default=0)},
)

SCALING = obj(
    "The online loop.",
    {
        "epochSeconds": number(
            "D: epoch length (default: the SLO).", minimum=0, maximum=MAX_EPOCH_SECONDS
        ),
        "intervalEpochs": integer(
            "S: resize the pool every S epochs.", 1, default=25, maximum=1000
        ),
        "policy": {
            "type": "string",
            "enum": ["expected-cost", "paper"],
            "default": "expected-cost",
            "description": "How the pool is sized every S epochs. expected-cost: the size "
            "with the least expected cost over the recent rates, with a cold-start band "
            "against flapping; paper: SERFLOW's rule, floor(lam*/mu) + [remainder > T-CIP] "
            "with lam* = EWMA + k * deviation.",
        },
        "replan": {
            "type": "boolean",
            "default": True,
            "description": "Re-rank the running plan on the object's own traffic every 8 "
            "scaling ticks and replace it when another setup saves more than 5% (false: "
            "the plan comes from the spec's expected rate and changes only with the spec).",
        },
        "ewma": obj(
            "Traffic monitor weights.",
            {
                "a": _positive("Weight of the newest rate.", maximum=1, default=0.2),
                "b": _positive("Weight of the newest deviation.", maximum=1, default=0.2),
            },
        ),
        "k": number("Target = EWMA + k * deviation.", minimum=0, default=1),
        "packBatches": {
            "type": "boolean",
            "default": False,
            "description": "Let an instance serve several batches per epoch when they "
            "still meet the SLO (the paper gives each one batch per epoch).",
        },
        "minInstances": integer("Pool lower bound.", 0, default=0, maximum=10000),
        "maxInstances": integer("Pool upper bound.", 0, default=1000, maximum=10000),
    },
)

# ---------------------------------------------------------------------------------------
# The deployment side of a SerflowInference spec

MODEL = obj(
    "The early-exit model to serve.",
    {
        "image": string("Worker image (Dockerfile.worker).", minLength=1, pattern=IMAGE),
        "functionImage": string(
            "Function image (Dockerfile.fn); default: the worker image.", minLength=1, pattern=IMAGE
        ),
        "artefact": obj(
            "The model artefact the pods serve (serflow-runtime export writes one): a folder "
            "with manifest.json and one ONNX file per stage.",
            {
                "path": string(
                    "The artefact folder inside the images (or a volume mounted there), or "
                    "the name of one the images ship (digits-vgg16-w025, digits-resnet); "
                    "default: digits-vgg16-w025.",
                    minLength=1,
                    pattern=ARTEFACT_REF,
                ),
                "digest": string(
                    "The artefact's digest (manifest.json's digest field). Pods refuse to "
                    "start on another artefact, and a profile of another digest is refused. "
                    "Required with storageUri.",
                    pattern=SHA256,
                ),
                "maxMiB": integer(
                    "With storageUri: the fetched artefact's bound in MiB (the fetch stops "
                    "past it; the emptyDir that holds it in each pod has this size).",
                    1,
                    default=4096,
                    maximum=65536,
                ),
            },
        ),
        "storageUri": string(
            "Where an init container fetches the artefact from, verifying "
            "artefact.digest and every file's SHA-256 before the servers start: "
            "pvc://CLAIM/PATH (a claim of this namespace, mounted read-only), "
            "https://... or http://... (the artefact folder's URL), or s3://BUCKET/PATH "
            "(endpoint and keys from storageSecret). Not with artefact.path.",
            maxLength=2048,
            pattern=STORAGE_URI,
        ),
        "storageSecret": string(
            "A Secret of this namespace whose keys become the fetch's environment: "
            "AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
            "(s3://).",
            maxLength=253,
            pattern=DNS_SUBDOMAIN,
        ),
        "storageImage": string(
            "The storage initializer's image (Dockerfile.storage).",
            default=wire.STORAGE_IMAGE,
            minLength=1,
            pattern=IMAGE,
        ),
        "checkpoint": string(
            "Deprecated and refused: the servers run artefacts. Export the checkpoint with "
            "serflow-runtime export and name it in artefact.",
            minLength=1,
        ),
        "architecture": string(
            "A description of the artefact's network family (e.g. vgg16_bn); when given, "
            "the profile's fingerprint must say the same unless artefact.digest is set.",
            minLength=1,
            maxLength=64,
            pattern="^[A-Za-z0-9_.-]+$",
        ),
        "width": number(
            "A description: channel width multiplier; when given, checked like architecture.",
            minimum=0,
            exclusiveMinimum=True,
        ),
        "exits": {
            "type": "array",
            "description": "A description: where the internal classifiers sit in the family's "
            "own numbering (VGG: the conv blocks they follow), increasing; when given, checked "
            "like architecture. K comes from the artefact's manifest (through the profile), "
            f"at most {MAX_STAGES} stages.",
            "items": {"type": "integer", "minimum": 1},
            "maxItems": MAX_EXITS,
            "minItems": 1,
        },
        "numClasses": integer(
            "A description: the classes; when given, checked like architecture.", 2, maximum=100000
        ),
        "podAnnotations": {
            "type": "object",
            "description": "Extra annotations on the pool's pods.",
            "additionalProperties": {"type": "string", "maxLength": 1024},
            "maxProperties": 32,
        },
        "batch": integer(
            "B: requests per batch; must match the profile.", 1, default=100, maximum=4096
        ),
    },
    ["image"],
)

PROFILE_SOURCE = obj(
    "The measured profile: inline, from a ConfigMap, or measured by Jobs.",
    {
        "inline": PROFILE,
        "configMapRef": obj(
            "A ConfigMap holding a Profile document.",
            {
                "name": string(
                    "ConfigMap name.", minLength=1, maxLength=253, pattern=DNS_SUBDOMAIN
                ),
                "key": string(
                    "Key holding the YAML.",
                    default="profile.yaml",
                    minLength=1,
                    maxLength=253,
                    pattern=CONFIG_KEY,
                ),
            },
            ["name"],
        ),
        "fromJob": obj(
            "Run the runtime's profiler as a Job per instance type and function size.",
            {
                "image": string(
                    "Profiler image (default: the model image).", minLength=1, pattern=IMAGE
                ),
                "taus": {
                    "type": "array",
                    "items": TAU,
                    "maxItems": 32,
                    "description": "Taus to profile.",
                    "minItems": 1,
                    "default": [0.5, 0.7, 0.85, 0.95],
                },
            },
        ),
    },
)

FUNCTIONS = obj(
    "Knative Services of the tail and the spill.",
    {
        # Knative's own ceilings: container-concurrency-max-limit defaults to 1000.
        "containerConcurrency": integer(
            "Requests one function pod takes at once.", 1, default=1, maximum=1000
        ),
        "minScale": integer("Knative min-scale (0: scale to zero).", 0, default=0, maximum=1000),
        "maxScale": integer("Knative max-scale.", 1, default=50, maximum=1000),
        "access": string(
            "How Envoy and the pool reach the functions. revision: each function's pinned"
            " Revision through its Kubernetes Service (Knative's activator answers while it"
            " is at zero), with the routing headers an ingress sends; works without a"
            " Knative networking layer, readiness from the Revisions. route: the Knative"
            " Service's cluster-local URL, which needs a networking layer (Kourier, Istio,"
            " Contour), readiness from the Knative Services.",
            enum=["revision", "route"],
            default="revision",
        ),
    },
)

ROUTING = obj(
    "Envoy in front of the pool and the functions.",
    {
        "image": string("Envoy image.", default=wire.ENVOY_IMAGE, minLength=1, pattern=IMAGE),
        "replicas": integer(
            "Envoy replicas: two by default, so that a node drained or lost leaves one"
            " answering (a disruption budget lets only one go at a time).",
            1,
            default=2,
            maximum=100,
        ),
        "statPrefix": string(
            "Envoy HTTP stat prefix counting this object's requests.",
            default=wire.STAT_PREFIX,
            maxLength=128,
            pattern="^[a-zA-Z0-9_]+$",
        ),
        "statsUrls": {
            "type": "array",
            "description": "Stats endpoints to read counters from (default: the Envoy pods' "
            "stats port): the loopback or a Service of the object's own namespace "
            "(<service>.<namespace>.svc); the operator refuses any other host.",
            "items": {"type": "string", "maxLength": 512, "pattern": STATS_URL},
            "maxItems": 16,
        },
    },
)

# CEL cost estimation needs bounds on every list and string it walks; the API server
# enforces them, so every reader does.
_MAX_ITEMS = {
    "exits": MAX_EXITS,
    "configs": 32,
    "cuts": 64,
    "thresholds": 32,
    "secondsPerRequest": 64,
    "exitShares": 64,
    "instances": 32,
    "sizes": 32,
}
_MAX_NAME = 253


def bounded(schema: Schema, key: str = "") -> Schema:
    """A deep copy with maxItems/maxLength added where none is given."""
    s = copy.deepcopy(schema)
    if s.get("type") == "array":
        s.setdefault("maxItems", _MAX_ITEMS.get(key, 64))
        s["items"] = bounded(s["items"])
    elif s.get("type") == "object":
        for k, v in s.get("properties", {}).items():
            s["properties"][k] = bounded(v, k)
        if isinstance(s.get("additionalProperties"), dict):
            s["additionalProperties"] = bounded(s["additionalProperties"])
    elif s.get("type") == "string" and "enum" not in s:
        s.setdefault("maxLength", _MAX_NAME if key == "name" else 1024)
    return s


@functools.cache
def profile_schema() -> Schema:
    """The profile as validated (with the bounds the API server enforces)."""
    return bounded(PROFILE)


@functools.cache
def prices_schema() -> Schema:
    """The price sheet as validated (with the bounds the API server enforces)."""
    return bounded(PRICES)


def _served_slo() -> Schema:
    """The SLO of a served model: bounded by the functions' timeout as well."""
    slo = copy.deepcopy(SLO)
    slo["properties"]["latencySeconds"]["maximum"] = MAX_SLO_SECONDS
    return slo


@functools.cache
def inference_spec_schema() -> Schema:
    """JSON Schema of a SerflowInference's ``spec`` (the CRD adds CEL rules to a copy).

    Built once and shared, like the other document schemas: never change the result."""
    return bounded(
        obj(
            "What to serve, under which SLO, at which prices.",
            {
                "model": MODEL,
                "slo": _served_slo(),
                "thresholds": THRESHOLDS,
                "pools": POOLS,
                "prices": PRICES,
                "profile": PROFILE_SOURCE,
                "traffic": TRAFFIC,
                "scaling": SCALING,
                "functions": FUNCTIONS,
                "routing": ROUTING,
            },
            ["model", "slo", "prices", "profile"],
        )
    )


@functools.cache
def inference_document_schema() -> Schema:
    """JSON Schema of a SerflowInference manifest, as the CLI reads it (no status)."""
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string", "enum": [API_VERSION]},
            "kind": {"type": "string", "enum": ["SerflowInference"]},
            "metadata": obj(
                "The object's metadata.",
                {
                    "name": string(
                        "Children's names derive from it.",
                        minLength=1,
                        maxLength=NAME_MAX,
                        pattern=DNS_LABEL,
                    )
                },
            ),
            "spec": inference_spec_schema(),
        },
        "required": ["kind", "spec"],
    }


@functools.cache
def profile_document_schema() -> Schema:
    """JSON Schema (draft 4 style bounds, as OpenAPI v3) of a ``kind: Profile`` document."""
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "serflow Profile document",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string", "enum": [API_VERSION]},
            "kind": {"type": "string", "enum": ["Profile"]},
            "metadata": {"type": "object"},
            "profile": profile_schema(),
            "prices": prices_schema(),
            "slo": SLO,
            "thresholds": THRESHOLDS,
            "pools": POOLS,
            "traffic": TRAFFIC,
            "scaling": SCALING,
        },
        "required": ["kind", "profile"],
    }


DOCUMENT_KIND: Schema = {
    "type": "object",
    "properties": {"kind": {"type": "string", "enum": ["Profile", "SerflowInference"]}},
    "required": ["kind"],
}
"""What every document read by the CLI declares: which of the two it is."""


def schema_json() -> str:
    return json.dumps(profile_document_schema(), indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------
# Validation: jsonschema's best match, as one line naming the field


def _finite_number(checker: Any, value: Any) -> bool:
    # JSON has no inf or NaN, YAML does (.inf, .nan): neither is a usable number.
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
    )


def _mapping(checker: Any, value: Any) -> bool:
    # The operator reads specs through kopf's read-only views, which are not dicts.
    return isinstance(value, Mapping)


def _sequence(checker: Any, value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]  # stubs lack it
    jsonschema.Draft4Validator,
    type_checker=jsonschema.Draft4Validator.TYPE_CHECKER.redefine_many(
        {"number": _finite_number, "object": _mapping, "array": _sequence}
    ),
)


_validators: dict[int, tuple[Schema, Any]] = {}


def _validator(schema: Schema) -> Any:
    """One validator per (shared, never changed) schema."""
    kept = _validators.get(id(schema))
    if kept is None or kept[0] is not schema:
        kept = _validators[id(schema)] = (schema, _Validator(schema))
    return kept[1]


def validate(value: Any, schema: Schema, path: str = "", strict: bool = True) -> None:
    """Raise an ``InputError`` for the most relevant way ``value`` breaks ``schema``, or,
    ``strict``, for a field it does not list (``first_unknown_field``).

    ``path`` is where ``value`` sits in its document (e.g. ``spec.prices``).
    """
    error = best_match(_validator(schema).iter_errors(value))
    if error is None:
        unknown = first_unknown_field(value, schema, path) if strict else None
        if unknown:
            raise InputError(unknown, "unknown field (misspelt? the schema has no such field)")
        return
    where = path
    for key in error.absolute_path:
        where = f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else key)
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        raise InputError(f"{where}.{missing}" if where else missing, "missing")
    raise InputError(where, _problem(error))


ENVELOPE = frozenset({"metadata", "status"})
"""Kubernetes' parts of an object, which the API server owns: their fields are not checked."""


def first_unknown_field(value: Any, schema: Schema, path: str = "") -> str | None:
    """Where ``value`` has a key its schema does not list (an object schema with
    ``properties`` and no ``additionalProperties``), or None. The API server prunes such
    keys from an object; a file read by the CLI would silently lose them, so a misspelt
    ``intervalEpoch`` would run with the default."""
    if isinstance(value, Mapping) and "properties" in schema and "additionalProperties" not in schema:
        props = schema["properties"]
        for key, item in value.items():
            if path == "" and key in ENVELOPE:
                continue
            where = f"{path}.{key}" if path else str(key)
            if key not in props:
                return where
            found = first_unknown_field(item, props[key], where)
            if found:
                return found
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            found = first_unknown_field(item, schema["items"], f"{path}[{i}]")
            if found:
                return found
    return None


def _problem(error: ValidationError) -> str:
    v: Any = error.instance
    limit, schema = error.validator_value, error.schema
    if not isinstance(schema, Mapping):
        return str(error.message)
    match error.validator:
        case "minItems" if limit == 1:
            return "expected a non-empty list"
        case "minItems":
            return f"expected at least {limit} items, got {len(v)}"
        case "maxItems":
            return f"expected at most {limit} items, got {len(v)}"
        case "maxLength":
            return f"expected at most {limit} characters, got {len(v)}"
        case "maxProperties":
            return f"expected at most {limit} entries, got {len(v)}"
        case "type" | "enum" | "minimum" | "maximum" | "minLength" | "pattern":
            return f"expected {expected(schema)}, got {kind_of(v)}"
    return str(error.message)


def expected(schema: Mapping[str, Any]) -> str:
    """What a value of ``schema`` is, in words: ``a number > 0 and <= 1``."""
    if "enum" in schema:
        return "one of " + ", ".join(str(x) for x in schema["enum"])
    t = schema.get("type")
    if t in ("number", "integer"):
        bounds = []
        if "minimum" in schema:
            op = ">" if schema.get("exclusiveMinimum") else ">="
            bounds.append(f"{op} {_bound(schema['minimum'])}")
        if "maximum" in schema:
            op = "<" if schema.get("exclusiveMaximum") else "<="
            bounds.append(f"{op} {_bound(schema['maximum'])}")
        noun = "a number" if t == "number" else "an integer"
        return " ".join([noun, " and ".join(bounds)]) if bounds else noun
    if t == "string":
        text = "a non-empty string" if schema.get("minLength", 0) >= 1 else "a string"
        if schema.get("pattern") in PATTERN_WORDS:
            return str(PATTERN_WORDS[schema["pattern"]])
        return f"{text} matching {schema['pattern']}" if "pattern" in schema else text
    if t == "array":
        return "a non-empty list" if schema.get("minItems", 0) >= 1 else "a list"
    if t == "object":
        return "a mapping"
    if t == "boolean":
        return "true or false"
    return f"a {t}"


def _bound(x: float) -> str:
    # Integers in full (4194304, not 4.1943e+06).
    return str(x) if isinstance(x, int) else f"{x:g}"


def kind_of(v: Any) -> str:
    """A short rendering of a bad value for an error message."""
    if v is None:
        return "nothing"
    if isinstance(v, bool | int | float):
        return repr(v)
    if isinstance(v, str):
        return repr(v) if len(v) < 40 else "a long string"
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, Sequence):
        return "a list"
    return f"a {type(v).__name__}"
