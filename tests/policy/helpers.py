"""Small workloads built in code, so every expected number can be computed by hand."""

from __future__ import annotations

from typing import Any

import yaml

from serflow.presets import preset_text
from serflow.spec import Workload, parse_workload


def paper_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(preset_text("paper"))
    return doc


def paper() -> Workload:
    return parse_workload(paper_doc())


def tiny_doc(**over: Any) -> dict[str, Any]:
    """K = 2 partitions, B = 10, SLO 10 s (mu = 1 req/s); round numbers throughout.

    Instance 'vm': 0.4 + 0.4 s per request (8 s per batch), $3.6/h = $0.001/s.
    Function 'fn' (1024 MiB = 1 GB): 0.2 + 0.3 s per request, $0.001 per GB-s, $0.01 per call.
    tau 0.5: half the requests leave at exit 1 (s = 1, 0.5).
    """
    doc: dict[str, Any] = {
        "kind": "Profile",
        "metadata": {"name": "tiny"},
        "profile": {
            "fingerprint": {"architecture": "toy", "exits": [1]},
            "batch": 10,
            "configs": [
                {
                    "name": "vm",
                    "kind": "instance",
                    "vcpu": 2,
                    "memoryMiB": 4096,
                    "coldStartSeconds": 20,
                    "secondsPerRequest": [0.4, 0.4],
                },
                {
                    "name": "fn",
                    "kind": "function",
                    "vcpu": 1,
                    "memoryMiB": 1024,
                    "coldStartSeconds": 1,
                    "secondsPerRequest": [0.2, 0.3],
                },
            ],
            "cuts": [{"after": 1, "activationBytes": 1000, "transferSeconds": 0.1}],
            "thresholds": [
                {"tau": 0.5, "accuracy": 0.9, "exitShares": [0.5, 0.5]},
                {"tau": 0.9, "accuracy": 0.95, "exitShares": [0.1, 0.9]},
            ],
        },
        "prices": {
            "instances": [{"name": "vm", "perHour": 3.6}],
            "functions": {
                "perGBSecond": 0.001,
                "perInvocation": 0.01,
                "keepAliveSeconds": 20,
                "sizes": [{"name": "fn", "memoryMiB": 1024}],
            },
        },
        "slo": {"latencySeconds": 10},
        "traffic": {"expectedRate": 2.5},
        "scaling": {"intervalEpochs": 2, "ewma": {"a": 0.5, "b": 0.5}, "k": 1},
    }
    for path, value in over.items():
        node = doc
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return doc


def tiny(**over: Any) -> Workload:
    return parse_workload(tiny_doc(**over))
