"""The servers' Prometheus metrics, on prometheus_client with one private registry per server.

A private registry keeps two servers in one process (the tests, the local runtime) from
sharing counters, and leaves out the client's default process and platform collectors.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    generate_latest,
)

BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of ``serflow_batch_seconds``: a batch of B runs in milliseconds to seconds."""
BATCH_SIZE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 500.0)
"""Upper bounds of ``serflow_batch_size``: requests per batch, up to the largest B served."""

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of ``Metrics.render()``'s output (the text exposition format)."""


class Kind(StrEnum):
    """Prometheus metric types the servers use."""

    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    """One metric as exposed: its type, help text, label names and (histograms) buckets."""

    kind: Kind
    """Counter or histogram."""
    help: str
    """The ``# HELP`` text."""
    labels: tuple[str, ...] = ()
    """Label names every sample carries."""
    buckets: tuple[float, ...] = ()
    """Histogram bucket upper bounds (``+Inf`` is added); empty for counters."""


SPECS: dict[str, MetricSpec] = {
    "serflow_requests_total": MetricSpec(
        Kind.COUNTER, "Requests answered, by HTTP status code.", ("code",)
    ),
    "serflow_exits_total": MetricSpec(
        Kind.COUNTER, "Requests answered, by the exit (classifier) that answered.", ("exit",)
    ),
    "serflow_offloads_total": MetricSpec(
        Kind.COUNTER, "Stage calls to functions, by stage (first partition).", ("stage",)
    ),
    "serflow_offloaded_requests_total": MetricSpec(
        Kind.COUNTER, "Requests whose activations were offloaded."
    ),
    "serflow_sheds_total": MetricSpec(
        Kind.COUNTER, "Requests refused with 503 because the epoch budget was full."
    ),
    "serflow_bad_requests_total": MetricSpec(Kind.COUNTER, "Requests refused with a 4xx."),
    "serflow_batch_seconds": MetricSpec(
        Kind.HISTOGRAM,
        "Seconds to run the local partitions of one batch.",
        buckets=BATCH_SECONDS_BUCKETS,
    ),
    "serflow_request_seconds": MetricSpec(
        Kind.HISTOGRAM,
        "Seconds from a serving request's headers to its answer (its Server-Timing): what "
        "a FaaS bills.",
        buckets=BATCH_SECONDS_BUCKETS,
    ),
    "serflow_batch_size": MetricSpec(
        Kind.HISTOGRAM, "Requests per batch.", buckets=BATCH_SIZE_BUCKETS
    ),
}
"""Every metric a worker or function server exposes, by its exposed name."""


SERVER_INFO = "serflow_server_info"
"""An info metric naming the serving process: ``pod`` (its pod's name) and ``server``
(``worker`` or ``function``), so a reader can tell which pod answered a scrape."""


def pod_name() -> str:
    """The pod this process runs in: ``POD_NAME`` where set, else the host name (a pod's
    host name is its name unless the spec sets another), else the local host's."""
    return os.environ.get("POD_NAME") or socket.gethostname()


class Metrics:
    """One server's metrics (every name in ``SPECS``, and ``SERVER_INFO``), in a registry
    of its own."""

    def __init__(self, server: str = "") -> None:
        self.registry = CollectorRegistry()
        info = Info(SERVER_INFO.removesuffix("_info"), "The serving process.", registry=None)
        info.info({"pod": pod_name(), "server": server})
        self.registry.register(info)
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        for name, spec in SPECS.items():
            metric: Counter | Histogram
            if spec.kind is Kind.COUNTER:
                # prometheus_client appends _total itself.
                metric = self._counters[name] = Counter(
                    name.removesuffix("_total"), spec.help, spec.labels, registry=None
                )
            else:
                metric = self._histograms[name] = Histogram(
                    name, spec.help, spec.labels, registry=None, buckets=spec.buckets
                )
            self.registry.register(metric)

    def inc(self, name: str, value: float = 1.0, **labels: str | int) -> None:
        c = self._counters[name]
        (c.labels(**{k: str(v) for k, v in labels.items()}) if labels else c).inc(value)

    def observe(self, name: str, value: float) -> None:
        self._histograms[name].observe(value)

    def value(self, name: str, **labels: str | int) -> float:
        """A counter's current value (0 before its first increment)."""
        got = self.registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
        return 0.0 if got is None else got

    def render(self) -> bytes:
        """The text exposition of every metric (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
