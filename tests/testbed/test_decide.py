"""The local runtime's and the demo's pure decisions."""

from __future__ import annotations

import pytest

from serflow_runtime.server import server_timing_seconds
from serflow_testbed import decide
from serflow_testbed.decide import Instance, Life, Record


def test_transform_trace_slices_and_scales() -> None:
    assert decide.transform_trace([10, 20, 30, 40], 1, 2, 0.5) == [10, 15]
    with pytest.raises(ValueError):
        decide.transform_trace([1, 2], 1, 5, 1.0)


def test_arrivals_stay_inside_their_epoch_and_are_sorted() -> None:
    a = decide.arrivals([3, 0, 5], 2.0, seed=1)
    assert len(a) == 8
    assert [t for t, _ in a] == sorted(t for t, _ in a)
    for t, e in a:
        assert e * 2.0 <= t < (e + 1) * 2.0
    assert a == decide.arrivals([3, 0, 5], 2.0, seed=1)


def test_scale_pool_starts_the_missing_and_stops_the_newest_unready_first() -> None:
    run = [Instance(0, 1.0, True), Instance(1, 5.0, True), Instance(2, 9.0, False)]
    assert decide.scale_pool(5, run) == (2, [])
    assert decide.scale_pool(2, run) == (0, [2])
    assert decide.scale_pool(1, run) == (0, [2, 1])
    assert decide.scale_pool(0, []) == (0, [])


def test_ready_after_cold_start_and_idle_expiry() -> None:
    assert not decide.ready_now(0.0, 5.0, 10.0, True)
    assert not decide.ready_now(0.0, 11.0, 10.0, False)
    assert decide.ready_now(0.0, 11.0, 10.0, True)
    assert decide.idle_expired(0.0, 20.0, 20.0, 0)
    assert not decide.idle_expired(0.0, 20.0, 20.0, 1)
    assert not decide.idle_expired(5.0, 20.0, 20.0, 0)


def test_local_args_rewrite_host_port_and_tail_urls() -> None:
    args = ["--host", "0.0.0.0", "--port", "8080", "--tau", "0.85", "--cut", "2",
            "--artefact", "/models/x", "--tail", "3-K=http://d-tail.ns.svc.cluster.local"]  # fmt: skip
    out = decide.local_args(args, 9000, "pool-0", {"d-tail": "http://127.0.0.1:7000"})
    assert out == ["--tau", "0.85", "--cut", "2", "--tail", "3-K=http://127.0.0.1:7000",
                   "--host", "127.0.0.1", "--port", "9000", "--threads", "1", "--name", "pool-0"]  # fmt: skip
    with pytest.raises(KeyError):
        decide.local_args(["--tail", "3-K=http://other.ns"], 1, "x", {})


def test_alive_seconds_clip_to_the_window() -> None:
    lives = [
        Life("instance", "a", 0.0, 10.0),
        Life("instance", "b", 5.0),
        Life("function", "f", 0.0),
    ]
    assert decide.alive_seconds(lives, "instance", 2.0, 12.0) == pytest.approx(8.0 + 7.0)
    assert decide.alive_seconds(lives, "function", 2.0, 12.0) == pytest.approx(10.0)
    assert decide.peak_alive(lives, "instance") == 2
    assert decide.peak_alive([Life("f", "a", 0.0, 1.0), Life("f", "b", 1.0)], "f") == 1
    assert decide.peak_alive([], "function") == 0


def test_bill_per_use_and_per_pod() -> None:
    p = decide.Prices(instance_per_s=0.01, function_per_s=0.1, per_invocation=0.001, per_pod=False)
    b = decide.bill(100.0, 2.0, 50.0, 10, p)
    assert (b.instance_cost, b.function_cost, b.function_seconds) == pytest.approx((1.0, 0.21, 2.0))
    assert b.total == pytest.approx(1.21)
    pod = decide.bill(100.0, 2.0, 50.0, 10, decide.Prices(0.01, 0.1, 0.001, True))
    assert (pod.function_cost, pod.function_seconds) == pytest.approx((5.0, 50.0))


def test_summary_counts_failures_slo_accuracy_and_exits() -> None:
    recs = [
        Record(0, 0.1, 1.0, 200, "pool", 1, True),
        Record(0, 0.2, 5.0, 200, "function", 2, True),
        Record(1, 2.1, 0.5, 200, "pool", 1, False),
        Record(1, 2.2, 9.0, 503),
    ]
    s = decide.summarise(recs, 4.0)
    assert (s.requests, s.failures, s.slo_met, s.correct) == (4, 1, 2, 2)
    assert (s.pool, s.function, s.exits) == (2, 1, {1: 2, 2: 1})
    assert s.slo_attainment == 0.5
    assert s.accuracy == pytest.approx(2 / 3)
    pe = decide.per_epoch(recs, 2)
    assert pe["pool"] == [1, 1] and pe["function"] == [1, 0] and pe["failures"] == [0, 1]


def test_where_and_gap_and_calibration() -> None:
    assert decide.where_from([{"on": "worker:pool-0"}]) == "pool"
    assert decide.where_from([{"on": "function:x"}]) == "function"
    assert decide.relative_gap(110.0, 100.0) == pytest.approx(0.1)
    sv = decide.survival([0.5, 0.25, 0.25])
    assert sv == pytest.approx([1.0, 0.5, 0.25])
    u = decide.calibrate_function([1.0, 2.0, 4.0], sv, 6.0)
    assert sum(s * x for s, x in zip(sv, u, strict=True)) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("demand", "procs", "starting", "cc", "lo", "hi", "want"),
    [
        (0, 0, 0, 1, 0, 4, (0, 0)),  # idle, scaled to zero: nothing to do
        (1, 0, 0, 1, 0, 4, (1, 0)),  # scale from zero on the first request
        (1, 0, 1, 1, 0, 4, (0, 0)),  # ... once: its cold start is in flight
        (3, 1, 0, 1, 0, 4, (1, 0)),  # all slots busy, requests wait: one more
        (3, 1, 1, 1, 0, 4, (0, 0)),  # one start in flight at a time
        (9, 4, 0, 1, 0, 4, (0, 0)),  # at max-scale: requests wait for a slot
        (9, 3, 1, 1, 0, 4, (0, 0)),  # the one starting counts toward max-scale
        (4, 1, 0, 4, 0, 4, (0, 0)),  # containerConcurrency 4: one process holds 4
        (5, 1, 0, 4, 0, 4, (1, 0)),
        (1, 3, 0, 1, 0, 4, (0, 2)),  # demand fell: two idle ones may stop
        (0, 3, 0, 1, 2, 4, (0, 1)),  # ... but min-scale stay
        (0, 0, 0, 1, 2, 4, (1, 0)),  # min-scale is started without requests
        (0, 5, 0, 1, 0, 4, (0, 5)),  # max-scale lowered below the running ones
        (2, 0, 0, 1, 0, 1, (1, 0)),  # max-scale 1: one process however long the queue
        (2, 1, 0, 1, 0, 1, (0, 0)),
    ],
)
def test_scale_functions_like_knative(
    demand: int, procs: int, starting: int, cc: int, lo: int, hi: int, want: tuple[int, int]
) -> None:
    assert decide.scale_functions(demand, procs, starting, cc, lo, hi) == want


def test_scale_functions_may_start_several_when_allowed() -> None:
    assert decide.scale_functions(10, 1, 0, 1, 0, 4, max_starting=5) == (3, 0)
    assert decide.scale_functions(10, 1, 2, 1, 0, 4, max_starting=5) == (1, 0)


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ("app;dur=3.5", 0.0035),
        ("db;dur=1, app;dur=12", 0.012),
        ('app;desc="x";dur="0.25"', 0.00025),
        ("app", None),
        ("app;dur=abc", None),
        ("app;dur=-1", None),
        ("app;dur=inf", None),
        ("other;dur=3", None),
        ("", None),
        (None, None),
    ],
)
def test_server_timing_seconds(header: str | None, want: float | None) -> None:
    got = server_timing_seconds(header)
    assert got == (None if want is None else pytest.approx(want))


@pytest.mark.parametrize("own_ms", [0.9, 1.83, 2.9, 8.0])
def test_demo_plan_is_the_examples_whatever_the_machines_speed(own_ms: float) -> None:
    """The demo bills measured seconds but keeps the example's price per spilled image,
    so the plan (setup, T-CIP, mu) does not hinge on how fast this machine is."""
    from pathlib import Path

    import yaml

    from serflow.policy.configurator import configure
    from serflow.spec import parse_workload
    from serflow_testbed import demo

    base = yaml.safe_load((Path(demo.REPO) / "examples" / "digits-demo.yaml").read_text())
    want = configure(parse_workload(base), 64.0).chosen
    m = demo.demo_manifest(base, demo.FunctionMeasure(3.0, own_ms / 1e3, 2 * own_ms / 1e3), 10.0)
    got = configure(parse_workload(m), 64.0).chosen
    assert want is not None and got is not None
    assert got.setup == want.setup and got.tau == want.tau
    assert got.economics.tcip == pytest.approx(want.economics.tcip, rel=2e-3)
    assert got.economics.mu == pytest.approx(want.economics.mu)
    fn = next(c for c in m["spec"]["profile"]["inline"]["configs"] if c["kind"] == "function")
    sv = decide.survival(
        next(t for t in m["spec"]["profile"]["inline"]["thresholds"] if t["tau"] == got.tau)[
            "exitShares"
        ]
    )
    assert decide.request_seconds(fn["secondsPerRequest"], sv) == pytest.approx(
        own_ms / 1e3, rel=1e-3
    )


@pytest.mark.parametrize(
    ("measured", "expected"),
    [(100.0, 0.0), (90.0, 0.0), (110.0, 0.0), (121.0, 0.1), (81.0, -0.1)],
)
def test_band_gap_is_zero_inside_and_relative_to_the_nearer_end(
    measured: float, expected: float
) -> None:
    assert decide.band_gap(measured, 90.0, 110.0) == pytest.approx(expected)
