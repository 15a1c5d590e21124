"""Pure epoch decisions: counters, rates, the monitor's prior."""

from __future__ import annotations

import pytest

from serflow.controller.decide import CounterReading, parse_counter, sample_rate, with_prior
from serflow.controller.planning import scaler_from_status
from serflow.status import InferenceStatus, SampleKind, TrafficStatus


def _readings(**values: int | None) -> tuple[CounterReading, ...]:
    return tuple(CounterReading(k, v) for k, v in values.items())


@pytest.mark.parametrize(
    ("prev", "prev_at", "now", "kind", "rate"),
    [
        ({}, None, _readings(a=100), SampleKind.BASELINE, None),  # first reading
        ({"a": 100}, None, _readings(a=160), SampleKind.BASELINE, None),  # after a restart
        ({"a": 100}, 0.0, _readings(a=160), SampleKind.OK, 10.0),
        ({"a": 100}, 2.0, _readings(a=40), SampleKind.OK, 10.0),  # reset: restarted at 0
        ({"a": 100}, 0.0, _readings(a=130, b=30), SampleKind.OK, 5.0),  # new replica: baseline
        ({"a": 100, "b": 50}, 0.0, _readings(a=112), SampleKind.OK, 2.0),  # b is gone
        ({"a": 100}, 0.0, _readings(b=30), SampleKind.BASELINE, None),  # every replica new
        ({"a": 100, "b": 50}, 0.0, _readings(a=160, b=None), SampleKind.MISSING, None),
        ({"a": 100}, 0.0, (), SampleKind.MISSING, None),  # no endpoint at all
        ({"a": 100}, 6.0, _readings(a=100), SampleKind.BASELINE, None),  # no time passed
    ],
)
def test_sample_rate(
    prev: dict[str, int],
    prev_at: float | None,
    now: tuple[CounterReading, ...],
    kind: SampleKind,
    rate: float | None,
) -> None:
    got = sample_rate(prev, prev_at, now, 6.0)
    assert (got.kind, got.rate) == (kind, rate)
    if kind is SampleKind.MISSING:  # the baseline is kept, time included
        assert (got.counters, got.counters_at) == (prev, prev_at)
    else:
        assert got.counters == {r.endpoint: r.value for r in now}
        assert got.counters_at == 6.0


def test_parse_counter() -> None:
    text = "http.ingress.downstream_rq_total: 42\nhttp.ingress.downstream_rq_totalx: 7\n"
    assert parse_counter(text, "http.ingress.downstream_rq_total") == 42
    assert parse_counter(text, "http.other.downstream_rq_total") is None
    assert (
        parse_counter("http.ingress.downstream_rq_total: x", "http.ingress.downstream_rq_total")
        is None
    )


def test_expected_rate_is_a_prior_only_before_any_sample() -> None:
    empty = scaler_from_status(InferenceStatus())
    seeded = with_prior(empty, 30.0)
    assert (seeded.estimate.ewma, seeded.estimate.dev, seeded.estimate.samples) == (30.0, 0.0, 1)
    # The first (empty) epoch then moves the EWMA by a, instead of replacing it.
    from serflow.policy.monitor import observe

    assert observe(seeded.estimate, 0.0, 0.2, 0.2).ewma == pytest.approx(24.0)
    seen = scaler_from_status(InferenceStatus(traffic=TrafficStatus(ewma=5.0, samples=3)))
    assert with_prior(seen, 30.0) == seen
    assert with_prior(empty, 0.0) == empty
