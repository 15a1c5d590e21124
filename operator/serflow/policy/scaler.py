"""The scaling manager: one interface for every scaler, and the step around it.

A scaler (``Scaler``) is the rule that sizes the pool, as pure functions of a
``ScalingContext``; ``serflow.policy.scalers.SCALERS`` maps each ``ScalingPolicy`` to
one. What every scaler shares is done once, here, in ``step``, as Knative's autoscaler
does around a UniScaler and Ray Serve's controller around an autoscaling policy: the
epoch's sample is folded into the traffic monitor and the rate history, the pool is
resized every S epochs, and the size the scaler asks for is held to the spec's bounds.
An epoch with no data leaves everything as it was. The caller owns the clock and the
side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from serflow.domain import ScalingSpec
from serflow.policy.cost import PoolEconomics, within
from serflow.policy.monitor import TrafficEstimate, observe

KEPT_WINDOWS = 8
"""How many scaling windows of rates ``ScalerState.recent`` keeps, whichever scaler
runs: the re-ranking replays them, and the expected-cost scaler fits its drift over them
(twice the span of its distribution, ``serflow.policy.scalers.expected_cost``)."""


@dataclass(frozen=True)
class ScalerState:
    """What must survive between epochs (and operator restarts)."""

    estimate: TrafficEstimate = field(default_factory=TrafficEstimate)
    """The traffic monitor's state."""
    epoch: int = 0
    """Epochs observed so far (an epoch with no data does not count)."""
    desired: int = 0
    """The pool size decided at the last scaling epoch."""
    recent: tuple[float, ...] = ()
    """The last rates observed, oldest first, req/s: at most ``KEPT_WINDOWS`` scaling
    windows of them, kept by ``step`` whichever scaler runs."""


@dataclass(frozen=True)
class ScalingContext:
    """Everything one epoch's scaling sees (Ray Serve's AutoscalingContext)."""

    rate: float | None
    """The epoch's observed arrival rate, req/s; None: no data this epoch."""
    state: ScalerState
    """What was carried from the last epoch. A scaler is given it with the epoch's
    rate already counted (in ``estimate``, ``recent`` and ``epoch``) and the size in
    force as ``desired``."""
    economics: PoolEconomics
    """The running setup's capacity and prices."""
    scaling: ScalingSpec
    """The spec's knobs: interval, EWMA weights, k and the bounds."""
    cold_epochs: int
    """Whole epochs a new instance is billed before it serves."""


@dataclass(frozen=True)
class Scaler:
    """One rule that sizes the pool: what the registry maps a ``ScalingPolicy`` to.

    Neither function sees the bounds, folds a sample or keeps history: ``step`` does.
    """

    size: Callable[[ScalingContext], int]
    """The pool size for the coming window, as the rule has it (before the spec's
    bounds); asked on scaling epochs only."""
    target_rate: Callable[[ScalingContext], float]
    """``ScalingDecision.target_rate`` from the state: asked every epoch, sample or not."""


@dataclass(frozen=True)
class ScalingDecision:
    """What one epoch decided."""

    desired: int
    """Pool size to run from now on, within the spec's bounds (0 without a pool)."""
    rescaled: bool
    """True on a scaling epoch (every S epochs with data, starting with the first)."""
    target_rate: float
    """The rate, req/s, the scaler's estimate of the traffic comes to: one number for
    the status and events beside the size, from the state alone, so the same whether
    or not the epoch rescaled or had a sample. The paper's rule: lam* = EWMA +
    k x deviation, the rate its size is computed for. The expected-cost scaler: the
    age-weighted mean of the rates its distribution is drawn from, as observed (its size
    weighs the whole distribution, aged by the drift, not this one number)."""


def remember(recent: Sequence[float], rate: float, scaling: ScalingSpec) -> tuple[float, ...]:
    """The rate history with one more rate, bounded to ``KEPT_WINDOWS`` windows."""
    room = KEPT_WINDOWS * scaling.interval_epochs - 1  # for the older rates
    return (*recent[max(0, len(recent) - room) :], rate)


def bounded(n: int, econ: PoolEconomics, scaling: ScalingSpec) -> int:
    """A size a scaler asked for, as the pool may run it: within [min, max] instances;
    0 for the FaaS pool, which has no instance to keep."""
    return within(n, scaling.min_instances, scaling.max_instances) if econ.has_pool else 0


def desired_instances(target_rate: float, econ: PoolEconomics, scaling: ScalingSpec) -> int:
    """The paper's size for a rate, within the bounds: N = floor(lam*/mu) +
    [remainder > TCIP]; 0 for the FaaS pool."""
    return bounded(econ.tcip_instances(target_rate), econ, scaling)


def step(scaler: Scaler, ctx: ScalingContext) -> tuple[ScalingDecision, ScalerState]:
    """One epoch of ``scaler``: fold the sample into the monitor and the history and,
    every S epochs, resize the pool within the bounds. With no data (``ctx.rate`` None)
    nothing is observed, so nothing moves: the state is returned as it came."""
    s, scaling = ctx.state, ctx.scaling
    if ctx.rate is None:
        return ScalingDecision(s.desired, False, scaler.target_rate(ctx)), s
    seen = ScalerState(
        observe(s.estimate, ctx.rate, scaling.ewma_a, scaling.ewma_b),
        s.epoch + 1,
        s.desired,
        remember(s.recent, ctx.rate, scaling),
    )
    now = ScalingContext(ctx.rate, seen, ctx.economics, scaling, ctx.cold_epochs)
    target = scaler.target_rate(now)
    if s.epoch % scaling.interval_epochs:  # not a scaling epoch: the size stays
        return ScalingDecision(s.desired, False, target), seen
    desired = bounded(scaler.size(now), ctx.economics, scaling)
    after = ScalerState(seen.estimate, seen.epoch, desired, seen.recent)
    return ScalingDecision(desired, True, target), after


def planned_size(scaler: Scaler, ctx: ScalingContext) -> int:
    """The pool size a new plan starts with: ``scaler``'s size from no pool, read from the
    carried state, with the planning rate ``ctx.rate`` (the spec's or the ranking's)
    standing in for an estimate or a history the state does not hold yet."""
    s, rate = ctx.state, ctx.rate
    estimate, recent = s.estimate, s.recent
    if rate is not None:
        if not estimate.samples:
            estimate = observe(estimate, rate, ctx.scaling.ewma_a, ctx.scaling.ewma_b)
        recent = recent or (rate,)
    seeded = ScalerState(estimate, s.epoch, 0, recent)
    planning = ScalingContext(rate, seeded, ctx.economics, ctx.scaling, ctx.cold_epochs)
    return bounded(scaler.size(planning), ctx.economics, ctx.scaling)
