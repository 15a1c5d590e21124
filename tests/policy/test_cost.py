"""Cost rates and T-CIP (DESIGN.md section 2), against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serflow.policy.cost import (
    PoolEconomics,
    batches_per_epoch,
    chained_tail_per_request,
    faas_per_request,
    fused_tail_per_request,
    tcip,
)

# tiny workload numbers: p_f = $0.001/s, p_inv = $0.01, B = 10, s = (1, 0.5), x_1 = 0.1
U_F, S, X, P_F, P_INV, B = (0.2, 0.3), (1.0, 0.5), (0.1,), 0.001, 0.01, 10


def test_faas_per_request_by_hand() -> None:
    # 0.001 * (1*0.2 + 0.5*0.3) + 0.01/10 = 0.00035 + 0.001
    assert faas_per_request(U_F, S, P_F, P_INV, B) == pytest.approx(0.00135, abs=1e-15)


def test_faas_per_request_bills_the_servers_overhead_per_lone_image() -> None:
    # 0.001 * (0.35 + 0.05) + 0.001: the overhead is billed once per request, not per partition
    assert faas_per_request(U_F, S, P_F, P_INV, B, 0.05) == pytest.approx(0.0014, abs=1e-15)


def test_fused_tail_by_hand() -> None:
    # 0.001 * (0.5*0.3 + 0.5*0.1) + 0.001 = 0.0002 + 0.001
    assert fused_tail_per_request(U_F, S, X, 1, P_F, P_INV, B) == pytest.approx(0.0012, abs=1e-15)


def test_chained_tail_by_hand_three_partitions() -> None:
    u, s, x = (0.1, 0.2, 0.3), (1.0, 0.6, 0.2), (0.05, 0.02)
    # cut 1: p_f*(0.6*(0.2+0.05) + 0.2*(0.3+0.02)) + (0.01/10)*2
    want = 0.001 * (0.6 * 0.25 + 0.2 * 0.32) + 0.002
    assert chained_tail_per_request(u, s, x, 1, P_F, P_INV, B) == pytest.approx(want, abs=1e-15)
    # With one stage left, chained and fused are the same thing.
    assert chained_tail_per_request(u, s, x, 2, P_F, P_INV, B) == pytest.approx(
        fused_tail_per_request(u, s, x, 2, P_F, P_INV, B), abs=1e-15
    )


@pytest.mark.parametrize(
    ("p", "c_f", "c_add", "want"),
    [
        (1.0, 0.5, 0.0, 2.0),
        (1.0, 0.5, 0.25, 4.0),
        (1.0, 0.5, 0.5, math.inf),  # the pool never pays
        (1.0, 0.5, 0.7, math.inf),
        (0.0, 0.5, 0.0, 0.0),  # a free instance always pays
    ],
)
def test_tcip_table(p: float, c_f: float, c_add: float, want: float) -> None:
    assert tcip(p, c_f, c_add) == want


IAAS = PoolEconomics(
    mu=10.0, instance_price=1.0, faas_per_request=0.25, add_per_request=0.0, has_pool=True
)
# TCIP = 1 / 0.25 = 4 req/s


@pytest.mark.parametrize(
    ("rate", "instances", "cost"),
    [
        (0.0, 0, 0.0),
        (3.0, 0, 0.75),  # r = 3 <= 4: FaaS
        (4.0, 0, 1.0),  # at T-CIP exactly: FaaS (the rule is r > TCIP)
        (5.0, 1, 1.0),  # r = 5 > 4: one instance
        (10.0, 1, 1.0),  # exact multiple of mu
        (30.0, 3, 3.0),
        (33.0, 3, 3.75),  # q = 3, r = 3
        (36.0, 4, 4.0),
    ],
)
def test_iaas_cost_rate_table(rate: float, instances: int, cost: float) -> None:
    assert IAAS.instances_for(rate) == instances
    assert IAAS.cost_rate(rate) == pytest.approx(cost, abs=1e-12)


def test_exact_multiple_of_mu_with_float_noise() -> None:
    e = PoolEconomics(100 / 6, 1.0, 0.25, 0.0, True)
    # 3 * mu computed in floating point must give q = 3 and no remainder.
    assert e.instances_for(3 * (100 / 6)) == 3
    assert e.cost_rate(3 * (100 / 6)) == pytest.approx(3.0)


def test_hybrid_cost_counts_tail_on_pooled_requests_only() -> None:
    e = PoolEconomics(10.0, 1.0, 0.25, 0.05, True)  # TCIP = 1/0.2 = 5
    # rate 23: q = 2, r = 3 <= 5: 2 instances, 20 pooled with tail, 3 on FaaS
    assert e.cost_rate(23.0) == pytest.approx(2 * 1.0 + 20 * 0.05 + 3 * 0.25)
    # rate 26: r = 6 > 5: 3 instances, all 26 pooled
    assert e.cost_rate(26.0) == pytest.approx(3 * 1.0 + 26 * 0.05)


def test_faas_pool_never_runs_an_instance() -> None:
    e = PoolEconomics(10.0, 0.0, 0.25, 0.0, has_pool=False)
    assert e.tcip == math.inf
    assert e.instances_for(1e6) == 0
    assert e.cost_rate(8.0) == pytest.approx(2.0)


prices = st.floats(min_value=1e-6, max_value=10.0)


@given(
    p=prices, c_f=prices, frac=st.floats(min_value=0.0, max_value=0.95), mu=st.floats(1.0, 100.0)
)
def test_tcip_is_the_break_even_point(p: float, c_f: float, frac: float, mu: float) -> None:
    """At r = TCIP one more instance costs exactly what FaaS costs for the residual."""
    c_add = c_f * frac
    t = tcip(p, c_f, c_add)
    assert p + t * c_add == pytest.approx(t * c_f, rel=1e-9)
    # ... and on either side the cheaper option is the one the rule picks.
    for r in (t * 0.9, t * 1.1):
        instance_cheaper = p + r * c_add < r * c_f
        assert instance_cheaper == (r > t)


@given(
    rate=st.floats(0.0, 500.0),
    p=prices,
    c_f=prices,
    frac=st.floats(0.0, 0.99),
)
def test_cost_rate_is_the_min_over_one_more_or_not(
    rate: float, p: float, c_f: float, frac: float
) -> None:
    """C(lam) with the T-CIP rule equals the cheaper of q and q+1 instances."""
    e = PoolEconomics(16.0, p, c_f, c_f * frac, True)
    q = math.floor(rate / e.mu + 1e-12)

    def cost(n: int) -> float:
        pooled = min(rate, n * e.mu)
        return n * p + pooled * e.add_per_request + (rate - pooled) * c_f

    assert e.cost_rate(rate) == pytest.approx(min(cost(q), cost(q + 1)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("busy", "worst", "epoch", "slo", "n"),
    [
        (5.5, 5.5, 6.0, 6.0, 1),  # the paper's c6i.xlarge: one batch per epoch
        (1.0, 1.0, 6.0, 6.0, 6),
        (1.0, 3.0, 6.0, 6.0, 4),  # the tail after the head takes 2 s: 4*1 + 2 <= 6
        (1.0, 1.0, 3.0, 6.0, 3),  # the instance must be free again within the epoch
        (7.0, 7.0, 6.0, 6.0, 1),  # never below one (feasibility is checked elsewhere)
        (0.0, 2.0, 6.0, 6.0, 1),
        (0.1, 0.1, 6.0, 6.0, 60),  # exact multiples are not lost to rounding
    ],
)
def test_batches_per_epoch(busy: float, worst: float, epoch: float, slo: float, n: int) -> None:
    assert batches_per_epoch(busy, worst, epoch, slo) == n


def test_the_steady_cost_counts_instances_within_the_spec_bounds() -> None:
    # 100 req/s, mu 10: 10 instances unbounded; at most 2, the other 80 req/s spill at
    # $0.25 each; at least 3 at no traffic.
    capped = PoolEconomics(10.0, 1.0, 0.25, 0.0, True, max_instances=2)
    assert PoolEconomics(10.0, 1.0, 0.25, 0.0, True).instances_for(100.0) == 10
    assert capped.instances_for(100.0) == 2
    assert capped.cost_rate(100.0) == pytest.approx(2 * 1.0 + 80 * 0.25)
    floor = PoolEconomics(10.0, 1.0, 0.25, 0.0, True, min_instances=3)
    assert floor.instances_for(0.0) == 3 and floor.cost_rate(0.0) == pytest.approx(3.0)
    assert PoolEconomics(10.0, 0.0, 0.25, 0.0, has_pool=False, min_instances=3).instances_for(5.0) == 0
