"""The SLO-aware, tau-aware configurator."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serflow.policy.configurator import Granularity, PoolKind, best_at, configure
from serflow.spec import parse_workload
from tests.policy.helpers import paper, tiny, tiny_doc


def _find(plan, pool, tau=0.5, cut=0, granularity=None):  # type: ignore[no-untyped-def]
    for c in plan.candidates:
        s = c.setup
        if (s.pool, c.tau, s.cut, s.granularity) == (pool, tau, cut, granularity):
            return c
    raise AssertionError(f"no candidate {pool} {tau} {cut} {granularity}")


def test_tiny_candidates_by_hand() -> None:
    plan = configure(tiny(), 2.5)
    # 2 taus x (faas + iaas + 1 cut x 2 granularities)
    assert len(plan.candidates) == 8
    faas = _find(plan, PoolKind.FAAS)
    assert faas.worst_batch_s == pytest.approx(10 * 0.5)
    assert faas.cost_per_s == pytest.approx(2.5 * 0.00135)
    iaas = _find(plan, PoolKind.IAAS)
    assert iaas.worst_batch_s == pytest.approx(8.0)
    # TCIP = 0.001 / 0.00135 = 0.7407 < r = 0.5? q = 2, r = 0.5 <= TCIP: 2 instances + FaaS(0.5)
    assert iaas.economics.tcip == pytest.approx(0.001 / 0.00135)
    assert iaas.cost_per_s == pytest.approx(2 * 0.001 + 0.5 * 0.00135)
    fused = _find(plan, PoolKind.HYBRID, cut=1, granularity=Granularity.FUSED)
    # head 10*0.4 + transfer 10*0.1 + tail 10*0.3 = 8 s
    assert fused.worst_batch_s == pytest.approx(8.0)
    assert fused.economics.add_per_request == pytest.approx(0.0012)
    # TCIP = 0.001 / (0.00135 - 0.0012) = 6.67 > mu: never one more; q = 2, r = 0.5 on FaaS
    assert fused.cost_per_s == pytest.approx(2 * 0.001 + 2 * 0.0012 + 0.5 * 0.00135)
    assert plan.chosen is not None
    assert plan.chosen.cost_per_s == min(c.cost_per_s for c in plan.candidates)


@pytest.mark.parametrize(
    ("slo", "feasible_pools"),
    [
        (10.0, {PoolKind.FAAS, PoolKind.IAAS, PoolKind.HYBRID}),
        (7.0, {PoolKind.FAAS}),  # vm 8 s and hybrid 8 s no longer fit
        (4.0, set()),  # nothing fits: FaaS takes 5 s
    ],
)
def test_slo_filter(slo: float, feasible_pools: set[PoolKind]) -> None:
    w = tiny(slo__latencySeconds=slo, scaling__epochSeconds=10)
    plan = configure(w, 2.5)
    assert {c.setup.pool for c in plan.candidates if c.feasible} == feasible_pools
    for c in plan.candidates:
        if not c.feasible:
            assert "SLO" in c.reason
    if not feasible_pools:
        assert plan.chosen is None
        assert plan.reason.startswith("no feasible setup")


def test_accuracy_target_excludes_taus_with_a_reason() -> None:
    w = tiny(slo__targetAccuracy=0.93)
    plan = configure(w, 2.5)
    assert plan.chosen is not None and plan.chosen.tau == 0.9
    low = [c for c in plan.candidates if c.tau == 0.5]
    assert low and all(not c.feasible and c.reason.startswith("accuracy 0.900") for c in low)


def test_cold_start_in_feasibility_is_stricter() -> None:
    base = configure(tiny(slo__latencySeconds=8.0, scaling__epochSeconds=10), 2.5)
    strict = configure(
        tiny(slo__latencySeconds=8.0, slo__coldStartInFeasibility=True, scaling__epochSeconds=10),
        2.5,
    )
    ok = {(c.tau, c.setup) for c in base.candidates if c.feasible}
    ok_strict = {(c.tau, c.setup) for c in strict.candidates if c.feasible}
    assert ok_strict < ok  # hybrid at 8 s + 1 s cold start no longer fits


def test_missing_cut_profile_makes_hybrid_infeasible() -> None:
    doc = tiny_doc()
    doc["profile"]["cuts"] = []
    plan = configure(parse_workload(doc), 2.5)
    hybrids = [c for c in plan.candidates if c.setup.pool is PoolKind.HYBRID]
    assert hybrids and all("not profiled" in c.reason for c in hybrids)


def test_restricting_pools_gives_libra() -> None:
    plan = configure(tiny(), 2.5, [PoolKind.IAAS])
    assert plan.chosen is not None and plan.chosen.setup.pool is PoolKind.IAAS


def test_paper_preset_feasibility() -> None:
    plan = configure(paper(), 34.87)
    by_instance = {
        c.setup.instance: c.feasible for c in plan.candidates if c.setup.pool is PoolKind.IAAS
    }
    assert by_instance == {"c6i.xlarge": True, "c6i.large": False}  # 5.5 s vs 10.3 s
    faas = [c for c in plan.candidates if c.setup.pool is PoolKind.FAAS]
    assert all(c.feasible and c.worst_batch_s == pytest.approx(4.3) for c in faas)
    # c6i.large can host a head: early cuts fit (head + transfer + tail <= 6 s) ...
    large = {
        c.setup.cut: c.feasible
        for c in plan.candidates
        if c.setup.instance == "c6i.large"
        and c.setup.granularity is Granularity.FUSED
        and c.tau == 0.5
    }
    assert large[1] and large[2] and not large[5]
    assert plan.chosen is not None


def test_scip_lies_between_profiled_taus() -> None:
    plan = configure(paper(), 34.87)
    assert plan.crossings
    for x in plan.crossings:
        assert 0.5 <= x.tau <= 0.85


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.0, 200.0),
    slo=st.floats(1.0, 20.0),
    vm_price=st.floats(0.01, 5.0),
    gb_price=st.floats(1e-6, 1e-2),
)
def test_never_chooses_an_infeasible_plan(
    rate: float, slo: float, vm_price: float, gb_price: float
) -> None:
    w = tiny(
        slo__latencySeconds=slo,
        prices__instances=[{"name": "vm", "perHour": vm_price * 3600}],
        prices__functions__perGBSecond=gb_price,
    )
    plan = configure(w, rate)
    feasible = [c for c in plan.candidates if c.feasible]
    if plan.chosen is None:
        assert not feasible
        return
    assert plan.chosen.feasible
    assert plan.chosen.worst_batch_s <= slo + 1e-9
    assert plan.chosen.cost_per_s <= min(c.cost_per_s for c in feasible) + 1e-15
    assert all(math.isinf(c.cost_per_s) for c in plan.candidates if not c.feasible)


def test_best_at_picks_per_tau() -> None:
    plan = configure(tiny(), 2.5)
    for tau in (0.5, 0.9):
        c = best_at(plan, tau)
        assert c is not None and c.tau == tau


def test_packing_batches_raises_capacity_and_lowers_cost() -> None:
    # vm: 8 s per batch of 10 on a 10 s epoch -> still one batch; make it fast instead.
    w = tiny(slo__latencySeconds=10.0)
    fast = tiny(slo__latencySeconds=10.0, scaling__packBatches=True)
    doc_rate = 9.0
    base = configure(w, doc_rate, [PoolKind.IAAS]).chosen
    packed = configure(fast, doc_rate, [PoolKind.IAAS]).chosen
    assert base is not None and packed is not None
    # 8 s of 10: one batch either way; the SLO leaves no room for a second.
    assert packed.economics.batches_per_instance == 1
    assert packed.economics.mu == base.economics.mu == 1.0
    quick = tiny_doc(scaling__packBatches=True)
    quick["profile"]["configs"][0]["secondsPerRequest"] = [0.1, 0.1]  # 2 s per batch
    c = configure(parse_workload(quick), doc_rate, [PoolKind.IAAS]).chosen
    assert c is not None
    assert c.economics.batches_per_instance == 5  # 5 x 2 s fit the 10 s epoch and SLO
    assert c.economics.mu == pytest.approx(5.0)
    assert c.cost_per_s < base.cost_per_s


def test_the_objectives_pools_restrict_every_plan() -> None:
    doc = tiny_doc()
    free = configure(parse_workload(doc), 2.5)
    assert free.chosen is not None and free.chosen.setup.pool is not PoolKind.HYBRID
    doc["pools"] = ["hybrid"]
    plan = configure(parse_workload(doc), 2.5)
    assert plan.chosen is not None and plan.chosen.setup.pool is PoolKind.HYBRID
    assert {c.setup.pool for c in plan.candidates} == {PoolKind.HYBRID}
    # An explicit restriction (the CLI's LIBRA baseline) meets the objective's: nothing left.
    assert configure(parse_workload(doc), 2.5, [PoolKind.IAAS]).chosen is None
