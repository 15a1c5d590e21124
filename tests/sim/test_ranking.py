"""Plans ranked by a replay of the traffic, against the steady ranking."""

from __future__ import annotations

import pytest

from serflow.domain import RankedBy
from serflow.policy.configurator import PoolKind, configure
from serflow.ranking import (
    RERANK_TICKS,
    SWITCH_MARGIN,
    history_counts,
    rank,
    replayed,
    rerank,
    rerank_due,
    shortlist,
)
from serflow.sim import PolicyName, replay
from tests.policy.helpers import tiny

# tiny: B 10, D 10 s, mu 1 req/s; a VM ($0.001/s, 2-epoch cold start) beats functions at a
# steady 2.5 req/s, S = 2 epochs.


def test_steady_traffic_keeps_the_steady_choice() -> None:
    w = tiny()
    plan = configure(w, 2.5)
    assert plan.chosen is not None and plan.chosen.setup.pool is not PoolKind.FAAS
    r = rank(w, plan, [25] * 40)
    assert r.by is RankedBy.REPLAY
    assert r.chosen is not None and r.chosen.setup.pool is not PoolKind.FAAS
    costs = [x.result.total_cost for x in r.replayed]
    assert costs == sorted(costs)


def test_bursts_the_mean_hides_choose_functions() -> None:
    w = tiny()
    plan = configure(w, 2.5)  # the same mean: 250 requests one epoch in ten
    bursty = ([250] + [0] * 9) * 6
    r = rank(w, plan, bursty, PolicyName.SERFLOW)
    assert r.chosen is not None and r.chosen.setup.pool is PoolKind.FAAS
    steady = replay(w, plan.chosen, bursty, PolicyName.SERFLOW).total_cost  # type: ignore[arg-type]
    assert r.replayed[0].result.total_cost < steady


def test_the_shortlist_holds_each_pool_kind() -> None:
    plan = configure(tiny(), 2.5)
    kinds = {c.setup.pool for c in shortlist(plan, few=1)}
    assert kinds == {PoolKind.FAAS, PoolKind.IAAS, PoolKind.HYBRID}


def test_no_trace_is_the_steady_ranking() -> None:
    w = tiny()
    plan = configure(w, 2.5)
    r = rank(w, plan, [])
    assert (r.chosen, r.by, r.replayed) == (plan.chosen, RankedBy.STEADY, ())
    with pytest.raises(ValueError, match="online scaler"):
        rank(w, plan, [1], PolicyName.BOUND)


def test_the_history_as_counts() -> None:
    assert history_counts([2.5, 0.04, 1.26], 10.0) == [25, 0, 13]


def test_re_ranking_is_due_every_history_span_of_ticks_with_a_full_history() -> None:
    s = tiny().scaling  # S = 2: a period of 8 ticks is 16 epochs
    assert RERANK_TICKS * s.interval_epochs == 16
    assert [e for e in range(50) if rerank_due(e, s, 16)] == [16, 32, 48]
    assert not rerank_due(16, s, 15)  # the history does not span the period yet
    assert not rerank_due(0, s, 16)


def test_steady_traffic_keeps_the_running_plan() -> None:
    w = tiny()
    plan = configure(w, 2.5)
    assert plan.chosen is not None
    r = rerank(w, plan, plan.chosen, [25] * 16)
    assert r.ranking.by is RankedBy.REPLAY
    assert (r.saving, r.switch) == (0.0, False)
    assert (
        r.current_cost == replayed(w, plan.chosen, [25] * 16, PolicyName.EXPECTED_COST, True).cost
    )


def test_warm_costs_the_second_pass_alone() -> None:
    # A running pool paid its cold start long ago: the re-ranking costs a replay of the
    # history after the same history, so the start from nothing is not counted.
    w = tiny()
    cand = configure(w, 2.5).chosen
    assert cand is not None and cand.setup.pool is not PoolKind.FAAS
    once = replay(w, cand, [25] * 16, PolicyName.EXPECTED_COST)
    twice = replay(w, cand, [25] * 32, PolicyName.EXPECTED_COST)
    warm = replayed(w, cand, [25] * 16, PolicyName.EXPECTED_COST, warm=True)
    assert warm.cost == twice.total_cost - once.total_cost
    assert warm.cost < once.total_cost  # the first pass waits out the cold start on functions
    assert replayed(w, cand, [25] * 16, PolicyName.EXPECTED_COST).cost == once.total_cost


def test_bursts_switch_to_functions_only_beyond_the_margin() -> None:
    # 250 requests one epoch in eight, 500 in the 16 epochs: on functions, at c_F =
    # $0.00135 a request, $0.675. The VM pool the paper's rule keeps for the bursts costs
    # $2.328 warm: the replay saves 71% of it, beyond the margin.
    w = tiny(scaling__policy="paper")
    plan = configure(w, 2.5)
    current = plan.chosen
    assert current is not None and current.setup.pool is PoolKind.IAAS
    bursty = ([250] + [0] * 7) * 2
    r = rerank(w, plan, current, bursty)
    best = r.ranking.replayed[0]
    assert best.candidate.setup.pool is PoolKind.FAAS
    assert (round(best.cost, 6), round(r.current_cost, 6)) == (0.675, 2.328)
    assert r.saving == pytest.approx(1 - 0.675 / 2.328)
    assert r.saving > SWITCH_MARGIN and r.switch
    # The same saving under a margin it does not clear: the plan stays (hysteresis).
    held = rerank(w, plan, current, bursty, margin=r.saving)
    assert (held.saving, held.switch) == (r.saving, False)


def test_the_expected_cost_scaler_already_leaves_bursts_to_functions() -> None:
    # The same bursts under the default scaler: it runs no instance for them, so the VM
    # plan costs what FaaS-only does ($0.675) and nothing is worth a switch.
    w = tiny()
    plan = configure(w, 2.5)
    assert plan.chosen is not None
    r = rerank(w, plan, plan.chosen, ([250] + [0] * 7) * 2)
    assert round(r.current_cost, 6) == 0.675
    assert (r.saving, r.switch) == (0.0, False)


def test_a_running_plan_off_the_shortlist_is_replayed_too() -> None:
    w = tiny()
    plan = configure(w, 2.5)
    listed = shortlist(plan)
    off = next(c for c in plan.candidates if c.feasible and c not in listed)
    r = rerank(w, plan, off, [25] * 16)
    assert r.current_cost == replayed(w, off, [25] * 16, PolicyName.EXPECTED_COST, True).cost
    assert r.saving == pytest.approx(1 - r.ranking.replayed[0].cost / r.current_cost)
