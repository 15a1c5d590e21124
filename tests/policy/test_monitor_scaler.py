"""Traffic monitor and scaling manager, stepped tick by tick against hand-computed numbers."""

from __future__ import annotations

import pytest

from serflow.policy import scaler
from serflow.policy.cost import PoolEconomics
from serflow.policy.monitor import TrafficEstimate, observe
from serflow.policy.scaler import ScalerState, ScalingContext, desired_instances
from serflow.policy.scalers import SCALERS
from serflow.spec import ScalingPolicy, ScalingSpec


def test_monitor_sequence_by_hand() -> None:
    a = b = 0.5
    est = TrafficEstimate()
    seen = []
    for rate in (10.0, 20.0, 20.0, 0.0):
        est = observe(est, rate, a, b)
        seen.append((est.ewma, est.dev))
    # t0: starts from the first sample; t1: ewma 15, dev .5*|20-10| = 5;
    # t2: ewma 17.5, dev .5*|20-15| + .5*5 = 5; t3: ewma 8.75, dev .5*17.5 + .5*5 = 11.25
    assert seen == [(10.0, 0.0), (15.0, 5.0), (17.5, 5.0), (8.75, 11.25)]
    assert est.samples == 4
    assert est.target(1.0) == pytest.approx(20.0)
    assert est.target(0.0) == pytest.approx(8.75)


ECON = PoolEconomics(
    mu=10.0, instance_price=1.0, faas_per_request=0.25, add_per_request=0.0, has_pool=True
)
# TCIP = 4 req/s


@pytest.mark.parametrize(
    ("target", "lo", "hi", "want"),
    [
        (0.0, 0, 10, 0),
        (14.0, 0, 10, 1),  # r = 4 = TCIP: no extra instance
        (14.5, 0, 10, 2),
        (95.0, 0, 5, 5),  # clamped to max
        (0.0, 2, 5, 2),  # clamped to min
    ],
)
def test_desired_instances_table(target: float, lo: int, hi: int, want: int) -> None:
    spec = ScalingSpec(min_instances=lo, max_instances=hi)
    assert desired_instances(target, ECON, spec) == want


def test_faas_pool_ignores_min_instances() -> None:
    faas = PoolEconomics(10.0, 0.0, 0.25, 0.0, has_pool=False)
    assert desired_instances(100.0, faas, ScalingSpec(min_instances=3)) == 0


def test_step_rescales_every_interval_with_a_fake_clock() -> None:
    spec = ScalingSpec(interval_epochs=3, ewma_a=0.5, ewma_b=0.5, k=1.0)
    state = ScalerState()
    out = []
    for rate in (10.0, 30.0, 30.0, 30.0, 30.0, 30.0, 0.0):
        ctx = ScalingContext(rate, state, ECON, spec, cold_epochs=0)
        d, state = scaler.step(SCALERS[ScalingPolicy.PAPER], ctx)
        out.append((d.rescaled, d.desired, round(d.target_rate, 6)))
    # (ewma, dev) -> target: (10, 0) 10 | (20, 10) 30 | (25, 10) 35 | (27.5, 7.5) 35 |
    # (28.75, 5) 33.75 | (29.375, 3.125) 32.5 | (14.6875, 16.25) 30.9375
    assert out == [
        (True, 1, 10.0),  # q 1, r 0
        (False, 1, 30.0),
        (False, 1, 35.0),
        (True, 4, 35.0),  # q 3, r 5 > TCIP 4
        (False, 4, 33.75),
        (False, 4, 32.5),
        (True, 3, 30.9375),  # q 3, r 0.9375 <= 4
    ]
    assert state.epoch == 7 and state.desired == 3
