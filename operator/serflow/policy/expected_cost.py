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

Pure, like ``serflow.policy.scaler``: state in, decision and state out; no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serflow.policy.cost import PoolEconomics
from serflow.policy.scaler import ScalingDecision
from serflow.spec import ScalingSpec

HISTORY_WINDOWS = 4
"""How many scaling windows of recent rates the distribution holds (and an instance's
expected life). Fixed once, on principle: long enough that one burst does not make the
distribution, short enough to follow the traffic within a few windows."""


@dataclass(frozen=True)
class ExpectedCostState:
    """What must survive between epochs (and operator restarts)."""

    recent: tuple[float, ...] = ()
    """The observed rates of the last HISTORY_WINDOWS x S epochs, oldest first, req/s."""
    epoch: int = 0
    """Epochs stepped so far, observed or not."""
    desired: int = 0
    """The pool size decided at the last scaling epoch."""


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
    state: ExpectedCostState,
    rate: float | None,
    econ: PoolEconomics,
    scaling: ScalingSpec,
    cold_epochs: int,
) -> tuple[ScalingDecision, ExpectedCostState]:
    """Record one epoch's rate (None: no sample) and, every S epochs, resize the pool."""
    history = HISTORY_WINDOWS * scaling.interval_epochs
    recent = state.recent if rate is None else (*state.recent, rate)[-history:]
    rescale = state.epoch % scaling.interval_epochs == 0
    desired = (
        choose(recent, state.desired, econ, scaling, cold_epochs) if rescale else state.desired
    )
    mean = sum(recent) / len(recent) if recent else 0.0
    new = ExpectedCostState(recent=recent, epoch=state.epoch + 1, desired=desired)
    return ScalingDecision(desired, rescale, mean), new
