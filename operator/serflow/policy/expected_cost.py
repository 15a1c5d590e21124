"""The expected-cost scaler's old address, and the controller's entry points of before
the scaler registry, kept until the controller calls the registry itself.

The scaler is ``serflow.policy.scalers.expected_cost`` (its names are re-exported
here); the registry is ``serflow.policy.scalers.SCALERS`` and the shared step
``serflow.policy.scaler.step``. ``step_with`` and ``planned_size`` are thin wrappers
over those, with their old signatures; ``remember`` is the shared step's.
"""

from __future__ import annotations

from dataclasses import replace

from serflow.domain import ScalingPolicy, ScalingSpec
from serflow.policy import scaler
from serflow.policy.cost import PoolEconomics
from serflow.policy.scaler import ScalerState, ScalingContext, ScalingDecision, remember
from serflow.policy.scalers import SCALERS
from serflow.policy.scalers.expected_cost import (
    DRIFT_WINDOWS,
    HISTORY_WINDOWS,
    choose,
    distribution,
    drift,
    lasting_size,
    savings,
    sizes_worth,
    weighted_mean,
    weights,
)


def step_with(
    policy: ScalingPolicy,
    state: ScalerState,
    rate: float,
    econ: PoolEconomics,
    scaling: ScalingSpec,
    cold_epochs: int,
) -> tuple[ScalingDecision, ScalerState]:
    """One epoch of the scaler ``policy`` names: ``scaler.step(SCALERS[policy], ...)``.

    The controller appends the paper rule's rate to the history itself (from when only
    the expected-cost scaler kept one), so for that rule the history is handed back as
    it came, not to count the rate twice. Calling the step directly drops both.
    """
    ctx = ScalingContext(rate, state, econ, scaling, cold_epochs)
    decision, after = scaler.step(SCALERS[policy], ctx)
    if policy is ScalingPolicy.PAPER:
        after = replace(after, recent=state.recent)
    return decision, after


def planned_size(
    policy: ScalingPolicy,
    state: ScalerState,
    rate: float,
    econ: PoolEconomics,
    scaling: ScalingSpec,
    cold_epochs: int,
) -> int:
    """The pool size a new plan starts with, at the planning rate ``rate``:
    ``scaler.planned_size(SCALERS[policy], ...)``."""
    ctx = ScalingContext(rate, state, econ, scaling, cold_epochs)
    return scaler.planned_size(SCALERS[policy], ctx)


__all__ = [
    "DRIFT_WINDOWS",
    "HISTORY_WINDOWS",
    "choose",
    "distribution",
    "drift",
    "lasting_size",
    "planned_size",
    "remember",
    "savings",
    "sizes_worth",
    "step_with",
    "weighted_mean",
    "weights",
]
