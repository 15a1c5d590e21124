"""Expected-cost scaler: every S epochs, the pool size with the least expected cost.

The paper's rule sizes the pool for one number, EWMA + k x deviation. This scaler uses
the empirical distribution of the recent rates instead (the last ``HISTORY_WINDOWS``
scaling windows), each rate weighted by its age: the weight halves with every scaling
window, the interval the decision is made for, so a level that has held for a window
outweighs the three before it and a lasting shift is followed within about a window,
while a burst shorter than one is outweighed by the history. With n instances of
capacity mu, a rate lam puts min(lam, n mu) on the pool and the rest on functions, so
the (n+1)-th instance saves, in expectation over that weighted distribution,

    saving(n) = (c_F - c_add) * E[min(max(lam - n mu, 0), mu)]   dollars per second

and costs p. Since saving(n) falls with n, the cheapest size keeps every instance whose
saving covers its price (a newsvendor rule; with one rate it is the T-CIP rule).
An instance added now is billed through its cold start of c epochs, so over an expected
life of L epochs it must save p L / (L - c) while it serves: the bar to add is higher
than the bar to keep. Sizes between the two stay as they are: that band, set by the
cold start, is the hysteresis. The expected life is taken as the history's length: the
distribution is trusted for as long as it was observed.

Where a fully used instance saves little more than the bar to add, the distribution
adds it only once a new level holds nearly all the weight, three to four windows after
a step (a burst and a lasting shift look alike at first). So a second rule watches how
long a level has lasted. With
nothing else known, something seen to last T is expected to last about T more (the
median of its remaining life under the Copernican estimate). So an instance that would
have paid for itself in each of the last T epochs is added when its saving over T more
epochs repays its price over its cold start and those T epochs, and one in the pool is
kept while the latest epoch still pays for it. The pool is the larger of the two rules'
sizes; the second has no parameter of its own.

A window of past rates describes the traffic as it was, centred half a history ago: on a
trend it sizes for where the rate was, not where it is. So each rate is first aged to
the present by the drift, the least-squares slope of a longer span of rates: a rate seen
k epochs ago counts as rate + k x drift. Stationary traffic has no drift and keeps its
distribution, bursts included; a ramp's distribution becomes its current rate. Nothing
is extrapolated beyond the present.

Its two functions make the ``Scaler`` of ``ScalingPolicy.EXPECTED_COST``: the rate
history and the bounds come from the shared step (``serflow.policy.scaler.step``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from operator import mul

from serflow.domain import ScalingSpec
from serflow.policy.cost import PoolEconomics
from serflow.policy.scaler import KEPT_WINDOWS, Scaler, ScalingContext

HISTORY_WINDOWS = 4
"""How many scaling windows of recent rates the distribution holds (and an instance's
expected life). Fixed once, on principle: long enough that one burst does not make the
distribution, short enough to follow the traffic within a few windows."""

DRIFT_WINDOWS = KEPT_WINDOWS
"""How many scaling windows of rates the drift is fitted over: all the state keeps,
twice the distribution's span, on principle: a drift is a change that outlasts the
distribution, so it is measured against the history before it too. A burst as long as
one window at the end of the span tilts a fit over twice the span about a third as much
as a fit over the span alone, so bursts stay in the distribution, not in the drift."""


def drift(rates: Sequence[float]) -> float:
    """Least-squares slope of the rates against their epoch, req/s per epoch (0 with < 2)."""
    m = len(rates)
    if m < 2:
        return 0.0
    # sum((x - mean x) r) / sum((x - mean x)^2), the denominator being m (m^2 - 1) / 12
    centred = float(sum(map(mul, range(m), rates))) - (m - 1) / 2 * sum(rates)
    return 12 * centred / (m * (m * m - 1))


def distribution(recent: Sequence[float], scaling: ScalingSpec) -> tuple[float, ...]:
    """The last ``HISTORY_WINDOWS`` windows of ``recent``, each rate aged to the present
    by the drift of all of ``recent`` (never below 0)."""
    d = drift(recent)
    m = len(recent)
    start = max(0, m - HISTORY_WINDOWS * scaling.interval_epochs)
    return tuple(max(0.0, recent[i] + d * (m - 1 - i)) for i in range(start, m))


def weights(count: int, scaling: ScalingSpec) -> tuple[float, ...]:
    """The weight of each of ``count`` rates, oldest first: it halves with every scaling
    window of age (the newest weighs 1)."""
    return _weights(count, scaling.interval_epochs)


@cache  # a few hundred (count, S) pairs at most: the history is bounded
def _weights(count: int, interval_epochs: int) -> tuple[float, ...]:
    per_epoch = 0.5 ** (1 / interval_epochs)
    return tuple(per_epoch ** (count - 1 - i) for i in range(count))


def savings(
    rates: Sequence[float], weight: Sequence[float], econ: PoolEconomics, cap: int
) -> list[float]:
    """Expected dollars per second the (n+1)-th instance saves over these rates, each
    counted with its ``weight``, for n = 0 .. cap - 1 (falling with n).

    A rate lam fills q = floor(lam / mu) instances and leaves a remainder: the (n+1)-th
    takes mu of it for n < q, the remainder for n = q, nothing above. So one pass sorts
    the weights by q, and each n sums the weights above it (one pass, not one per n).
    """
    total = sum(weight)
    if cap <= 0 or total <= 0:
        return [0.0] * max(cap, 0)
    mu = econ.mu
    fills = [0.0] * (cap + 1)  # weight of the rates filling exactly q instances (cap: at least)
    rest = [0.0] * (cap + 1)  # their weighted remainders
    for r, w in zip(rates, weight, strict=True):
        q = min(math.floor(r / mu), cap)
        fills[q] += w
        rest[q] += w * (r - q * mu)
    per_request = (econ.faas_per_request - econ.add_per_request) / total
    out, above = [0.0] * cap, 0.0
    for n in range(cap - 1, -1, -1):
        above += fills[n + 1]
        out[n] = per_request * (above * mu + rest[n])
    return out


def sizes_worth(saved: Sequence[float], bar: float) -> int:
    """How many instances each save at least ``bar`` dollars per second (``savings``)."""
    n = 0
    while n < len(saved) and saved[n] >= bar:
        n += 1
    return n


def weighted_mean(rates: Sequence[float], weight: Sequence[float]) -> float:
    """The mean the weighted distribution centres on (0 with no rate)."""
    total = sum(weight)
    return sum(map(mul, rates, weight)) / total if total else 0.0


def lasting_size(
    recent: Sequence[float], current: int, econ: PoolEconomics, cap: int, cold_epochs: int
) -> int:
    """The size the levels' durations support (at most ``max(current, cap)``): the pool's
    instances while the latest rate pays for each, then every further one whose saving
    over the last T epochs, each of which it would have paid for, repays its price over
    T more epochs and its cold start."""
    price, gain, mu = econ.instance_price, econ.faas_per_request - econ.add_per_request, econ.mu

    def saves(r: float, n: int) -> float:  # $/s the (n+1)-th instance saves at rate r
        return gain * min(max(r - n * mu, 0.0), mu)

    if not recent:
        return 0
    n = 0
    while n < current and saves(recent[-1], n) >= price:
        n += 1
    if n < current:  # the latest rate no longer pays for the pool, let alone one more
        return n
    while n < cap:
        run, total = 0, 0.0
        for r in reversed(recent):
            s = saves(r, n)
            if s < price:
                break
            run, total = run + 1, total + s
        if run == 0 or total < price * (run + cold_epochs):
            break
        n += 1
    return n


def choose(
    recent: Sequence[float],
    current: int,
    econ: PoolEconomics,
    scaling: ScalingSpec,
    cold_epochs: int,
) -> int:
    """The size for the coming window, from the rate history and the size in force
    (searching no further than ``max_instances``; the bounds apply outside)."""
    if not econ.has_pool:
        return 0
    rates = distribution(recent, scaling)
    life = HISTORY_WINDOWS * scaling.interval_epochs
    cap = scaling.max_instances
    if rates:  # nothing is worth more instances than the largest rate needs
        cap = min(cap, int(max(rates) / econ.mu) + 1)
    saved = savings(rates, weights(len(rates), scaling), econ, cap)
    keep = sizes_worth(saved, econ.instance_price)
    add = (
        sizes_worth(saved, econ.instance_price * life / (life - cold_epochs))
        if life > cold_epochs
        else 0
    )
    n = add if current < add else keep if current > keep else current
    return max(n, lasting_size(recent, current, econ, cap, cold_epochs))


def size(ctx: ScalingContext) -> int:
    """``choose`` on the state's history and the size in force."""
    s = ctx.state
    return choose(s.recent, s.desired, ctx.economics, ctx.scaling, ctx.cold_epochs)


def target_rate(ctx: ScalingContext) -> float:
    """The age-weighted mean of the last ``HISTORY_WINDOWS`` windows of rates, as
    observed: what the distribution centres on before the drift ages it (which only a
    scaling epoch pays for)."""
    rates = ctx.state.recent[-HISTORY_WINDOWS * ctx.scaling.interval_epochs :]
    return weighted_mean(rates, weights(len(rates), ctx.scaling))


SCALER = Scaler(size=size, target_rate=target_rate)
"""The expected-cost scaler, as the registry holds it."""
