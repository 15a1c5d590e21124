"""The expected-cost scaler, stepped tick by tick with exact numbers."""

from __future__ import annotations

import pytest

from serflow.policy.configurator import PoolKind, best_at, configure
from serflow.policy.expected_cost import HISTORY_WINDOWS, choose, saving, step, step_with
from serflow.policy.scaler import ScalerState
from serflow.policy.scaler import step as paper_step
from serflow.spec import ScalingPolicy
from tests.policy.helpers import tiny

# tiny, IaaS: mu 1 req/s, p $0.001/s, c_F = 0.001 x (0.2 + 0.5 x 0.3) + 0.01/10 = $0.00135,
# c_add 0 (T-CIP 0.74 req/s); S = 2 epochs, so the history is 8 epochs and an instance's
# expected life 8 epochs: with a 2-epoch cold start the bar to add is p x 8/6 = $0.001333/s.
W = tiny()
ECON = best_at(configure(W, 2.5, [PoolKind.IAAS]), 0.5).economics  # type: ignore[union-attr]
COLD = 2


def test_the_economics_are_the_ones_written_above() -> None:
    assert (ECON.mu, ECON.instance_price, ECON.add_per_request) == (1.0, 0.001, 0.0)
    assert ECON.faas_per_request == pytest.approx(0.00135)
    assert HISTORY_WINDOWS * W.scaling.interval_epochs == 8


def test_saving_is_the_expected_spill_the_next_instance_takes() -> None:
    rates = [0.5, 1.5, 2.5, 3.5]
    # the 1st takes 0.5, 1, 1, 1; the 2nd 0, 0.5, 1, 1; the 3rd 0, 0, 0.5, 1; the 4th 0, 0, 0, 0.5
    assert saving(rates, 0, ECON) == pytest.approx(0.00135 * 3.5 / 4)
    assert saving(rates, 1, ECON) == pytest.approx(0.00135 * 2.5 / 4)
    assert saving(rates, 2, ECON) == pytest.approx(0.00135 * 1.5 / 4)
    assert saving(rates, 3, ECON) == pytest.approx(0.00135 * 0.5 / 4)
    assert saving([], 0, ECON) == 0.0


def test_a_steady_rate_gives_the_t_cip_rule() -> None:
    # 2.5 req/s: two full instances save $0.00135/s each, the third 0.5 x 0.00135 < p.
    assert choose([2.5] * 8, 0, ECON, W.scaling, COLD) == 2
    # 2.8 req/s: the third takes 0.8 req/s (> T-CIP 0.74) and saves $0.00108: enough to
    # keep it (>= p), not to add it through a cold start ($0.001333).
    assert choose([2.8] * 8, 2, ECON, W.scaling, COLD) == 2
    assert choose([2.8] * 8, 3, ECON, W.scaling, COLD) == 3
    assert choose([2.8] * 8, 5, ECON, W.scaling, COLD) == 3


def test_the_band_between_keeping_and_adding_is_the_hysteresis() -> None:
    rates = [0.8] * 8  # saving(0) = $0.00108: worth keeping (>= p), not adding (< $0.001333)
    assert [choose(rates, n, ECON, W.scaling, COLD) for n in range(4)] == [0, 1, 1, 1]
    # Without a cold start the two bars meet: the plain newsvendor size, from anywhere.
    assert [choose(rates, n, ECON, W.scaling, 0) for n in range(4)] == [1, 1, 1, 1]


def test_a_cold_start_longer_than_the_expected_life_never_adds() -> None:
    assert choose([5.0] * 8, 0, ECON, W.scaling, 8) == 0
    assert choose([5.0] * 8, 3, ECON, W.scaling, 8) == 3


def test_min_and_max_instances_clamp() -> None:
    lo = tiny(scaling__minInstances=1).scaling
    hi = tiny(scaling__maxInstances=1).scaling
    assert choose([0.0] * 8, 0, ECON, lo, COLD) == 1
    assert choose([5.0] * 8, 0, ECON, hi, COLD) == 1


def test_stepped_tick_by_tick() -> None:
    s = ScalerState()
    seen = []
    for rate in [2.5, 2.5, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]:
        d, s = step(s, rate, ECON, W.scaling, COLD)
        seen.append((d.rescaled, d.desired, len(s.recent)))
    # Ticks at epochs 0, 2, 4, ...: at 0 one sample of 2.5 -> 2 instances; at 2 the
    # rates are [2.5, 2.5, 2.5]. At 4, [2.5, 2.5, 2.5, 0, 0]: each instance takes
    # 1 req/s 3 epochs in 5 and saves 0.00135 x 3/5 = $0.00081 < p, so both go.
    assert seen == [
        (True, 2, 1), (False, 2, 2), (True, 2, 3), (False, 2, 4),
        (True, 0, 5), (False, 0, 6), (True, 0, 7), (False, 0, 8),
        (True, 0, 8), (False, 0, 8), (True, 0, 8), (False, 0, 8),
    ]  # fmt: skip
    assert s.epoch == 12
    assert s.recent == (0.0,) * 8  # bounded: the oldest fell out
    # The monitor is stepped too (a = b = 0.5 in tiny): its EWMA feeds the route.
    assert s.estimate.samples == 12 and s.estimate.ewma == pytest.approx(2.5 * 0.5**9)


def test_step_with_follows_scaling_policy() -> None:
    paper = tiny(scaling__policy="paper").scaling
    assert W.scaling.policy is ScalingPolicy.EXPECTED_COST  # the default
    s = ScalerState()
    assert step_with(paper.policy, s, 2.8, ECON, paper, COLD) == paper_step(s, 2.8, ECON, paper)
    assert step_with(W.scaling.policy, s, 2.8, ECON, W.scaling, COLD) == step(
        s, 2.8, ECON, W.scaling, COLD
    )
