"""A few Prometheus metrics rendered in the text exposition format (no client library)."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HELP = {
    "serflow_requests_total": ("counter", "Requests answered, by HTTP status code."),
    "serflow_exits_total": (
        "counter",
        "Requests answered, by the exit (classifier) that answered.",
    ),
    "serflow_offloads_total": ("counter", "Stage calls to functions, by stage (first partition)."),
    "serflow_offloaded_requests_total": ("counter", "Requests whose activations were offloaded."),
    "serflow_sheds_total": (
        "counter",
        "Requests refused with 503 because the epoch budget was full.",
    ),
    "serflow_bad_requests_total": ("counter", "Requests refused with a 4xx."),
    "serflow_batch_seconds": ("histogram", "Seconds to run the local partitions of one batch."),
    "serflow_batch_size": ("histogram", "Requests per batch."),
}

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._hists: dict[str, tuple[list[int], list[float]]] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str | int) -> None:
        key = tuple(sorted((k, str(v)) for k, v in labels.items()))
        with self._lock:
            self._counters[name][key] += value

    def observe(self, name: str, value: float, buckets: tuple[float, ...] = BUCKETS) -> None:
        with self._lock:
            counts, acc = self._hists.setdefault(name, ([0] * (len(buckets) + 1), [0.0, 0.0]))
            for i, b in enumerate(buckets):
                if value <= b:
                    counts[i] += 1
            counts[-1] += 1
            acc[0] += value
            acc[1] += 1

    def value(self, name: str, **labels: str | int) -> float:
        key = tuple(sorted((k, str(v)) for k, v in labels.items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, 0.0)

    def render(self) -> str:
        out: list[str] = []
        with self._lock:
            for name in sorted(set(self._counters) | set(self._hists) | set(HELP)):
                kind, text = HELP.get(name, ("counter", name))
                out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind == "histogram":
                    counts, acc = self._hists.get(name, ([0] * (len(BUCKETS) + 1), [0.0, 0.0]))
                    for b, c in zip(BUCKETS, counts, strict=False):
                        out.append(f'{name}_bucket{{le="{b}"}} {c}')
                    out.append(f'{name}_bucket{{le="+Inf"}} {counts[-1]}')
                    out.append(f"{name}_sum {acc[0]}")
                    out.append(f"{name}_count {int(acc[1])}")
                    continue
                for key, v in sorted(self._counters.get(name, {}).items()):
                    lab = ",".join(f'{k}="{val}"' for k, val in key)
                    out.append(f"{name}{{{lab}}} {v:g}" if lab else f"{name} {v:g}")
        return "\n".join(out) + "\n"
