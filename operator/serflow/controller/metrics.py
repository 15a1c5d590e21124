"""Prometheus metrics of the operator, per SerflowInference."""

from __future__ import annotations

import os

from prometheus_client import Gauge, Histogram, start_http_server

_LABELS = ("namespace", "name")
RATE = Gauge("serflow_arrival_rate", "Observed arrival rate, req/s", _LABELS)
EWMA = Gauge("serflow_rate_ewma", "EWMA of the arrival rate, req/s", _LABELS)
DEV = Gauge("serflow_rate_deviation", "EWMA of the absolute deviation, req/s", _LABELS)
TARGET = Gauge("serflow_rate_target", "Rate the pool is sized for, req/s", _LABELS)
DESIRED = Gauge("serflow_instances_desired", "Pool instances decided", _LABELS)
READY = Gauge("serflow_instances_ready", "Pool instances ready", _LABELS)
SHARE = Gauge("serflow_pool_share", "Share of traffic routed to the pool", _LABELS)
COST = Gauge("serflow_cost_per_hour", "Cost rate at the current EWMA, $/h", _LABELS)
EPOCH_LATENESS = Gauge(
    "serflow_epoch_lateness_seconds",
    "How late the object's last epoch started against its schedule (a shared thread "
    "pool or event loop held up shows here first)",
    _LABELS,
)
EPOCH_SECONDS = Histogram(
    "serflow_epoch_duration_seconds",
    "Seconds one epoch took (gather, decide, write), every object's",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def serve() -> None:
    """Expose /metrics on SERFLOW_METRICS_ADDR:SERFLOW_METRICS_PORT (default 127.0.0.1:9090; 0 disables)."""
    port = int(os.environ.get("SERFLOW_METRICS_PORT", "9090"))
    if port:
        start_http_server(port, addr=os.environ.get("SERFLOW_METRICS_ADDR", "127.0.0.1"))


def record(
    namespace: str,
    name: str,
    rate: float | None,
    ewma: float,
    dev: float,
    target: float,
    desired: int,
    ready: int,
    share: float,
    cost: float,
) -> None:
    if rate is not None:  # no sample this epoch: the gauge keeps the last rate
        RATE.labels(namespace, name).set(rate)
    for gauge, value in (
        (EWMA, ewma), (DEV, dev), (TARGET, target), (DESIRED, desired),
        (READY, ready), (SHARE, share), (COST, cost),
    ):  # fmt: skip
        gauge.labels(namespace, name).set(value)
