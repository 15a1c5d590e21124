"""Expected-cost scaler: every S epochs, the pool size with the least expected cost.

The paper's rule sizes the pool for one number, EWMA + k x deviation. This scaler uses
the empirical distribution of the recent rates instead (the last ``HISTORY_WINDOWS``
scaling windows). With n instances of capacity mu, a rate lam puts min(lam, n mu) on the
pool and the rest on functions, so the (n+1)-th instance saves, in expectation,

    saving(n) = (c_F - c_add) * E[min(max(lam - n mu, 0), mu)]   dollars per second

and costs p. Since saving(n) falls with n, the cheapest size keeps every instance whose
saving covers its price (a newsvendor rule; with one rate it is the T-CIP rule).
An instance added now is billed through its cold start of c epochs, so over an expected
life of L epochs it must save p L / (L - c) while it serves: the bar to add is higher
than the bar to keep. Sizes between the two stay as they are: that band, set by the
cold start, is the hysteresis. The expected life is taken as the history's length: the
distribution is trusted for as long as it was observed.

Pure, like ``serflow.policy.scaler`` and with the same state: state in, decision and
state out; no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from serflow.policy.cost import PoolEconomics
from serflow.policy.monitor import observe
from serflow.policy.scaler import ScalerState, ScalingDecision, desired_instances
from serflow.policy.scaler import step as paper_step
from serflow.spec import ScalingPolicy, ScalingSpec

HISTORY_WINDOWS = 4
"""How many scaling windows of recent rates the distribution holds (and an instance's
expected life). Fixed once, on principle: long enough that one burst does not make the
distribution, short enough to follow the traffic within a few windows."""


def saving(rates: Sequence[float], n: int, econ: PoolEconomics) -> float:
    """Expected dollars per second the (n+1)-th instance saves over these rates."""
    if not rates:
        return 0.0
    mu = econ.mu
    taken = sum(min(max(r - n * mu, 0.0), mu) for r in rates)
    return (econ.faas_per_request - econ.add_per_request) * taken / len(rates)


def sizes_worth(rates: Sequence[float], econ: PoolEconomics, bar: float, cap: int) -> int:
    """How many instances each save at least ``bar`` dollars per second (at most ``cap``)."""
    n = 0
    while n < cap and saving(rates, n, econ) >= bar:
        n += 1
    return n


def choose(
    rates: Sequence[float],
    current: int,
    econ: PoolEconomics,
    scaling: ScalingSpec,
    cold_epochs: int,
) -> int:
    """The size for the coming window, from the recent rates and the size in force."""
    if not econ.has_pool:
        return 0
    life = HISTORY_WINDOWS * scaling.interval_epochs
    cap = scaling.max_instances
    if rates:  # nothing is worth more instances than the largest rate needs
        cap = min(cap, int(max(rates) / econ.mu) + 1)
    keep = sizes_worth(rates, econ, econ.instance_price, cap)
    add = (
        sizes_worth(rates, econ, econ.instance_price * life / (life - cold_epochs), cap)
        if life > cold_epochs
        else 0
    )
    n = add if current < add else keep if current > keep else current
    return max(scaling.min_instances, min(scaling.max_instances, n))


def step(
    state: ScalerState,
    rate: float,
    econ: PoolEconomics,
    scaling: ScalingSpec,
    cold_epochs: int,
) -> tuple[ScalingDecision, ScalerState]:
    """Observe one epoch's rate and, every S epochs, resize the pool.

    The traffic monitor is stepped too: its EWMA is what the route's pool share and the
    status report, whichever scaler sizes the pool.
    """
    history = HISTORY_WINDOWS * scaling.interval_epochs
    recent = (*state.recent, rate)[-history:]
    est = observe(state.estimate, rate, scaling.ewma_a, scaling.ewma_b)
    rescale = state.epoch % scaling.interval_epochs == 0
    desired = (
        choose(recent, state.desired, econ, scaling, cold_epochs) if rescale else state.desired
    )
    mean = sum(recent) / len(recent)
    return ScalingDecision(desired, rescale, mean), ScalerState(est, state.epoch + 1, desired, recent)


def step_with(
    policy: ScalingPolicy,
    state: ScalerState,
    rate: float,
    econ: PoolEconomics,
    scaling: ScalingSpec,
    cold_epochs: int,
) -> tuple[ScalingDecision, ScalerState]:
    """One epoch of the scaler ``policy`` names (``scaling.policy``)."""
    if policy is ScalingPolicy.PAPER:
        return paper_step(state, rate, econ, scaling)
    return step(state, rate, econ, scaling, cold_epochs)


def planned_size(
    policy: ScalingPolicy,
    state: ScalerState,
    rate: float,
    econ: PoolEconomics,
    scaling: ScalingSpec,
    cold_epochs: int,
) -> int:
    """The pool size a new plan starts with, at the planning rate ``rate``.

    The paper's rule sizes for the monitor's target (the rate itself with no sample);
    the expected-cost scaler for its history (the rate itself with none), from no pool.
    """
    if policy is ScalingPolicy.PAPER:
        target = state.estimate.target(scaling.k) if state.estimate.samples else rate
        return desired_instances(target, econ, scaling)
    return choose(state.recent or (rate,), 0, econ, scaling, cold_epochs)
