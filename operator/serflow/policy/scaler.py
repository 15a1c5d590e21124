"""Scaling manager: one pure step per epoch (DESIGN.md section 2, online loop).

Like a Ray Serve autoscaling policy, ``step`` is a function of the carried state and the
epoch's observation; it returns the decision and the state to carry. The caller owns
the clock and the side effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serflow.domain import ScalingSpec
from serflow.policy.cost import PoolEconomics
from serflow.policy.monitor import TrafficEstimate, observe


@dataclass(frozen=True)
class ScalerState:
    """What must survive between epochs (and operator restarts)."""

    estimate: TrafficEstimate = field(default_factory=TrafficEstimate)
    """The traffic monitor's state."""
    epoch: int = 0
    """Epochs observed so far."""
    desired: int = 0
    """The pool size decided at the last scaling epoch."""
    recent: tuple[float, ...] = ()
    """The last rates observed, oldest first, req/s (kept by the expected-cost scaler only)."""


@dataclass(frozen=True)
class ScalingDecision:
    """What one epoch decided."""

    desired: int
    """Pool size to run from now on."""
    rescaled: bool
    """True on a scaling epoch (every S epochs, starting with the first)."""
    target_rate: float
    """lam* the size was computed from, req/s."""


def desired_instances(target_rate: float, econ: PoolEconomics, scaling: ScalingSpec) -> int:
    """N = floor(lam*/mu) + [remainder > TCIP], clamped to [min, max]; 0 for the FaaS pool."""
    if not econ.has_pool:
        return 0
    n = econ.instances_for(target_rate)
    return max(scaling.min_instances, min(scaling.max_instances, n))


def step(
    state: ScalerState, rate: float, econ: PoolEconomics, scaling: ScalingSpec
) -> tuple[ScalingDecision, ScalerState]:
    """Observe one epoch's rate; every S epochs, resize the pool."""
    est = observe(state.estimate, rate, scaling.ewma_a, scaling.ewma_b)
    target = est.target(scaling.k)
    rescale = state.epoch % scaling.interval_epochs == 0
    desired = desired_instances(target, econ, scaling) if rescale else state.desired
    new = ScalerState(estimate=est, epoch=state.epoch + 1, desired=desired, recent=state.recent)
    return ScalingDecision(desired, rescale, target), new
