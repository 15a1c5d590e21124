"""The profile and price-sheet schemas, published as JSON Schema.

Written in the structural subset that Kubernetes' OpenAPI v3 accepts (no $ref, no
oneOf), so the CRD embeds the same dicts. ``python -m serflow.schemas`` prints the JSON
Schema of a Profile document; ``profile.schema.json`` beside this file is that output.
Cross-field rules (one runtime per partition, shares summing to 1) are enforced by the
parser in ``serflow.profile``; the CRD adds them as CEL rules.
"""

from __future__ import annotations

import json
from typing import Any


def _num(desc: str, minimum: float | None = 0, exclusive: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "number", "description": desc}
    if minimum is not None:
        out["minimum"] = minimum
        if exclusive:
            out["exclusiveMinimum"] = True
    return out


def _obj(desc: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "description": desc, "properties": props, "required": required}


def _list(desc: str, items: dict[str, Any], min_items: int = 1) -> dict[str, Any]:
    return {"type": "array", "description": desc, "items": items, "minItems": min_items}


FINGERPRINT = _obj(
    "What identifies the model; a profile whose fingerprint differs from the spec's is refused.",
    {
        "architecture": {"type": "string", "description": "Network family, e.g. vgg16_bn."},
        "width": _num("Channel width multiplier (1.0 is the full network).", 0, True),
        "exits": _list(
            "IC placement: conv blocks after which an internal classifier sits, increasing.",
            {"type": "integer", "minimum": 1},
        ),
        "numClasses": {"type": "integer", "minimum": 2, "description": "Number of classes."},
        "checkpointSha256": {
            "type": "string",
            "description": "SHA-256 of the profiled checkpoint.",
        },
    },
    ["architecture", "exits"],
)

CONFIG = _obj(
    "Measurements of one instance type or function size.",
    {
        "name": {"type": "string", "minLength": 1, "description": "As in the price sheet."},
        "kind": {
            "type": "string",
            "enum": ["instance", "function"],
            "description": "Where it runs.",
        },
        "vcpu": _num("CPUs the measurement was taken with.", 0, True),
        "memoryMiB": _num("Memory in MiB (for functions, the billed size).", 0, True),
        "coldStartSeconds": _num("Seconds from launch until it serves."),
        "secondsPerRequest": _list(
            "u_i: mean seconds per request of each partition in batches of B (one per partition).",
            _num("Seconds per request."),
        ),
    },
    ["name", "kind", "vcpu", "memoryMiB", "coldStartSeconds", "secondsPerRequest"],
)

CUT = _obj(
    "The activation crossing the cut after one partition.",
    {
        "after": {
            "type": "integer",
            "minimum": 1,
            "description": "Cut after partition i (1..K-1).",
        },
        "activationBytes": _num("Compressed bytes per request."),
        "transferSeconds": _num(
            "x_cut: function-side seconds per request to receive and decompress."
        ),
    },
    ["after", "activationBytes", "transferSeconds"],
)

THRESHOLD = _obj(
    "Exit distribution and accuracy at one confidence threshold.",
    {
        "tau": {
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": 1,
            "description": "Leave at the first exit whose max softmax >= tau.",
        },
        "accuracy": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "Accuracy at tau.",
        },
        "exitShares": _list(
            "e_i: share of all requests leaving at exit i; one per exit, summing to 1.",
            {"type": "number", "minimum": 0, "maximum": 1},
        ),
    },
    ["tau", "accuracy", "exitShares"],
)

PROFILE = _obj(
    "What was measured about one model (DESIGN.md section 4).",
    {
        "fingerprint": FINGERPRINT,
        "batch": {"type": "integer", "minimum": 1, "description": "B: the measured batch size."},
        "configs": _list("One per instance type or function size.", CONFIG),
        "cuts": _list("One per cut position.", CUT, 0),
        "thresholds": _list("One per profiled tau.", THRESHOLD),
    },
    ["fingerprint", "batch", "configs", "thresholds"],
)

PRICES = _obj(
    "What each config costs.",
    {
        "mode": {
            "type": "string",
            "enum": ["per-use", "per-pod"],
            "default": "per-use",
            "description": "per-use: execution GB-s plus invocations; per-pod: pods billed while alive.",
        },
        "instances": _list(
            "Node-pool instance types.",
            _obj(
                "One instance type.",
                {
                    "name": {"type": "string", "minLength": 1, "description": "Instance type."},
                    "perHour": _num("Dollars per hour for one instance."),
                    "nodeSelector": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "Labels selecting its nodes (default: the instance-type label).",
                    },
                },
                ["name", "perHour"],
            ),
            0,
        ),
        "functions": _obj(
            "Function (Knative Service) prices and sizes.",
            {
                "perGBSecond": _num("Dollars per GB-second."),
                "perInvocation": _num("Dollars per invocation (per-use)."),
                "keepAliveSeconds": _num("Seconds an idle function stays warm."),
                "sizes": _list(
                    "Function sizes.",
                    _obj(
                        "One size.",
                        {
                            "name": {
                                "type": "string",
                                "minLength": 1,
                                "description": "As in the profile.",
                            },
                            "memoryMiB": _num("Billed memory in MiB.", 0, True),
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


def profile_document_schema() -> dict[str, Any]:
    """JSON Schema (draft 4 style bounds, as OpenAPI v3) of a ``kind: Profile`` document."""
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "serflow Profile document",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string", "enum": ["serflow.io/v1alpha1"]},
            "kind": {"type": "string", "enum": ["Profile"]},
            "metadata": {"type": "object"},
            "profile": PROFILE,
            "prices": PRICES,
            "slo": {"type": "object"},
            "traffic": {"type": "object"},
            "scaling": {"type": "object"},
        },
        "required": ["kind", "profile"],
    }


def schema_json() -> str:
    return json.dumps(profile_document_schema(), indent=2, sort_keys=True) + "\n"
