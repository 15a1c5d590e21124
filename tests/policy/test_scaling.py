"""The scaler registry and the shared step: what every scaler gets without doing it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from serflow.domain import ScalingPolicy, ScalingSpec
from serflow.policy.configurator import PoolKind, best_at, configure
from serflow.policy.cost import PoolEconomics
from serflow.policy.monitor import TrafficEstimate
from serflow.policy.scaler import (
    KEPT_WINDOWS,
    Scaler,
    ScalerState,
    ScalingContext,
    ScalingDecision,
    desired_instances,
    planned_size,
    step,
)
from serflow.policy.scalers import SCALERS
from serflow.policy.scalers.expected_cost import choose
from tests.policy.helpers import tiny

# tiny, IaaS: mu 1 req/s, T-CIP 0.74 req/s, S = 2 epochs, a = b = 0.5, k = 1.
W = tiny()
ECON = best_at(configure(W, 2.5, [PoolKind.IAAS]), 0.5).economics  # type: ignore[union-attr]
FAAS = best_at(configure(W, 2.5, [PoolKind.FAAS]), 0.5).economics  # type: ignore[union-attr]
COLD = 2
RATES = [2.5, 0.4, 3.1, 1.0, 2.2, 0.0, 4.0]
POLICIES = list(ScalingPolicy)


def run(
    policy: ScalingPolicy,
    rates: list[float | None],
    econ: PoolEconomics = ECON,
    scaling: ScalingSpec = W.scaling,
) -> list[tuple[ScalingDecision, ScalerState]]:
    state, out = ScalerState(), []
    for rate in rates:
        d, state = step(SCALERS[policy], ScalingContext(rate, state, econ, scaling, COLD))
        out.append((d, state))
    return out


def fixed(n: int) -> Scaler:
    """A scaler that always asks for ``n`` instances."""
    return Scaler(size=lambda _: n, target_rate=lambda _: 0.0)


def test_every_scaling_policy_has_a_scaler() -> None:
    assert set(SCALERS) == set(ScalingPolicy)
    assert ScalingSpec().policy is ScalingPolicy.EXPECTED_COST  # the default
    assert all(isinstance(s, Scaler) for s in SCALERS.values())
    with pytest.raises(TypeError):
        SCALERS[ScalingPolicy.PAPER] = SCALERS[ScalingPolicy.EXPECTED_COST]  # type: ignore[index]


@pytest.mark.parametrize("policy", POLICIES)
def test_a_scaler_given_no_data_keeps_its_state(policy: ScalingPolicy) -> None:
    seen = run(policy, [*RATES])
    d_before, before = seen[-1]
    ctx = ScalingContext(None, before, ECON, W.scaling, COLD)
    d, after = step(SCALERS[policy], ctx)
    assert after is before  # monitor, history, epoch count and size
    assert (d.desired, d.rescaled) == (before.desired, False)
    # The target comes from the state alone: what the last epoch with data reported.
    assert d.target_rate == d_before.target_rate
    # An epoch with no data is one that did not happen: the rest runs as without it.
    gap = run(policy, [*RATES[:3], None, *RATES[3:]])
    assert [x for i, x in enumerate(gap) if i != 3] == run(policy, RATES)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_scaler_keeps_the_rate_history(policy: ScalingPolicy) -> None:
    rates = [0.1 * i for i in range(KEPT_WINDOWS * W.scaling.interval_epochs + 5)]
    _, state = run(policy, list(rates))[-1]
    assert state.recent == pytest.approx(rates[-KEPT_WINDOWS * W.scaling.interval_epochs :])
    assert state.epoch == len(rates) and state.estimate.samples == len(rates)


def test_bounds_apply_once_outside_the_scaler() -> None:
    spec = ScalingSpec(interval_epochs=1, min_instances=2, max_instances=5)
    state = ScalerState()
    for asked, want in ((10**6, 5), (3, 3), (0, 2), (-4, 2)):
        d, state = step(fixed(asked), ScalingContext(1.0, state, ECON, spec, COLD))
        assert d.desired == state.desired == want
        ctx = ScalingContext(1.0, ScalerState(), ECON, spec, COLD)
        assert planned_size(fixed(asked), ctx) == want
    # The FaaS pool runs no instance, whatever the scaler or the bounds say.
    d, _ = step(fixed(3), ScalingContext(1.0, ScalerState(), FAAS, spec, COLD))
    assert d.desired == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_a_real_scaler_asking_past_the_bounds_gets_them(policy: ScalingPolicy) -> None:
    hi = ScalingSpec(interval_epochs=2, ewma_a=0.5, ewma_b=0.5, max_instances=2)
    lo = replace(hi, min_instances=1, max_instances=1000)
    assert run(policy, [9.0] * 8, scaling=hi)[-1][1].desired == 2  # 9 req/s wants 9
    assert run(policy, [0.0] * 8, scaling=lo)[-1][1].desired == 1  # no traffic wants 0


def test_the_paper_scaler_sizes_for_lambda_star() -> None:
    d, state = run(ScalingPolicy.PAPER, [2.0, 3.0])[-1]
    # ewma 2.5, dev 0.5: lam* 3.0, not a scaling epoch (the size of epoch 0 stays).
    assert d.target_rate == pytest.approx(3.0) and not d.rescaled
    assert state.desired == desired_instances(2.0, ECON, W.scaling) == 2


def test_a_new_plan_sizes_from_the_state_or_the_planning_rate() -> None:
    empty = ScalerState(desired=7)
    held = ScalerState(TrafficEstimate(1.0, 1.0, 3), 3, 7, (0.0, 0.0, 4.0))

    def planned(policy: ScalingPolicy, state: ScalerState, rate: float) -> int:
        ctx = ScalingContext(rate, state, ECON, W.scaling, COLD)
        return planned_size(SCALERS[policy], ctx)

    # The paper's rule: lam* of the estimate, or the rate itself with no sample.
    assert planned(ScalingPolicy.PAPER, empty, 2.5) == desired_instances(2.5, ECON, W.scaling)
    assert planned(ScalingPolicy.PAPER, held, 2.5) == desired_instances(2.0, ECON, W.scaling)
    # Expected cost: the history, or the rate itself with none; from no pool, not from 7.
    assert planned(ScalingPolicy.EXPECTED_COST, empty, 2.5) == choose(
        (2.5,), 0, ECON, W.scaling, COLD
    )
    assert planned(ScalingPolicy.EXPECTED_COST, held, 2.5) == choose(
        held.recent, 0, ECON, W.scaling, COLD
    )
