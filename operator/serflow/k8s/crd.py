"""The SerflowInference CustomResourceDefinition, generated from the profile schema.

``python -m serflow.k8s.crd`` prints it; ``crds/serflowinference.yaml`` and the chart's
copy are that output (a test keeps them current). The profile and price sheet reuse
``serflow.schemas`` so the CRD, the CLI and the profiler share one schema; CEL rules add
the cross-field checks the parser makes (DESIGN.md section 2 and issue 5).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from serflow.schemas import PRICES, PROFILE

GROUP = "serflow.io"
VERSION = "v1alpha1"
KIND = "SerflowInference"
PLURAL = "serflowinferences"
SHORT = "sfi"

# CEL cost estimation needs bounds on every list and string it walks.
_MAX_ITEMS = {
    "exits": 63,
    "configs": 32,
    "cuts": 64,
    "thresholds": 32,
    "secondsPerRequest": 64,
    "exitShares": 64,
    "instances": 32,
    "sizes": 32,
}
_MAX_NAME = 253


def _bounded(schema: dict[str, Any], key: str = "") -> dict[str, Any]:
    """A deep copy with maxItems/maxLength added where CEL needs them."""
    s = copy.deepcopy(schema)
    if s.get("type") == "array":
        s["maxItems"] = _MAX_ITEMS.get(key, 64)
        s["items"] = _bounded(s["items"])
    elif s.get("type") == "object":
        for k, v in s.get("properties", {}).items():
            s["properties"][k] = _bounded(v, k)
        if isinstance(s.get("additionalProperties"), dict):
            s["additionalProperties"] = _bounded(s["additionalProperties"])
    elif s.get("type") == "string" and "enum" not in s:
        s.setdefault("maxLength", _MAX_NAME if key == "name" else 1024)
    return s


def _str(desc: str, **kw: Any) -> dict[str, Any]:
    return {"type": "string", "description": desc, "maxLength": 1024, **kw}


def _int(desc: str, minimum: int = 0, **kw: Any) -> dict[str, Any]:
    return {"type": "integer", "description": desc, "minimum": minimum, **kw}


def _num(desc: str, **kw: Any) -> dict[str, Any]:
    return {"type": "number", "description": desc, **kw}


def _obj(
    desc: str, props: dict[str, Any], required: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "description": desc, "properties": props, **kw}
    if required:
        out["required"] = required
    return out


def _profile_schema() -> dict[str, Any]:
    p = _bounded(PROFILE)
    k = "size(self.fingerprint.exits) + 1"
    p["x-kubernetes-validations"] = [
        {
            "rule": f"self.configs.all(c, size(c.secondsPerRequest) == {k})",
            "message": "every config needs one secondsPerRequest per partition (len(exits) + 1)",
        },
        {
            "rule": f"self.thresholds.all(t, size(t.exitShares) == {k})",
            "message": "every threshold needs one exit share per exit (len(exits) + 1)",
        },
        {
            "rule": f"!has(self.cuts) || self.cuts.all(c, c.after < {k})",
            "message": "a cut must lie between partitions (after < len(exits) + 1)",
        },
    ]
    th = p["properties"]["thresholds"]["items"]
    th["x-kubernetes-validations"] = [
        {
            "rule": "self.exitShares.sum() >= 0.999 && self.exitShares.sum() <= 1.001",
            "message": "exitShares must sum to 1 (within 0.001)",
        }
    ]
    return p


def _model_schema() -> dict[str, Any]:
    return _obj(
        "The early-exit model to serve.",
        {
            "image": _str("Worker image (Dockerfile.worker)."),
            "functionImage": _str("Function image (Dockerfile.fn); default: the worker image."),
            "checkpoint": _str("Checkpoint path inside the image (default: the bundled one)."),
            "architecture": _str(
                "Network family; must match the profile's fingerprint.", default="vgg16_bn"
            ),
            "width": _num(
                "Channel width multiplier.", default=1.0, minimum=0, exclusiveMinimum=True
            ),
            "exits": {
                "type": "array",
                "description": "IC placement: conv blocks followed by an internal classifier.",
                "items": {"type": "integer", "minimum": 1},
                "maxItems": 63,
                "minItems": 1,
            },
            "numClasses": _int("Classes.", 2, default=10),
            "podAnnotations": {
                "type": "object",
                "description": "Extra annotations on the pool's pods.",
                "additionalProperties": {"type": "string", "maxLength": 1024},
                "maxProperties": 32,
            },
            "batch": _int("B: requests per batch; must match the profile.", 1, default=100),
        },
        ["image", "exits"],
    )


def _spec_schema() -> dict[str, Any]:
    tau = {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1}
    return _obj(
        "What to serve, under which SLO, at which prices.",
        {
            "model": _model_schema(),
            "slo": _obj(
                "The latency SLO and accuracy target.",
                {
                    "latencySeconds": _num(
                        "SLO: a worst-case warm batch must finish within it.",
                        minimum=0,
                        exclusiveMinimum=True,
                    ),
                    "targetAccuracy": _num(
                        "Only taus at least this accurate.", minimum=0, maximum=1, default=0
                    ),
                    "coldStartInFeasibility": {
                        "type": "boolean",
                        "description": "Also charge function cold starts to the worst-case batch.",
                        "default": False,
                    },
                },
                ["latencySeconds"],
            ),
            "thresholds": {
                "type": "array",
                "description": "Exit thresholds tau allowed (default: every profiled tau); 0 < tau <= 1.",
                "items": {**tau, "description": "A confidence threshold."},
                "maxItems": 32,
            },
            "prices": _bounded(PRICES),
            "profile": _obj(
                "The measured profile: inline, from a ConfigMap, or measured by Jobs.",
                {
                    "inline": _profile_schema(),
                    "configMapRef": _obj(
                        "A ConfigMap holding a Profile document.",
                        {
                            "name": _str("ConfigMap name.", maxLength=253),
                            "key": _str(
                                "Key holding the YAML.", default="profile.yaml", maxLength=253
                            ),
                        },
                        ["name"],
                    ),
                    "fromJob": _obj(
                        "Run the runtime's profiler as a Job per instance type and function size.",
                        {
                            "image": _str("Profiler image (default: the model image)."),
                            "taus": {
                                "type": "array",
                                "items": tau,
                                "maxItems": 32,
                                "description": "Taus to profile.",
                            },
                        },
                    ),
                },
            )
            | {
                "x-kubernetes-validations": [
                    {
                        "rule": "[has(self.inline), has(self.configMapRef), has(self.fromJob)]"
                        ".filter(x, x).size() == 1",
                        "message": "set exactly one of inline, configMapRef or fromJob",
                    }
                ]
            },
            "traffic": _obj(
                "What traffic to plan for.",
                {
                    "expectedRate": _num(
                        "Long-term rate in req/s for the offline plan.", minimum=0, default=0
                    )
                },
            ),
            "scaling": _obj(
                "The online loop.",
                {
                    "epochSeconds": _num("D: epoch length (default: the SLO).", minimum=0),
                    "intervalEpochs": _int("S: resize the pool every S epochs.", 1, default=25),
                    "ewma": _obj(
                        "Traffic monitor weights.",
                        {
                            "a": _num(
                                "Weight of the newest rate.",
                                minimum=0,
                                exclusiveMinimum=True,
                                maximum=1,
                                default=0.2,
                            ),
                            "b": _num(
                                "Weight of the newest deviation.",
                                minimum=0,
                                exclusiveMinimum=True,
                                maximum=1,
                                default=0.2,
                            ),
                        },
                    ),
                    "k": _num("Target = EWMA + k * deviation.", minimum=0, default=1),
                    "packBatches": {
                        "type": "boolean",
                        "default": False,
                        "description": "Let an instance serve several batches per epoch when they "
                        "still meet the SLO (the paper gives each one batch per epoch).",
                    },
                    "minInstances": _int("Pool lower bound.", 0, default=0),
                    "maxInstances": _int("Pool upper bound.", 0, default=100),
                },
            )
            | {
                "x-kubernetes-validations": [
                    {
                        "rule": "!has(self.minInstances) || !has(self.maxInstances) || "
                        "self.maxInstances >= self.minInstances",
                        "message": "maxInstances must be >= minInstances",
                    }
                ]
            },
            "functions": _obj(
                "Knative Services of the tail and the spill.",
                {
                    "containerConcurrency": _int(
                        "Requests one function pod takes at once.", 1, default=1
                    ),
                    "minScale": _int("Knative min-scale (0: scale to zero).", 0, default=0),
                    "maxScale": _int("Knative max-scale.", 1, default=50),
                },
            ),
            "routing": _obj(
                "Envoy in front of the pool and the functions.",
                {
                    "image": _str("Envoy image.", default="envoyproxy/envoy:v1.34.1"),
                    "replicas": _int("Envoy replicas.", 1, default=1),
                    "statPrefix": _str(
                        "Envoy HTTP stat prefix counting this object's requests.",
                        default="ingress",
                        maxLength=128,
                        pattern="^[a-zA-Z0-9_]+$",
                    ),
                    "statsUrls": {
                        "type": "array",
                        "description": "Stats endpoints to read counters from (default: the Envoy pods' stats port).",
                        "items": {"type": "string", "maxLength": 512},
                        "maxItems": 16,
                    },
                },
            ),
        },
        ["model", "slo", "prices", "profile"],
    ) | {
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.profile.inline) || self.profile.inline.batch == self.model.batch",
                "message": "profile.inline.batch must equal model.batch",
            },
            {
                "rule": "!has(self.profile.inline) || self.profile.inline.fingerprint.exits == self.model.exits",
                "message": "profile.inline.fingerprint.exits must equal model.exits",
            },
        ]
    }


def _condition() -> dict[str, Any]:
    return _obj(
        "A metav1.Condition.",
        {
            "type": _str("Configured, Scaled, Routed or Ready.", maxLength=316),
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": _int("Generation the condition was set for."),
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": _str("CamelCase reason.", maxLength=1024),
            "message": _str("Human-readable detail.", maxLength=32768),
        },
        ["type", "status", "lastTransitionTime", "reason", "message"],
    )


def _status_schema() -> dict[str, Any]:
    num = {"type": "number"}
    # What a candidate and the chosen plan share: the setup, its accuracy and its costs.
    setup = {
        "tau": num,
        "accuracy": num,
        "pool": {"type": "string"},
        "instance": {"type": "string"},
        "cut": {"type": "integer"},
        "granularity": {"type": "string"},
        "function": {"type": "string"},
        "costPerHour": num,
        "tcip": num,
    }
    cand = _obj(
        "One costed candidate.",
        {**setup, "feasible": {"type": "boolean"}, "reason": {"type": "string"}},
    )
    return _obj(
        "What serflow decided and observed.",
        {
            "observedGeneration": _int("The spec generation the status reflects."),
            "conditions": {
                "type": "array",
                "items": _condition(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "plan": _obj(
                "The chosen plan.",
                {
                    **setup,
                    "mu": num,
                    "rate": num,
                    "worstBatchSeconds": num,
                    "economics": _obj(
                        "What the epochs need of the plan (kept so a restart need not re-plan).",
                        {
                            "mu": num,
                            "instancePricePerSecond": num,
                            "faasPerRequest": num,
                            "addPerRequest": num,
                            "hasPool": {"type": "boolean"},
                            "batchesPerInstance": {"type": "integer"},
                        },
                    ),
                    "candidates": {"type": "array", "items": cand},
                },
            ),
            "traffic": _obj(
                "Traffic estimates (req/s) and the monitor's state.",
                {
                    "rate": num,
                    "ewma": num,
                    "deviation": num,
                    "target": num,
                    "samples": {"type": "integer"},
                    "epoch": {"type": "integer"},
                    "lastSample": {
                        "type": "string",
                        "enum": ["ok", "baseline", "missing"],
                        "description": "The last epoch's scrape: a rate, a baseline only, or missing (skipped).",
                    },
                    "samplesMissed": _int("Epochs whose scrape failed (the monitor skipped them)."),
                    "counters": {
                        "type": "object",
                        "additionalProperties": {"type": "integer"},
                        "description": "Last downstream_rq_total per stats endpoint.",
                    },
                },
            ),
            "instances": _obj(
                "Pool size.",
                {"desired": {"type": "integer"}, "ready": {"type": "integer"}},
            ),
            "split": _obj(
                "Envoy's weights.",
                {
                    "poolShare": num,
                    "poolWeight": {"type": "integer"},
                    "functionWeight": {"type": "integer"},
                },
            ),
            "costPerHour": _num("Cost rate of the current pool at the current EWMA, $/h."),
        },
    )


def crd() -> dict[str, Any]:
    cond = '.status.conditions[?(@.type=="Ready")].status'
    cols = [
        ("Pool", "string", ".status.plan.pool"),
        ("Cut", "integer", ".status.plan.cut"),
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
            "status": _status_schema(),
        },
        ["spec"],
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
