"""The servers' metrics, read back with prometheus_client's own parser after known observations."""

from __future__ import annotations

import math
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from serflow_runtime.metrics import (
    BATCH_SECONDS_BUCKETS,
    BATCH_SIZE_BUCKETS,
    SERVER_INFO,
    SPECS,
    Kind,
    Metrics,
)


def _samples(m: Metrics) -> dict[str, list[Sample]]:
    """Exposed samples by family name (counters keep their ``_total`` name)."""
    out: dict[str, list[Sample]] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        suffix = {"counter": "_total", "info": "_info"}.get(fam.type, "")
        name = fam.name + suffix
        out[name] = [s for s in fam.samples if not s.name.endswith("_created")]
    return out


def _buckets(samples: list[Sample]) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram, in exposition order."""
    return [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]


def test_every_metric_is_exposed_with_its_type_before_any_observation() -> None:
    fams = {f.name: f for f in text_string_to_metric_families(Metrics().render().decode())}
    for name, spec in SPECS.items():
        fam = fams[name.removesuffix("_total") if spec.kind is Kind.COUNTER else name]
        assert fam.type == spec.kind.value and fam.documentation == spec.help


def test_histograms_have_their_own_bucket_edges_and_cumulative_counts() -> None:
    m = Metrics()
    for size in (1, 3, 8, 100, 100, 600):
        m.observe("serflow_batch_size", size)
    for s in (0.0004, 0.02, 0.02, 7.0):
        m.observe("serflow_batch_seconds", s)
    got = _samples(m)

    size = got["serflow_batch_size"]
    assert _buckets(size) == [
        (1.0, 1),  # 1
        (2.0, 1),
        (5.0, 2),  # 3
        (10.0, 3),  # 8
        (25.0, 3),
        (50.0, 3),
        (100.0, 5),  # 100, 100 (le is inclusive)
        (200.0, 5),
        (500.0, 5),
        (math.inf, 6),  # 600
    ]
    assert [edge for edge, _ in _buckets(size)[:-1]] == list(BATCH_SIZE_BUCKETS)
    by_name = {s.name: s.value for s in size}
    assert by_name["serflow_batch_size_count"] == 6
    assert by_name["serflow_batch_size_sum"] == 812

    secs = _buckets(got["serflow_batch_seconds"])
    assert [edge for edge, _ in secs[:-1]] == list(BATCH_SECONDS_BUCKETS)
    counts = dict(secs)
    assert (counts[0.001], counts[0.01], counts[0.025], counts[5.0], counts[math.inf]) == (
        1,
        1,
        3,
        3,
        4,
    )


def test_counters_by_label_and_value() -> None:
    m = Metrics()
    m.inc("serflow_requests_total", code=200)
    m.inc("serflow_requests_total", code=200)
    m.inc("serflow_requests_total", code=503)
    m.inc("serflow_offloaded_requests_total", 7)
    m.inc("serflow_exits_total", exit=3)
    got = _samples(m)
    assert {(s.labels["code"], s.value) for s in got["serflow_requests_total"]} == {
        ("200", 2),
        ("503", 1),
    }
    assert [(s.labels, s.value) for s in got["serflow_offloaded_requests_total"]] == [({}, 7)]
    assert [(s.labels, s.value) for s in got["serflow_exits_total"]] == [({"exit": "3"}, 1)]
    assert got["serflow_sheds_total"] == [Sample("serflow_sheds_total", {}, 0.0)]
    assert m.value("serflow_requests_total", code=200) == 2
    assert m.value("serflow_requests_total", code=404) == 0


def test_the_server_names_its_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "digits-tail-00001-deployment-5f7c9-x2x")
    got = _samples(Metrics("function"))[SERVER_INFO]
    assert [(s.labels, s.value) for s in got] == [
        ({"pod": "digits-tail-00001-deployment-5f7c9-x2x", "server": "function"}, 1.0)
    ]
    monkeypatch.delenv("POD_NAME")
    assert _samples(Metrics())[SERVER_INFO][0].labels["pod"] == socket.gethostname()


def test_two_servers_in_one_process_count_apart() -> None:
    a, b = Metrics(), Metrics()
    a.inc("serflow_sheds_total", 4)
    assert (a.value("serflow_sheds_total"), b.value("serflow_sheds_total")) == (4, 0)
