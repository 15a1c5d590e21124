"""The same-rules limit: the dynamic programme against exhaustive search on tiny traces."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serflow.policy.configurator import PoolKind, best_at, configure
from serflow.schedule import EpochCosts, cheapest_schedule, ticks
from serflow.sim import PolicyName, epoch_costs, replay, replay_schedule
from serflow.spec import Workload
from tests.policy.helpers import tiny

# tiny: B 10, D 10 s, vm $0.001/s with a 2-epoch cold start, S = 2 epochs, per-use functions.


def _cand(w: Workload, pools: list[PoolKind]):  # type: ignore[no-untyped-def]
    c = best_at(configure(w, 2.5, pools), 0.5)
    assert c is not None
    return c


def _exhaustive(w: Workload, counts: list[int], pools: list[PoolKind], top: int, phase: int = 0) -> float:
    """The cheapest total over every schedule with sizes 0..top, by replaying each."""
    c = _cand(w, pools)
    at = ticks(len(counts), w.scaling.interval_epochs, phase)
    return min(
        replay_schedule(w, c, counts, dict(zip(at, sizes, strict=True))).total_cost
        for sizes in itertools.product(range(top + 1), repeat=len(at))
    )


def test_ticks_follow_the_phase() -> None:
    assert ticks(7, 3) == [0, 3, 6]
    assert ticks(7, 3, phase=1) == [0, 1, 4]
    assert ticks(1, 3) == [0]


def test_limit_by_hand() -> None:
    w = tiny()
    c = _cand(w, [PoolKind.IAAS])
    # Ticks at 0, 2, ..., 10. Instances launched at t0 are billed from t1 ($0.01 an epoch
    # each) and ready from t3 (2-epoch cold start); until then all 25 requests go to
    # functions ($0.03875 an epoch). Two instances leave the partial batch to functions
    # ($0.01175 an epoch); a third would save that in 9 ready epochs but bill 11.
    r = replay(w, c, [25] * 12, PolicyName.LIMIT)
    assert r.series.alive == [0] + [2] * 11
    assert r.series.ready == [0, 0, 0] + [2] * 9
    assert r.total_cost == pytest.approx(3 * 0.03875 + 11 * 2 * 0.01 + 9 * 0.01175)
    assert r.total_cost == pytest.approx(_exhaustive(w, [25] * 12, [PoolKind.IAAS], 3))
    # Six epochs are too short to repay the cold start: the limit keeps no pool.
    short = replay(w, c, [25] * 6, PolicyName.LIMIT)
    assert short.series.alive == [0] * 6
    assert short.total_cost == pytest.approx(6 * 0.03875)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=7))
def test_limit_is_the_cheapest_schedule(counts: list[int]) -> None:
    """Instances are ready by the next tick (cold 2 epochs, S 2): the vectorised path."""
    w = tiny()
    limit = replay(w, _cand(w, [PoolKind.IAAS]), counts, PolicyName.LIMIT)
    assert limit.total_cost == pytest.approx(_exhaustive(w, counts, [PoolKind.IAAS], 4))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=5), st.sampled_from([PoolKind.IAAS, PoolKind.HYBRID]))
def test_limit_with_warming_cohorts_is_the_cheapest_schedule(counts: list[int], pool: PoolKind) -> None:
    """S = 1 epoch with a 2-epoch cold start: instances still warm across ticks."""
    w = tiny(scaling__intervalEpochs=1)
    limit = replay(w, _cand(w, [pool]), counts, PolicyName.LIMIT)
    assert limit.total_cost == pytest.approx(_exhaustive(w, counts, [pool], 3))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=30),
    st.sampled_from([1, 2, 3]),
    st.sampled_from([PoolKind.IAAS, PoolKind.HYBRID]),
)
def test_limit_sits_between_the_bound_and_the_online_rule(
    counts: list[int], interval: int, pool: PoolKind
) -> None:
    w = tiny(scaling__intervalEpochs=interval)
    c = _cand(w, [pool])
    bound = replay(w, c, counts, PolicyName.BOUND).total_cost
    for phase in range(interval):
        limit = replay(w, c, counts, PolicyName.LIMIT, phase=phase).total_cost
        assert bound <= limit + 1e-9
        for rule in (PolicyName.SERFLOW, PolicyName.EXPECTED_COST):
            assert limit <= replay(w, c, counts, rule, phase=phase).total_cost + 1e-9


def test_schedule_cost_is_the_replayed_cost_per_use() -> None:
    """Per use the function bill does not depend on warm pods: the DP's sum is the bill."""
    w = tiny()
    c = _cand(w, [PoolKind.HYBRID])
    counts = [5, 33, 18, 0, 47, 26, 12, 9, 31]
    at = ticks(len(counts), w.scaling.interval_epochs)
    sched = cheapest_schedule(epoch_costs(w, c, counts), at, 2, 10 * 0.001, range(0, 6))
    replayed = replay_schedule(w, c, counts, dict(zip(at, sched.sizes, strict=True)))
    assert sched.cost == pytest.approx(replayed.total_cost)


def test_faas_pool_has_no_schedule() -> None:
    w = tiny()
    r = replay(w, _cand(w, [PoolKind.FAAS]), [25, 7], PolicyName.LIMIT)
    assert r.instance_seconds == 0
    assert r.total_cost == pytest.approx(replay(w, _cand(w, [PoolKind.FAAS]), [25, 7], PolicyName.FAAS).total_cost)


def test_epoch_costs_table_is_piecewise_linear_in_ready() -> None:
    # Epoch: 2 full batches ($1 spilled, $0.6 with both on the pool), a partial one ($0.1 more).
    costs = EpochCosts(none=[1.0], full=[0.6], whole=[0.5], batches=[2], per_instance=1)
    table = costs.table(0, 1, 4)
    assert table[:, 1].tolist() == pytest.approx([1.0, 0.8, 0.6, 0.5])


def test_bad_schedule_inputs_are_refused() -> None:
    costs = EpochCosts(none=[1.0], full=[1.0], whole=[1.0], batches=[0], per_instance=1)
    with pytest.raises(ValueError, match="ticks"):
        cheapest_schedule(costs, [1], 0, 1.0, range(0, 2))


def test_a_shrink_drops_the_newest_instances_first() -> None:
    from serflow.schedule import _resize

    # 2 ready, cohorts ready at epochs 5 (1) and 7 (2): shrinking to 2 keeps the ready ones.
    assert _resize(2, ((5, 1), (7, 2)), 2, 9) == (2, ())
    assert _resize(2, ((5, 1), (7, 2)), 4, 9) == (2, ((5, 1), (7, 1)))
    assert _resize(2, ((5, 1),), 1, 9) == (1, ())
    assert _resize(2, ((5, 1),), 5, 9) == (2, ((5, 1), (9, 2)))


def test_a_pool_up_before_the_trace_serves_from_the_first_epoch() -> None:
    """The operator plans its pool before the traffic: a replay may start with it ready."""
    w = tiny()
    c = _cand(w, [PoolKind.IAAS])
    counts = [25] * 12
    r = replay(w, c, counts, PolicyName.LIMIT, start_pool=2)
    # Two instances billed and ready from epoch 0: the 2-epoch cold start is not paid, so
    # every epoch costs $0.02 of instances and the partial batch's $0.01175 of functions.
    assert r.series.alive == [2] * 12
    assert r.series.ready == [2] * 12
    assert r.total_cost == pytest.approx(12 * (2 * 0.01 + 0.01175))
    cold = replay(w, c, counts, PolicyName.LIMIT)
    assert r.total_cost < cold.total_cost
    # The limit still starts from that pool when keeping it does not pay: six idle epochs.
    idle = replay(w, c, [0] * 6, PolicyName.LIMIT, start_pool=2)
    assert idle.series.alive == [2, 0, 0, 0, 0, 0]
    assert idle.total_cost == pytest.approx(2 * 0.01)
    # Every online rule starts from the same pool, and the limit stays below it.
    for rule in (PolicyName.LIBRA, PolicyName.SERFLOW, PolicyName.EXPECTED_COST):
        online = replay(w, c, counts, rule, start_pool=2)
        assert online.series.ready[0] == 2
        assert r.total_cost <= online.total_cost + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=5),
    st.integers(0, 3),
    st.sampled_from([1, 2]),
)
def test_limit_from_a_starting_pool_is_the_cheapest_schedule(counts: list[int], start: int, interval: int) -> None:
    """Both dynamic programmes (S 2: ready by the next tick; S 1: cohorts still warming)."""
    w = tiny(scaling__intervalEpochs=interval)
    c = _cand(w, [PoolKind.IAAS])
    at = ticks(len(counts), interval)
    best = min(
        replay_schedule(w, c, counts, dict(zip(at, sizes, strict=True)), start_pool=start).total_cost
        for sizes in itertools.product(range(4), repeat=len(at))
    )
    assert replay(w, c, counts, PolicyName.LIMIT, start_pool=start).total_cost == pytest.approx(best)


def test_a_negative_starting_pool_is_refused() -> None:
    w = tiny()
    with pytest.raises(ValueError, match="starting pool"):
        replay(w, _cand(w, [PoolKind.IAAS]), [1], PolicyName.LIMIT, start_pool=-1)
