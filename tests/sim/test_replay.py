"""The trace simulator, stepped on tiny traces whose bills are computed by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serflow.policy.configurator import PoolKind, best_at, configure, instance_cold_epochs
from serflow.policy.scaler import ScalerState, ScalingContext, step
from serflow.policy.scalers import SCALERS
from serflow.sim import SCALED_BY, PolicyName, Routing, online_policy, replay
from serflow.spec import ScalingPolicy, Workload, parse_workload
from tests.policy.helpers import paper, tiny, tiny_doc

# tiny: B 10, D 10 s (mu 1 req/s), vm $0.001/s with a 20 s (2 epoch) cold start,
# fn $0.001/s + $0.01 per call, 0.35 s per request at tau 0.5, keep-alive 2 epochs.


def _cand(w: Workload, pools: list[PoolKind], tau: float = 0.5):  # type: ignore[no-untyped-def]
    c = best_at(configure(w, 2.5, pools), tau)
    assert c is not None
    return c


def test_libra_bill_by_hand() -> None:
    w = tiny()
    r = replay(w, _cand(w, [PoolKind.IAAS]), [25] * 6, PolicyName.LIBRA)
    # t0: target 2.5 -> q 2, r 0.5 <= TCIP 0.74: launch 2, ready at t3 (2-epoch cold start).
    assert r.series.alive == [0, 2, 2, 2, 2, 2]
    assert r.series.ready == [0, 0, 0, 2, 2, 2]
    assert r.series.pool == [0, 0, 0, 20, 20, 20]
    assert r.instance_seconds == pytest.approx(100.0)
    assert r.instance_cost == pytest.approx(0.1)
    # FaaS: 3 epochs x (25 x 0.35 s x $0.001 + 3 calls) + 3 x (5 x 0.35 x $0.001 + 1 call)
    assert r.function_cost == pytest.approx(3 * 0.03875 + 3 * 0.01175)
    assert r.invocations == pytest.approx(12)
    assert (r.pool_requests, r.faas_requests, r.requests) == (60, 90, 150)
    assert r.slo_misses == 0


def test_bound_picks_each_epochs_cheapest_count() -> None:
    w = tiny()
    r = replay(w, _cand(w, [PoolKind.IAAS]), [25] * 6, PolicyName.BOUND)
    # per epoch: 0 instances $0.03875, 2 -> $0.03175, 3 -> $0.03 (partial batch on the third)
    assert r.series.ready == [3] * 6
    assert r.total_cost == pytest.approx(6 * 0.03)
    assert r.faas_requests == 0


def test_faas_only_never_launches() -> None:
    w = tiny()
    r = replay(w, _cand(w, [PoolKind.FAAS]), [25, 0, 7], PolicyName.FAAS)
    assert r.instance_seconds == 0 and r.pool_requests == 0
    assert r.function_cost == pytest.approx(32 * 0.35 * 0.001 + 4 * 0.01)


def test_a_spill_bills_the_functions_overhead_and_the_plan_prices_it() -> None:
    doc = tiny_doc()
    doc["profile"]["configs"][1]["requestOverheadSeconds"] = 0.05
    w = parse_workload(doc)
    c = _cand(w, [PoolKind.FAAS])
    # 0.35 s of partitions and 0.05 s of the server's own per spilled request.
    assert c.economics.faas_per_request == pytest.approx(0.001 * 0.4 + 0.01 / 10)
    r = replay(w, c, [25, 0, 7], PolicyName.FAAS)
    assert r.function_seconds == pytest.approx(32 * 0.4)
    assert r.function_cost == pytest.approx(32 * 0.4 * 0.001 + 4 * 0.01)
    # A hybrid's tail arrives in frames of a batch: no lone-image overhead there.
    hy = _cand(w, [PoolKind.HYBRID])
    plain = _cand(tiny(), [PoolKind.HYBRID])
    assert hy.economics.add_per_request == plain.economics.add_per_request


def test_per_pod_bills_alive_pods_through_keep_alive() -> None:
    w = tiny(prices__mode="per-pod")
    r = replay(w, _cand(w, [PoolKind.FAAS]), [25, 0, 0, 0, 25], PolicyName.FAAS)
    # 3 pods alive at t0, kept 2 idle epochs, reclaimed at t3, 3 cold ones at t4.
    assert r.function_seconds == pytest.approx((3 + 3 + 3 + 0 + 3) * 10)
    assert r.function_cost == pytest.approx(0.12)


def test_function_cold_start_past_the_slo_counts_misses() -> None:
    doc = tiny_doc()
    doc["profile"]["configs"][1]["coldStartSeconds"] = 7.0
    w7 = parse_workload(doc)
    r = replay(w7, _cand(w7, [PoolKind.FAAS]), [25], PolicyName.FAAS)
    # Both full batches start 7 s late: their 5 requests reaching partition 2 finish at
    # 7 + 10 x 0.35 = 10.5 s > SLO 10 s. The partial batch (5) finishes at 8.75 s.
    assert r.slo_misses == pytest.approx(10)
    assert r.slo_attainment == pytest.approx(0.6)


def test_hybrid_tail_is_billed_per_stage() -> None:
    w = tiny()
    c = _cand(w, [PoolKind.HYBRID])
    r = replay(w, c, [20] * 5, PolicyName.SERFLOW)
    assert r.pool_requests == 40  # 2 ready from t3
    tail = r.function_cost - r.faas_requests * 0.35 * 0.001 - 6 * 0.01
    # per pooled request 0.5 x (0.3 + 0.1) s; one call per batch with a survivor (1 - 0.5^10)
    assert tail == pytest.approx(40 * 0.2 * 0.001 + 4 * (1 - 0.5**10) * 0.01)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 400), min_size=1, max_size=120),
    tau=st.sampled_from([0.5, 0.7, 0.85]),
)
def test_replay_invariants_on_the_paper_preset(counts: list[int], tau: float) -> None:
    w = paper()
    plan = configure(w, 34.87)
    c = best_at(plan, tau)
    assert c is not None
    online = replay(w, c, counts, PolicyName.SERFLOW)
    bound = replay(w, c, counts, PolicyName.BOUND)
    for r in (online, bound):
        assert r.pool_requests + r.faas_requests == r.requests == sum(counts)
        assert r.instance_cost >= 0 and r.function_cost >= 0
        assert 0.0 <= r.slo_attainment <= 1.0
        assert all(p <= n for p, n in zip(r.series.pool, r.series.requests, strict=True))
    # The clairvoyant bound is never dearer than the online policy with the same setup.
    assert bound.total_cost <= online.total_cost + 1e-9


def test_instances_serve_only_after_their_cold_start() -> None:
    w = paper()
    c = best_at(configure(w, 34.87, [PoolKind.IAAS]), 0.85)
    assert c is not None
    r = replay(w, c, [300] * 40, PolicyName.LIBRA)
    first_alive = r.series.alive.index(next(a for a in r.series.alive if a))
    first_ready = r.series.ready.index(next(a for a in r.series.ready if a))
    assert first_ready - first_alive == 22  # 132 s / 6 s
    assert all(p == 0 for p in r.series.pool[:first_ready])


def test_packed_instances_take_several_batches_per_epoch() -> None:
    doc = tiny_doc(scaling__packBatches=True)
    doc["profile"]["configs"][0]["secondsPerRequest"] = [0.1, 0.1]  # 2 s per batch: 5 per epoch
    w = parse_workload(doc)
    c = _cand(w, [PoolKind.IAAS])
    assert c.economics.batches_per_instance == 5
    r = replay(w, c, [45] * 6, PolicyName.LIBRA)
    # target 4.5 req/s -> q = 0 of mu 5, r 4.5 > TCIP: one instance, ready at t3, takes all 45.
    assert r.series.alive == [0, 1, 1, 1, 1, 1]
    assert r.series.pool == [0, 0, 0, 45, 45, 45]
    bound = replay(w, c, [45] * 6, PolicyName.BOUND)
    assert bound.series.ready == [1] * 6 and bound.faas_requests == 0


@pytest.mark.parametrize(
    ("phase", "alive"),
    [
        # S = 3: sized at t0 (2 instances), then resized at t = phase (mod 3); a size
        # decided at t is alive from t + 1.
        (0, [0, 2, 2, 2, 2, 2, 2, 5, 5, 5]),  # ticks 3, 6, 9: the dip at t3 keeps 2
        (1, [0, 2, 2, 2, 2, 1, 1, 1, 5, 5]),  # ticks 1, 4, 7: the dip at t4 shrinks to 1
        (2, [0, 2, 2, 2, 2, 2, 1, 1, 1, 5]),  # ticks 2, 5, 8
    ],
)
def test_the_scaling_tick_phase_moves_when_the_pool_resizes(phase: int, alive: list[int]) -> None:
    w = parse_workload(tiny_doc(scaling__intervalEpochs=3))
    counts = [25, 25, 5, 5, 5, 5, 45, 45, 45, 45]
    r = replay(w, _cand(w, [PoolKind.IAAS]), counts, PolicyName.LIBRA, phase=phase)
    assert r.series.alive == alive


@pytest.mark.parametrize("phase", [-1, 3])
def test_a_phase_outside_the_interval_is_refused(phase: int) -> None:
    w = parse_workload(tiny_doc(scaling__intervalEpochs=3))
    with pytest.raises(ValueError, match=r"phase must be in \[0, 3\)"):
        replay(w, _cand(w, [PoolKind.IAAS]), [25], PolicyName.LIBRA, phase=phase)


def test_envoy_routing_sends_the_operators_share_and_spills_the_rest() -> None:
    """Routing.ENVOY: the pool gets round(n * min(1, ready * mu / EWMA)) of an epoch, at
    most B per ready instance; FILL puts the epoch's exact count on the instances."""
    w = tiny()
    cand = _cand(w, [PoolKind.IAAS])
    counts = [25] * 3 + [15] * 3
    fill = replay(w, cand, counts, PolicyName.LIBRA)
    envoy = replay(w, cand, counts, PolicyName.LIBRA, routing=Routing.ENVOY)
    assert fill.series.ready == envoy.series.ready == [0, 0, 0, 2, 2, 2]
    # t3: 2 ready, mu 1 req/s, EWMA 2.5 req/s (three epochs of 25 in 10 s): share 0.8, so
    # round(15 * 0.8) = 12 reach the pool (one batch of 10 and one of 2), 3 spill; filling
    # would have put all 15 on the two instances.
    assert envoy.series.share[3] == pytest.approx(0.8)
    assert (envoy.series.pool[3], envoy.series.faas[3]) == (12, 3)
    assert (fill.series.pool[3], fill.series.faas[3]) == (15, 0)
    assert fill.series.share == [None] * 6
    # Never more on the pool than filling, the same instances, so never a smaller bill.
    assert all(e <= f for e, f in zip(envoy.series.pool, fill.series.pool, strict=True))
    assert envoy.instance_seconds == fill.instance_seconds
    assert envoy.total_cost >= fill.total_cost


def test_envoy_routing_sheds_past_the_budget() -> None:
    """Envoy offers the pool its share; each instance admits one batch of B per epoch and
    Envoy retries the rest on the functions."""
    w = tiny()
    cand = _cand(w, [PoolKind.IAAS])
    counts = [25] * 3 + [40] * 3
    envoy = replay(w, cand, counts, PolicyName.LIBRA, routing=Routing.ENVOY)
    # t3: EWMA 2.5 -> share min(1, 2 / 2.5) = 0.8: 32 offered, 20 admitted (2 x B), 20 spill.
    assert (envoy.series.pool[3], envoy.series.faas[3]) == (20, 20)


def test_each_online_policy_replays_a_scaler_of_the_registry() -> None:
    assert set(SCALED_BY) == set(PolicyName) - {PolicyName.BOUND, PolicyName.LIMIT}
    for scaler in ScalingPolicy:
        assert SCALED_BY[online_policy(scaler)] is scaler


@pytest.mark.parametrize("policy", [PolicyName.SERFLOW, PolicyName.EXPECTED_COST])
def test_the_replay_sizes_the_pool_with_the_shared_step(policy: PolicyName) -> None:
    w = tiny()
    cand = _cand(w, [PoolKind.IAAS])
    counts = [25, 25, 5, 5, 45, 45, 45, 0, 0, 30]
    state, sizes = ScalerState(), []
    cold = instance_cold_epochs(w, cand)
    for n in counts:
        ctx = ScalingContext(n / 10, state, cand.economics, w.scaling, cold)
        _, state = step(SCALERS[SCALED_BY[policy]], ctx)
        sizes.append(state.desired)
    # A size decided after epoch t is alive from t + 1.
    assert replay(w, cand, counts, policy).series.alive == [0, *sizes[:-1]]
