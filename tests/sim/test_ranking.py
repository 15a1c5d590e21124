"""Plans ranked by a replay of the traffic, against the steady ranking."""

from __future__ import annotations

import pytest

from serflow.policy.configurator import PoolKind, configure
from serflow.ranking import RankedBy, rank, shortlist
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
