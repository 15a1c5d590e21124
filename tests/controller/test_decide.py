"""Pure operator decisions: conditions, counters, status documents."""

from __future__ import annotations

import pytest

from serflow.controller.decide import (
    ConditionType,
    CounterReading,
    SampleKind,
    candidate_from_status,
    parse_counter,
    plan_status,
    same_setup,
    sample_rate,
    scaler_from_status,
    set_condition,
    with_prior,
)
from serflow.policy.configurator import configure
from serflow.spec import parse_workload
from tests.controller.manifests import manifest


def test_condition_transition_time_moves_only_on_flip() -> None:
    c = set_condition([], ConditionType.READY, False, "NotReady", "wait", 1, "t1")
    c = set_condition(c, ConditionType.READY, False, "NotReady", "still", 2, "t2")
    assert c == [
        {"type": "Ready", "status": "False", "reason": "NotReady", "message": "still",
         "observedGeneration": 2, "lastTransitionTime": "t1"}
    ]  # fmt: skip
    c = set_condition(c, ConditionType.READY, True, "Serving", "ok", 2, "t3")
    assert c[0]["lastTransitionTime"] == "t3" and c[0]["status"] == "True"
    c = set_condition(c, ConditionType.SCALED, True, "PoolSize", "1/1", 2, "t3")
    assert [x["type"] for x in c] == ["Ready", "Scaled"]


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


def test_plan_status_round_trips_the_setup() -> None:
    w = parse_workload(manifest())
    plan = configure(w, 30.0)
    assert plan.chosen is not None
    st = plan_status(plan)
    assert same_setup(st, plan.chosen)
    assert len(st["candidates"]) == len(plan.candidates)
    others = [c for c in plan.candidates if c.setup != plan.chosen.setup]
    assert not any(same_setup(st, c) for c in others if c.tau == plan.chosen.tau)
    # The economics kept in status rebuild the chosen candidate without the configurator.
    kept = candidate_from_status(st, w.scaling)
    assert kept is not None
    assert (kept.setup, kept.tau, kept.economics) == (
        plan.chosen.setup,
        plan.chosen.tau,
        plan.chosen.economics,
    )
    assert kept.cost_per_hour == pytest.approx(plan.chosen.cost_per_hour)
    assert candidate_from_status({k: v for k, v in st.items() if k != "economics"}, w.scaling) is None


def test_scaler_state_from_status() -> None:
    s = scaler_from_status(
        {
            "traffic": {"ewma": 3.5, "deviation": 1.0, "samples": 4, "epoch": 9},
            "instances": {"desired": 2},
        }
    )
    assert (s.estimate.ewma, s.estimate.dev, s.estimate.samples, s.epoch, s.desired) == (
        3.5,
        1.0,
        4,
        9,
        2,
    )
    assert scaler_from_status({}).estimate.samples == 0


def test_expected_rate_is_a_prior_only_before_any_sample() -> None:
    empty = scaler_from_status({})
    seeded = with_prior(empty, 30.0)
    assert (seeded.estimate.ewma, seeded.estimate.dev, seeded.estimate.samples) == (30.0, 0.0, 1)
    # The first (empty) epoch then moves the EWMA by a, instead of replacing it.
    from serflow.policy.monitor import observe

    assert observe(seeded.estimate, 0.0, 0.2, 0.2).ewma == pytest.approx(24.0)
    seen = scaler_from_status({"traffic": {"ewma": 5.0, "samples": 3}})
    assert with_prior(seen, 30.0) == seen
    assert with_prior(empty, 0.0) == empty


def test_resume_keeps_the_plan_status_holds_for_the_same_spec() -> None:
    from serflow.controller.handlers import kept_candidate

    w = parse_workload(manifest())
    plan = configure(w, 30.0)
    assert plan.chosen is not None
    conds = set_condition([], ConditionType.CONFIGURED, True, "Planned", "x", 4, "t")
    status = {"observedGeneration": 4, "conditions": conds, "plan": plan_status(plan)}
    kept = kept_candidate("resume", status, 4, w.scaling)
    assert kept is not None and kept.economics == plan.chosen.economics
    assert kept_candidate("update", status, 4, w.scaling) is None  # a spec change re-plans
    assert kept_candidate("resume", status, 5, w.scaling) is None  # changed while the operator was down
    refused = set_condition(conds, ConditionType.CONFIGURED, False, "InvalidSpec", "x", 4, "t")
    assert kept_candidate("resume", {**status, "conditions": refused}, 4, w.scaling) is None
