"""The expected-cost scaler, stepped tick by tick with exact numbers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serflow.policy import scaler
from serflow.policy.configurator import PoolKind, best_at, configure
from serflow.policy.cost import PoolEconomics
from serflow.policy.scaler import ScalerState, ScalingContext, ScalingDecision, bounded
from serflow.policy.scalers import SCALERS, expected_cost
from serflow.policy.scalers.expected_cost import (
    DRIFT_WINDOWS,
    HISTORY_WINDOWS,
    choose,
    distribution,
    drift,
    lasting_size,
    savings,
    weights,
)
from serflow.spec import ScalingPolicy, ScalingSpec
from tests.policy.helpers import tiny

# tiny, IaaS: mu 1 req/s, p $0.001/s, c_F = 0.001 x (0.2 + 0.5 x 0.3) + 0.01/10 = $0.00135,
# c_add 0 (T-CIP 0.74 req/s); S = 2 epochs, so the history is 8 epochs and an instance's
# expected life 8 epochs: with a 2-epoch cold start the bar to add is p x 8/6 = $0.001333/s.
# The drift is fitted over the last 16 epochs, which the state keeps.
W = tiny()
ECON = best_at(configure(W, 2.5, [PoolKind.IAAS]), 0.5).economics  # type: ignore[union-attr]
COLD = 2


def step(
    state: ScalerState, rate: float, econ: PoolEconomics, scaling: ScalingSpec, cold: int
) -> tuple[ScalingDecision, ScalerState]:
    """One epoch of the expected-cost scaler through the shared step."""
    ctx = ScalingContext(rate, state, econ, scaling, cold)
    return scaler.step(SCALERS[ScalingPolicy.EXPECTED_COST], ctx)


def test_the_economics_are_the_ones_written_above() -> None:
    assert (ECON.mu, ECON.instance_price, ECON.add_per_request) == (1.0, 0.001, 0.0)
    assert ECON.faas_per_request == pytest.approx(0.00135)
    assert HISTORY_WINDOWS * W.scaling.interval_epochs == 8
    assert DRIFT_WINDOWS * W.scaling.interval_epochs == 16


def test_saving_is_the_expected_spill_the_next_instance_takes() -> None:
    rates = [0.5, 1.5, 2.5, 3.5]
    even = [1.0] * 4
    # the 1st takes 0.5, 1, 1, 1; the 2nd 0, 0.5, 1, 1; the 3rd 0, 0, 0.5, 1; the 4th 0, 0, 0, 0.5
    assert savings(rates, even, ECON, 5) == pytest.approx(
        [0.00135 * 3.5 / 4, 0.00135 * 2.5 / 4, 0.00135 * 1.5 / 4, 0.00135 * 0.5 / 4, 0.0]
    )
    assert savings(rates, even, ECON, 2) == pytest.approx([0.00135 * 3.5 / 4, 0.00135 * 2.5 / 4])
    assert savings([], [], ECON, 2) == [0.0, 0.0]
    # A rate on a multiple of mu fills its instances and leaves the next nothing.
    assert savings([2.0], [1.0], ECON, 3) == pytest.approx([0.00135, 0.00135, 0.0])
    # Weighted by age, the newest counts most: the 1st instance's 0.5 req/s of the oldest
    # rate weighs 2^-1.5 of the newest's 1.
    w = weights(4, W.scaling)
    assert savings(rates, w, ECON, 1)[0] == pytest.approx(
        0.00135 * (0.5 * 2**-1.5 + 2**-1 + 2**-0.5 + 1) / (2**-1.5 + 2**-1 + 2**-0.5 + 1)
    )


@given(
    st.lists(st.tuples(st.floats(0, 10), st.floats(0.01, 1)), min_size=1, max_size=12),
    st.integers(0, 12),
)
def test_savings_in_one_pass_are_the_sum_over_the_rates(pairs: list[tuple[float, float]], cap: int) -> None:
    rates, weight = [r for r, _ in pairs], [w for _, w in pairs]
    direct = [
        0.00135 * sum(w * min(max(r - n, 0.0), 1.0) for r, w in pairs) / sum(weight)
        for n in range(cap)
    ]
    assert savings(rates, weight, ECON, cap) == pytest.approx(direct, abs=1e-12)


def test_a_weight_halves_with_every_scaling_window_of_age() -> None:
    # S = 2 epochs: 2^-1/2 an epoch; the rate two windows old weighs a quarter.
    assert weights(5, W.scaling) == pytest.approx((0.25, 2**-1.5, 0.5, 2**-0.5, 1.0))
    assert weights(0, W.scaling) == ()


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
    # The bounds apply once, outside the scaler (``bounded``, in the shared step).
    lo = tiny(scaling__minInstances=1).scaling
    hi = tiny(scaling__maxInstances=1).scaling
    assert bounded(choose([0.0] * 8, 0, ECON, lo, COLD), ECON, lo) == 1
    assert bounded(choose([5.0] * 8, 0, ECON, hi, COLD), ECON, hi) == 1


def test_drift_is_the_least_squares_slope() -> None:
    assert drift([]) == 0.0 and drift([3.0]) == 0.0
    assert drift([1.0, 3.0]) == pytest.approx(2.0)
    assert drift([0.0, 0.2, 0.4, 0.6]) == pytest.approx(0.2)
    # A level shift is a slope too, a gentler one over a longer span: x = 0..4, mean 2,
    # sum (x - 2) r = -7.5, sum (x - 2)^2 = 10.
    assert drift([2.5, 2.5, 2.5, 0.0, 0.0]) == pytest.approx(-0.75)
    assert drift([5.0] * 16) == 0.0


def test_the_distribution_is_the_history_aged_to_the_present() -> None:
    # A burst in the middle of a flat span tilts nothing: the last 8 rates as they are.
    burst = [1.0] * 6 + [3.0] * 4 + [1.0] * 6
    assert drift(burst) == pytest.approx(0.0)
    assert distribution(burst, W.scaling) == pytest.approx((3.0, 3.0) + (1.0,) * 6)
    # A ramp of 0.1 req/s per epoch: every rate aged to the current one, 1.5.
    ramp = [0.1 * i for i in range(16)]
    assert distribution(ramp, W.scaling) == pytest.approx((1.5,) * 8)
    # Falling: a rate seen k epochs ago counts k x 0.75 lower, never below 0.
    assert distribution([2.5, 2.5, 2.5, 0.0, 0.0], W.scaling) == pytest.approx(
        (0.0, 0.25, 1.0, 0.0, 0.0)
    )


def test_a_trend_is_sized_for_where_the_rate_is_not_where_it_was() -> None:
    # 16 epochs rising 0.08 req/s each, now at 1.2. The last 8 rates as they were
    # (0.64 .. 1.2), weighted by age, would have the 1st instance take 0.954 req/s on
    # average: 0.00135 x 0.954 = $0.00129 < $0.001333, not worth adding.
    ramp = [0.08 * i for i in range(16)]
    last = ramp[-8:]
    assert savings(last, weights(8, W.scaling), ECON, 2)[0] == pytest.approx(0.00135 * 0.95429, rel=1e-4)
    assert savings(last, weights(8, W.scaling), ECON, 2)[0] < ECON.instance_price * 8 / 6
    # Aged to the present they are all 1.2: the 1st saves $0.00135 (>= $0.001333, added),
    # the 2nd 0.2 x 0.00135 (< p).
    assert choose(ramp, 0, ECON, W.scaling, COLD) == 1
    s = ScalerState()
    sizes = []
    for rate in ramp:
        d, s = step(s, rate, ECON, W.scaling, COLD)
        sizes.append(d.desired)
    # Ticks at 0, 2, ..., 14: at tick t the drift, 0.08, ages every rate to 0.08 t, so the
    # 1st instance would save 0.00135 x min(0.08 t, 1), which first reaches the bar to
    # add ($0.001333, at 0.988 req/s) at t = 14.
    assert sizes == [0] * 14 + [1] * 2
    # Between ticks: the weighted mean of the last 8 rates as they were.
    w = weights(8, W.scaling)
    assert d.target_rate == pytest.approx(sum(r * x for r, x in zip(last, w, strict=True)) / sum(w))


def test_a_level_that_has_lasted_t_epochs_is_expected_to_last_t_more() -> None:
    # After a step from 0 to 2 req/s, each of two instances saves $0.00135/s in every epoch
    # of it. Over T epochs seen and T more, one repays p (T + 2 cold) when
    # 0.00135 T >= 0.001 (T + 2), T >= 5.7: not after 5 epochs, both after 6.
    before = [0.0] * 8
    assert lasting_size(before + [2.0] * 5, 0, ECON, 5, COLD) == 0
    assert lasting_size(before + [2.0] * 6, 0, ECON, 5, COLD) == 2
    assert lasting_size(before + [2.0] * 6, 0, ECON, 1, COLD) == 1  # never above the cap
    # A pool is kept while the latest rate pays for each instance: at 1.5 req/s the 2nd
    # takes 0.5 req/s and saves 0.5 x 0.00135 < p.
    assert lasting_size([2.0] * 3 + [1.5], 2, ECON, 5, COLD) == 1
    assert lasting_size([2.0] * 4, 2, ECON, 5, COLD) == 2
    assert lasting_size([], 0, ECON, 5, COLD) == 0


def test_a_step_is_followed_a_window_sooner_than_by_the_distribution_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def sizes() -> list[int]:
        s, out = ScalerState(), []
        for rate in [0.0] * 8 + [2.0] * 12:
            d, s = step(s, rate, ECON, W.scaling, COLD)
            out.append(d.desired)
        return out

    # The step is at epoch 8. At the tick of epoch 12 the distribution, aged by the drift,
    # adds one instance; at 14 the level has lasted 7 epochs (7 x 0.00135 >= 0.001 x 9)
    # and the second is added. The distribution alone adds it a window later.
    assert sizes() == [0] * 12 + [1, 1] + [2] * 6
    monkeypatch.setattr(expected_cost, "lasting_size", lambda *_: 0)
    assert sizes() == [0] * 12 + [1] * 4 + [2] * 4


def test_stepped_tick_by_tick() -> None:
    s = ScalerState()
    seen = []
    for rate in [2.5, 2.5, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] + [0.0] * 8:
        d, s = step(s, rate, ECON, W.scaling, COLD)
        seen.append((d.rescaled, d.desired, len(s.recent)))
    # Ticks at epochs 0, 2, 4, ...: at 0 one sample of 2.5 -> 2 instances; at 2 the
    # rates are [2.5, 2.5, 2.5], no drift. At 4, [2.5, 2.5, 2.5, 0, 0] fall 0.75 req/s an
    # epoch and, aged, are [0, 0.25, 1, 0, 0]: an instance saves 0.00135 x 1.25/5 < p,
    # so both go.
    assert seen == [
        (True, 2, 1), (False, 2, 2), (True, 2, 3), (False, 2, 4),
        (True, 0, 5), (False, 0, 6), (True, 0, 7), (False, 0, 8),
        (True, 0, 9), (False, 0, 10), (True, 0, 11), (False, 0, 12),
        (True, 0, 13), (False, 0, 14), (True, 0, 15), (False, 0, 16),
        (True, 0, 16), (False, 0, 16), (True, 0, 16), (False, 0, 16),
    ]  # fmt: skip
    assert s.epoch == 20
    assert s.recent == (0.0,) * 16  # bounded by the drift's span: the oldest fell out
    # The monitor is stepped too (a = b = 0.5 in tiny): its EWMA feeds the route.
    assert s.estimate.samples == 20 and s.estimate.ewma == pytest.approx(2.5 * 0.5**17)
