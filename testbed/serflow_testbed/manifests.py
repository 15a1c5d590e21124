"""A small SerflowInference whose numbers are easy to follow (K = 4, B = 10, SLO 2 s).

The controller, schema and image tests use it and ``bench/operator_scale.py`` applies it N
times: here in the test bed because ``bench/`` imports nothing from ``tests/``."""

from __future__ import annotations

import copy
from typing import Any

_PROFILE: dict[str, Any] = {
    "fingerprint": {
        "architecture": "vgg16_bn",
        "width": 0.25,
        "exits": [2, 4, 7],
        "numClasses": 10,
    },
    "batch": 10,
    "configs": [
        {
            "name": "c6i.xlarge",
            "kind": "instance",
            "vcpu": 4,
            "memoryMiB": 8192,
            "coldStartSeconds": 4,
            "secondsPerRequest": [0.02, 0.03, 0.04, 0.05],
        },
        {
            "name": "c6i.large",
            "kind": "instance",
            "vcpu": 2,
            "memoryMiB": 4096,
            "coldStartSeconds": 4,
            "secondsPerRequest": [0.04, 0.06, 0.08, 0.1],
        },
        {
            "name": "fn-2048",
            "kind": "function",
            "vcpu": 1,
            "memoryMiB": 2048,
            "coldStartSeconds": 0.5,
            "secondsPerRequest": [0.03, 0.04, 0.05, 0.06],
        },
    ],
    "cuts": [
        {"after": 1, "activationBytes": 16000, "transferSeconds": 0.002},
        {"after": 2, "activationBytes": 8000, "transferSeconds": 0.001},
        {"after": 3, "activationBytes": 4000, "transferSeconds": 0.0005},
    ],
    "thresholds": [
        {"tau": 0.5, "accuracy": 0.9, "exitShares": [0.5, 0.3, 0.1, 0.1]},
        {"tau": 0.9, "accuracy": 0.95, "exitShares": [0.2, 0.3, 0.2, 0.3]},
    ],
}

_SPEC: dict[str, Any] = {
    "model": {"image": "serflow/worker:0.1.0", "width": 0.25, "exits": [2, 4, 7], "batch": 10},
    "slo": {"latencySeconds": 2},
    "prices": {
        "instances": [
            {"name": "c6i.xlarge", "perHour": 0.17},
            {"name": "c6i.large", "perHour": 0.085},
        ],
        "functions": {
            "perGBSecond": 0.0001,
            "perInvocation": 0.0000002,
            "sizes": [{"name": "fn-2048", "memoryMiB": 2048}],
        },
    },
    "profile": {"inline": _PROFILE},
    "traffic": {"expectedRate": 30},
    "scaling": {
        "epochSeconds": 1,
        "intervalEpochs": 2,
        "policy": "paper",  # the tests of the epoch check the paper rule's exact numbers
        "ewma": {"a": 0.5, "b": 0.5},
        "k": 1,
        "maxInstances": 20,
    },
}


def manifest(name: str = "vgg", **spec_over: Any) -> dict[str, Any]:
    """The SerflowInference ``name`` with the top-level spec fields ``spec_over`` replaced."""
    spec = copy.deepcopy(_SPEC)
    spec.update(copy.deepcopy(spec_over))
    return {
        "apiVersion": "serflow.io/v1alpha1",
        "kind": "SerflowInference",
        "metadata": {"name": name},
        "spec": spec,
    }


def largest_manifest(name: str = "largest") -> dict[str, Any]:
    """The manifest at the schema's maximums where the candidates multiply: 12 exits
    (K = 13, every cut), 16 instance types and 16 function sizes (the profile's 32
    configs), 32 thresholds. The configurator costs about 205,000 candidates for it."""
    m = manifest(name)
    spec = m["spec"]
    exits = list(range(1, 13))
    k = len(exits) + 1
    spec["model"]["exits"] = exits
    profile = spec["profile"]["inline"]
    profile["fingerprint"]["exits"] = exits
    instances = [
        {"name": f"i{n}", "kind": "instance", "vcpu": 4, "memoryMiB": 8192,
         "coldStartSeconds": 4,
         "secondsPerRequest": [0.01 * (j + 1) * (1 + n / 16) for j in range(k)]}
        for n in range(16)
    ]  # fmt: skip
    functions = [
        {"name": f"fn-{n}", "kind": "function", "vcpu": 1, "memoryMiB": 128 * (n + 1),
         "coldStartSeconds": 0.5, "secondsPerRequest": [0.015 * (j + 1) for j in range(k)]}
        for n in range(16)
    ]  # fmt: skip
    profile["configs"] = instances + functions
    profile["cuts"] = [
        {"after": a, "activationBytes": 16000, "transferSeconds": 0.002} for a in range(1, k)
    ]
    profile["thresholds"] = [
        {"tau": round(0.5 + 0.015 * t, 3), "accuracy": 0.9, "exitShares": [1.0 / k] * k}
        for t in range(32)
    ]
    spec["prices"]["instances"] = [{"name": f"i{n}", "perHour": 0.1 + 0.01 * n} for n in range(16)]
    spec["prices"]["functions"]["sizes"] = [
        {"name": f"fn-{n}", "memoryMiB": 128 * (n + 1)} for n in range(16)
    ]
    spec["slo"]["latencySeconds"] = 20
    return m
