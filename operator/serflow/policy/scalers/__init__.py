"""The scalers, one module each, and the registry that maps ``scaling.policy`` to one.

Every scaler is a ``serflow.policy.scaler.Scaler``, driven by the shared step
(``serflow.policy.scaler.step``), which keeps the history and applies the bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from serflow.domain import ScalingPolicy
from serflow.policy.scaler import Scaler
from serflow.policy.scalers import expected_cost, paper

SCALERS: Mapping[ScalingPolicy, Scaler] = MappingProxyType(
    {
        ScalingPolicy.EXPECTED_COST: expected_cost.SCALER,
        ScalingPolicy.PAPER: paper.SCALER,
    }
)
"""The scaler of each ``ScalingPolicy`` (read-only)."""

__all__ = ["SCALERS"]
